// CommitFlow and CloseFlow: the two ends of a session that touch its destination or its data.
// CommitFlow puts a complete upload at its destination by one atomic rename (or a link, when
// overwrites are off, so an existing destination is never replaced) relative to the destination's
// directory opened afresh below its base, fsyncs that directory, removes the partial name after a
// link, and makes Committed durable before the final Ack. CloseFlow (Close/Cancel-Session) makes the
// Closed tombstone durable first, then deletes an incomplete upload's data and a reply file.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

// ---------------------------------------------------------------------------------------------------
// CommitFlow

Flow CommitFlow::start(UploadEngine& e, Exchange& ex) {
  CommitFlow& f = ex.flow_.emplace<CommitFlow>();
  Session& s = *ex.session_;
  e.closeFile(s);
  e.formatPartialPath(s.id, ex.partial_);
  // dest_ still holds <base>/<path> from onHeaders. The commit goes through the destination's
  // directory opened afresh below the base, never by path (a directory swapped for a symlink since
  // Create-Session is refused, not followed).
  f.wait_ = Wait::Link;
  ex.op_.busy = true;
  e.storage_.commitBeneath(ex.op_, ex.partial_, ex.destBase_, UploadEngine::destBelow(ex), e.settings_.allowOverwrites);
  return Flow::Wait;
}

void CommitFlow::onStorage(UploadEngine& e, Exchange& ex) {
  const Status st = ex.op_.status;
  Wait w = wait_;
  wait_ = Wait::None;
  switch (w) {
    case Wait::Link: return linked(e, ex);
    case Wait::Unlink:
      if (!st.isOk()) logf(LogLevel::Warn, "removing %s after commit: %s", ex.partial_, st.message());
      return commitDone(e, ex);
    case Wait::None:
    case Wait::Journal: break;
  }
  wait_ = w;
  e.stray(ex, "storage");
}

