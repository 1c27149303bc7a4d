// Owns RequestParser, requests on the wire layer's llhttp wrapper (core/request_parser.h).
#include "core/request_parser.h"

#include <cstring>

#include "core/protocol.h"

namespace bitsd {

namespace {

constexpr std::string_view kHeaderNames[] = {
    "BITS-Packet-Type", "BITS-Session-Id", "Content-Range", "BITS-Supported-Protocols",
    "Content-Encoding", "Host",            "Expect",        "Transfer-Encoding",
    "",  // TransactionId: the configured name (RequestParser::txHeader_)
    "Range",            "If-Unmodified-Since", "Authorization", "BITS-Farm-Forwarded",
};
static_assert(std::size(kHeaderNames) == static_cast<size_t>(HeaderId::kCount));

bool isTokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' ||
         c == '\'' || c == '*' || c == '+' || c == '^' || c == '`' || c == '|' || c == '~';
}

}  // namespace

RequestParser::RequestParser(size_t maxHeaderBytes, std::string_view transactionHeader)
    : maxHeaderBytes_(maxHeaderBytes) {
  if (transactionHeader.empty() || transactionHeader.size() > sizeof txHeader_) {
    transactionHeader = kDefaultTransactionHeader;
  }
  std::memcpy(txHeader_, transactionHeader.data(), transactionHeader.size());
  txHeaderLen_ = transactionHeader.size();
  reset();
}

void RequestParser::reset() {
  http_.reset();
  headerBytes_ = 0;
  started_ = false;
  scanningMethod_ = true;
  headersDone_ = false;
  pending_ = ParseEvent::NeedMore;
  errorStatus_ = 0;
  errorText_ = "";
  methodLen_ = 0;
  bitsPost_ = false;
  fieldLen_ = 0;
  fieldTooLong_ = false;
  currentHeader_ = -1;
  valueStart_ = 0;
  valueLen_ = 0;
  valueWs_ = 0;
  urlStart_ = 0;
  inUrl_ = false;
  body_ = {};
  head_ = RequestHead();
  arenaLen_ = 0;
}

ParseEvent RequestParser::fail(int status, const char* text) {
  errorStatus_ = status;
  errorText_ = text;
  return ParseEvent::Error;
}

bool RequestParser::appendArena(const char* at, size_t len) {
  if (len > kArenaBytes - arenaLen_) return false;
  std::memcpy(arena_ + arenaLen_, at, len);
  arenaLen_ += len;
  return true;
}

ParseEvent RequestParser::execute(const char* data, size_t len, size_t* consumed) {
  *consumed = 0;
  if (errorStatus_ != 0) return ParseEvent::Error;
  size_t used = 0;
  if (scanningMethod_) {
    // Hold back the method token until the space that ends it.
    while (used < len) {
      char c = data[used];
      if (methodLen_ == 0 && (c == '\r' || c == '\n')) {  // stray CRLF between requests
        ++used;
        continue;
      }
      started_ = true;
      if (c == ' ') break;
      if (!isTokenChar(c) || methodLen_ == kMaxMethodBytes) {
        *consumed = used;
        return fail(400, "malformed request method");
      }
      method_[methodLen_++] = c;
      ++used;
    }
    headerBytes_ += used;
    if (used == len) {
      *consumed = used;
      return ParseEvent::NeedMore;
    }
    scanningMethod_ = false;
    std::string_view token(method_, methodLen_);
    bitsPost_ = token == "BITS_POST";
    std::string_view fed = bitsPost_ ? std::string_view("POST") : token;
    size_t ignored = 0;
    ParseEvent e = feedLlhttp(fed.data(), fed.size(), &ignored);
    if (e == ParseEvent::Error) {
      *consumed = used;
      if (http_.error() == Http1Error::InvalidMethod) return fail(405, "method not allowed");
      return e;
    }
  }
  size_t n = 0;
  ParseEvent e = feedLlhttp(data + used, len - used, &n);
  used += n;
  if (e == ParseEvent::NeedMore && used == len && headersDone_ && http_.contentLength() == 0) {
    // The body (if any) is complete but llhttp emits on_message_complete only when it runs again;
    // run it on no input so the caller does not wait for bytes that will never come.
    size_t none = 0;
    e = feedLlhttp(data + used, 0, &none);
  }
  *consumed = used;
  return e;
}

ParseEvent RequestParser::feedLlhttp(const char* data, size_t len, size_t* consumed) {
  pending_ = ParseEvent::NeedMore;
  const bool headersWereDone = headersDone_;
  size_t used = 0;
  if (http_.execute(data, len, &used) == Http1Parser::Result::Error) {
    *consumed = used;
    if (errorStatus_ != 0) return ParseEvent::Error;  // set by a callback
    switch (http_.error()) {
      case Http1Error::InvalidMethod: return fail(405, "method not allowed");
      case Http1Error::InvalidVersion: return fail(505, "HTTP version not supported");
      case Http1Error::InvalidContentLength:
      case Http1Error::UnexpectedContentLength: return fail(400, "bad Content-Length");
      default: return fail(400, http_.errorName());
    }
  }
  if (!headersWereDone) {
    headerBytes_ += used;
    if (headerBytes_ > maxHeaderBytes_) {
      *consumed = used;
      return fail(431, "request header too large");
    }
  }
  *consumed = used;
  return pending_;
}

