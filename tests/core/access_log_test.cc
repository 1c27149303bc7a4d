// The access log's line formats (core/access_log.h) and the error log's refusal line.
#include "core/access_log.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/log.h"

namespace bitsd {
namespace {

std::string line(AccessLogFormat f, const AccessRecord& r) {
  char out[kMaxAccessLineBytes];
  size_t n = formatAccessLine(f, r, out);
  EXPECT_LE(n, kMaxAccessLineBytes);
  EXPECT_EQ(out[n - 1], '\n');
  return std::string(out, n);
}

AccessRecord fragment(SessionId* id) {
  AccessRecord r;
  r.unixMs = 1714564800123;  // 2024-05-01T12:00:00.123Z
  r.client.family = 4;
  r.client.bytes[0] = 127;
  r.client.bytes[3] = 1;
  r.user = "alice";
  r.hasRequest = true;
  r.method = HttpMethod::BitsPost;
  r.target = "/up/file.bin";
  r.packet = PacketType::Fragment;
  for (int i = 0; i < 16; ++i) id->bytes[i] = static_cast<uint8_t>(i);
  r.session = id;
  r.contentRange = "bytes 0-99/1000";
  r.status = 200;
  r.bytesIn = 100;
  r.bytesOut = 245;
  r.durationUs = 1234;
  return r;
}

TEST(AccessLog, TextLine) {
  SessionId id{};
  AccessRecord r = fragment(&id);
  char sid[kSessionIdTextBytes];
  formatSessionId(id, sid);
  std::string s(sid, sizeof sid);
  EXPECT_EQ(line(AccessLogFormat::Text, r), "127.0.0.1 - alice [01/May/2024:12:00:00 +0000] \"BITS_POST /up/file.bin HTTP/1.1\" 200 245 "
                                            "Fragment " + s + " \"bytes 0-99/1000\" - 100 1.234\n");
}

TEST(AccessLog, TextAbsentFieldsAreDashes) {
  AccessRecord r;
  r.unixMs = 0;
  EXPECT_EQ(line(AccessLogFormat::Text, r), "- - - [01/Jan/1970:00:00:00 +0000] \"-\" - 0 - - \"-\" - 0 0.000\n");
  r.status = 404;
  r.hasError = true;
  r.errorCode = 0x80070003;
  EXPECT_EQ(line(AccessLogFormat::Text, r), "- - - [01/Jan/1970:00:00:00 +0000] \"-\" 404 0 - - \"-\" 0x80070003 0 0.000\n");
}

TEST(AccessLog, TextEscapesUntrustedBytes) {
  SessionId id{};
  AccessRecord r = fragment(&id);
  r.target = std::string_view("/a b\"c\\d\x01\x7f\xff\xc3\xa9", 13);
  r.user = "bo b\"";
  r.contentRange = "x\ny";
  std::string s = line(AccessLogFormat::Text, r);
  EXPECT_NE(s.find(" bo\\x20b\\x22 ["), std::string::npos) << s;
  EXPECT_NE(s.find("\"BITS_POST /a b\\x22c\\x5cd\\x01\\x7f\\xff\\xc3\\xa9 HTTP/1.1\""), std::string::npos) << s;
  EXPECT_NE(s.find("\"x\\x0ay\""), std::string::npos) << s;
  EXPECT_EQ(s.find('\n'), s.size() - 1);  // one line, whatever came in
}

TEST(AccessLog, LongTargetIsCut) {
  SessionId id{};
  AccessRecord r = fragment(&id);
  std::string big(20000, '\x01');
  r.target = big;
  std::string s = line(AccessLogFormat::Text, r);
  EXPECT_LT(s.size(), kMaxAccessLineBytes);
  EXPECT_NE(s.find("\\x01... HTTP/1.1\""), std::string::npos);
  std::string j = line(AccessLogFormat::Json, r);
  EXPECT_LT(j.size(), kMaxAccessLineBytes);
  EXPECT_NE(j.find("\\u0001...\""), std::string::npos);
}

TEST(AccessLog, JsonLine) {
  SessionId id{};
  AccessRecord r = fragment(&id);
  char sid[kSessionIdTextBytes];
  formatSessionId(id, sid);
  std::string s(sid, sizeof sid);
  EXPECT_EQ(line(AccessLogFormat::Json, r),
            "{\"time\":\"2024-05-01T12:00:00.123Z\",\"client\":\"127.0.0.1\",\"user\":\"alice\",\"method\":\"BITS_POST\","
            "\"path\":\"/up/file.bin\",\"packet\":\"Fragment\",\"session\":\"" + s + "\",\"range\":\"bytes 0-99/1000\","
            "\"status\":200,\"error\":null,\"bytes_in\":100,\"bytes_out\":245,\"duration_ms\":1.234}\n");
}

TEST(AccessLog, JsonAbsentFieldsAreNull) {
  AccessRecord r;
  r.unixMs = 0;
  r.status = 408;
  r.hasError = true;
  r.errorCode = 0x80070057;
  EXPECT_EQ(line(AccessLogFormat::Json, r),
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":null,\"user\":null,\"method\":null,\"path\":null,"
            "\"packet\":null,\"session\":null,\"range\":null,\"status\":408,\"error\":\"0x80070057\",\"bytes_in\":0,"
            "\"bytes_out\":0,\"duration_ms\":0.000}\n");
}

TEST(AccessLog, JsonEscapesAndReplacesInvalidUtf8) {
  SessionId id{};
  AccessRecord r = fragment(&id);
  r.target = std::string_view("/\"\\\x01\x7f\xc3\xa9\xff\xc3", 9);  // é valid; 0xff and a cut 0xc3 not
  r.user = "\xe2\x82";                                            // a cut three-byte sequence
  std::string s = line(AccessLogFormat::Json, r);
  EXPECT_NE(s.find("\"path\":\"/\\\"\\\\\\u0001\\u007f\xc3\xa9\\ufffd\\ufffd\""), std::string::npos) << s;
  EXPECT_NE(s.find("\"user\":\"\\ufffd\\ufffd\""), std::string::npos) << s;
  // Overlong and surrogate encodings are invalid too.
  r.target = std::string_view("\xc0\xaf\xed\xa0\x80", 5);
  s = line(AccessLogFormat::Json, r);
  EXPECT_NE(s.find("\"path\":\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\""), std::string::npos) << s;
}

TEST(AccessLog, ClientAddresses) {
  char out[kClientAddressTextBytes];
  auto text = [&](const ClientAddress& a) { return std::string(out, formatClientAddress(a, out)); };
  ClientAddress a;
  EXPECT_EQ(text(a), "-");
  a.family = 6;
  a.bytes[15] = 1;
  EXPECT_EQ(text(a), "::1");
  ClientAddress b;
  b.family = 6;
  uint8_t v[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1};
  std::memcpy(b.bytes, v, 16);
  EXPECT_EQ(text(b), "2001:db8::1:0:0:1");  // the first of two equal runs
  uint8_t m[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7};
  std::memcpy(b.bytes, m, 16);
  EXPECT_EQ(text(b), "::ffff:192.0.2.7");
  uint8_t f[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0xab, 0xcd};
  std::memcpy(b.bytes, f, 16);
  EXPECT_EQ(text(b), "fe80::1234:0:0:abcd");
}

std::vector<std::pair<LogLevel, std::string>> gLines;
void sink(LogLevel level, const char* l) { gLines.emplace_back(level, l); }

TEST(AccessLog, RefusalLineNamesReasonAndClient) {
  gLines.clear();
  resetLogLimits();
  setLogSink(sink);
  setLogLevel(LogLevel::Info);
  SessionId id{};
  AccessRecord r = fragment(&id);
  r.packet = PacketType::CreateSession;
  r.session = nullptr;
  r.status = 403;
  r.hasError = true;
  r.errorCode = 0x80070005;
  logRefusal(r, "the file exists and allow-overwrites is off");
  r.status = 416;  // a resume: debug only
  logRefusal(r, nullptr);
  r.status = 200;
  logRefusal(r, nullptr);
  setLogSink(nullptr);
  ASSERT_EQ(gLines.size(), 1u);
  EXPECT_EQ(gLines[0].first, LogLevel::Info);
  EXPECT_EQ(gLines[0].second,
            "refused Create-Session /up/file.bin from 127.0.0.1: 403 the file exists and allow-overwrites is off "
            "(BITS-Error-Code 0x80070005)");
}

}  // namespace
}  // namespace bitsd
