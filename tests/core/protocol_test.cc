#include "core/protocol.h"

#include <gtest/gtest.h>

#include "core/response.h"
#include "tests/support/engine_driver.h"

namespace bitsd {
namespace {

TEST(Protocol, PacketTypesAreCaseInsensitive) {
  EXPECT_EQ(parsePacketType("Ping"), PacketType::Ping);
  EXPECT_EQ(parsePacketType("PING"), PacketType::Ping);
  EXPECT_EQ(parsePacketType("create-session"), PacketType::CreateSession);
  EXPECT_EQ(parsePacketType("FRAGMENT"), PacketType::Fragment);
  EXPECT_EQ(parsePacketType("Close-Session"), PacketType::CloseSession);
  EXPECT_EQ(parsePacketType("cancel-SESSION"), PacketType::CancelSession);
  EXPECT_EQ(parsePacketType("Create Session"), PacketType::Unknown);
  EXPECT_EQ(parsePacketType(""), PacketType::Unknown);
}

TEST(Protocol, NegotiatesSpaceOrCommaSeparatedAnyCase) {
  EXPECT_TRUE(offersUploadProtocol("{7df0354d-249b-430f-820d-3d2a9bef4931}"));
  EXPECT_TRUE(offersUploadProtocol("{7DF0354D-249B-430F-820D-3D2A9BEF4931}"));
  EXPECT_TRUE(offersUploadProtocol("{11111111-1111-1111-1111-111111111111} {7df0354d-249b-430f-820d-3d2a9bef4931}"));
  EXPECT_TRUE(offersUploadProtocol("{11111111-1111-1111-1111-111111111111},{7df0354d-249b-430f-820d-3d2a9bef4931}"));
  EXPECT_TRUE(offersUploadProtocol(" , {7df0354d-249b-430f-820d-3d2a9bef4931} ,"));
  EXPECT_FALSE(offersUploadProtocol("{11111111-1111-1111-1111-111111111111}"));
  EXPECT_FALSE(offersUploadProtocol("7df0354d-249b-430f-820d-3d2a9bef4931"));
  EXPECT_FALSE(offersUploadProtocol("{7df0354d-249b-430f-820d-3d2a9bef4931}x"));
  EXPECT_FALSE(offersUploadProtocol(""));
}

TEST(Protocol, SessionIdIsBracedUpperCaseVersion4) {
  uint8_t rnd[16];
  for (int i = 0; i < 16; ++i) rnd[i] = static_cast<uint8_t>(0xA5 + i * 7);
  SessionId id = sessionIdFromRandom(rnd);
  char text[kSessionIdTextBytes];
  formatSessionId(id, text);
  std::string s(text, kSessionIdTextBytes);
  ASSERT_EQ(s.size(), 38u);
  EXPECT_EQ(s.front(), '{');
  EXPECT_EQ(s.back(), '}');
  EXPECT_EQ(s[15], '4') << s;  // version nibble
  EXPECT_TRUE(s[20] == '8' || s[20] == '9' || s[20] == 'A' || s[20] == 'B') << s;
  for (char c : s) EXPECT_FALSE(c >= 'a' && c <= 'z') << s;
  SessionId back;
  ASSERT_TRUE(parseSessionId(s, &back));
  EXPECT_EQ(back, id);
  std::string lower = s;
  for (char& c : lower) c = static_cast<char>(std::tolower(c));
  ASSERT_TRUE(parseSessionId(lower, &back));
  EXPECT_EQ(back, id);
}

TEST(Protocol, MalformedSessionIdsDoNotParse) {
  SessionId id;
  EXPECT_FALSE(parseSessionId("", &id));
  EXPECT_FALSE(parseSessionId("{A0FF5911-4144-45B3-BF27-27AFC8EC8A6}", &id));
  EXPECT_FALSE(parseSessionId("A0FF5911-4144-45B3-BF27-27AFC8EC8A67", &id));
  EXPECT_FALSE(parseSessionId("{A0FF5911-4144-45B3-BF27-27AFC8EC8A6G}", &id));
  EXPECT_FALSE(parseSessionId("{A0FF5911+4144-45B3-BF27-27AFC8EC8A67}", &id));
  EXPECT_TRUE(parseSessionId("{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}", &id));
}

TEST(Response, AckAlwaysHasPacketTypeAndZeroLength) {
  AckSpec spec;
  spec.status = 416;
  spec.hasError = true;
  spec.errorCode = 0;
  spec.hasReceived = true;
  spec.receivedBytes = 12345;
  char out[kMaxAckBytes];
  std::string text(out, formatAck(spec, out));
  testing::Reply r = testing::parseReply(text);
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.get("BITS-Packet-Type"), "Ack");
  EXPECT_EQ(r.get("Content-Length"), "0");
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x0");
  EXPECT_EQ(r.get("BITS-Error-Context"), "0x5");
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "12345");
  EXPECT_EQ(text.substr(text.size() - 4), "\r\n\r\n");
}

TEST(Response, HostIdHeadersGoOnlyOnCreateSessionAcks) {
  AckSpec spec;
  spec.createSession = true;
  std::string longest(200, 'n');
  spec.hostId = longest;
  spec.hostIdFallbackSeconds = 4294967295u;
  SessionId id{};
  spec.sessionId = &id;
  spec.close = true;
  char out[kMaxAckBytes];
  std::string text(out, formatAck(spec, out));
  testing::Reply r = testing::parseReply(text);
  EXPECT_EQ(r.get("BITS-Host-Id"), longest);
  EXPECT_EQ(r.get("BITS-Host-Id-Fallback-Timeout"), "4294967295");
  EXPECT_EQ(r.get("Connection"), "close");  // the longest Ack still fits whole
  EXPECT_EQ(text.substr(text.size() - 4), "\r\n\r\n");
  spec.createSession = false;  // e.g. a Fragment's Ack
  r = testing::parseReply(std::string(out, formatAck(spec, out)));
  EXPECT_FALSE(r.has("BITS-Host-Id"));
  EXPECT_FALSE(r.has("BITS-Host-Id-Fallback-Timeout"));
}

TEST(Response, HresultIsEightUpperCaseHexDigits) {
  char out[11];
  formatHresult(0x8020001F, out);
  EXPECT_STREQ(out, "0x8020001F");
  formatHresult(0x80070057, out);
  EXPECT_STREQ(out, "0x80070057");
  formatHresult(0, out);
  EXPECT_STREQ(out, "0x0");
}

}  // namespace
}  // namespace bitsd

namespace bitsd::testing {
namespace {

Reply createSessionWith(const Settings& s) {
  EngineDriver d(s);
  return d.send(bitsRequest("/up.bin", "Create-Session",
                            {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
}

TEST(HostId, SendHostIdOffKeepsTheHeaderOutOfCreateSessionAcks) {
  Settings s = EngineDriver::defaultSettings();
  s.hostId = "node-1.farm.example";
  Reply on = createSessionWith(s);
  ASSERT_EQ(on.status, 200) << on.raw;
  EXPECT_EQ(on.get("BITS-Host-Id"), "node-1.farm.example");
  s.sendHostId = false;
  Reply off = createSessionWith(s);
  ASSERT_EQ(off.status, 200) << off.raw;
  EXPECT_FALSE(off.has("BITS-Host-Id")) << off.raw;
  EXPECT_FALSE(off.has("BITS-Host-Id-Fallback-Timeout")) << off.raw;
}

}  // namespace
}  // namespace bitsd::testing