Http1Action RequestParser::onUrl(const char* at, size_t len) {
  if (!inUrl_) {
    inUrl_ = true;
    urlStart_ = arenaLen_;
  }
  if (arenaLen_ - urlStart_ + len > kMaxValueBytes || !appendArena(at, len)) {
    fail(414, "request URL too long");
    return Http1Action::Fail;
  }
  head_.target = std::string_view(arena_ + urlStart_, arenaLen_ - urlStart_);
  return Http1Action::Continue;
}

Http1Action RequestParser::onHeaderField(const char* at, size_t len) {
  if (fieldLen_ + len > sizeof field_) {
    fieldTooLong_ = true;
  } else {
    std::memcpy(field_ + fieldLen_, at, len);
    fieldLen_ += len;
  }
  return Http1Action::Continue;
}

std::string_view RequestParser::headerName(HeaderId id) const {
  if (id == HeaderId::TransactionId) return std::string_view(txHeader_, txHeaderLen_);
  return kHeaderNames[static_cast<size_t>(id)];
}

Http1Action RequestParser::onHeaderFieldComplete() {
  currentHeader_ = -1;
  if (!fieldTooLong_) {
    std::string_view name(field_, fieldLen_);
    for (size_t i = 0; i < std::size(kHeaderNames); ++i) {
      std::string_view want = i == static_cast<size_t>(HeaderId::TransactionId)
                                  ? std::string_view(txHeader_, txHeaderLen_)
                                  : kHeaderNames[i];
      if (equalsIgnoreCase(name, want)) {
        currentHeader_ = static_cast<int>(i);
        if (head_.present[i]) head_.duplicateHeader = true;
        break;
      }
    }
  }
  fieldLen_ = 0;
  fieldTooLong_ = false;
  valueStart_ = arenaLen_;
  valueLen_ = 0;
  valueWs_ = 0;
  return Http1Action::Continue;
}

Http1Action RequestParser::onHeaderValue(const char* at, size_t len) {
  // Every header value counts, kept or not: over 4 KB is 400 (BITS-UPLOAD.md §1, §7.1). Trailing
  // spaces and tabs are not part of the value (RFC 9110 §5.5), so the run of them so far is left out.
  size_t ws = 0;
  while (ws < len && (at[len - 1 - ws] == ' ' || at[len - 1 - ws] == '\t')) ++ws;
  valueWs_ = ws == len ? valueWs_ + len : ws;
  valueLen_ += len;
  if (valueLen_ - valueWs_ > kMaxValueBytes) head_.oversizedValue = true;
  if (currentHeader_ < 0 || head_.oversizedValue) return Http1Action::Continue;
  if (!appendArena(at, len)) {
    fail(431, "request header too large");
    return Http1Action::Fail;
  }
  return Http1Action::Continue;
}

Http1Action RequestParser::onHeaderValueComplete() {
  if (currentHeader_ >= 0) {
    size_t i = static_cast<size_t>(currentHeader_);
    head_.present[i] = true;
    head_.values[i] = trimOws(std::string_view(arena_ + valueStart_, arenaLen_ - valueStart_));
  }
  currentHeader_ = -1;
  return Http1Action::Continue;
}

Http1Action RequestParser::onHeadersComplete() {
  RequestHead& h = head_;
  h.httpMajor = http_.httpMajor();
  h.httpMinor = http_.httpMinor();
  h.hasContentLength = http_.hasContentLength();
  h.contentLength = h.hasContentLength ? http_.contentLength() : 0;
  h.keepAlive = http_.keepAlive();
  switch (http_.method()) {
    case Http1Parser::Method::Post: h.method = bitsPost_ ? HttpMethod::BitsPost : HttpMethod::Other; break;
    case Http1Parser::Method::Get: h.method = HttpMethod::Get; break;
    case Http1Parser::Method::Head: h.method = HttpMethod::Head; break;
    case Http1Parser::Method::Other: h.method = HttpMethod::Other; break;
  }
  headersDone_ = true;
  pending_ = ParseEvent::HeadersComplete;
  // HEAD requests and Content-Length-less requests have no body for llhttp's purposes; the pause
  // still hands control back so the server can decide before any body byte is read.
  return Http1Action::Pause;
}

Http1Action RequestParser::onBody(const char* at, size_t len) {
  // llhttp flushes an open body span at the end of every execute, even an empty one (as when we run
  // it on no input): that is not an event.
  if (len == 0) return Http1Action::Continue;
  body_ = std::span<const char>(at, len);
  pending_ = ParseEvent::Body;
  return Http1Action::Pause;
}

Http1Action RequestParser::onMessageComplete() {
  pending_ = ParseEvent::MessageComplete;
  return Http1Action::Pause;
}

}  // namespace bitsd
