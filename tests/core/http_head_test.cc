// HeadWriter (core/http_head.h), the wire layer's head formatter, and the server's answers written
// with it (core/response.h), byte for byte.
#include "core/http_head.h"

#include <gtest/gtest.h>

#include <string>

#include "core/request_parser.h"
#include "core/response.h"

namespace bitsd {
namespace {

TEST(HeadWriter, RequestHeadParsesBack) {
  char out[512];
  HeadWriter w(out, sizeof out);
  w.requestLine("BITS_POST", "/up/file.bin").header("BITS-Packet-Type", "Fragment").headerNumber("Content-Length", 0);
  w.header("Content-Range", "bytes 0-9/10");
  std::string head(out, w.end());
  EXPECT_FALSE(w.truncated());
  EXPECT_EQ(head,
            "BITS_POST /up/file.bin HTTP/1.1\r\nBITS-Packet-Type: Fragment\r\nContent-Length: 0\r\n"
            "Content-Range: bytes 0-9/10\r\n\r\n");
  RequestParser p(8192);
  size_t used = 0;
  ASSERT_EQ(p.execute(head.data(), head.size(), &used), ParseEvent::HeadersComplete);
  EXPECT_EQ(p.head().method, HttpMethod::BitsPost);
  EXPECT_EQ(p.head().target, "/up/file.bin");
  EXPECT_EQ(p.head().value(HeaderId::ContentRange), "bytes 0-9/10");
}

TEST(HeadWriter, NumbersAndStatusLine) {
  char out[256];
  HeadWriter w(out, sizeof out);
  w.statusLine(206).headerNumber("A", 0).headerNumber("B", 18446744073709551615u);
  EXPECT_EQ(std::string(out, w.end()), "HTTP/1.1 206 Partial Content\r\nA: 0\r\nB: 18446744073709551615\r\n\r\n");
}

TEST(HeadWriter, WhatDoesNotFitIsLeftOutWholeAndTheHeadStillEnds) {
  char out[40];
  HeadWriter w(out, sizeof out);
  w.statusLine(200).header("X-Long", std::string(30, 'x')).header("Y", "1");
  EXPECT_TRUE(w.truncated());
  EXPECT_EQ(std::string(out, w.end()), "HTTP/1.1 200 OK\r\nY: 1\r\n\r\n");
  HeadWriter tiny(out, 2);
  tiny.statusLine(200);
  EXPECT_EQ(std::string(out, tiny.end()), "\r\n");
}

// The exact bytes of every Ack field, in order (what the server always sent).
TEST(HeadWriter, AckBytesAreExact) {
  AckSpec spec;
  spec.status = 503;
  spec.createSession = true;
  spec.hostId = "host-1";
  spec.hostIdFallbackSeconds = 60;
  SessionId id{};
  spec.sessionId = &id;
  spec.hasReceived = true;
  spec.receivedBytes = 42;
  spec.hasError = true;
  spec.errorCode = 0x800705AA;
  spec.replyUrl = "http://h/r";
  spec.allowHeader = true;
  spec.retryAfterSeconds = 7;
  spec.authenticate = true;
  spec.close = true;
  char out[kMaxAckBytes];
  std::string text(out, formatAck(spec, out));
  EXPECT_EQ(text,
            "HTTP/1.1 503 Service Unavailable\r\nBITS-Packet-Type: Ack\r\nContent-Length: 0\r\n"
            "BITS-Protocol: {7df0354d-249b-430f-820d-3d2a9bef4931}\r\nAccept-Encoding: identity\r\n"
            "BITS-Host-Id: host-1\r\nBITS-Host-Id-Fallback-Timeout: 60\r\n"
            "BITS-Session-Id: {00000000-0000-0000-0000-000000000000}\r\n"
            "BITS-Received-Content-Range: 42\r\nBITS-Error-Code: 0x800705AA\r\nBITS-Error-Context: 0x5\r\n"
            "BITS-Reply-URL: http://h/r\r\nAllow: BITS_POST\r\nRetry-After: 7\r\n"
            "WWW-Authenticate: Basic realm=\"bitsd\", charset=\"UTF-8\"\r\nConnection: close\r\n\r\n");
}

TEST(HeadWriter, ReplyHeadBytesAreExact) {
  ReplyHeadSpec spec;
  spec.status = 206;
  spec.contentLength = 4;
  spec.rangeBegin = 2;
  spec.rangeEnd = 6;
  spec.totalBytes = 10;
  spec.lastModified = 784111777;  // RFC 9110's example date
  spec.close = true;
  char out[kMaxAckBytes];
  EXPECT_EQ(std::string(out, formatReplyHead(spec, out)),
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\nAccept-Ranges: bytes\r\n"
            "Content-Type: application/octet-stream\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            "Content-Range: bytes 2-5/10\r\nConnection: close\r\n\r\n");
  spec = ReplyHeadSpec();
  spec.status = 416;
  spec.totalBytes = 10;
  spec.allowHeader = true;
  EXPECT_EQ(std::string(out, formatReplyHead(spec, out)),
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nAccept-Ranges: bytes\r\n"
            "Content-Range: bytes */10\r\nAllow: GET, HEAD, BITS_POST\r\n\r\n");
}

}  // namespace
}  // namespace bitsd
