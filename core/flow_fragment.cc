// FragmentFlow: one Fragment of an upload (BITS-UPLOAD.md §4, §10.1). At the head: the range is
// checked against the session (a repeat after completion is answered from memory, a gap with 416),
// the session is held and its file opened if it was closed. Body bytes are written zero-copy
// straight from the connection's buffer, feeding the session's running SHA-256 as they go. At the
// end: fdatasync, `have` advances, a Progress record is made durable, then the Ack; at the last
// byte the flow hands over to CommitFlow or DeliveryFlow (UploadEngine::startCompletion).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/content_range.h"
#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

Flow FragmentFlow::start(UploadEngine& e, Exchange& ex, const RequestHead& head) {
  Session& s = *e.sessions_.find(ex.sessionId_);
  FragmentFlow& f = ex.flow_.emplace<FragmentFlow>();
  ++e.stats_.fragments;
  if (s.state == SessionState::Closed) return e.fail(ex, 500, hresult::kSessionNotFound);
  ByteRange r;
  if (!head.has(HeaderId::ContentRange) || !parseContentRange(head.value(HeaderId::ContentRange), &r) ||
      head.contentLength != r.size()) {
    return e.fail(ex, 400, hresult::kInvalidArg);
  }
  if (s.totalKnown && r.total != s.totalBytes) return e.fail(ex, 400, hresult::kInvalidArg);
  if (r.total > e.settings_.maxUploadSizeBytes) return e.fail(ex, 500, hresult::kTooLarge);
  if (head.contentLength > e.settings_.maxFragmentBytes) {
    // 413 carries no BITS error (§7.1); the client resends smaller fragments. The answer goes out
    // before the body, and the connection closes: the body is never read, so a client cannot keep
    // its request slot by sending bytes that would be thrown away.
    ex.failed_ = true;
    ex.status_ = 413;
    AckSpec spec;
    spec.status = 413;
    spec.sessionId = &ex.sessionId_;
    ex.expectContinue_ = false;
    ex.respondNow_ = true;
    ex.close_ = true;
    spec.close = ex.close_;
    ex.responseLen_ = formatAck(spec, ex.response_);
    return Flow::Continue;
  }
  ex.session_ = &s;  // for the range header in answers; not held busy yet
  if (s.state == SessionState::Complete) {
    // A repeat after completion gets the cached final Ack (§10.1). Nothing to write.
    e.touch(s);
    ex.session_ = nullptr;
    if (s.handedOff) {
      // The application has answered: replay its answer, never post again (§8).
      if (const DeliveryInfo* d = e.book_.endedFor(s.id)) {
        if (ex.respondNow_) {
          ex.respondNow_ = false;
          ex.expectContinue_ = head.contentLength > 0;
        }
        ex.failed_ = true;  // answer decided; discard the body
        DeliveryOutcome o{d->status, d->hresult, d->flags, d->replyBytes, d->replySession};
        std::string_view url(d->staticUrl.data(), std::min(d->staticUrl.size(), NotifyResult::kMaxUrlBytes));
        e.respondDelivered(ex, o, url, s.totalBytes);
        return Flow::Continue;
      }
    }
    ex.failed_ = true;  // answer already decided; discard the body
    AckSpec spec;
    spec.status = 200;
    spec.sessionId = &ex.sessionId_;
    spec.hasReceived = true;
    spec.receivedBytes = s.totalBytes;
    if (ex.respondNow_) {
      ex.respondNow_ = false;
      ex.expectContinue_ = head.contentLength > 0;
    }
    spec.close = ex.close_;
    ex.status_ = 200;
    ex.responseLen_ = formatAck(spec, ex.response_);
    return Flow::Continue;
  }
  if (!e.takeOver(s)) {
    ex.session_ = nullptr;
    return e.fail(ex, 503, hresult::kBusy);
  }
  if (r.begin > s.haveBytes) {
    // A gap: the client resynchronises from BITS-Received-Content-Range (§4.1 step 6).
    Flow fl = e.fail(ex, 416, hresult::kNone, true);
    ex.session_ = nullptr;
    return fl;
  }
  s.totalKnown = true;
  s.totalBytes = r.total;
  e.hold(s, ex);
  e.touch(s);
  if (ex.respondNow_) {
    ex.respondNow_ = false;
    ex.expectContinue_ = head.contentLength > 0;
  }
  if (r.end <= s.haveBytes) {
    f.writing_ = false;  // a pure repeat: nothing new to store
    return Flow::Continue;
  }
  f.writing_ = true;
  f.skipBytes_ = s.haveBytes - r.begin;
  f.writeOffset_ = s.haveBytes;
  if (s.file != kNoFile) return Flow::Continue;
  e.makeRoomForOpenFile();
  e.formatPartialPath(s.id, ex.partial_);
  f.wait_ = Wait::OpenFile;
  ex.op_.busy = true;
  e.storage_.openWrite(ex.op_, ex.partial_);
  return Flow::Wait;
}

