// ReplyFlow: GET and HEAD on a reply URL (BITS-UPLOAD.md §5.4, §10.1). The session id in the URL
// must name a session that keeps its reply (core/state_files.h) and whose application answer left a
// reply file; anything else is 404, which reveals nothing. Ranges and If-Unmodified-Since are
// honoured; the body is the reply file's bytes, read through Storage part by part as the host sends
// them (UploadEngine::readReply).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/content_range.h"
#include "core/http_reply.h"
#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

namespace {
constexpr std::string_view kMarker = "/BITS-Sessions/Replies/";
constexpr std::string_view kFile = "/responsefile.bin";
}  // namespace

bool isReplyTarget(std::string_view target) {
  target = target.substr(0, target.find('?'));
  size_t at = target.find(kMarker);
  return at != std::string_view::npos && target.size() >= at + kMarker.size() + kFile.size() &&
         target.substr(target.size() - kFile.size()) == kFile;
}

// The session id in the URL must name a session whose application answer left a reply file;
// anything else is 404, which reveals nothing.
Flow ReplyFlow::start(UploadEngine& e, Exchange& ex, const RequestHead& head) {
  ReplyFlow& f = ex.flow_.emplace<ReplyFlow>();
  ++e.stats_.replies;
  ex.failed_ = true;  // no body is read into a file
  ReplyHeadSpec spec;
  spec.close = ex.close_;
  auto answer = [&](int status) {
    spec.status = status;
    ex.status_ = status;
    ex.responseLen_ = formatReplyHead(spec, ex.response_);
    return Flow::Continue;
  };
  std::string_view target = head.target.substr(0, head.target.find('?'));
  if (!isReplyTarget(target)) {
    --e.stats_.replies;
    ex.failed_ = false;
    return e.fail(ex, 405, hresult::kInvalidArg);  // not a reply URL: uploads take BITS_POST only
  }
  const size_t at = target.find(kMarker);
  std::string_view idPart = target.substr(at + kMarker.size(), target.size() - kFile.size() - at - kMarker.size());
  // The id as IIS clients send it: braces percent-encoded (or not).
  char idText[kSessionIdTextBytes];
  size_t n = 0;
  for (size_t i = 0; i < idPart.size() && n < sizeof idText + 1; ++i) {
    char c = idPart[i];
    if (c == '%' && i + 2 < idPart.size() + 0 && (idPart.substr(i, 3) == "%7B" || idPart.substr(i, 3) == "%7b")) {
      c = '{';
      i += 2;
    } else if (c == '%' && (idPart.substr(i, 3) == "%7D" || idPart.substr(i, 3) == "%7d")) {
      c = '}';
      i += 2;
    }
    if (n == sizeof idText) {
      n = 0;
      break;
    }
    idText[n++] = c;
  }
  SessionId id;
  if (n != kSessionIdTextBytes || !parseSessionId(std::string_view(idText, n), &id)) return answer(404);
  if (e.sessions_.find(id) == nullptr && ForwardFlow::applies(e, head)) {
    --e.stats_.replies;  // not answered here
    ex.failed_ = false;
    return ForwardFlow::start(e, ex, id, true);  // `f` is gone: the exchange holds a ForwardFlow now
  }
  // The reply file belongs to the session that posted it (the delivery's reply of record). On a
  // single node every session answered from the delivery serves it at its own URL while it keeps
  // its reply, whether or not the posting session has ended (its file stays for as long as the
  // delivery is remembered: UploadEngine::holdsReplyOfRecord). A farm serves it only at the posting
  // session's URL, which later sessions are pointed at.
  auto known = [&](const SessionId& sid) -> const DeliveryInfo* {
    const Session* s = e.sessions_.find(sid);
    if (s == nullptr || !keepsReply(*s)) return nullptr;
    if (e.authenticator_ != nullptr && s->owner != ex.user_) return nullptr;  // someone else's reply: unknown
    const DeliveryInfo* d = e.book_.endedFor(sid);
    if (d == nullptr || d->status != 200 || !d->staticUrl.empty()) return nullptr;
    if (e.farm_ != nullptr && !(d->replySession == sid)) return nullptr;
    return d;
  };
  const DeliveryInfo* d = known(id);
  if (d == nullptr) return answer(404);
  const uint64_t size = (d->flags & kDeliveryHasReplyFile) ? d->replyBytes : 0;
  spec.totalBytes = size;
  spec.lastModified = d->wallSeconds;
  if (head.has(HeaderId::IfUnmodifiedSince)) {
    uint64_t since = 0;
    if (parseHttpDate(head.value(HeaderId::IfUnmodifiedSince), &since) && d->wallSeconds > since) {
      return answer(412);
    }
  }
  uint64_t begin = 0, end = size;
  int status = 200;
  if (head.has(HeaderId::Range)) {
    ReplyRange ranges[kMaxReplyRanges];
    size_t count = 0;
    switch (interpretRanges(head.value(HeaderId::Range), size, ranges, &count)) {
      case RangeAnswer::Partial:
        status = 206;
        begin = ranges[0].begin;
        end = ranges[0].end;
        break;
      case RangeAnswer::Multipart: {
        // 206 multipart/byteranges (§10.1): each part is a delimiter and part head, then its bytes.
        std::copy(ranges, ranges + count, f.ranges_);
        f.rangeCount_ = static_cast<uint8_t>(count);
        f.totalBytes_ = size;
        f.makeBoundary(d->replySession);
        uint64_t body = 0;
        char text[kPartTextBytes];
        for (size_t i = 0; i <= count; ++i) body += f.partText(i, text);
        for (size_t i = 0; i < count; ++i) body += ranges[i].end - ranges[i].begin;
        spec.status = 206;
        spec.contentLength = body;
        spec.multipartBoundary = std::string_view(f.boundary_, f.boundaryLen_);
        if (head.method == HttpMethod::Get) {
          e.formatReplyPath(d->replySession, ex.partial_);
          f.sendFile_ = true;
          f.fileOffset_ = ranges[0].begin;
          f.fileLength_ = body;
          f.readAt_ = ranges[0].begin;
          f.inText_ = true;
        }
        return answer(206);
      }
      case RangeAnswer::Unsatisfiable: return answer(416);
    }
  }
  spec.contentLength = end - begin;
  spec.rangeBegin = begin;
  spec.rangeEnd = end;
  if (head.method == HttpMethod::Get && end > begin) {
    e.formatReplyPath(d->replySession, ex.partial_);
    f.sendFile_ = true;
    f.fileOffset_ = begin;
    f.fileLength_ = end - begin;
    f.readAt_ = begin;
  }
  return answer(status);
}

