// HTTP/1.1 response parsing, on the wire layer's llhttp wrapper (core/http1.h): what bitsd reads from
// peers it calls (the notified application today; bitsclient, the etcd client and the forwarder), all
// of it untrusted input. Pull-style like RequestParser: feed bytes, get one event at a time.
//
// Each header is handed over on its own (a Header event; a line with an empty name is skipped), so
// the parser keeps only the header being read: a buffer of `maxHeadBytes`, made on first use. The whole head (status line, headers, CRLFs)
// is bounded by `maxHeadBytes`; beyond it the response is an Error. Bodies are delimited by
// Content-Length, by chunked coding or by the close of the connection (finish()); a Body event views
// the caller's input, never a copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "core/http1.h"

namespace bitsd {

struct ResponseHead {
  int status = 0;
  uint8_t httpMajor = 0;
  uint8_t httpMinor = 0;
  bool hasContentLength = false;
  uint64_t contentLength = 0;
  bool chunked = false;    // Transfer-Encoding: chunked
  bool keepAlive = false;  // the connection may carry another request after this response
};

enum class ResponseEvent : uint8_t {
  NeedMore,         // all input consumed; feed more bytes (or finish() at the end of the stream)
  Header,           // headerName()/headerValue() are valid until the next execute()
  HeadersComplete,  // head() is valid until reset()
  Body,             // body() views the input; valid until the caller reuses the input buffer
  MessageComplete,  // the response is over; reset() before parsing another one
  Error,            // errorText() says why; the connection must be closed
};

class ResponseParser : private Http1Handler {
 public:
  static constexpr size_t kDefaultMaxHeadBytes = 16 * 1024;

  explicit ResponseParser(size_t maxHeadBytes = kDefaultMaxHeadBytes);
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Prepares for a new response (also the state after construction). `toHead`: it answers a HEAD
  // request, so it has no body whatever its Content-Length says.
  void reset(bool toHead = false);

  // Parses from `data`; `*consumed` is how many bytes were used. After any event but NeedMore and
  // Error, call again with the rest of the input, even if none is left: llhttp reports some events
  // (the end of a message with no body) only when it runs again. Never reads beyond `len`.
  ResponseEvent execute(const char* data, size_t len, size_t* consumed);
  // The peer closed the connection. MessageComplete if that ended the response (a body delimited by
  // the close) or it was complete already; Error if the response was cut short or never began.
  ResponseEvent finish();

  std::string_view headerName() const { return std::string_view(buf_.get(), nameLen_); }
  std::string_view headerValue() const;  // without surrounding whitespace
  const ResponseHead& head() const { return head_; }
  std::span<const char> body() const { return body_; }
  const char* errorText() const { return errorText_; }
  bool started() const { return started_; }
  bool headersDone() const { return headersDone_; }
  bool messageDone() const { return messageDone_; }

 private:
  Http1Action onHeaderField(const char* at, size_t len) override;
  Http1Action onHeaderFieldComplete() override;
  Http1Action onHeaderValue(const char* at, size_t len) override;
  Http1Action onHeaderValueComplete() override;
  Http1Action onHeadersComplete() override;
  Http1Action onBody(const char* at, size_t len) override;
  Http1Action onMessageComplete() override;

  bool append(const char* at, size_t len);
  ResponseEvent fail(const char* text);

  Http1Parser http_{Http1Parser::Kind::Response, this};
  size_t maxHeadBytes_;
  std::unique_ptr<char[]> buf_;  // the header being read: name, then value
  size_t nameLen_ = 0;
  size_t valueLen_ = 0;
  bool headerTaken_ = false;  // the header in buf_ was reported; the next field starts a new one
  bool failed_ = false;
  size_t headBytes_ = 0;
  bool toHead_ = false;
  bool started_ = false;
  bool headersDone_ = false;
  bool messageDone_ = false;
  bool messageQueued_ = false;  // the end of a body-less answer to HEAD, reported after HeadersComplete
  ResponseEvent pending_ = ResponseEvent::NeedMore;
  const char* errorText_ = "";
  ResponseHead head_;
  std::span<const char> body_;
};

}  // namespace bitsd
