#include "core/request_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace bitsd {
namespace {

struct Parsed {
  bool headers = false;
  bool complete = false;
  int error = 0;
  RequestHead head;
  std::string target;
  std::string packetType;
  std::string range;
  std::string body;
  std::vector<const char*> bodyPtrs;
  size_t consumed = 0;
};

// Feeds `text` in pieces of `chunk` bytes, like successive socket reads.
Parsed parse(const std::string& text, size_t chunk, size_t maxHeader = 8192) {
  RequestParser p(maxHeader);
  Parsed out;
  size_t pos = 0;
  bool kick = false;
  for (int guard = 0; guard < 1000000; ++guard) {
    size_t n = std::min(chunk, text.size() - pos);
    if (n == 0 && !kick) break;
    kick = false;
    size_t used = 0;
    ParseEvent e = p.execute(text.data() + pos, n, &used);
    pos += used;
    out.consumed = pos;
    if (e == ParseEvent::HeadersComplete) {
      out.headers = true;
      out.head = p.head();
      out.target = std::string(p.head().target);
      out.packetType = std::string(p.head().value(HeaderId::PacketType));
      out.range = std::string(p.head().value(HeaderId::ContentRange));
      kick = true;
    } else if (e == ParseEvent::Body) {
      out.body.append(p.body().data(), p.body().size());
      out.bodyPtrs.push_back(p.body().data());
      kick = true;
    } else if (e == ParseEvent::MessageComplete) {
      out.complete = true;
      break;
    } else if (e == ParseEvent::Error) {
      out.error = p.errorStatus();
      break;
    }
  }
  return out;
}

const std::string kFragment =
    "BITS_POST /upload/big.iso HTTP/1.1\r\n"
    "Host: appliance\r\n"
    "BITS-Packet-Type: Fragment\r\n"
    "BITS-Session-Id: {A0FF5911-4144-45B3-BF27-27AFC8EC8A67}\r\n"
    "Content-Range: bytes 0-9/20\r\n"
    "Content-Length: 10\r\n"
    "Connection: Keep-Alive\r\n"
    "\r\n"
    "0123456789";

class ChunkedDelivery : public ::testing::TestWithParam<size_t> {};

TEST_P(ChunkedDelivery, BitsPostParsesAtAnyReadSize) {
  Parsed r = parse(kFragment, GetParam());
  ASSERT_EQ(r.error, 0);
  ASSERT_TRUE(r.headers);
  ASSERT_TRUE(r.complete);
  EXPECT_EQ(r.head.method, HttpMethod::BitsPost);
  EXPECT_EQ(r.target, "/upload/big.iso");
  EXPECT_EQ(r.packetType, "Fragment");
  EXPECT_EQ(r.range, "bytes 0-9/20");
  EXPECT_TRUE(r.head.hasContentLength);
  EXPECT_EQ(r.head.contentLength, 10u);
  EXPECT_TRUE(r.head.keepAlive);
  EXPECT_EQ(r.body, "0123456789");
  EXPECT_EQ(r.consumed, kFragment.size());
}

// 1 byte at a time splits "BITS_POST" across nine reads; the others split it elsewhere.
INSTANTIATE_TEST_SUITE_P(ReadSizes, ChunkedDelivery, ::testing::Values(1, 2, 3, 4, 5, 7, 9, 10, 13, 64, 4096));

TEST(RequestParser, BodyIsAViewIntoTheInputNotACopy) {
  Parsed r;
  RequestParser p(8192);
  size_t used = 0;
  const std::string& t = kFragment;
  ASSERT_EQ(p.execute(t.data(), t.size(), &used), ParseEvent::HeadersComplete);
  size_t pos = used;
  ASSERT_EQ(p.execute(t.data() + pos, t.size() - pos, &used), ParseEvent::Body);
  EXPECT_EQ(p.body().data(), t.data() + t.size() - 10);
  EXPECT_EQ(p.body().size(), 10u);
}

TEST(RequestParser, OtherMethodsParseAndAreReportedAsSuch) {
  Parsed g = parse("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 3);
  ASSERT_TRUE(g.complete);
  EXPECT_EQ(g.head.method, HttpMethod::Get);
  Parsed post = parse("POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 1);
  ASSERT_TRUE(post.complete);
  EXPECT_EQ(post.head.method, HttpMethod::Other);  // plain POST is not BITS_POST
  Parsed unknown = parse("BITS_POSTX /x HTTP/1.1\r\n\r\n", 1);
  EXPECT_EQ(unknown.error, 405);
  Parsed lower = parse("bits_post /x HTTP/1.1\r\n\r\n", 1);
  EXPECT_NE(lower.error, 0);
}

TEST(RequestParser, MalformedRequestsGiveAStatus) {
  EXPECT_EQ(parse("BITS_POST\x01 /x HTTP/1.1\r\n\r\n", 4).error, 400);
  EXPECT_EQ(parse("AAAAAAAAAAAAAAAAAAAAAAAA /x HTTP/1.1\r\n\r\n", 4).error, 400);
  EXPECT_EQ(parse("BITS_POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 4).error, 400);
  EXPECT_EQ(parse("BITS_POST /x HTTP/9.9\r\n\r\n", 4).error, 505);
  EXPECT_EQ(parse("BITS_POST /x JUNK\r\n\r\n", 4).error, 400);
  EXPECT_EQ(parse("BITS_POST /x HTTP/1.1\r\nBad Header\r\n\r\n", 4).error, 400);
}

TEST(RequestParser, HeaderBytesOverTheLimitGive431) {
  std::string big = "BITS_POST /x HTTP/1.1\r\nX-Filler: " + std::string(3000, 'a') + "\r\n\r\n";
  EXPECT_EQ(parse(big, 100, 1024).error, 431);
  EXPECT_EQ(parse(big, 100, 8192).error, 0);
}

TEST(RequestParser, OversizedKeptValueIsFlagged) {
  std::string t = "BITS_POST /x HTTP/1.1\r\nBITS-Session-Id: " + std::string(5000, 'a') +
                  "\r\nContent-Length: 0\r\n\r\n";
  Parsed r = parse(t, 512, 16384);
  ASSERT_TRUE(r.headers);
  EXPECT_TRUE(r.head.oversizedValue);
}

// BITS-UPLOAD.md §1 and §7.1: any header value over 4 KB is refused, not only the ones bitsd keeps;
// 4 KB itself is fine. The value arrives in small reads, so the length is counted across them.
TEST(RequestParser, AnyHeaderValueOver4KBIsFlagged) {
  for (const char* name : {"X-Unknown", "Content-Name", "User-Agent", "BITS-Packet-Type"}) {
    std::string over = "BITS_POST /x HTTP/1.1\r\n" + std::string(name) + ": " + std::string(4097, 'a') +
                       "\r\nContent-Length: 0\r\n\r\n";
    Parsed r = parse(over, 7, 16384);
    ASSERT_TRUE(r.headers) << name;
    EXPECT_TRUE(r.head.oversizedValue) << name;
    std::string at = "BITS_POST /x HTTP/1.1\r\n" + std::string(name) + ": " + std::string(4096, 'a') +
                     "\r\nContent-Length: 0\r\n\r\n";
    Parsed ok = parse(at, 7, 16384);
    ASSERT_TRUE(ok.headers) << name;
    EXPECT_FALSE(ok.head.oversizedValue) << name;
    // Spaces and tabs around a value are not part of it (RFC 9110 §5.5): 4 KB with them is fine,
    // and spaces inside a value count.
    std::string padded = "BITS_POST /x HTTP/1.1\r\n" + std::string(name) + ":   " + std::string(4096, 'a') +
                         " \t  \r\nContent-Length: 0\r\n\r\n";
    for (size_t chunk : {1u, 7u, 4100u}) {
      Parsed p = parse(padded, chunk, 16384);
      ASSERT_TRUE(p.headers) << name;
      EXPECT_FALSE(p.head.oversizedValue) << name << " in reads of " << chunk;
    }
    std::string inner = "BITS_POST /x HTTP/1.1\r\n" + std::string(name) + ": " + std::string(2048, 'a') + " " +
                        std::string(2048, 'b') + "\r\nContent-Length: 0\r\n\r\n";
    EXPECT_TRUE(parse(inner, 7, 16384).head.oversizedValue) << name;
  }
}

TEST(RequestParser, DuplicateKeptHeaderIsFlagged) {
  Parsed r = parse("BITS_POST /x HTTP/1.1\r\nBITS-Packet-Type: Ping\r\nbits-packet-type: Fragment\r\n"
                   "Content-Length: 0\r\n\r\n", 5);
  ASSERT_TRUE(r.headers);
  EXPECT_TRUE(r.head.duplicateHeader);
}

TEST(RequestParser, MissingContentLengthIsVisible) {
  Parsed r = parse("BITS_POST /x HTTP/1.1\r\nBITS-Packet-Type: Ping\r\n\r\n", 7);
  ASSERT_TRUE(r.headers);
  EXPECT_FALSE(r.head.hasContentLength);
}

// What the engine relies on for bodyless packets sent without Content-Length (§10.1, RFC 9112 §6.3):
// the request is complete at the end of its head, with no body and nothing more to wait for, however
// the bytes are split, and the next request's bytes are left for it.
TEST(RequestParser, RequestWithoutContentLengthEndsAtItsHead) {
  const std::string one = "BITS_POST /x HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: Close-Session\r\n\r\n";
  for (size_t chunk : {size_t{1}, size_t{7}, one.size()}) {
    Parsed r = parse(one + "BITS_POST /y HTTP/1.1\r\n", chunk);
    EXPECT_TRUE(r.headers) << chunk;
    EXPECT_TRUE(r.complete) << chunk;
    EXPECT_EQ(r.error, 0) << chunk;
    EXPECT_TRUE(r.body.empty()) << chunk;
    EXPECT_FALSE(r.head.hasContentLength);
    EXPECT_EQ(r.head.contentLength, 0u);
    EXPECT_EQ(r.consumed, one.size()) << chunk;
  }
}

TEST(RequestParser, ResetParsesTheNextRequestOnTheConnection) {
  RequestParser p(8192);
  std::string two = kFragment + kFragment;
  size_t pos = 0, used = 0;
  int completes = 0;
  for (int i = 0; i < 20 && completes < 2; ++i) {
    ParseEvent e = p.execute(two.data() + pos, two.size() - pos, &used);
    pos += used;
    if (e == ParseEvent::MessageComplete) {
      ++completes;
      p.reset();
    }
    ASSERT_NE(e, ParseEvent::Error);
  }
  EXPECT_EQ(completes, 2);
  EXPECT_EQ(pos, two.size());
}

TEST(RequestParser, Http10IsReportedForTheEngineToRefuse) {
  Parsed r = parse("BITS_POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 2);
  ASSERT_TRUE(r.headers);
  EXPECT_EQ(r.head.httpMinor, 0);
  EXPECT_FALSE(r.head.keepAlive);
}

}  // namespace
}  // namespace bitsd

namespace bitsd {
namespace {

// Regression: running llhttp on no input in the middle of a body (as the server does after each
// event) must not report an empty Body event, or the caller spins forever.
TEST(RequestParser, NoInputInTheMiddleOfABodyIsNotABodyEvent) {
  RequestParser p(8192);
  std::string head = "BITS_POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
  size_t used = 0;
  ASSERT_EQ(p.execute(head.data(), head.size(), &used), ParseEvent::HeadersComplete);
  ASSERT_EQ(p.execute(head.data() + used, head.size() - used, &used), ParseEvent::NeedMore);
  ASSERT_EQ(p.execute("abcd", 4, &used), ParseEvent::Body);
  EXPECT_EQ(p.execute("", 0, &used), ParseEvent::NeedMore);
  EXPECT_EQ(p.execute("", 0, &used), ParseEvent::NeedMore);
  ASSERT_EQ(p.execute("efghij", 6, &used), ParseEvent::Body);
  EXPECT_EQ(p.body().size(), 6u);
  EXPECT_EQ(p.execute("", 0, &used), ParseEvent::MessageComplete);
}

TEST(RequestParser, HeadersArrivingInOneReadStillCountTowardTheLimit) {
  RequestParser p(1024);
  std::string t = "BITS_POST /x HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\nContent-Length: 0\r\n\r\n";
  size_t used = 0;
  EXPECT_EQ(p.execute(t.data(), t.size(), &used), ParseEvent::Error);
  EXPECT_EQ(p.errorStatus(), 431);
}

}  // namespace
}  // namespace bitsd