void CommitFlow::linked(UploadEngine& e, Exchange& ex) {
  const Status st = ex.op_.status;
  if (!st.isOk()) {
    // The session stays open with all its data: a repeat of the final fragment tries the
    // commit again (and succeeds once the cause is gone), or the session expires.
    if (st.code() == Code::AlreadyExists) {
      // The destination appeared after Create-Session; overwrites are off (§10.1).
      ex.reason_ = "the file exists and allow-overwrites is off";
      e.fail(ex, 403, hresult::kAccessDenied, true);
    } else if (st.code() == Code::NotFound) {
      e.fail(ex, 404, hresult::kPathNotFound, true);
    } else if (st.code() == Code::AccessDenied) {
      // A directory on the way was swapped for a symlink after Create-Session (or may not be
      // written): refused like a symlink at Create-Session, and nothing was written.
      logf(LogLevel::Warn, "commit of %s refused: %s (%d)", ex.dest_, st.message(), st.sysCode());
      e.fail(ex, 403, hresult::kAccessDenied, true);
    } else {
      logf(LogLevel::Warn, "commit of %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
      e.fail(ex, 500, hresultFor(st), true);
    }
    return e.ready(ex);
  }
  if (!ex.op_.syncStatus.isOk()) {
    logf(LogLevel::Warn, "directory sync after commit: %s", ex.op_.syncStatus.message());
  }
  // The upload is now at its destination. From here on, never commit it again (recovery finds
  // the file in place even if the Committed record does not make it to the journal).
  ex.session_->state = SessionState::Complete;
  ex.session_->committed = true;
  if (e.settings_.allowOverwrites || ex.op_.result == 1) return commitDone(e, ex);  // renamed: nothing left
  wait_ = Wait::Unlink;
  ex.op_.busy = true;
  e.storage_.remove(ex.op_, ex.partial_);
}

// The upload is at its destination: record it, then the Ack.
void CommitFlow::commitDone(UploadEngine& e, Exchange& ex) {
  Session& s = *ex.session_;
  logf(LogLevel::Info, "committed %s (%" PRIu64 " bytes)", ex.dest_, s.totalBytes);
  if (s.hashValid && s.hashedBytes == s.totalBytes) {
    e.sha_.finish(s.hash, s.sha256);
  } else if (e.settings_.digest) {
    logf(LogLevel::Warn, "no SHA-256 for %s: a failed write interrupted the running digest", ex.dest_);
  }
  s.hashValid = false;
  JournalRecord rec;
  rec.type = RecordType::Committed;
  rec.id = s.id;
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.totalBytes = s.totalBytes;
  std::memcpy(rec.sha256, s.sha256, 32);
  if (!e.appendOrFail(ex, rec)) return e.ready(ex);
  wait_ = Wait::Journal;
}

void CommitFlow::onJournal(UploadEngine& e, Exchange& ex, const Status& st) {
  if (wait_ != Wait::Journal) return e.stray(ex, "journal");
  wait_ = Wait::None;
  if (!st.isOk()) {
    // Committed in place, not in the journal: a repeat gets the final Ack from memory, and after a
    // restart recovery finds the file at its destination.
    e.fail(ex, 500, hresultFor(st), true);
    return e.ready(ex);
  }
  ++e.stats_.commits;
  e.respond(ex, 200, true);
  e.ready(ex);
}

// ---------------------------------------------------------------------------------------------------
// CloseFlow

Flow CloseFlow::start(UploadEngine& e, Exchange& ex, Session& s) {
  ex.flow_.emplace<CloseFlow>();
  if (!e.takeOver(s)) return e.fail(ex, 503, hresult::kBusy);
  if (s.state == SessionState::Open) e.hold(s, ex);
  return Flow::Continue;
}

Flow CloseFlow::onMessageComplete(UploadEngine& e, Exchange& ex) {
  Session* s = e.sessions_.find(ex.sessionId_);
  if (s == nullptr) {  // expired while the request was in flight
    return e.fail(ex, 500, hresult::kSessionNotFound);
  }
  if (s->state == SessionState::Closed) {  // a repeat: the tombstone answers
    e.touch(*s);
    e.respond(ex, 200, false);
    return Flow::Continue;
  }
  // The tombstone is journaled before the data goes: a crash in between must still answer a
  // repeated Close-Session with 200, never with BG_E_SESSION_NOT_FOUND.
  incomplete_ = s->state == SessionState::Open;
  JournalRecord rec;
  rec.type = RecordType::Closed;
  rec.id = s->id;
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.cancelled = ex.type_ == PacketType::CancelSession;
  if (!e.appendOrFail(ex, rec)) return Flow::Continue;
  wait_ = Wait::Journal;
  return Flow::Wait;
}

void CloseFlow::onJournal(UploadEngine& e, Exchange& ex, const Status& st) {
  if (wait_ != Wait::Journal) return e.stray(ex, "journal");
  wait_ = Wait::None;
  if (!st.isOk()) {
    e.fail(ex, 500, hresultFor(st));
    return e.ready(ex);
  }
  Session* s = e.sessions_.find(ex.sessionId_);
  if (s == nullptr) {
    e.respond(ex, 200, false);
    return e.ready(ex);
  }
  s->state = SessionState::Closed;
  e.touch(*s);
  e.closeFile(*s);
  // The reply is kept until Close/Cancel-Session (§5.4, §10.1); its URL is gone from now on. The file
  // stays while it is the delivery's reply of record (a later session of the transaction gets a copy).
  if (s->handedOff && !e.holdsReplyOfRecord(s->id) && !e.removeReplyInBackground(s->id)) {
    logf(LogLevel::Warn, "reply file of a closed session left behind: background deletions are busy");
  }
  if (incomplete_) {
    // A partial upload is never committed (§2.2): its data goes.
    e.formatPartialPath(s->id, ex.partial_);
    wait_ = Wait::Remove;
    ex.op_.busy = true;
    e.storage_.remove(ex.op_, ex.partial_);
    return;
  }
  e.respond(ex, 200, false);
  e.ready(ex);
}

void CloseFlow::onStorage(UploadEngine& e, Exchange& ex) {
  if (wait_ != Wait::Remove) return e.stray(ex, "storage");
  wait_ = Wait::None;
  const Status st = ex.op_.status;
  if (!st.isOk()) logf(LogLevel::Warn, "removing %s: %s", ex.partial_, st.message());
  e.respond(ex, 200, false);
  e.ready(ex);
}

}  // namespace bitsd
