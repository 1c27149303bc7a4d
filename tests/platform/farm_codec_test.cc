// The farm's record values and the gateway's key-value answers (platform/farm_codec.h).
#include "platform/farm_codec.h"

#include "platform/etcd_client.h"

#include <cjson/cJSON.h>
#include <gtest/gtest.h>

#include "core/journal_format.h"
#include "core/protocol.h"

namespace bitsd::platform {
namespace {

SessionId sid(uint8_t b) {
  SessionId s;
  s.bytes.fill(b);
  return s;
}

TEST(FarmCodec, BeganRoundTrips) {
  std::string v = farmEncodeBegan("n2", "00112233445566778899aabbccddeeff", sid(7), 1700000000);
  FarmTxRecord r;
  ASSERT_TRUE(farmDecodeTx(v, &r)) << v;
  EXPECT_EQ(r.state, FarmTxRecord::State::Began);
  EXPECT_EQ(r.node, "n2");
  EXPECT_EQ(r.token, "00112233445566778899aabbccddeeff");
  EXPECT_EQ(r.session, sid(7));
}

TEST(FarmCodec, EndedRoundTripsWithBinaryInlineReply) {
  std::string reply("\0\x01\xff reply \"quoted\"\n", 20);
  FarmEnded e;
  e.session = sid(1);
  e.status = 200;
  e.hresult = 0x80200021u;
  e.flags = kDeliveryHasReplyFile;
  e.replyBytes = reply.size();
  e.replySession = sid(2);
  e.staticUrl = "http://app/r?x=\"1\"";
  std::string v = farmEncodeEnded("nöde", e, &reply, 5);
  FarmTxRecord r;
  ASSERT_TRUE(farmDecodeTx(v, &r)) << v;
  EXPECT_EQ(r.state, FarmTxRecord::State::Ended);
  EXPECT_EQ(r.node, "nöde");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.hresult, 0x80200021u);
  EXPECT_EQ(r.flags, kDeliveryHasReplyFile);
  EXPECT_EQ(r.replyBytes, reply.size());
  EXPECT_EQ(r.replySession, sid(2));
  EXPECT_EQ(r.staticUrl, "http://app/r?x=\"1\"");
  EXPECT_TRUE(r.replyInline);
  EXPECT_EQ(r.reply, reply);

  std::string noInline = farmEncodeEnded("n", e, nullptr, 5);
  ASSERT_TRUE(farmDecodeTx(noInline, &r));
  EXPECT_FALSE(r.replyInline);
  EXPECT_TRUE(r.reply.empty());
}

TEST(FarmCodec, RejectsWhatIsNotARecord) {
  FarmTxRecord r;
  for (const char* bad : {"", "[]", "{", "{\"state\":\"began\"}", "{\"state\":\"x\",\"node\":\"n\"}",
                          "{\"state\":\"ended\",\"node\":\"n\",\"session\":\"{zz}\"}",
                          "{\"state\":\"ended\",\"node\":\"n\",\"session\":\"{01010101-0101-0101-0101-010101010101}\","
                          "\"status\":-1}",
                          "{\"state\":\"ended\",\"node\":\"n\",\"session\":\"{01010101-0101-0101-0101-010101010101}\","
                          "\"replyBytes\":3,\"reply\":\"!!!\"}"}) {
    EXPECT_FALSE(farmDecodeTx(bad, &r)) << bad;
    EXPECT_EQ(r.state, FarmTxRecord::State::None) << bad;
  }
}

TEST(FarmCodec, NodeAndSessionValues) {
  std::string peer, node;
  ASSERT_TRUE(farmDecodeNode(farmEncodeNode("http://127.0.0.2:8080", 9), &peer));
  EXPECT_EQ(peer, "http://127.0.0.2:8080");
  ASSERT_TRUE(farmDecodeSession(farmEncodeSession("n3"), &node));
  EXPECT_EQ(node, "n3");
  EXPECT_FALSE(farmDecodeSession("{}", &node));
  EXPECT_FALSE(farmDecodeNode("nope", &peer));
}

TEST(FarmCodec, GatewayKeyValuesAndInt64Strings) {
  std::string k = farmB64(std::string("/bitsd/f/tx/\x80\xff id", 17));
  std::string text = "{\"header\":{\"revision\":\"9007199254740993\"},\"kvs\":[{\"key\":\"" + k +
                     "\",\"create_revision\":\"3\",\"mod_revision\":\"12\",\"value\":\"" + farmB64("{}") +
                     "\"}],\"count\":\"1\"}";
  cJSON* j = cJSON_Parse(text.c_str());
  ASSERT_NE(j, nullptr);
  EXPECT_EQ(farmJsonInt(cJSON_GetObjectItem(j, "header"), "revision"), 9007199254740993LL);
  EXPECT_EQ(farmJsonInt(j, "absent"), 0);
  std::vector<FarmKv> kvs;
  ASSERT_TRUE(farmDecodeKvs(j, &kvs));
  ASSERT_EQ(kvs.size(), 1u);
  EXPECT_EQ(kvs[0].key, std::string("/bitsd/f/tx/\x80\xff id", 17));
  EXPECT_EQ(kvs[0].value, "{}");
  EXPECT_EQ(kvs[0].modRevision, 12);
  EXPECT_EQ(kvs[0].createRevision, 3);
  cJSON_Delete(j);

  cJSON* bad = cJSON_Parse("{\"kvs\":[{\"key\":\"***\"}]}");
  EXPECT_FALSE(farmDecodeKvs(bad, &kvs));
  cJSON_Delete(bad);
  cJSON* none = cJSON_Parse("{\"header\":{}}");
  EXPECT_TRUE(farmDecodeKvs(none, &kvs));
  EXPECT_TRUE(kvs.empty());
  cJSON_Delete(none);
}

TEST(EtcdEndpoint, ParsesAndRejects) {
  EtcdEndpoint e;
  std::string err;
  ASSERT_TRUE(parseEtcdEndpoint("http://127.0.0.2:2379/", &e, &err)) << err;
  EXPECT_FALSE(e.tls);
  EXPECT_EQ(e.host, "127.0.0.2");
  EXPECT_EQ(e.port, "2379");
  EXPECT_EQ(e.url, "http://127.0.0.2:2379");
  ASSERT_TRUE(parseEtcdEndpoint("https://[::1]", &e, &err)) << err;
  EXPECT_TRUE(e.tls);
  EXPECT_EQ(e.host, "::1");
  EXPECT_EQ(e.port, "2379");
  for (const char* bad : {"127.0.0.1:2379", "http://", "http://h:0", "http://h:99999", "http://h:2379/v3", "ftp://h"}) {
    EXPECT_FALSE(parseEtcdEndpoint(bad, &e, &err)) << bad;
    EXPECT_FALSE(err.empty());
  }
}

}  // namespace
}  // namespace bitsd::platform
