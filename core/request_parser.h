// HTTP/1.1 request parsing for BITS, on the wire layer's llhttp wrapper (core/http1.h), behind a small
// pull-style interface: feed bytes, get one event at a time (STYLE.md §2, after Envoy's http1 parser
// wrapper). Owns the request head bitsd reads (RequestHead) and the BITS_POST pre-scan.
//
// BITS_POST: stock llhttp rejects the extension method (HPE_INVALID_METHOD). We do not patch llhttp.
// Instead a tiny pre-scanner holds back the method token of each request (at most 16 bytes, kept in
// the parser across reads, so a token split over any number of reads works) until the space that
// ends it. If the token is `BITS_POST`, llhttp is handed the equivalent known method `POST`, and the
// head records HttpMethod::BitsPost. Any other token is handed over unchanged.
//
// Zero copy: a Body event exposes a view into the caller's input buffer, never a copy. Header values
// that the server needs are copied into a fixed arena inside the parser (so they survive reads);
// everything else is ignored as it streams past.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/http1.h"

namespace bitsd {

enum class HttpMethod : uint8_t { BitsPost, Get, Head, Other };

// The request headers bitsd reads. Everything else is ignored, as BITS requires.
enum class HeaderId : uint8_t {
  PacketType,
  SessionId,
  ContentRange,
  SupportedProtocols,
  ContentEncoding,
  Host,
  Expect,
  TransferEncoding,
  TransactionId,      // the transaction-id header; its name is configurable (default BITS-Transaction-Id)
  Range,              // reply downloads (GET/HEAD)
  IfUnmodifiedSince,  // reply downloads
  Authorization,      // Basic credentials (authentication on)
  FarmForwarded,      // BITS-Farm-Forwarded: another node of the farm forwarded this request (its name)
  kCount
};

struct RequestHead {
  HttpMethod method = HttpMethod::Other;
  uint8_t httpMajor = 0;
  uint8_t httpMinor = 0;
  bool hasContentLength = false;
  uint64_t contentLength = 0;
  bool keepAlive = true;
  bool duplicateHeader = false;  // a header from HeaderId appeared twice
  bool oversizedValue = false;   // a header value (any header) exceeded kMaxValueBytes
  std::string_view target;       // request-target as sent (views into the parser's arena)
  std::string_view values[static_cast<size_t>(HeaderId::kCount)];
  bool present[static_cast<size_t>(HeaderId::kCount)] = {};

  std::string_view value(HeaderId id) const { return values[static_cast<size_t>(id)]; }
  bool has(HeaderId id) const { return present[static_cast<size_t>(id)]; }
};

enum class ParseEvent : uint8_t {
  NeedMore,         // all input consumed; feed more bytes
  HeadersComplete,  // head() is valid until reset()
  Body,             // body() views the input; valid until the caller reuses the input buffer
  MessageComplete,  // the request is over; call reset() before feeding the next request's bytes
  Error,            // errorStatus() says what to answer; the connection must then be closed
};

class RequestParser : private Http1Handler {
 public:
  static constexpr size_t kArenaBytes = 6144;
  static constexpr size_t kMaxValueBytes = 4096;  // BITS-UPLOAD.md §1: values over 4 KB → 400
  static constexpr size_t kMaxMethodBytes = 16;

  // `maxHeaderBytes`: request line plus headers; beyond it the request gets 431.
  static constexpr size_t kMaxTransactionHeaderBytes = 32;
  static constexpr std::string_view kDefaultTransactionHeader = "BITS-Transaction-Id";
  // `transactionHeader`: the name of the header that carries an upload's transaction id (at most
  // kMaxTransactionHeaderBytes; longer names fall back to the default).
  explicit RequestParser(size_t maxHeaderBytes, std::string_view transactionHeader = kDefaultTransactionHeader);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Prepares for a new request (also the state after construction).
  void reset();

  // Parses from `data`. `*consumed` is how many bytes were used; the rest must be fed again
  // (after handling the event). Never reads beyond `len`.
  ParseEvent execute(const char* data, size_t len, size_t* consumed);

  const RequestHead& head() const { return head_; }
  // The name of a kept header as this parser matches it (TransactionId: the configured name).
  std::string_view headerName(HeaderId id) const;
  std::span<const char> body() const { return body_; }
  // HTTP status for an Error event: 400, 405, 414 or 431.
  int errorStatus() const { return errorStatus_; }
  const char* errorText() const { return errorText_; }
  bool headersDone() const { return headersDone_; }
  // True once any byte of the current request has been seen.
  bool started() const { return started_; }

 private:
  Http1Action onUrl(const char* at, size_t len) override;
  Http1Action onHeaderField(const char* at, size_t len) override;
  Http1Action onHeaderFieldComplete() override;
  Http1Action onHeaderValue(const char* at, size_t len) override;
  Http1Action onHeaderValueComplete() override;
  Http1Action onHeadersComplete() override;
  Http1Action onBody(const char* at, size_t len) override;
  Http1Action onMessageComplete() override;

  bool appendArena(const char* at, size_t len);
  ParseEvent fail(int status, const char* text);
  ParseEvent feedLlhttp(const char* data, size_t len, size_t* consumed);

  Http1Parser http_{Http1Parser::Kind::Request, this};
  size_t maxHeaderBytes_;
  size_t headerBytes_ = 0;
  bool started_ = false;
  bool scanningMethod_ = true;
  bool headersDone_ = false;
  ParseEvent pending_ = ParseEvent::NeedMore;
  int errorStatus_ = 0;
  const char* errorText_ = "";
  char method_[kMaxMethodBytes];
  size_t methodLen_ = 0;
  bool bitsPost_ = false;

  // Header field being parsed (only names up to 32 bytes can be ones we keep).
  char field_[32];
  char txHeader_[kMaxTransactionHeaderBytes];
  size_t txHeaderLen_ = 0;
  size_t fieldLen_ = 0;
  bool fieldTooLong_ = false;
  int currentHeader_ = -1;   // HeaderId being collected, or -1 for ignored
  size_t valueStart_ = 0;
  size_t valueLen_ = 0;  // bytes of the current header value so far, kept or not
  size_t valueWs_ = 0;   // ... of which the spaces and tabs at its end so far
  size_t urlStart_ = 0;
  bool inUrl_ = false;

  std::span<const char> body_;
  RequestHead head_;
  size_t arenaLen_ = 0;
  char arena_[kArenaBytes];
};

}  // namespace bitsd
