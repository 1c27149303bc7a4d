// CreateFlow: Create-Session (BITS-UPLOAD.md §2.2, §10.1). max-sessions-per-user, then the
// destination is checked (its directory exists below the base, it is not a directory, overwrites)
// and, in the same thread-pool step, the in-progress file created exclusively under a freshly drawn
// session id; then a table slot is made free, and SessionCreated (with its owner) is made durable
// before the Ack. A refusal after the check removes the file it created.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

Flow CreateFlow::start(UploadEngine& e, Exchange& ex) {
  if (e.farm_ != nullptr && !e.farm_->live()) {
    // Farm mode: a session's owner is recorded in the farm before its Ack; without a live lease
    // this node cannot, so nothing is created.
    ++e.stats_.farmUnavailable;
    ex.reason_ = "this node holds no live farm lease";
    return e.fail(ex, 503, hresult::kBusy);
  }
  // max-sessions-per-user: the answer is transient (503 + Retry-After): a client with many jobs
  // gets its session once one of its own ends; an abuser only gets more 503s, which cost nothing.
  ex.party_ = e.partyOf(ex);
  if (e.settings_.maxSessionsPerUser != 0 && ex.party_.known()) {
    uint32_t held = e.openSessionsOf(ex.party_);
    if (held >= e.settings_.maxSessionsPerUser) {
      ++e.stats_.quotaRefusals;
      char who[80];
      e.describeParty(ex.party_, who, sizeof who);
      ex.reason_ = "the client or user holds max-sessions-per-user open sessions";
      logf(LogLevel::Debug, "create-session refused: %s holds %u open sessions (max-sessions-per-user)", who, held);
      return e.fail(ex, 503, hresult::kNoSystemResources);
    }
  }
  uint8_t rnd[16];
  if (!e.random_.fill(rnd, sizeof rnd)) {
    logf(LogLevel::Error, "create-session: random generator failed");
    return e.fail(ex, 500, hresult::kInternal);
  }
  // The id names the in-progress file, which the destination check creates in the same step when
  // the destination can take the upload; it is the session's only once everything below passed.
  ex.sessionId_ = sessionIdFromRandom(rnd);
  e.creating_.push_back(&ex);
  ex.creating_ = true;
  CreateFlow& f = ex.flow_.emplace<CreateFlow>();
  e.makeRoomForOpenFile();
  e.formatPartialPath(ex.sessionId_, ex.partial_);
  f.wait_ = Wait::CheckDestination;
  ex.op_.busy = true;
  e.storage_.checkDestination(ex.op_, ex.destBase_, UploadEngine::destBelow(ex), ex.partial_, e.settings_.allowOverwrites);
  return Flow::Wait;
}

void CreateFlow::onStorage(UploadEngine& e, Exchange& ex) {
  Wait w = wait_;
  wait_ = Wait::None;
  switch (w) {
    case Wait::CheckDestination: return checked(e, ex);
    case Wait::None:
    case Wait::Journal:
    case Wait::FarmOwner: break;
  }
  wait_ = w;
  e.stray(ex, "storage");
}

void CreateFlow::checked(UploadEngine& e, Exchange& ex) {
  const Status st = ex.op_.status;
  if (ex.op_.result >= 0) newFile_ = static_cast<FileHandle>(ex.op_.result);
  // Every refusal below removes the in-progress file the check created (if it did).
  if (refused(e, ex, st)) {
    if (newFile_ != kNoFile) dropFile(e, ex);
    return e.ready(ex);
  }
  ex.hasSessionId_ = true;
  created(e, ex);
}

bool CreateFlow::refused(UploadEngine& e, Exchange& ex, const Status& st) {
  if (!st.isOk()) {
    if (st.code() == Code::NotFound) {
      ex.reason_ = "the destination's directory does not exist";
      e.fail(ex, 404, hresult::kPathNotFound);
    } else if (st.code() == Code::AccessDenied) {
      ex.reason_ = "the destination's directory may not be written (or is a symlink)";
      e.fail(ex, 403, hresult::kAccessDenied);
    } else {
      logf(LogLevel::Warn, "create-session: checking %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
      e.fail(ex, 500, hresult::kInternal);
    }
    return true;
  }
  if (ex.op_.kind == FileKind::Directory) {
    ex.reason_ = "the destination is a directory";
    e.fail(ex, 400, hresult::kInvalidArg);
    return true;
  }
  if (ex.op_.kind != FileKind::Missing && !e.settings_.allowOverwrites) {
    ex.reason_ = "the file exists and allow-overwrites is off";
    e.fail(ex, 403, hresult::kAccessDenied);
    return true;
  }
  if (e.journal_.nearlyFull()) {
    ++e.stats_.journalRefusals;
    logf(LogLevel::Warn, "create-session refused: the journal is near its size cap even when compacted");
    e.fail(ex, 503, hresult::kNoSystemResources);
    return true;
  }
  if (e.sessions_.find(ex.sessionId_) != nullptr || !e.makeRoomForNewSession(ex)) {
    logf(LogLevel::Warn, "create-session refused: session table full (%u sessions)", e.sessions_.size());
    e.fail(ex, 503, hresult::kNoSystemResources);
    return true;
  }
  if (newFile_ == kNoFile) {
    const Status& cs = ex.op_.createStatus.isOk() ? Status(Code::Io, "the in-progress file was not created")
                                                  : ex.op_.createStatus;
    logf(LogLevel::Warn, "create-session: cannot create %s: %s (%d)", ex.partial_, cs.message(), cs.sysCode());
    e.fail(ex, 500, hresultFor(cs));
    return true;
  }
  return false;
}

// The destination can take the upload and the in-progress file exists (newFile_): journal the
// session.
void CreateFlow::created(UploadEngine& e, Exchange& ex) {
  JournalRecord rec;
  rec.type = RecordType::SessionCreated;
  rec.id = ex.sessionId_;
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.path = std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_);
  // Who it belongs to: the user, or with authentication off the client's address ("@...", so
  // the per-address count survives a restart).
  char partyText[kMaxPartyTextBytes];
  std::string_view owner;
  if (e.authenticator_ != nullptr && ex.user_ >= 0) {
    owner = e.authenticator_->userName(ex.user_);
  } else if (e.authenticator_ == nullptr) {
    owner = std::string_view(partyText, formatPartyAddress(ex.party_, partyText));
  }
  // The owner goes in the same flush, after the session it names; the Ack waits for both. If the
  // session's record cannot be queued, neither is the owner's: appendOrFail below tries the
  // session's record again, fails the same way (nothing ran in between) and answers 503.
  if (!owner.empty() && e.journal_.append(rec, nullptr).isOk()) {
    rec = JournalRecord();
    rec.type = RecordType::SessionOwner;
    rec.id = ex.sessionId_;
    rec.owner = owner;
  }
  if (!e.appendOrFail(ex, rec)) {
    dropFile(e, ex);
    return e.ready(ex);
  }
  wait_ = Wait::Journal;
}

