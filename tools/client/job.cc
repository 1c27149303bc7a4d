#include "tools/client/job.h"

#include <algorithm>
#include <cstdio>

#include "core/notify.h"
#include "core/protocol.h"
#include "tools/client/messages.h"

namespace bitsd::client {

uint64_t RetryPolicy::delayMs(uint32_t failures, uint64_t retryAfterMs) const {
  uint64_t d = firstDelayMs;
  for (uint32_t i = 1; i < failures && d < maxDelayMs; ++i) d *= 2;
  d = std::min(d, maxDelayMs);
  return std::max(d, std::min(retryAfterMs, maxDelayMs));
}

uint64_t FragmentSizer::clamp(uint64_t b) { return std::clamp(b, kMinFragmentBytes, kMaxFragmentBytes); }

FragmentSizer::FragmentSizer(uint64_t configured) : bytes_(clamp(configured)) {}

bool FragmentSizer::shrink() {
  if (bytes_ <= kMinFragmentBytes) return false;
  bytes_ = std::max(bytes_ / 2, kMinFragmentBytes);
  return true;
}

const char* kindName(Kind k) {
  switch (k) {
    case Kind::Ping: return "Ping";
    case Kind::CreateSession: return "Create-Session";
    case Kind::Fragment: return "Fragment";
    case Kind::CloseSession: return "Close-Session";
    case Kind::CancelSession: return "Cancel-Session";
    case Kind::ReplyHead: return "HEAD";
    case Kind::ReplyGet: return "GET";
  }
  return "?";
}

const char* eventName(Event::Type t) {
  switch (t) {
    case Event::Type::SessionCreated: return "session";
    case Event::Type::Acked: return "acked";
    case Event::Type::Resync: return "resync";
    case Event::Type::Shrunk: return "shrink";
    case Event::Type::Retry: return "retry";
    case Event::Type::Restart: return "restart";
    case Event::Type::HostId: return "host-id";
    case Event::Type::Fallback: return "fallback";
    case Event::Type::Reply: return "reply";
    case Event::Type::Done: return "done";
    case Event::Type::Failed: return "failed";
  }
  return "?";
}

std::string hresultText(uint32_t code) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", code);
  return buf;
}

Job::Job(const JobConfig& config) : config_(config), sizer_(config.fragmentBytes) {}

void Job::resume(std::string_view sessionId, uint64_t offset, std::string_view hostId, uint64_t fallbackSeconds) {
  sessionId_ = std::string(sessionId);
  offset_ = std::min(offset, config_.fileBytes);
  hostId_ = std::string(hostId);
  usingHostId_ = !hostId_.empty();
  fallbackSeconds_ = fallbackSeconds;
  phase_ = Phase::Ping;  // Windows pings on every resume
  afterPing_ = Phase::Fragments;
}

void Job::cancel() {
  phase_ = Phase::Cancel;
  failures_ = 0;
  waitUntilMs_ = 0;
}

std::vector<Event> Job::takeEvents() {
  std::vector<Event> out;
  out.swap(events_);
  return out;
}

Job::Next Job::next(uint64_t nowMs, Request* out, uint64_t* waitUntilMs) {
  if (phase_ == Phase::Done) return Next::Done;
  if (phase_ == Phase::Failed) return Next::Failed;
  if (nowMs < waitUntilMs_) {
    *waitUntilMs = waitUntilMs_;
    return Next::Wait;
  }
  Request r;
  r.toHostId = usingHostId_;
  switch (phase_) {
    case Phase::Ping: r.kind = Kind::Ping; break;
    case Phase::Create:
      r.kind = Kind::CreateSession;
      r.toHostId = false;
      break;
    case Phase::Fragments:
      r.kind = Kind::Fragment;
      r.begin = offset_;
      r.end = std::min(config_.fileBytes, offset_ + sizer_.bytes());
      break;
    case Phase::ReplyHead: r.kind = Kind::ReplyHead; break;
    case Phase::ReplyGet:
      r.kind = Kind::ReplyGet;
      r.begin = replyHave_;
      r.end = std::min(replyTotal_, replyHave_ + kReplyChunkBytes);
      break;
    case Phase::Close: r.kind = Kind::CloseSession; break;
    case Phase::Cancel: r.kind = Kind::CancelSession; break;
    case Phase::Done:
    case Phase::Failed: break;
  }
  *out = r;
  return Next::Send;
}

void Job::fail(int exitCode, std::string reason) {
  phase_ = Phase::Failed;
  exitCode_ = exitCode;
  failure_ = std::move(reason);
  Event e{Event::Type::Failed};
  e.text = failure_;
  emit(std::move(e));
}