Flow FragmentFlow::onBody(UploadEngine& e, Exchange& ex, std::span<const char> bytes) {
  if (!writing_) return Flow::Continue;
  if (skipBytes_ >= bytes.size()) {
    skipBytes_ -= bytes.size();
    return Flow::Continue;
  }
  bytes = bytes.subspan(static_cast<size_t>(skipBytes_));
  skipBytes_ = 0;
  pending_ = bytes;
  return issueWrite(e, ex);
}

Flow FragmentFlow::issueWrite(UploadEngine& e, Exchange& ex) {
  Session& s = *ex.session_;
  // The digest follows the bytes in file order: hash this span only if it continues exactly where
  // the running digest stands (not for the rest of a short write, which was hashed whole).
  hashing_ = s.hashValid && s.hashedBytes == writeOffset_;
  if (hashing_ && !hashSnapValid_ && writeOffset_ == s.haveBytes) {
    hashSnap_ = s.hash;
    hashSnapAt_ = s.haveBytes;
    hashSnapValid_ = true;
  }
  wait_ = Wait::Write;
  ex.op_.busy = true;
  e.storage_.write(ex.op_, s.file, writeOffset_, pending_, hashing_ ? &s.hash : nullptr);
  return Flow::Wait;
}

Flow FragmentFlow::onMessageComplete(UploadEngine& e, Exchange& ex) {
  if (writeFailed_ && ex.session_ != nullptr && ex.session_->file != kNoFile) {
    // Trim what a failed write may have left beyond the acked prefix, so the disk space comes back.
    wait_ = Wait::Truncate;
    ex.op_.busy = true;
    e.storage_.truncate(ex.op_, ex.session_->file, ex.session_->haveBytes);
    return Flow::Wait;
  }
  // Early answers (errors, repeats after completion) are already formatted.
  if (ex.failed_ || ex.responseLen_ > 0) return Flow::Continue;
  Session& s = *ex.session_;
  if (writing_ && writeOffset_ > s.haveBytes) {
    if (e.settings_.fdatasync) {
      wait_ = Wait::Sync;
      ex.op_.busy = true;
      e.storage_.syncData(ex.op_, s.file);
      return Flow::Wait;
    }
    e.noteAcked(ex, s, writeOffset_);
  }
  return journalProgress(e, ex);
}

// `have` is durable on disk; make it durable in the journal before acking it (also for a repeat
// after an earlier journal failure), then commit if the upload is complete.
Flow FragmentFlow::journalProgress(UploadEngine& e, Exchange& ex) {
  Session& s = *ex.session_;
  if (s.haveBytes > s.journaledBytes) {
    JournalRecord rec;
    rec.type = RecordType::Progress;
    rec.id = s.id;
    rec.wallSeconds = e.clock_.wallSeconds();
    rec.totalBytes = s.totalBytes;
    rec.haveBytes = s.haveBytes;
    rec.shaStateLen = e.digestCheckpoint(s, rec.shaState);
    journaledTo_ = s.haveBytes;
    if (!e.appendOrFail(ex, rec)) return Flow::Continue;
    wait_ = Wait::Journal;
    return Flow::Wait;
  }
  if (s.haveBytes == s.totalBytes) return e.startCompletion(ex);  // replaces this flow
  e.respond(ex, 200, true);
  return Flow::Continue;
}

