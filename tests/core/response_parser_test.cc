// ResponseParser (core/response_parser.h): the wire layer's reading of HTTP responses from peers.
#include "core/response_parser.h"

#include <gtest/gtest.h>

#include "core/response.h"

#include <string>
#include <utility>
#include <vector>

namespace bitsd {
namespace {

struct Parsed {
  bool headers = false;
  bool complete = false;
  bool error = false;
  std::string errorText;
  ResponseHead head;
  std::vector<std::pair<std::string, std::string>> fields;
  std::string body;
  size_t consumed = 0;
};

// Feeds `text` in reads of `chunk` bytes; `eof`: the peer closes after the last byte.
Parsed parse(const std::string& text, size_t chunk, bool eof = false, size_t maxHead = ResponseParser::kDefaultMaxHeadBytes,
             bool toHead = false) {
  ResponseParser p(maxHead);
  p.reset(toHead);
  Parsed out;
  size_t pos = 0;
  for (;;) {
    // One read; then events until the parser needs more.
    std::string read = text.substr(pos, std::min(chunk, text.size() - pos));
    size_t at = 0;
    ResponseEvent e = ResponseEvent::NeedMore;
    for (int guard = 0; guard < 100000; ++guard) {
      size_t used = 0;
      e = p.execute(read.data() + at, read.size() - at, &used);
      at += used;
      if (e == ResponseEvent::Header) {
        out.fields.emplace_back(std::string(p.headerName()), std::string(p.headerValue()));
      } else if (e == ResponseEvent::HeadersComplete) {
        out.headers = true;
        out.head = p.head();
      } else if (e == ResponseEvent::Body) {
        out.body.append(p.body().data(), p.body().size());
      } else {
        break;
      }
    }
    pos += at;
    out.consumed = pos;
    if (e == ResponseEvent::NeedMore && at < read.size()) {
      ADD_FAILURE() << "NeedMore left " << read.size() - at << " bytes of the read unparsed";
      out.error = true;
      return out;
    }
    if (e == ResponseEvent::MessageComplete) {
      out.complete = true;
      return out;
    }
    if (e == ResponseEvent::Error) {
      out.error = true;
      out.errorText = p.errorText();
      return out;
    }
    if (pos >= text.size()) break;
  }
  if (eof) {
    ResponseEvent e = p.finish();
    out.complete = e == ResponseEvent::MessageComplete;
    out.error = e == ResponseEvent::Error;
    out.errorText = p.errorText();
  }
  return out;
}

const size_t kAllAtOnce = 1 << 20;

TEST(ResponseParser, StatusLineAndHeaders) {
  std::string r =
      "HTTP/1.1 200 OK\r\nBITS-Static-Response-URL:  http://app/x  \r\nX-Other: 1\r\n"
      "Content-Length: 0\r\n\r\n";
  for (size_t chunk : {kAllAtOnce, size_t{1}, size_t{7}}) {
    Parsed out = parse(r, chunk);
    ASSERT_TRUE(out.complete) << chunk;
    EXPECT_EQ(out.head.status, 200);
    EXPECT_EQ(out.head.httpMajor, 1);
    EXPECT_EQ(out.head.httpMinor, 1);
    ASSERT_EQ(out.fields.size(), 3u);
    EXPECT_EQ(out.fields[0].first, "BITS-Static-Response-URL");
    EXPECT_EQ(out.fields[0].second, "http://app/x");  // surrounding whitespace trimmed
    EXPECT_EQ(out.fields[1].first, "X-Other");
    EXPECT_EQ(out.fields[1].second, "1");
    EXPECT_EQ(out.fields[2].first, "Content-Length");
    EXPECT_TRUE(out.head.hasContentLength);
    EXPECT_EQ(out.head.contentLength, 0u);
    EXPECT_TRUE(out.head.keepAlive);
    EXPECT_EQ(out.consumed, r.size());
  }
}

TEST(ResponseParser, OtherStatusesAndEmptyValues) {
  Parsed out = parse("HTTP/1.0 404 Not Found\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n", kAllAtOnce);
  ASSERT_TRUE(out.complete);
  EXPECT_EQ(out.head.status, 404);
  EXPECT_EQ(out.head.httpMinor, 0);
  EXPECT_FALSE(out.head.keepAlive);  // HTTP/1.0 without keep-alive
  ASSERT_EQ(out.fields.size(), 2u);
  EXPECT_EQ(out.fields[0].first, "X-Empty");
  EXPECT_EQ(out.fields[0].second, "");
}

// Found by fuzz_response: llhttp passes a header line with an empty name; it is not reported.
TEST(ResponseParser, AHeaderLineWithAnEmptyNameIsSkipped) {
  Parsed out = parse("HTTP/1.1 200 OK\r\n: y\r\nX: 1\r\nContent-Length: 0\r\n\r\n", kAllAtOnce);
  ASSERT_TRUE(out.complete);
  ASSERT_EQ(out.fields.size(), 2u);
  EXPECT_EQ(out.fields[0].first, "X");
  EXPECT_EQ(out.fields[0].second, "1");
}

TEST(ResponseParser, ContentLengthBody) {
  std::string r = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
  for (size_t chunk : {kAllAtOnce, size_t{1}, size_t{5}}) {
    Parsed out = parse(r + "NEXT", chunk);  // bytes after the body are not part of it
    ASSERT_TRUE(out.complete) << chunk;
    EXPECT_EQ(out.body, "hello world");
    EXPECT_EQ(out.head.contentLength, 11u);
    EXPECT_FALSE(out.head.chunked);
  }
}

TEST(ResponseParser, BodyViewsTheInput) {
  ResponseParser p;
  std::string r = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
  size_t pos = 0;
  const char* bodyAt = nullptr;
  for (int i = 0; i < 10 && bodyAt == nullptr; ++i) {
    size_t used = 0;
    ResponseEvent e = p.execute(r.data() + pos, r.size() - pos, &used);
    pos += used;
    if (e == ResponseEvent::Body) bodyAt = p.body().data();
  }
  EXPECT_EQ(bodyAt, r.data() + r.size() - 3);  // zero copy
}

TEST(ResponseParser, ChunkedBody) {
  std::string r =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (size_t chunk : {kAllAtOnce, size_t{1}, size_t{4}}) {
    Parsed out = parse(r, chunk);
    ASSERT_TRUE(out.complete) << chunk;
    EXPECT_TRUE(out.head.chunked);
    EXPECT_FALSE(out.head.hasContentLength);
    EXPECT_EQ(out.body, "hello world");
  }
}

TEST(ResponseParser, BadChunkSizeIsAnError) {
  Parsed out = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", kAllAtOnce);
  EXPECT_TRUE(out.error);
  EXPECT_FALSE(out.complete);
}

TEST(ResponseParser, CloseDelimitedBody) {
  std::string r = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of this until the close";
  for (size_t chunk : {kAllAtOnce, size_t{3}}) {
    Parsed out = parse(r, chunk, /*eof=*/false);
    EXPECT_FALSE(out.complete) << "the body runs until the peer closes";
    out = parse(r, chunk, /*eof=*/true);
    ASSERT_TRUE(out.complete) << chunk;
    EXPECT_FALSE(out.error);
    EXPECT_EQ(out.body, "all of this until the close");
    EXPECT_FALSE(out.head.keepAlive);
  }
}

TEST(ResponseParser, CloseInsideTheResponseIsAnError) {
  Parsed out = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", kAllAtOnce, /*eof=*/true);
  EXPECT_TRUE(out.error);
  EXPECT_FALSE(out.complete);
  out = parse("HTTP/1.1 200 OK\r\nX-Head", kAllAtOnce, /*eof=*/true);
  EXPECT_TRUE(out.error);
  out = parse("", kAllAtOnce, /*eof=*/true);
  EXPECT_TRUE(out.error);
  EXPECT_EQ(out.errorText, "the connection closed before a response");
}

TEST(ResponseParser, NoBodyStatuses) {
  // 204 and 304 have no body, whatever follows; 100 Continue is a message of its own.
  Parsed out = parse("HTTP/1.1 204 No Content\r\n\r\n", kAllAtOnce);
  EXPECT_TRUE(out.complete);
  EXPECT_EQ(out.head.status, 204);
  out = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", kAllAtOnce);
  EXPECT_TRUE(out.complete);
  EXPECT_EQ(out.head.status, 100);
  EXPECT_EQ(out.consumed, std::string("HTTP/1.1 100 Continue\r\n\r\n").size());
}

TEST(ResponseParser, AnswerToHeadHasNoBody) {
  std::string r = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
  Parsed out = parse(r, kAllAtOnce, false, ResponseParser::kDefaultMaxHeadBytes, /*toHead=*/true);
  ASSERT_TRUE(out.headers);
  ASSERT_TRUE(out.complete);
  EXPECT_EQ(out.head.contentLength, 1000u);
  EXPECT_EQ(out.body, "");
  out = parse(r, kAllAtOnce);  // not to HEAD: the body is awaited
  EXPECT_FALSE(out.complete);
}

TEST(ResponseParser, ResetParsesTheNextResponse) {
  ResponseParser p;
  std::string a = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
  std::string b = "HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\nx";
  for (const std::string* r : {&a, &b}) {
    p.reset();
    size_t pos = 0;
    ResponseEvent e = ResponseEvent::NeedMore;
    for (int i = 0; i < 20 && e != ResponseEvent::MessageComplete; ++i) {
      size_t used = 0;
      e = p.execute(r->data() + pos, r->size() - pos, &used);
      pos += used;
    }
    ASSERT_EQ(e, ResponseEvent::MessageComplete);
  }
  EXPECT_EQ(p.head().status, 202);
}

TEST(ResponseParser, OversizedHeadIsAnError) {
  std::string big = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(300, 'a') + "\r\nContent-Length: 0\r\n\r\n";
  for (size_t chunk : {kAllAtOnce, size_t{1}, size_t{64}}) {
    Parsed out = parse(big, chunk, false, 256);
    EXPECT_TRUE(out.error) << chunk;
    EXPECT_EQ(out.errorText, "response head too large") << chunk;
    EXPECT_TRUE(parse(big, chunk, false, 1024).complete) << chunk;
  }
  // Many small headers count too, and so does a long status line.
  std::string many = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 100; ++i) many += "X: y\r\n";
  many += "\r\n";
  EXPECT_TRUE(parse(many, kAllAtOnce, false, 256).error);
  std::string reason = "HTTP/1.1 200 " + std::string(400, 'R') + "\r\nContent-Length: 0\r\n\r\n";
  EXPECT_TRUE(parse(reason, kAllAtOnce, false, 256).error);
  EXPECT_TRUE(parse(reason, kAllAtOnce, false, 1024).complete);
}

TEST(ResponseParser, GarbageIsAnErrorNotACrash) {
  const char* inputs[] = {
      "garbage\r\n\r\n",
      "HTTP/1.1 abc OK\r\n\r\n",
      "HTTP/9.9 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
      "\x00\x01\x02\xff",
  };
  for (const char* in : inputs) {
    std::string s(in, in[0] == '\0' ? 4 : std::char_traits<char>::length(in));
    for (size_t chunk : {kAllAtOnce, size_t{1}}) {
      Parsed out = parse(s, chunk, /*eof=*/true);
      EXPECT_TRUE(out.error) << s;
      EXPECT_FALSE(out.complete) << s;
      EXPECT_STRNE(out.errorText.c_str(), "") << s;
    }
  }
  // After an error the parser stays failed.
  ResponseParser p;
  size_t used = 0;
  EXPECT_EQ(p.execute("nope\r\n", 6, &used), ResponseEvent::Error);
  EXPECT_EQ(p.execute("HTTP/1.1 200 OK\r\n\r\n", 19, &used), ResponseEvent::Error);
  EXPECT_EQ(used, 0u);
  EXPECT_EQ(p.finish(), ResponseEvent::Error);
}

// The server's own answers (core/response.h), read back by the wire layer's parser.
std::string field(const Parsed& p, const std::string& name) {
  for (const auto& [n, v] : p.fields) {
    if (n == name) return v;
  }
  return "(absent)";
}

TEST(ServerAnswers, RequestTimeoutIs408WithAnErrorAndClose) {
  char out[kMaxAckBytes];
  size_t n = formatRequestTimeout(out);
  Parsed p = parse(std::string(out, n), kAllAtOnce);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(p.consumed, n);
  EXPECT_EQ(p.head.status, 408);
  EXPECT_EQ(field(p, "BITS-Packet-Type"), "Ack");
  EXPECT_EQ(field(p, "Content-Length"), "0");
  EXPECT_EQ(field(p, "BITS-Error-Code"), "0x80070057");
  EXPECT_EQ(field(p, "BITS-Error-Context"), "0x5");
  EXPECT_EQ(field(p, "Connection"), "close");
  EXPECT_EQ(field(p, "Retry-After"), "(absent)");
  EXPECT_EQ(std::string(out, n).rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0u);
}

TEST(ServerAnswers, ServerBusyIs503WithRetryAfterAndClose) {
  char out[kMaxAckBytes];
  size_t n = formatServerBusy(out);
  Parsed p = parse(std::string(out, n), kAllAtOnce);
  ASSERT_TRUE(p.complete);
  EXPECT_EQ(p.head.status, 503);
  EXPECT_EQ(field(p, "BITS-Packet-Type"), "Ack");
  EXPECT_EQ(field(p, "Content-Length"), "0");
  EXPECT_EQ(field(p, "BITS-Error-Code"), "0x800705AA");
  EXPECT_EQ(field(p, "Retry-After"), "5");
  EXPECT_EQ(field(p, "Connection"), "close");
  n = formatServerBusy(out, 30);
  EXPECT_EQ(field(parse(std::string(out, n), kAllAtOnce), "Retry-After"), "30");
}

}  // namespace
}  // namespace bitsd