void Job::progress() { failures_ = 0; }

Kind Job::phaseKind() const {
  switch (phase_) {
    case Phase::Ping: return Kind::Ping;
    case Phase::Create: return Kind::CreateSession;
    case Phase::Fragments: return Kind::Fragment;
    case Phase::ReplyHead: return Kind::ReplyHead;
    case Phase::ReplyGet: return Kind::ReplyGet;
    case Phase::Close: return Kind::CloseSession;
    case Phase::Cancel:
    case Phase::Done:
    case Phase::Failed: return Kind::CancelSession;
  }
  return Kind::Ping;
}

void Job::restart(const Response& r) {
  if (++restarts_ > config_.maxRestarts) {
    std::string why("the server lost the upload session ");
    why.append(std::to_string(restarts_)).append(" times; giving up ").append(refusalCodes(r));
    fail(kExitSessionLost, why);
    return;
  }
  Event e{Event::Type::Restart};
  e.text = refusalMessage(r, phaseKind(), config_.credentialsGiven);
  e.previous = offset_;
  emit(std::move(e));
  sessionId_.clear();
  offset_ = 0;
  hostId_.clear();
  usingHostId_ = false;
  hostIdFailing_ = false;
  replyUrl_.clear();
  replyHave_ = replyTotal_ = 0;
  phase_ = Phase::Create;
  waitUntilMs_ = 0;
}

void Job::transient(const Response& r, uint64_t nowMs, const char* what) {
  ++failures_;
  // Built with append (GCC 12's -Wrestrict misfires on chains of operator+ at -O3).
  std::string reason(what);
  if (r.status == 0) {
    reason.append(": ").append(r.transportError);
  } else {
    reason.append(": ").append(refusalMessage(r, phaseKind(), config_.credentialsGiven));
  }
  if (failures_ >= config_.retry.maxFailures) {
    reason.append(" (").append(std::to_string(failures_)).append(failures_ == 1 ? " failure" : " failures");
    reason.append(" in a row; giving up)");
    fail(kExitRetries, reason);
    return;
  }
  uint64_t delay = config_.retry.delayMs(failures_, r.retryAfterSeconds * 1000);
  waitUntilMs_ = nowMs + delay;
  Event e{Event::Type::Retry};
  e.delayMs = delay;
  e.failures = failures_;
  e.status = r.status;
  e.errorCode = r.errorCode;
  e.text = reason;
  emit(std::move(e));
}

// An answer that is not the phase's success: BG_E_SESSION_NOT_FOUND starts over, then the §3.3
// transient/fatal split.
void Job::classify(const Response& r, uint64_t nowMs, const char* what) {
  if (r.status == 0) {
    if (usingHostId_) {
      if (!hostIdFailing_) {
        hostIdFailing_ = true;
        hostIdFailingSinceMs_ = nowMs;
      }
      if (fallbackSeconds_ != 0 && nowMs - hostIdFailingSinceMs_ >= fallbackSeconds_ * 1000) {
        Event e{Event::Type::Fallback};
        e.text = hostId_;
        emit(std::move(e));
        usingHostId_ = false;
        hostIdFailing_ = false;
        waitUntilMs_ = nowMs;
        return;
      }
    }
    transient(r, nowMs, what);
    return;
  }
  if (r.hasErrorCode && r.errorCode == hresult::kSessionNotFound && !sessionId_.empty()) {
    restart(r);
    return;
  }
  // BG_E_TOO_LARGE is final whatever the status (§3.3); otherwise the transient/fatal split.
  if (!(r.hasErrorCode && r.errorCode == hresult::kTooLarge) && isTransientStatus(r.status)) {
    transient(r, nowMs, what);
    return;
  }
  // One sentence a person understands, plus the codes (messages.cc).
  std::string reason(what);
  reason.append(": ").append(refusalMessage(r, phaseKind(), config_.credentialsGiven));
  fail(kExitFatal, reason);
}