void FragmentFlow::onStorage(UploadEngine& e, Exchange& ex) {
  const Status st = ex.op_.status;
  Wait w = wait_;
  wait_ = Wait::None;
  switch (w) {
    case Wait::OpenFile: {
      Session& s = *ex.session_;
      if (!st.isOk()) {
        // The in-progress data is gone (deleted behind our back): the session cannot go on. The
        // client starts over with a new session, which is better than committing a hole.
        logf(LogLevel::Warn, "fragment: in-progress file %s lost: %s", ex.partial_, st.message());
        s.busy = false;
        s.holder = nullptr;
        ex.session_ = nullptr;
        s.state = SessionState::Closed;
        e.fail(ex, 500, hresult::kSessionNotFound);
        writing_ = false;
        return e.ready(ex);
      }
      s.file = static_cast<FileHandle>(ex.op_.result);
      ++e.openFiles_;
      return e.ready(ex);
    }
    case Wait::Write: return written(e, ex, st);
    case Wait::Truncate:
      if (!st.isOk()) logf(LogLevel::Warn, "truncate after failed write: %s", st.message());
      return e.ready(ex);
    case Wait::Sync: {
      Session& s = *ex.session_;
      ++e.stats_.syncs;
      if (!st.isOk()) {
        logf(LogLevel::Warn, "fdatasync failed: %s (%d)", st.message(), st.sysCode());
        e.fail(ex, 500, hresultFor(st), true);
        return e.ready(ex);
      }
      e.noteAcked(ex, s, writeOffset_);
      if (journalProgress(e, ex) == Flow::Continue) return e.ready(ex);  // `this` may be gone: no more
      return;
    }
    case Wait::None:
    case Wait::Journal: break;
  }
  wait_ = w;
  e.stray(ex, "storage");
}

void FragmentFlow::written(UploadEngine& e, Exchange& ex, const Status& st) {
  Session& hs = *ex.session_;
  if (hashing_) {
    hs.hashedBytes += pending_.size();  // the whole span was hashed, however much was written
    hashing_ = false;
  } else if (writeOffset_ < hs.hashedBytes && writeOffset_ + pending_.size() > hs.hashedBytes) {
    hs.hashValid = false;
  }
  if (!st.isOk() || ex.op_.result <= 0) {
    hs.hashValid = false;  // hashed bytes that may not be on disk: the digest is unknown now
    Status why = st.isOk() ? Status(Code::Io, "short write") : st;
    if (why.code() == Code::NoSpace) ++e.stats_.diskFull;
    logf(LogLevel::Warn, "fragment write failed at offset %" PRIu64 ": %s (%d)", writeOffset_, why.message(),
         why.sysCode());
    writeFailed_ = true;
    writing_ = false;
    e.fail(ex, 500, why.code() == Code::NoSpace ? hresult::kDiskFull : hresult::kInternal, true);
    return e.ready(ex);
  }
  size_t n = static_cast<size_t>(ex.op_.result);
  e.stats_.bytesWritten += n;
  writeOffset_ += n;
  pending_ = pending_.subspan(n);
  if (!pending_.empty()) {  // short write: go on with the rest
    issueWrite(e, ex);
    return;
  }
  e.ready(ex);
}

void FragmentFlow::onJournal(UploadEngine& e, Exchange& ex, const Status& st) {
  if (wait_ != Wait::Journal) return e.stray(ex, "journal");
  wait_ = Wait::None;
  Session& s = *ex.session_;
  if (!st.isOk()) {
    e.fail(ex, 500, hresultFor(st), true);
    return e.ready(ex);
  }
  if (journaledTo_ > s.journaledBytes) s.journaledBytes = journaledTo_;
  if (s.haveBytes == s.totalBytes) {
    if (e.startCompletion(ex) == Flow::Continue) return e.ready(ex);  // replaced this flow: no more
    return;
  }
  e.respond(ex, 200, true);
  e.ready(ex);
}

void FragmentFlow::release(Session& s) const {
  if (hashSnapValid_ && s.hashValid && s.haveBytes == hashSnapAt_ && s.hashedBytes > s.haveBytes) {
    // This fragment was hashed further than it was acked (its connection died mid-body): rewind
    // the digest to `have`, where the client's retry will start.
    s.hash = hashSnap_;
    s.hashedBytes = s.haveBytes;
  }
}

}  // namespace bitsd
