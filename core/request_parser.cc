#include "core/request_parser.h"

#include <cstring>

#include "core/protocol.h"

namespace bitsd {

namespace {

constexpr std::string_view kHeaderNames[] = {
    "BITS-Packet-Type", "BITS-Session-Id", "Content-Range", "BITS-Supported-Protocols",
    "Content-Encoding", "Host",            "Expect",        "Transfer-Encoding",
    "",  // TransactionId: the configured name (RequestParser::txHeader_)
    "Range",            "If-Unmodified-Since", "Authorization",
};
static_assert(std::size(kHeaderNames) == static_cast<size_t>(HeaderId::kCount));

bool isTokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' ||
         c == '\'' || c == '*' || c == '+' || c == '^' || c == '`' || c == '|' || c == '~';
}

RequestParser* self(llhttp_t* p) { return static_cast<RequestParser*>(p->data); }

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
  llhttp_init(&llhttp_, HTTP_REQUEST, settingsTable());
  llhttp_.data = this;
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
      if (llhttp_get_errno(&llhttp_) == HPE_INVALID_METHOD) return fail(405, "method not allowed");
      return e;
    }
  }
  size_t n = 0;
  ParseEvent e = feedLlhttp(data + used, len - used, &n);
  used += n;
  if (e == ParseEvent::NeedMore && used == len && headersDone_ && llhttp_.content_length == 0) {
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
  llhttp_errno_t err = llhttp_execute(&llhttp_, data, len);
  size_t used = len;
  if (err == HPE_PAUSED) {
    used = static_cast<size_t>(llhttp_get_error_pos(&llhttp_) - data);
    llhttp_resume(&llhttp_);
  } else if (err != HPE_OK) {
    used = static_cast<size_t>(llhttp_get_error_pos(&llhttp_) - data);
    *consumed = used;
    if (errorStatus_ != 0) return ParseEvent::Error;  // set by a callback
    switch (err) {
      case HPE_INVALID_METHOD: return fail(405, "method not allowed");
      case HPE_INVALID_VERSION: return fail(505, "HTTP version not supported");
      case HPE_INVALID_CONTENT_LENGTH:
      case HPE_UNEXPECTED_CONTENT_LENGTH: return fail(400, "bad Content-Length");
      default: return fail(400, llhttp_errno_name(err));
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

int RequestParser::onUrlThunk(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  if (!s->inUrl_) {
    s->inUrl_ = true;
    s->urlStart_ = s->arenaLen_;
  }
  if (s->arenaLen_ - s->urlStart_ + len > kMaxValueBytes || !s->appendArena(at, len)) {
    s->fail(414, "request URL too long");
    return -1;
  }
  s->head_.target = std::string_view(s->arena_ + s->urlStart_, s->arenaLen_ - s->urlStart_);
  return 0;
}

int RequestParser::onHeaderFieldThunk(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  if (s->fieldLen_ + len > sizeof s->field_) {
    s->fieldTooLong_ = true;
  } else {
    std::memcpy(s->field_ + s->fieldLen_, at, len);
    s->fieldLen_ += len;
  }
  return 0;
}

int RequestParser::onHeaderFieldCompleteThunk(llhttp_t* p) {
  RequestParser* s = self(p);
  s->currentHeader_ = -1;
  if (!s->fieldTooLong_) {
    std::string_view name(s->field_, s->fieldLen_);
    for (size_t i = 0; i < std::size(kHeaderNames); ++i) {
      std::string_view want = i == static_cast<size_t>(HeaderId::TransactionId)
                                  ? std::string_view(s->txHeader_, s->txHeaderLen_)
                                  : kHeaderNames[i];
      if (equalsIgnoreCase(name, want)) {
        s->currentHeader_ = static_cast<int>(i);
        if (s->head_.present[i]) s->head_.duplicateHeader = true;
        break;
      }
    }
  }
  s->fieldLen_ = 0;
  s->fieldTooLong_ = false;
  s->valueStart_ = s->arenaLen_;
  return 0;
}

int RequestParser::onHeaderValueThunk(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  if (s->currentHeader_ < 0) return 0;
  if (s->arenaLen_ - s->valueStart_ + len > kMaxValueBytes) {
    s->head_.oversizedValue = true;
    return 0;
  }
  if (!s->appendArena(at, len)) {
    s->fail(431, "request header too large");
    return -1;
  }
  return 0;
}

int RequestParser::onHeaderValueCompleteThunk(llhttp_t* p) {
  RequestParser* s = self(p);
  if (s->currentHeader_ >= 0) {
    size_t i = static_cast<size_t>(s->currentHeader_);
    s->head_.present[i] = true;
    s->head_.values[i] =
        trimOws(std::string_view(s->arena_ + s->valueStart_, s->arenaLen_ - s->valueStart_));
  }
  s->currentHeader_ = -1;
  return 0;
}

int RequestParser::onHeadersCompleteThunk(llhttp_t* p) {
  RequestParser* s = self(p);
  RequestHead& h = s->head_;
  h.httpMajor = llhttp_get_http_major(p);
  h.httpMinor = llhttp_get_http_minor(p);
  h.hasContentLength = (p->flags & F_CONTENT_LENGTH) != 0;
  h.contentLength = h.hasContentLength ? p->content_length : 0;
  h.keepAlive = llhttp_should_keep_alive(p) != 0;
  switch (llhttp_get_method(p)) {
    case HTTP_POST: h.method = s->bitsPost_ ? HttpMethod::BitsPost : HttpMethod::Other; break;
    case HTTP_GET: h.method = HttpMethod::Get; break;
    case HTTP_HEAD: h.method = HttpMethod::Head; break;
    default: h.method = HttpMethod::Other; break;
  }
  s->headersDone_ = true;
  s->pending_ = ParseEvent::HeadersComplete;
  // HEAD requests and Content-Length-less requests have no body for llhttp's purposes; the pause
  // still hands control back so the server can decide before any body byte is read.
  return HPE_PAUSED;
}

int RequestParser::onBodyThunk(llhttp_t* p, const char* at, size_t len) {
  // llhttp flushes an open body span at the end of every execute, even an empty one (as when we run
  // it on no input): that is not an event.
  if (len == 0) return 0;
  RequestParser* s = self(p);
  s->body_ = std::span<const char>(at, len);
  s->pending_ = ParseEvent::Body;
  return HPE_PAUSED;
}

int RequestParser::onMessageCompleteThunk(llhttp_t* p) {
  RequestParser* s = self(p);
  s->pending_ = ParseEvent::MessageComplete;
  return HPE_PAUSED;
}

const llhttp_settings_t* RequestParser::settingsTable() {
  static const llhttp_settings_t kSettings = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_url = onUrlThunk;
    st.on_header_field = onHeaderFieldThunk;
    st.on_header_field_complete = onHeaderFieldCompleteThunk;
    st.on_header_value = onHeaderValueThunk;
    st.on_header_value_complete = onHeaderValueCompleteThunk;
    st.on_headers_complete = onHeadersCompleteThunk;
    st.on_body = onBodyThunk;
    st.on_message_complete = onMessageCompleteThunk;
    return st;
  }();
  return &kSettings;
}

}  // namespace bitsd