void Job::onResponse(const Response& r, uint64_t nowMs) {
  if (r.status != 0 && usingHostId_) hostIdFailing_ = false;
  switch (phase_) {
    case Phase::Ping:
      if (r.status == 200) {
        progress();
        phase_ = afterPing_;
        return;
      }
      return classify(r, nowMs, "Ping");

    case Phase::Create:
      if (r.status == 200 || r.status == 201) {
        if (r.sessionId.empty()) return fail(kExitFatal, "Create-Session answered 200 without BITS-Session-Id");
        progress();
        sessionId_ = r.sessionId;
        offset_ = 0;
        Event e{Event::Type::SessionCreated};
        e.text = sessionId_;
        emit(std::move(e));
        if (!r.hostId.empty()) {
          hostId_ = r.hostId;
          usingHostId_ = true;
          fallbackSeconds_ = r.hasFallback ? r.fallbackSeconds : 0;
          Event h{Event::Type::HostId};
          h.text = hostId_;
          emit(std::move(h));
          phase_ = Phase::Ping;  // probe the host-id server before the fragments (§9)
          afterPing_ = Phase::Fragments;
          return;
        }
        phase_ = Phase::Fragments;
        return;
      }
      return classify(r, nowMs, "Create-Session");

    case Phase::Fragments: {
      if (r.status == 200 || r.status == 416) {
        if (!r.hasReceived || r.received > config_.fileBytes) {
          return fail(kExitFatal, "Fragment answered " + std::to_string(r.status) +
                                      " without a usable BITS-Received-Content-Range");
        }
        uint64_t before = offset_;
        uint64_t sent = std::min(config_.fileBytes, offset_ + sizer_.bytes());
        offset_ = r.received;
        if (r.status == 416 || r.received != sent) {
          // The server holds a different prefix than we thought: go on from its offset (§4.2).
          Event e{Event::Type::Resync};
          e.previous = before;
          e.offset = offset_;
          emit(std::move(e));
          if (r.received == before && r.status == 416) {
            // No progress and no new information: count it, so a confused server cannot loop us.
            return transient(r, nowMs, "Fragment");
          }
        } else {
          Event e{Event::Type::Acked};
          e.offset = offset_;
          emit(std::move(e));
        }
        if (offset_ > before) progress();
        if (r.status == 200 && offset_ == config_.fileBytes) {
          replyUrl_ = r.replyUrl;
          if (config_.wantReply) {
            if (replyUrl_.empty()) return fail(kExitFatal, "the final Fragment's Ack has no BITS-Reply-URL");
            phase_ = Phase::ReplyHead;
            replyHave_ = replyTotal_ = 0;
            return;
          }
          phase_ = Phase::Close;
        }
        return;
      }
      if (r.status == 413) {
        uint64_t old = sizer_.bytes();
        if (!sizer_.shrink()) {
          return fail(kExitFatal, "Fragment: " + refusalMessage(r, Kind::Fragment, config_.credentialsGiven));
        }
        Event e{Event::Type::Shrunk};
        e.previous = old;
        e.offset = sizer_.bytes();
        emit(std::move(e));
        return;
      }
      return classify(r, nowMs, "Fragment");
    }

    case Phase::ReplyHead:
      if (r.status == 200) {
        if (!r.hasContentLength) return fail(kExitFatal, "the reply's HEAD answer has no Content-Length");
        progress();
        replyTotal_ = r.contentLength;
        replyHave_ = 0;
        phase_ = replyTotal_ == 0 ? Phase::Close : Phase::ReplyGet;
        Event e{Event::Type::Reply};
        e.offset = 0;
        e.text = replyUrl_;
        emit(std::move(e));
        return;
      }
      return classify(r, nowMs, "HEAD of the reply");

    case Phase::ReplyGet:
      if (r.status == 206) {
        if (!r.hasContentRange || r.rangeBegin != replyHave_ || r.rangeEnd <= r.rangeBegin ||
            r.rangeTotal != replyTotal_) {
          return fail(kExitFatal, "the reply's ranged GET answered a different range or size");
        }
        progress();
        replyHave_ = r.rangeEnd;
        Event e{Event::Type::Reply};
        e.offset = replyHave_;
        emit(std::move(e));
        if (replyHave_ == replyTotal_) phase_ = Phase::Close;
        return;
      }
      if (r.status == 200) return fail(kExitFatal, "the reply's GET answered 200 to a Range request");
      return classify(r, nowMs, "GET of the reply");

    case Phase::Close:
    case Phase::Cancel: {
      const char* what = phase_ == Phase::Close ? "Close-Session" : "Cancel-Session";
      bool notFound = r.hasErrorCode && r.errorCode == hresult::kSessionNotFound;
      // §3.3: Close/Cancel are resent on 5xx (and when nothing answered), except for
      // BG_E_SESSION_NOT_FOUND; other answers are final.
      if (r.status == 0 || (r.status >= 500 && !notFound)) return transient(r, nowMs, what);
      phase_ = Phase::Done;
      Event e{Event::Type::Done};
      e.offset = offset_;
      e.status = r.status;
      e.text = r.status == 200 ? std::string() : std::string(what) + " answered " + std::to_string(r.status);
      emit(std::move(e));
      return;
    }
    case Phase::Done:
    case Phase::Failed: return;
  }
}

}  // namespace bitsd::client
