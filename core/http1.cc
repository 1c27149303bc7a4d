// The llhttp wrapper: the only file in bitsd that includes llhttp.h (tools/check-layers.cmake allows it
// in core/ only, and no header names it). One static settings table serves every parser; each
// callback goes to the Http1Handler the parser was made with.
#include "core/http1.h"

#include <new>

#include "llhttp.h"

namespace bitsd {

struct Http1Thunks {
  static_assert(sizeof(llhttp_t) <= sizeof(Http1Parser::llhttp_), "Http1Parser::llhttp_ is too small for llhttp_t");
  static_assert(alignof(llhttp_t) <= 8, "Http1Parser::llhttp_ is not aligned enough for llhttp_t");

  static llhttp_t* ll(Http1Parser* p) { return std::launder(reinterpret_cast<llhttp_t*>(p->llhttp_)); }
  static const llhttp_t* ll(const Http1Parser* p) {
    return std::launder(reinterpret_cast<const llhttp_t*>(p->llhttp_));
  }
  static Http1Parser* self(llhttp_t* p) { return static_cast<Http1Parser*>(p->data); }

  // llhttp's return codes: 0 goes on, HPE_PAUSED pauses, -1 fails; on headers complete 1 skips the body.
  static int code(Http1Parser* s, Http1Action a) {
    switch (a) {
      case Http1Action::Continue: return 0;
      case Http1Action::Pause: return HPE_PAUSED;
      case Http1Action::SkipBody: return 1;
      case Http1Action::Fail: break;
    }
    s->error_ = Http1Error::Callback;
    return -1;
  }

  static int onUrl(llhttp_t* p, const char* at, size_t len) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onUrl(at, len));
  }
  static int onHeaderField(llhttp_t* p, const char* at, size_t len) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onHeaderField(at, len));
  }
  static int onHeaderFieldComplete(llhttp_t* p) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onHeaderFieldComplete());
  }
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onHeaderValue(at, len));
  }
  static int onHeaderValueComplete(llhttp_t* p) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onHeaderValueComplete());
  }
  static int onHeadersComplete(llhttp_t* p) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onHeadersComplete());
  }
  static int onBody(llhttp_t* p, const char* at, size_t len) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onBody(at, len));
  }
  static int onMessageComplete(llhttp_t* p) {
    Http1Parser* s = self(p);
    return code(s, s->handler_->onMessageComplete());
  }

  static const llhttp_settings_t* settings() {
    static const llhttp_settings_t kSettings = [] {
      llhttp_settings_t st;
      llhttp_settings_init(&st);
      st.on_url = onUrl;
      st.on_header_field = onHeaderField;
      st.on_header_field_complete = onHeaderFieldComplete;
      st.on_header_value = onHeaderValue;
      st.on_header_value_complete = onHeaderValueComplete;
      st.on_headers_complete = onHeadersComplete;
      st.on_body = onBody;
      st.on_message_complete = onMessageComplete;
      return st;
    }();
    return &kSettings;
  }
};

Http1Parser::Http1Parser(Kind kind, Http1Handler* handler) : handler_(handler), kind_(kind) {
  new (llhttp_) llhttp_t;
  reset();
}

void Http1Parser::reset() {
  llhttp_t* p = Http1Thunks::ll(this);
  llhttp_init(p, kind_ == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE, Http1Thunks::settings());
  p->data = this;
  error_ = Http1Error::None;
  llhttpErrno_ = 0;
}

Http1Parser::Result Http1Parser::fail(Http1Error e) {
  if (error_ == Http1Error::None) error_ = e;  // a handler's Fail stays Callback
  return Result::Error;
}

Http1Parser::Result Http1Parser::execute(const char* data, size_t len, size_t* consumed) {
  *consumed = 0;
  if (error_ != Http1Error::None) return Result::Error;
  llhttp_t* p = Http1Thunks::ll(this);
  llhttp_errno_t err = llhttp_execute(p, data, len);
  if (err == HPE_OK) {
    *consumed = len;
    return Result::Ok;
  }
  *consumed = static_cast<size_t>(llhttp_get_error_pos(p) - data);
  if (err == HPE_PAUSED) {
    llhttp_resume(p);
    return Result::Paused;
  }
  llhttpErrno_ = err;
  switch (err) {
    case HPE_INVALID_METHOD: return fail(Http1Error::InvalidMethod);
    case HPE_INVALID_VERSION: return fail(Http1Error::InvalidVersion);
    case HPE_INVALID_CONTENT_LENGTH: return fail(Http1Error::InvalidContentLength);
    case HPE_UNEXPECTED_CONTENT_LENGTH: return fail(Http1Error::UnexpectedContentLength);
    default: return fail(Http1Error::Other);
  }
}

Http1Parser::Result Http1Parser::finish() {
  if (error_ != Http1Error::None) return Result::Error;
  int err = llhttp_finish(Http1Thunks::ll(this));
  if (err == HPE_OK) return Result::Ok;
  if (err == HPE_PAUSED) return Result::Paused;
  llhttpErrno_ = err < 0 ? HPE_USER : err;
  return fail(Http1Error::Other);
}

const char* Http1Parser::errorName() const {
  if (error_ == Http1Error::None) return "HPE_OK";
  if (error_ == Http1Error::Callback) return "HPE_USER";
  return llhttp_errno_name(static_cast<llhttp_errno_t>(llhttpErrno_));
}

uint8_t Http1Parser::httpMajor() const { return Http1Thunks::ll(this)->http_major; }
uint8_t Http1Parser::httpMinor() const { return Http1Thunks::ll(this)->http_minor; }
int Http1Parser::statusCode() const { return Http1Thunks::ll(this)->status_code; }
bool Http1Parser::hasContentLength() const { return (Http1Thunks::ll(this)->flags & F_CONTENT_LENGTH) != 0; }
bool Http1Parser::chunked() const { return (Http1Thunks::ll(this)->flags & F_CHUNKED) != 0; }
uint64_t Http1Parser::contentLength() const { return Http1Thunks::ll(this)->content_length; }

bool Http1Parser::keepAlive() const {
  return llhttp_should_keep_alive(Http1Thunks::ll(this)) != 0;
}

Http1Parser::Method Http1Parser::method() const {
  switch (Http1Thunks::ll(this)->method) {
    case HTTP_POST: return Method::Post;
    case HTTP_GET: return Method::Get;
    case HTTP_HEAD: return Method::Head;
    default: return Method::Other;
  }
}

}  // namespace bitsd
