// The hand-off's request head (core/notify.h formatNotifyHead) and its base64, byte for byte.
#include <gtest/gtest.h>

#include <string>

#include "core/notify.h"

namespace bitsd {
namespace {

std::string b64(std::string_view s) {
  char out[64];
  return std::string(out, base64Encode(reinterpret_cast<const uint8_t*>(s.data()), s.size(), out));
}

TEST(NotifyHead, Base64MatchesRfc4648) {
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foob"), "Zm9vYg==");
  EXPECT_EQ(b64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
}

TEST(NotifyHead, ByValueWithDigestAndPort) {
  // SHA-256("abc")
  const uint8_t sha[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                           0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  NotifyRequest req;
  req.url = "http://app.local:8080/in?x=1";
  req.originalUrl = "http://bits.local/up/a.bin";
  req.byValue = true;
  req.contentBytes = 3;
  req.transactionId = "tx-1";
  req.sessionId = "{00000000-0000-0000-0000-000000000001}";
  req.sha256 = sha;
  HttpUrl url;
  ASSERT_TRUE(parseHttpUrl(req.url, &url));
  char out[2048];
  std::string h(out, formatNotifyHead(req, url, out, sizeof out));
  EXPECT_EQ(h,
            "POST /in?x=1 HTTP/1.1\r\nHost: app.local:8080\r\nUser-Agent: bitsd BITSExts/1.5\r\n"
            "BITS-Original-Request-URL: http://bits.local/up/a.bin\r\nBITS-Transaction-Id: tx-1\r\n"
            "BITS-Session-Id: {00000000-0000-0000-0000-000000000001}\r\n"
            "Repr-Digest: sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=:\r\n"
            "Content-Length: 3\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
}

TEST(NotifyHead, ByReferenceQueryOnlyIpv6AndTooSmall) {
  NotifyRequest req;
  req.url = "http://[::1]?q";
  req.originalUrl = "http://b/x";
  req.requestFile = "/s/req";
  req.replyFile = "/s/rep";
  req.transactionId = "t";
  req.sessionId = "s";
  HttpUrl url;
  ASSERT_TRUE(parseHttpUrl(req.url, &url));
  char out[2048];
  std::string h(out, formatNotifyHead(req, url, out, sizeof out));
  EXPECT_EQ(h,
            "POST /?q HTTP/1.1\r\nHost: [::1]\r\nUser-Agent: bitsd BITSExts/1.5\r\nBITS-Original-Request-URL: http://b/x\r\n"
            "BITS-Request-DataFile-Name: /s/req\r\nBITS-Response-DataFile-Name: /s/rep\r\nBITS-Transaction-Id: t\r\n"
            "BITS-Session-Id: s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  // A head that does not fit is refused whole (0), never sent cut short.
  EXPECT_EQ(formatNotifyHead(req, url, out, 64), 0u);
}

}  // namespace
}  // namespace bitsd
