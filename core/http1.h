// The one llhttp wrapper (STYLE.md §2): every HTTP/1 message bitsd parses, requests on the server and
// the admin port, responses from the notified application and (in tools/) from bitsd itself, goes
// through Http1Parser. It owns llhttp's state in fixed storage inside the object, so llhttp.h stays
// out of core's public headers and creating or resetting a parser allocates nothing. The parsers
// built on it (core/request_parser.h, core/response_parser.h) implement Http1Handler and turn
// llhttp's callbacks into one pull-style event at a time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitsd {

// What a handler callback tells llhttp.
enum class Http1Action : uint8_t {
  Continue,  // go on parsing
  Pause,     // stop after this callback: execute() returns Paused, the rest of the input is unread
  SkipBody,  // on headers complete only: the message has no body (the answer to a HEAD request)
  Fail,      // stop with Http1Error::Callback
};

// llhttp's errors, as far as bitsd tells them apart.
enum class Http1Error : uint8_t {
  None,
  InvalidMethod,
  InvalidVersion,
  InvalidContentLength,     // a bad Content-Length value
  UnexpectedContentLength,  // Content-Length together with chunked Transfer-Encoding, or a duplicate
  Callback,                 // a handler returned Http1Action::Fail
  Other,                    // anything else llhttp rejects; errorName() names it
};

// The parser's owner. The callbacks see views into the caller's input, valid during the call only.
// A `*Complete` callback ends the element that the spans before it delivered piece by piece.
class Http1Handler {
 public:
  virtual Http1Action onUrl(const char*, size_t) { return Http1Action::Continue; }
  virtual Http1Action onHeaderField(const char* at, size_t len) = 0;
  virtual Http1Action onHeaderFieldComplete() { return Http1Action::Continue; }
  virtual Http1Action onHeaderValue(const char* at, size_t len) = 0;
  virtual Http1Action onHeaderValueComplete() = 0;
  virtual Http1Action onHeadersComplete() = 0;
  virtual Http1Action onBody(const char* at, size_t len) = 0;
  virtual Http1Action onMessageComplete() = 0;

 protected:
  ~Http1Handler() = default;
};

class Http1Parser {
 public:
  enum class Kind : uint8_t { Request, Response };
  enum class Result : uint8_t { Ok, Paused, Error };
  enum class Method : uint8_t { Post, Get, Head, Other };

  Http1Parser(Kind kind, Http1Handler* handler);
  Http1Parser(const Http1Parser&) = delete;
  Http1Parser& operator=(const Http1Parser&) = delete;

  // A new message stream (also the state after construction). Allocates nothing.
  void reset();

  // Parses `data`. `*consumed` is how much was used: all of it for Ok, up to and including the
  // element whose callback paused for Paused (parsing resumes with the rest), up to the bad byte for
  // Error. After an Error every further call returns Error.
  Result execute(const char* data, size_t len, size_t* consumed);
  // The peer closed the connection: ends a response that is delimited by the close (no
  // Content-Length, not chunked). Ok or Paused when that completed the message; Error if the stream
  // ended inside a message that needed more.
  Result finish();

  Http1Error error() const { return error_; }
  const char* errorName() const;  // llhttp's name of the error, e.g. "HPE_INVALID_CHUNK_SIZE"

  // Valid from onHeadersComplete on.
  uint8_t httpMajor() const;
  uint8_t httpMinor() const;
  Method method() const;   // requests
  int statusCode() const;  // responses
  bool hasContentLength() const;
  bool chunked() const;
  bool keepAlive() const;
  // The Content-Length as sent, in onHeadersComplete; later, the body bytes still to come.
  uint64_t contentLength() const;

 private:
  friend struct Http1Thunks;
  Result fail(Http1Error e);

  // llhttp_t lives here (a static_assert in http1.cc checks that it fits); no header of ours
  // names it.
  alignas(8) unsigned char llhttp_[128];
  Http1Handler* handler_;
  Kind kind_;
  Http1Error error_ = Http1Error::None;
  int llhttpErrno_ = 0;
};

}  // namespace bitsd