// The session will not exist: its file goes.
void CreateFlow::dropFile(UploadEngine& e, Exchange& ex) {
  e.storage_.closeNow(newFile_);
  newFile_ = kNoFile;
  e.removeInBackground(ex.sessionId_);
  ex.hasSessionId_ = false;
}

void CreateFlow::onJournal(UploadEngine& e, Exchange& ex, const Status& st) {
  if (wait_ != Wait::Journal) return e.stray(ex, "journal");
  wait_ = Wait::None;
  if (!st.isOk()) {
    dropFile(e, ex);
    e.fail(ex, 500, hresultFor(st));
    return e.ready(ex);
  }
  if (e.farm_ != nullptr) {
    // Farm mode: the farm learns that this node owns the session before the client does.
    wait_ = Wait::FarmOwner;
    ex.farm_.callback = &ex;
    ex.farm_.resetResult();
    ex.farm_.busy = true;
    e.farm_->recordSession(ex.farm_, ex.sessionId_);
    return;
  }
  finishCreate(e, ex);
  e.ready(ex);
}

void CreateFlow::onFarm(UploadEngine& e, Exchange& ex) {
  if (wait_ != Wait::FarmOwner) return e.stray(ex, "farm");
  wait_ = Wait::None;
  if (ex.farm_.outcome == FarmOutcome::Done) {
    finishCreate(e, ex);
    return e.ready(ex);
  }
  // The farm could not record the owner: the session was never acked, so it is undone (as a
  // Cancel-Session would: Closed journaled, its file removed) and the client retries.
  ++e.stats_.farmUnavailable;
  JournalRecord rec;
  rec.type = RecordType::Closed;
  rec.id = ex.sessionId_;
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.cancelled = true;
  if (!e.journal_.append(rec, nullptr).isOk()) {
    // Left to idle-session-timeout after a restart; in memory it never existed.
    logf(LogLevel::Warn, "create-session undone: the journal cannot take its Closed record");
  }
  logf(LogLevel::Warn, "create-session refused: the farm could not record this node as the session's owner");
  ex.reason_ = "the farm could not record the session's owner";
  dropFile(e, ex);
  e.fail(ex, 503, hresult::kBusy);
  e.ready(ex);
}

void CreateFlow::finishCreate(UploadEngine& e, Exchange& ex) {
  e.endCreating(ex);  // from here on the table counts it
  Session* s = e.sessions_.insert(ex.sessionId_, std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_));
  if (s == nullptr) {  // cannot happen: room was made before the file was created, and we are single-threaded
    e.storage_.closeNow(newFile_);
    newFile_ = kNoFile;
    e.fail(ex, 503, hresult::kNoSystemResources);
    return;
  }
  if (s->slot + 1 > e.highWater_) e.highWater_ = s->slot + 1;
  s->owner = ex.user_;
  s->party = ex.party_;
  s->client = ex.peer_;
  s->createdMs = e.clock_.nowMs();
  s->file = newFile_;
  newFile_ = kNoFile;
  ++e.openFiles_;
  e.sha_.start(s->hash);
  s->hashValid = e.settings_.digest;
  s->hashedBytes = 0;
  e.touch(*s);
  ++e.stats_.sessionsCreated;
  AckSpec spec;
  spec.status = 200;
  spec.createSession = true;
  if (e.settings_.sendHostId) spec.hostId = e.settings_.hostId;
  spec.hostIdFallbackSeconds = e.settings_.hostIdFallbackTimeoutSeconds;
  spec.sessionId = &ex.sessionId_;
  spec.close = ex.close_;
  ex.status_ = 200;
  ex.responseLen_ = formatAck(spec, ex.response_);
}

}  // namespace bitsd
