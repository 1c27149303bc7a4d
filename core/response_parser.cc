// Owns ResponseParser, responses from peers on the wire layer's llhttp wrapper
// (core/response_parser.h).
#include "core/response_parser.h"

#include <cstring>

#include "core/protocol.h"

namespace bitsd {

ResponseParser::ResponseParser(size_t maxHeadBytes) : maxHeadBytes_(maxHeadBytes > 0 ? maxHeadBytes : 1) { reset(); }

void ResponseParser::reset(bool toHead) {
  http_.reset();
  nameLen_ = 0;
  valueLen_ = 0;
  headerTaken_ = false;
  failed_ = false;
  headBytes_ = 0;
  toHead_ = toHead;
  started_ = false;
  headersDone_ = false;
  messageDone_ = false;
  messageQueued_ = false;
  pending_ = ResponseEvent::NeedMore;
  errorText_ = "";
  head_ = ResponseHead();
  body_ = {};
}

ResponseEvent ResponseParser::fail(const char* text) {
  if (!failed_) errorText_ = text;  // the first reason stays
  failed_ = true;
  return ResponseEvent::Error;
}

std::string_view ResponseParser::headerValue() const {
  return trimOws(std::string_view(buf_.get() + nameLen_, valueLen_));
}

ResponseEvent ResponseParser::execute(const char* data, size_t len, size_t* consumed) {
  *consumed = 0;
  if (failed_) return ResponseEvent::Error;
  if (messageQueued_) {
    messageQueued_ = false;
    messageDone_ = true;
  }
  if (messageDone_) return ResponseEvent::MessageComplete;
  if (buf_ == nullptr) buf_.reset(new char[maxHeadBytes_]);
  if (len > 0) started_ = true;
  pending_ = ResponseEvent::NeedMore;
  const bool headersWereDone = headersDone_;
  size_t used = 0;
  Http1Parser::Result r = http_.execute(data, len, &used);
  *consumed = used;
  if (r == Http1Parser::Result::Error) return fail(http_.errorName());  // a callback's reason stays first
  if (!headersWereDone) {
    headBytes_ += used;
    if (headBytes_ > maxHeadBytes_) return fail("response head too large");
  }
  return pending_;
}

ResponseEvent ResponseParser::finish() {
  if (failed_) return ResponseEvent::Error;
  if (messageQueued_ || messageDone_) {
    messageQueued_ = false;
    messageDone_ = true;
    return ResponseEvent::MessageComplete;
  }
  pending_ = ResponseEvent::NeedMore;
  if (http_.finish() == Http1Parser::Result::Error || pending_ != ResponseEvent::MessageComplete) {
    return fail(started_ ? "the connection closed inside the response" : "the connection closed before a response");
  }
  return ResponseEvent::MessageComplete;
}

bool ResponseParser::append(const char* at, size_t len) {
  size_t used = nameLen_ + valueLen_;
  if (len > maxHeadBytes_ - used) {
    fail("response head too large");
    return false;
  }
  std::memcpy(buf_.get() + used, at, len);
  return true;
}

Http1Action ResponseParser::onHeaderField(const char* at, size_t len) {
  if (headerTaken_) {
    nameLen_ = 0;
    valueLen_ = 0;
    headerTaken_ = false;
  }
  if (!append(at, len)) return Http1Action::Fail;
  nameLen_ += len;
  return Http1Action::Continue;
}

Http1Action ResponseParser::onHeaderFieldComplete() { return Http1Action::Continue; }

Http1Action ResponseParser::onHeaderValue(const char* at, size_t len) {
  if (!append(at, len)) return Http1Action::Fail;
  valueLen_ += len;
  return Http1Action::Continue;
}

Http1Action ResponseParser::onHeaderValueComplete() {
  headerTaken_ = true;
  // llhttp lets a line with an empty name (": value") through; it names nothing, so it is skipped
  // (found by fuzz_response).
  if (nameLen_ == 0) return Http1Action::Continue;
  pending_ = ResponseEvent::Header;
  return Http1Action::Pause;
}

Http1Action ResponseParser::onHeadersComplete() {
  head_.status = http_.statusCode();
  head_.httpMajor = http_.httpMajor();
  head_.httpMinor = http_.httpMinor();
  head_.hasContentLength = http_.hasContentLength();
  head_.contentLength = head_.hasContentLength ? http_.contentLength() : 0;
  head_.chunked = http_.chunked();
  head_.keepAlive = http_.keepAlive();
  headersDone_ = true;
  pending_ = ResponseEvent::HeadersComplete;
  // An answer to HEAD: llhttp ends the message at once (onMessageComplete queues that end).
  return toHead_ ? Http1Action::SkipBody : Http1Action::Pause;
}

Http1Action ResponseParser::onBody(const char* at, size_t len) {
  // llhttp flushes an open body span at the end of every execute, even an empty one: not an event.
  if (len == 0) return Http1Action::Continue;
  body_ = std::span<const char>(at, len);
  pending_ = ResponseEvent::Body;
  return Http1Action::Pause;
}

Http1Action ResponseParser::onMessageComplete() {
  if (pending_ == ResponseEvent::HeadersComplete) {
    messageQueued_ = true;
  } else {
    messageDone_ = true;
    pending_ = ResponseEvent::MessageComplete;
  }
  return Http1Action::Pause;
}

}  // namespace bitsd