// The boundary: "bitsd-" and the reply session's id without its braces. Part bodies are the
// application's bytes, so any boundary could occur in them; one of 42 characters that names a
// random 128-bit id practically never does.
void ReplyFlow::makeBoundary(const SessionId& sid) {
  char id[kSessionIdTextBytes];
  formatSessionId(sid, id);
  constexpr std::string_view kPrefix = "bitsd-";
  std::memcpy(boundary_, kPrefix.data(), kPrefix.size());
  std::memcpy(boundary_ + kPrefix.size(), id + 1, kSessionIdTextBytes - 2);
  boundaryLen_ = static_cast<uint8_t>(kPrefix.size() + kSessionIdTextBytes - 2);
}

// Part i's delimiter and head (RFC 9110 §14.6), or for i == rangeCount_ the closing delimiter.
size_t ReplyFlow::partText(size_t i, char (&out)[kPartTextBytes]) const {
  const std::string_view b(boundary_, boundaryLen_);
  int n;
  if (i < rangeCount_) {
    n = std::snprintf(out, sizeof out,
                      "%s--%.*s\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes %" PRIu64 "-%" PRIu64
                      "/%" PRIu64 "\r\n\r\n",
                      i == 0 ? "" : "\r\n", static_cast<int>(b.size()), b.data(), ranges_[i].begin, ranges_[i].end - 1,
                      totalBytes_);
  } else {
    n = std::snprintf(out, sizeof out, "\r\n--%.*s--\r\n", static_cast<int>(b.size()), b.data());
  }
  return n > 0 ? static_cast<size_t>(n) : 0;
}

Flow ReplyFlow::read(UploadEngine& e, Exchange& ex, std::span<char> buf) {
  chunk_ = {};
  if (rangeCount_ > 1 && inText_) {
    // A part's delimiter and head (or the closing delimiter): no storage involved.
    char text[kPartTextBytes];
    const size_t n = partText(part_, text);
    const size_t k = std::min(n - textPos_, buf.size());
    std::memcpy(buf.data(), text + textPos_, k);
    textPos_ = static_cast<uint16_t>(textPos_ + k);
    if (textPos_ == n) {
      textPos_ = 0;
      inText_ = false;
      if (part_ < rangeCount_) readAt_ = ranges_[part_].begin;
    }
    chunk_ = std::span<const char>(buf.data(), k);
    return Flow::Continue;
  }
  const uint64_t left = rangeCount_ > 1 ? ranges_[part_].end - readAt_ : fileOffset_ + fileLength_ - readAt_;
  if (buf.size() > left) buf = buf.first(static_cast<size_t>(left));
  buf_ = buf;
  if (file_ != kNoFile) {
    issueRead(e, ex);
    return Flow::Wait;
  }
  wait_ = Wait::Open;
  ex.op_.busy = true;
  e.storage_.openRead(ex.op_, ex.partial_);
  return Flow::Wait;
}

void ReplyFlow::issueRead(UploadEngine& e, Exchange& ex) {
  wait_ = Wait::Read;
  ex.op_.busy = true;
  e.storage_.read(ex.op_, file_, readAt_, buf_);
}

void ReplyFlow::onStorage(UploadEngine& e, Exchange& ex) {
  const Status st = ex.op_.status;
  Wait w = wait_;
  wait_ = Wait::None;
  switch (w) {
    case Wait::Open:
      if (!st.isOk()) {
        logf(LogLevel::Warn, "reply download: cannot open %s: %s", ex.partial_, st.message());
        return e.ready(ex);  // no bytes: the host closes the connection
      }
      file_ = static_cast<FileHandle>(ex.op_.result);
      return issueRead(e, ex);
    case Wait::Read:
      if (!st.isOk() || ex.op_.result <= 0) {
        // The head promised more bytes than the file has now: the client sees a short body and retries.
        logf(LogLevel::Warn, "reply download: reading %s failed", ex.partial_);
        return e.ready(ex);
      }
      readAt_ += static_cast<uint64_t>(ex.op_.result);
      chunk_ = std::span<const char>(buf_.data(), static_cast<size_t>(ex.op_.result));
      if (rangeCount_ > 1) {
        if (readAt_ == ranges_[part_].end) {  // this part's bytes are all read: the next delimiter
          ++part_;
          inText_ = true;
          if (part_ == rangeCount_) release(e);
        }
      } else if (readAt_ == fileOffset_ + fileLength_) {
        release(e);  // all read: the file is not needed any more
      }
      return e.ready(ex);
    case Wait::None: break;
  }
  wait_ = w;
  e.stray(ex, "storage");
}

void ReplyFlow::release(UploadEngine& e) {
  if (file_ == kNoFile) return;
  e.storage_.closeNow(file_);
  file_ = kNoFile;
}

}  // namespace bitsd
