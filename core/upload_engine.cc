#include "core/upload_engine.h"

#include <cinttypes>
#include <cstring>

#include "core/content_range.h"
#include "core/log.h"
#include "core/url_path.h"

namespace bitsd {

namespace {
constexpr std::string_view kPartialSuffix = ".part";

uint32_t hresultFor(const Status& s) {
  switch (s.code()) {
    case Code::NoSpace: return hresult::kDiskFull;
    case Code::NotFound: return hresult::kPathNotFound;
    case Code::AlreadyExists:
    case Code::AccessDenied: return hresult::kAccessDenied;
    default: return hresult::kInternal;
  }
}
}  // namespace

// ---------------------------------------------------------------------------------------------------
// Exchange

void Exchange::clear() {
  step_ = Step::Idle;
  type_ = PacketType::Unknown;
  session_ = nullptr;
  hasSessionId_ = false;
  failed_ = false;
  writeFailed_ = false;
  respondNow_ = false;
  expectContinue_ = false;
  close_ = false;
  status_ = 0;
  writing_ = false;
  skipBytes_ = 0;
  writeOffset_ = 0;
  rangeEnd_ = 0;
  rangeTotal_ = 0;
  pending_ = {};
  newFile_ = kNoFile;
  journaledTo_ = 0;
  closeIncomplete_ = false;
  relOffset_ = 0;
  relLen_ = 0;
  responseLen_ = 0;
}

void Exchange::onStorageDone(StorageOp& op) {
  (void)op;
  op_.busy = false;
  engine_->step(*this);
}

void Exchange::onJournalDurable(const Status& status) {
  journalWait_ = false;
  journalStatus_ = status;
  engine_->journalStep(*this);
}

// ---------------------------------------------------------------------------------------------------
// Engine set-up

UploadEngine::UploadEngine(Storage& storage, Clock& clock, Random& random, Sha256& sha, Journal& journal)
    : storage_(storage), clock_(clock), random_(random), sha_(sha), journal_(journal) {
  for (StorageOp& op : background_) op.callback = this;
}

UploadEngine::~UploadEngine() = default;

Status UploadEngine::init(const Settings& settings, BulkAllocator* bulk) {
  settings_ = settings;
  sessionTimeoutMs_ = settings.sessionTimeoutSeconds > UINT64_MAX / 1000
                          ? UINT64_MAX
                          : settings.sessionTimeoutSeconds * 1000;
  root_ = settings.root;
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  partialDir_ = settings.state;
  while (partialDir_.size() > 1 && partialDir_.back() == '/') partialDir_.pop_back();
  partialDir_ += "/partial";
  if (root_.size() + 2 + settings.maxPathBytes > Exchange::kPathBufBytes) {
    return Status(Code::InvalidArgument, "root path plus max-path-bytes is too long");
  }
  if (partialDir_.size() + 2 + kSessionIdTextBytes + kPartialSuffix.size() > Exchange::kPathBufBytes) {
    return Status(Code::InvalidArgument, "state path is too long");
  }
  journal_.setSnapshotSource(this);
  return sessions_.init(settings.maxSessions, settings.maxPathBytes, bulk);
}

bool UploadEngine::appendOrFail(Exchange& ex, const JournalRecord& r, Exchange::Step step) {
  Status st = journal_.append(r, &ex);
  if (!st.isOk()) {
    ++stats_.journalRefusals;
    logf(LogLevel::Warn, "journal cannot take a record (%s): answering 503", st.message());
    fail(ex, 503, hresult::kNoSystemResources, true);
    return false;
  }
  ex.step_ = step;
  ex.journalWait_ = true;
  return true;
}

bool UploadEngine::backgroundOpFree() const {
  for (const StorageOp& op : background_) {
    if (!op.busy) return true;
  }
  return false;
}

bool UploadEngine::backgroundBusy() const {
  for (const StorageOp& op : background_) {
    if (op.busy) return true;
  }
  return false;
}

void UploadEngine::formatPartialPath(const SessionId& id, char* out) {
  std::memcpy(out, partialDir_.data(), partialDir_.size());
  size_t n = partialDir_.size();
  out[n++] = '/';
  formatSessionId(id, out + n);
  n += kSessionIdTextBytes;
  std::memcpy(out + n, kPartialSuffix.data(), kPartialSuffix.size());
  n += kPartialSuffix.size();
  out[n] = '\0';
}

// Writes the directory part of `path` (everything before the last '/') into `out`.
static void parentOf(const char* path, char* out) {
  const char* slash = std::strrchr(path, '/');
  size_t n = slash == nullptr ? 0 : static_cast<size_t>(slash - path);
  if (n == 0) {
    out[0] = slash == nullptr ? '.' : '/';
    out[1] = '\0';
    return;
  }
  std::memcpy(out, path, n);
  out[n] = '\0';
}

void UploadEngine::touch(Session& s) { s.lastActivityMs = clock_.nowMs(); }

void UploadEngine::hold(Session& s, Exchange& ex) {
  s.busy = true;
  s.holder = &ex;
  ex.session_ = &s;
}

// A client whose connection died in the middle of a fragment (without a FIN or RST reaching us)
// reconnects and resends. Answering 503 would make Windows wait its retry delay (10 minutes by
// default), so the newer request takes the session over when the old one is only waiting for body
// bytes. A request in the middle of a disk or journal operation keeps it (that lasts milliseconds).
bool UploadEngine::takeOver(Session& s) {
  if (!s.busy) return true;
  Exchange* old = s.holder;
  if (old == nullptr || old->inFlight() || old->host_ == nullptr) return false;
  char id[kSessionIdTextBytes];
  formatSessionId(s.id, id);
  logf(LogLevel::Info, "session %.38s taken over by a newer request; closing the stalled connection", id);
  ++stats_.takeovers;
  old->host_->abandonExchange(*old);
  return !s.busy;
}

void UploadEngine::closeFile(Session& s) {
  if (s.file != kNoFile) {
    storage_.closeNow(s.file);
    s.file = kNoFile;
    --openFiles_;
  }
}

// Keeps the number of open in-progress files under the board's cap by closing the least recently
// used idle one. Runs only when a file is opened, never per fragment.
void UploadEngine::makeRoomForOpenFile() {
  if (openFiles_ < settings_.maxOpenFiles) return;
  Session* oldest = nullptr;
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state != SessionState::Free && s.file != kNoFile && !s.busy &&
        (oldest == nullptr || s.lastActivityMs < oldest->lastActivityMs)) {
      oldest = &s;
    }
  }
  if (oldest != nullptr) closeFile(*oldest);
}

// ---------------------------------------------------------------------------------------------------
// Answers

void UploadEngine::respond(Exchange& ex, int status, bool withRange) {
  AckSpec spec;
  spec.status = status;
  spec.sessionId = ex.hasSessionId_ ? &ex.sessionId_ : nullptr;
  if (withRange && ex.session_ != nullptr) {
    spec.hasReceived = true;
    spec.receivedBytes = ex.session_->haveBytes;
  }
  spec.close = ex.close_;
  ex.status_ = status;
  ex.responseLen_ = formatAck(spec, ex.response_);
}

Flow UploadEngine::fail(Exchange& ex, int status, uint32_t code, bool withRange) {
  AckSpec spec;
  spec.status = status;
  spec.sessionId = ex.hasSessionId_ ? &ex.sessionId_ : nullptr;
  spec.hasError = true;
  spec.errorCode = code;
  spec.context = ErrorContext::RemoteFile;
  spec.allowHeader = status == 405;
  if (status == 503) spec.retryAfterSeconds = 5;
  if (withRange && ex.session_ != nullptr) {
    spec.hasReceived = true;
    spec.receivedBytes = ex.session_->haveBytes;
  }
  if (ex.expectContinue_ || ex.respondNow_) {
    // The client waits for 100 Continue; answer at once and close instead (§10.1).
    ex.expectContinue_ = false;
    ex.respondNow_ = true;
    ex.close_ = true;
  }
  spec.close = ex.close_;
  ex.failed_ = true;
  ex.writing_ = false;
  ex.status_ = status;
  ex.responseLen_ = formatAck(spec, ex.response_);
  if (status != 416) ++stats_.errors;
  return Flow::Continue;
}

void UploadEngine::formatProtocolError(Exchange& ex, int status) {
  // The request may not have reached onHeaders, so nothing in `ex` describes it yet: start clean,
  // but keep a session this request holds busy, so finish() releases it.
  Session* held = ex.session_;
  ex.clear();
  ex.session_ = held;
  ex.engine_ = this;
  ex.close_ = true;
  uint32_t code = status == 505 ? hresult::kInsufficientHttp : hresult::kInvalidArg;
  (void)fail(ex, status, code);
}

// ---------------------------------------------------------------------------------------------------
// Headers

Flow UploadEngine::onHeaders(Exchange& ex, const RequestHead& head) {
  ex.clear();
  ex.engine_ = this;
  ex.op_.callback = &ex;
  ex.close_ = !head.keepAlive;
  bool hasBody = head.contentLength > 0;
  // Remember the client's wish now: a refusal must then be sent before the body (§10.1).
  bool expects = head.has(HeaderId::Expect) && equalsIgnoreCase(head.value(HeaderId::Expect), "100-continue");
  ex.respondNow_ = expects && hasBody;

  if (head.httpMajor != 1 || head.httpMinor != 1) {
    ex.close_ = true;
    return fail(ex, 505, hresult::kInsufficientHttp);
  }
  if (head.method != HttpMethod::BitsPost) return fail(ex, 405, hresult::kInvalidArg);
  if (!head.hasContentLength) {
    // A chunked body cannot be framed by us: answer and close.
    ex.close_ = true;
    return fail(ex, 411, hresult::kInvalidArg);
  }
  if (head.has(HeaderId::TransferEncoding)) {
    ex.close_ = true;
    return fail(ex, 400, hresult::kInvalidArg);
  }
  if (head.duplicateHeader || head.oversizedValue) return fail(ex, 400, hresult::kInvalidArg);
  if (head.has(HeaderId::SessionId)) {
    ex.hasSessionId_ = parseSessionId(head.value(HeaderId::SessionId), &ex.sessionId_);
  }
  ex.type_ = parsePacketType(head.value(HeaderId::PacketType));
  if (ex.type_ == PacketType::Unknown) return fail(ex, 400, hresult::kInvalidArg);
  if (head.has(HeaderId::ContentEncoding) &&
      !equalsIgnoreCase(head.value(HeaderId::ContentEncoding), "identity")) {
    return fail(ex, 400, hresult::kInvalidArg);
  }

  // Destination: <root>/<normalised URL path>, decoded straight into dest_.
  std::memcpy(ex.dest_, root_.data(), root_.size());
  ex.dest_[root_.size()] = '/';
  ex.relOffset_ = static_cast<uint32_t>(root_.size() + 1);
  UploadPath up;
  PathError pe = resolveUploadPath(head.target, settings_.maxPathBytes, ex.dest_ + ex.relOffset_, &up);
  if (pe != PathError::None) {
    logf(LogLevel::Info, "refused %s: %s", packetTypeName(ex.type_), pathErrorText(pe));
    return fail(ex, 400, hresult::kInvalidArg);
  }
  ex.relLen_ = static_cast<uint32_t>(up.relative.size());
  ex.dest_[ex.relOffset_ + ex.relLen_] = '\0';

  if (ex.type_ == PacketType::Ping || ex.type_ == PacketType::CreateSession) {
    if (hasBody) return fail(ex, 400, hresult::kInvalidArg);
    if (ex.type_ == PacketType::Ping) {
      respond(ex, 200, false);
      return Flow::Continue;
    }
    if (!offersUploadProtocol(head.value(HeaderId::SupportedProtocols))) {
      return fail(ex, 400, hresult::kInvalidArg);
    }
    return startCreate(ex);
  }

  // Packets of an existing session. An unknown id, a malformed id, or a session created for another
  // URL all get the same answer, so it reveals nothing.
  Session* s = ex.hasSessionId_ ? sessions_.find(ex.sessionId_) : nullptr;
  std::string_view rel(ex.dest_ + ex.relOffset_, ex.relLen_);
  if (s == nullptr || sessions_.path(*s) != rel) return fail(ex, 500, hresult::kSessionNotFound);
  if (ex.type_ == PacketType::Fragment) return startFragment(ex, head);
  if (hasBody) return fail(ex, 400, hresult::kInvalidArg);
  if (!takeOver(*s)) return fail(ex, 503, hresult::kBusy);
  if (s->state == SessionState::Open) hold(*s, ex);
  return Flow::Continue;  // Close/Cancel do their work at message end
}

Flow UploadEngine::startCreate(Exchange& ex) {
  ex.step_ = Exchange::Step::CreateCheck;
  ex.op_.busy = true;
  parentOf(ex.dest_, ex.partial_);
  storage_.checkDestination(ex.op_, ex.dest_, ex.partial_);
  return Flow::Wait;
}

Flow UploadEngine::startFragment(Exchange& ex, const RequestHead& head) {
  Session& s = *sessions_.find(ex.sessionId_);
  ++stats_.fragments;
  if (s.state == SessionState::Closed) return fail(ex, 500, hresult::kSessionNotFound);
  ByteRange r;
  if (!head.has(HeaderId::ContentRange) || !parseContentRange(head.value(HeaderId::ContentRange), &r) ||
      head.contentLength != r.size()) {
    return fail(ex, 400, hresult::kInvalidArg);
  }
  if (s.totalKnown && r.total != s.totalBytes) return fail(ex, 400, hresult::kInvalidArg);
  if (r.total > settings_.maxUploadSizeBytes) return fail(ex, 500, hresult::kTooLarge);
  if (head.contentLength > settings_.maxFragmentBytes) {
    // 413 carries no BITS error (§7.1); the client resends smaller fragments.
    ex.failed_ = true;
    ex.status_ = 413;
    AckSpec spec;
    spec.status = 413;
    spec.sessionId = &ex.sessionId_;
    if (ex.respondNow_) ex.close_ = true;
    spec.close = ex.close_;
    ex.responseLen_ = formatAck(spec, ex.response_);
    return Flow::Continue;
  }
  ex.session_ = &s;  // for the range header in answers; not held busy yet
  if (s.state == SessionState::Complete) {
    // A repeat after completion gets the cached final Ack (§10.1). Nothing to write.
    touch(s);
    ex.session_ = nullptr;
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
  if (!takeOver(s)) {
    ex.session_ = nullptr;
    return fail(ex, 503, hresult::kBusy);
  }
  if (r.begin > s.haveBytes) {
    // A gap: the client resynchronises from BITS-Received-Content-Range (§4.1 step 6).
    Flow f = fail(ex, 416, hresult::kNone, true);
    ex.session_ = nullptr;
    return f;
  }
  s.totalKnown = true;
  s.totalBytes = r.total;
  hold(s, ex);
  touch(s);
  ex.rangeEnd_ = r.end;
  ex.rangeTotal_ = r.total;
  if (ex.respondNow_) {
    ex.respondNow_ = false;
    ex.expectContinue_ = head.contentLength > 0;
  }
  if (r.end <= s.haveBytes) {
    ex.writing_ = false;  // a pure repeat: nothing new to store
    return Flow::Continue;
  }
  ex.writing_ = true;
  ex.skipBytes_ = s.haveBytes - r.begin;
  ex.writeOffset_ = s.haveBytes;
  if (s.file != kNoFile) return Flow::Continue;
  makeRoomForOpenFile();
  formatPartialPath(s.id, ex.partial_);
  ex.step_ = Exchange::Step::OpenFile;
  ex.op_.busy = true;
  storage_.openWrite(ex.op_, ex.partial_);
  return Flow::Wait;
}

// ---------------------------------------------------------------------------------------------------
// Body

Flow UploadEngine::onBody(Exchange& ex, std::span<const char> bytes) {
  if (!ex.writing_ || ex.failed_) return Flow::Continue;
  if (ex.skipBytes_ >= bytes.size()) {
    ex.skipBytes_ -= bytes.size();
    return Flow::Continue;
  }
  bytes = bytes.subspan(static_cast<size_t>(ex.skipBytes_));
  ex.skipBytes_ = 0;
  ex.pending_ = bytes;
  return issueWrite(ex);
}

Flow UploadEngine::issueWrite(Exchange& ex) {
  Session& s = *ex.session_;
  // The digest follows the bytes in file order: hash this span only if it continues exactly where
  // the running digest stands (not for the rest of a short write, which was hashed whole).
  ex.hashing_ = s.hashValid && s.hashedBytes == ex.writeOffset_;
  ex.step_ = Exchange::Step::Write;
  ex.op_.busy = true;
  storage_.write(ex.op_, s.file, ex.writeOffset_, ex.pending_, ex.hashing_ ? &s.hash : nullptr);
  return Flow::Wait;
}

// ---------------------------------------------------------------------------------------------------
// Message complete

Flow UploadEngine::onMessageComplete(Exchange& ex) {
  if (ex.writeFailed_ && ex.session_ != nullptr && ex.session_->file != kNoFile) {
    // Trim what a failed write may have left beyond the acked prefix, so the disk space comes back.
    ex.step_ = Exchange::Step::Truncate;
    ex.op_.busy = true;
    storage_.truncate(ex.op_, ex.session_->file, ex.session_->haveBytes);
    return Flow::Wait;
  }
  // Early answers (errors, Ping, Create-Session, repeats after completion) are already formatted.
  if (ex.failed_ || ex.responseLen_ > 0) return Flow::Continue;
  switch (ex.type_) {
    case PacketType::Fragment: return finishFragment(ex);
    case PacketType::CloseSession:
    case PacketType::CancelSession: return closeOrCancel(ex);
    default: break;
  }
  return Flow::Continue;
}

Flow UploadEngine::finishFragment(Exchange& ex) {
  Session& s = *ex.session_;
  if (ex.writing_ && ex.writeOffset_ > s.haveBytes) {
    if (settings_.fdatasync) {
      ex.step_ = Exchange::Step::Sync;
      ex.op_.busy = true;
      storage_.syncData(ex.op_, s.file);
      return Flow::Wait;
    }
    s.haveBytes = ex.writeOffset_;
  }
  return journalProgress(ex);
}

// `have` is durable on disk; make it durable in the journal before acking it (also for a repeat
// after an earlier journal failure), then commit if the upload is complete.
Flow UploadEngine::journalProgress(Exchange& ex) {
  Session& s = *ex.session_;
  if (s.haveBytes > s.journaledBytes) {
    JournalRecord rec;
    rec.type = RecordType::Progress;
    rec.id = s.id;
    rec.wallSeconds = clock_.wallSeconds();
    rec.totalBytes = s.totalBytes;
    rec.haveBytes = s.haveBytes;
    if (s.hashValid && s.hashedBytes == s.haveBytes) {
      rec.shaStateLen = static_cast<uint8_t>(sha_.exportState(s.hash, rec.shaState));
    }
    ex.journaledTo_ = s.haveBytes;
    if (!appendOrFail(ex, rec, Exchange::Step::JournalProgress)) return Flow::Continue;
    return Flow::Wait;
  }
  if (s.haveBytes == s.totalBytes) return startCommit(ex);
  respond(ex, 200, true);
  return Flow::Continue;
}

Flow UploadEngine::startCommit(Exchange& ex) {
  Session& s = *ex.session_;
  closeFile(s);
  formatPartialPath(s.id, ex.partial_);
  // dest_ still holds <root>/<path> from onHeaders.
  ex.step_ = Exchange::Step::CommitLink;
  ex.op_.busy = true;
  if (settings_.allowOverwrites) {
    storage_.rename(ex.op_, ex.partial_, ex.dest_);
  } else {
    storage_.linkNoReplace(ex.op_, ex.partial_, ex.dest_);
  }
  return Flow::Wait;
}

Flow UploadEngine::closeOrCancel(Exchange& ex) {
  Session* s = sessions_.find(ex.sessionId_);
  if (s == nullptr) {  // expired while the request was in flight
    return fail(ex, 500, hresult::kSessionNotFound);
  }
  if (s->state == SessionState::Closed) {  // a repeat: the tombstone answers
    touch(*s);
    respond(ex, 200, false);
    return Flow::Continue;
  }
  // The tombstone is journaled before the data goes: a crash in between must still answer a
  // repeated Close-Session with 200, never with BG_E_SESSION_NOT_FOUND.
  ex.closeIncomplete_ = s->state == SessionState::Open;
  JournalRecord rec;
  rec.type = RecordType::Closed;
  rec.id = s->id;
  rec.wallSeconds = clock_.wallSeconds();
  rec.cancelled = ex.type_ == PacketType::CancelSession;
  if (!appendOrFail(ex, rec, Exchange::Step::JournalClose)) return Flow::Continue;
  return Flow::Wait;
}

void UploadEngine::finishCreate(Exchange& ex) {
  Session* s = sessions_.insert(ex.sessionId_, std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_));
  if (s == nullptr) {  // cannot happen: room was made before the file was created, and we are single-threaded
    storage_.closeNow(ex.newFile_);
    ex.newFile_ = kNoFile;
    fail(ex, 503, hresult::kNoSystemResources);
    return;
  }
  if (s->slot + 1 > highWater_) highWater_ = s->slot + 1;
  s->file = ex.newFile_;
  ex.newFile_ = kNoFile;
  ++openFiles_;
  sha_.start(s->hash);
  s->hashValid = settings_.digest;
  s->hashedBytes = 0;
  touch(*s);
  ++stats_.sessionsCreated;
  AckSpec spec;
  spec.status = 200;
  spec.createSession = true;
  spec.hostId = settings_.hostId;
  spec.hostIdFallbackSeconds = settings_.hostIdFallbackTimeoutSeconds;
  spec.sessionId = &ex.sessionId_;
  spec.close = ex.close_;
  ex.status_ = 200;
  ex.responseLen_ = formatAck(spec, ex.response_);
}

void UploadEngine::journalStep(Exchange& ex) {
  const Status st = ex.journalStatus_;
  switch (ex.step_) {
    case Exchange::Step::JournalCreate:
      if (!st.isOk()) {
        storage_.closeNow(ex.newFile_);
        ex.newFile_ = kNoFile;
        removeInBackground(ex.sessionId_);
        ex.hasSessionId_ = false;
        fail(ex, 500, hresultFor(st));
        return ready(ex);
      }
      finishCreate(ex);
      return ready(ex);
    case Exchange::Step::JournalProgress: {
      Session& s = *ex.session_;
      if (!st.isOk()) {
        fail(ex, 500, hresultFor(st), true);
        return ready(ex);
      }
      if (ex.journaledTo_ > s.journaledBytes) s.journaledBytes = ex.journaledTo_;
      if (s.haveBytes == s.totalBytes) {
        if (startCommit(ex) == Flow::Continue) return ready(ex);
        return;
      }
      respond(ex, 200, true);
      return ready(ex);
    }
    case Exchange::Step::JournalCommit:
      if (!st.isOk()) {
        // Committed in place, not in the journal: a repeat gets the final Ack from memory, and after a
        // restart recovery finds the file at its destination.
        fail(ex, 500, hresultFor(st), true);
        return ready(ex);
      }
      ++stats_.commits;
      respond(ex, 200, true);
      return ready(ex);
    case Exchange::Step::JournalClose: {
      if (!st.isOk()) {
        fail(ex, 500, hresultFor(st));
        return ready(ex);
      }
      Session* s = sessions_.find(ex.sessionId_);
      if (s == nullptr) {
        respond(ex, 200, false);
        return ready(ex);
      }
      s->state = SessionState::Closed;
      touch(*s);
      closeFile(*s);
      if (ex.closeIncomplete_) {
        // A partial upload is never committed (§2.2): its data goes.
        formatPartialPath(s->id, ex.partial_);
        ex.step_ = Exchange::Step::CleanupRemove;
        ex.op_.busy = true;
        storage_.remove(ex.op_, ex.partial_);
        return;
      }
      respond(ex, 200, false);
      return ready(ex);
    }
    default: break;
  }
  BITS_CHECK(false && "journal completion without a journal step");
}

// ---------------------------------------------------------------------------------------------------
// Storage completions

void UploadEngine::ready(Exchange& ex) {
  ex.step_ = Exchange::Step::Idle;
  ex.host_->onExchangeReady(ex);
}

void UploadEngine::step(Exchange& ex) {
  const Status st = ex.op_.status;
  switch (ex.step_) {
    case Exchange::Step::CreateCheck: {
      if (!st.isOk()) {
        if (st.code() == Code::NotFound) {
          fail(ex, 404, hresult::kPathNotFound);
        } else if (st.code() == Code::AccessDenied) {
          fail(ex, 403, hresult::kAccessDenied);
        } else {
          logf(LogLevel::Warn, "create-session: checking %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
          fail(ex, 500, hresult::kInternal);
        }
        return ready(ex);
      }
      if (ex.op_.kind == FileKind::Directory) {
        fail(ex, 400, hresult::kInvalidArg);
        return ready(ex);
      }
      if (ex.op_.kind != FileKind::Missing && !settings_.allowOverwrites) {
        fail(ex, 403, hresult::kAccessDenied);
        return ready(ex);
      }
      if (journal_.nearlyFull()) {
        ++stats_.journalRefusals;
        logf(LogLevel::Warn, "create-session refused: the journal is near its size cap even when compacted");
        fail(ex, 503, hresult::kNoSystemResources);
        return ready(ex);
      }
      uint8_t rnd[16];
      if (!random_.fill(rnd, sizeof rnd)) {
        logf(LogLevel::Error, "create-session: random generator failed");
        fail(ex, 500, hresult::kInternal);
        return ready(ex);
      }
      ex.sessionId_ = sessionIdFromRandom(rnd);
      ex.hasSessionId_ = true;
      if (sessions_.find(ex.sessionId_) != nullptr || (sessions_.size() == sessions_.capacity() &&
                                                        evictForNewSession() == nullptr)) {
        ex.hasSessionId_ = false;
        logf(LogLevel::Warn, "create-session refused: session table full (%u sessions)", sessions_.size());
        fail(ex, 503, hresult::kNoSystemResources);
        return ready(ex);
      }
      makeRoomForOpenFile();
      formatPartialPath(ex.sessionId_, ex.partial_);
      ex.step_ = Exchange::Step::CreateFile;
      ex.op_.busy = true;
      storage_.createExclusive(ex.op_, ex.partial_);
      return;
    }
    case Exchange::Step::CreateFile: {
      if (!st.isOk()) {
        ex.hasSessionId_ = false;
        logf(LogLevel::Warn, "create-session: cannot create %s: %s (%d)", ex.partial_, st.message(), st.sysCode());
        fail(ex, 500, hresultFor(st));
        return ready(ex);
      }
      ex.newFile_ = static_cast<FileHandle>(ex.op_.result);
      JournalRecord rec;
      rec.type = RecordType::SessionCreated;
      rec.id = ex.sessionId_;
      rec.wallSeconds = clock_.wallSeconds();
      rec.path = std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_);
      if (!appendOrFail(ex, rec, Exchange::Step::JournalCreate)) {
        storage_.closeNow(ex.newFile_);
        ex.newFile_ = kNoFile;
        removeInBackground(ex.sessionId_);
        ex.hasSessionId_ = false;
        return ready(ex);
      }
      return;
    }
    case Exchange::Step::OpenFile: {
      Session& s = *ex.session_;
      if (!st.isOk()) {
        // The in-progress data is gone (deleted behind our back): the session cannot go on. The
        // client starts over with a new session, which is better than committing a hole.
        logf(LogLevel::Warn, "fragment: in-progress file %s lost: %s", ex.partial_, st.message());
        s.busy = false;
        s.holder = nullptr;
        ex.session_ = nullptr;
        s.state = SessionState::Closed;
        fail(ex, 500, hresult::kSessionNotFound);
        return ready(ex);
      }
      s.file = static_cast<FileHandle>(ex.op_.result);
      ++openFiles_;
      return ready(ex);
    }
    case Exchange::Step::Write: {
      Session& hs = *ex.session_;
      if (ex.hashing_) {
        hs.hashedBytes += ex.pending_.size();  // the whole span was hashed, however much was written
        ex.hashing_ = false;
      } else if (ex.writeOffset_ < hs.hashedBytes && ex.writeOffset_ + ex.pending_.size() > hs.hashedBytes) {
        hs.hashValid = false;
      }
      if (!st.isOk() || ex.op_.result <= 0) {
        hs.hashValid = false;  // hashed bytes that may not be on disk: the digest is unknown now
        Status why = st.isOk() ? Status(Code::Io, "short write") : st;
        if (why.code() == Code::NoSpace) ++stats_.diskFull;
        logf(LogLevel::Warn, "fragment write failed at offset %" PRIu64 ": %s (%d)", ex.writeOffset_,
             why.message(), why.sysCode());
        ex.writeFailed_ = true;
        fail(ex, 500, why.code() == Code::NoSpace ? hresult::kDiskFull : hresult::kInternal, true);
        return ready(ex);
      }
      size_t n = static_cast<size_t>(ex.op_.result);
      stats_.bytesWritten += n;
      ex.writeOffset_ += n;
      ex.pending_ = ex.pending_.subspan(n);
      if (!ex.pending_.empty()) {  // short write: go on with the rest
        issueWrite(ex);
        return;
      }
      return ready(ex);
    }
    case Exchange::Step::Truncate: {
      if (!st.isOk()) logf(LogLevel::Warn, "truncate after failed write: %s", st.message());
      return ready(ex);
    }
    case Exchange::Step::Sync: {
      Session& s = *ex.session_;
      ++stats_.syncs;
      if (!st.isOk()) {
        logf(LogLevel::Warn, "fdatasync failed: %s (%d)", st.message(), st.sysCode());
        fail(ex, 500, hresultFor(st), true);
        return ready(ex);
      }
      s.haveBytes = ex.writeOffset_;
      if (journalProgress(ex) == Flow::Continue) return ready(ex);
      return;
    }
    case Exchange::Step::CommitLink: {
      if (!st.isOk()) {
        if (st.code() == Code::AlreadyExists) {
          // The destination appeared after Create-Session; overwrites are off (§10.1).
          fail(ex, 403, hresult::kAccessDenied, true);
        } else if (st.code() == Code::NotFound) {
          fail(ex, 404, hresult::kPathNotFound, true);
        } else {
          logf(LogLevel::Warn, "commit of %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
          fail(ex, 500, hresultFor(st), true);
        }
        return ready(ex);
      }
      // The upload is now at its destination. From here on, never commit it again (recovery finds
      // the file in place even if the Committed record does not make it to the journal).
      ex.session_->state = SessionState::Complete;
      ex.session_->committed = true;
      ex.op_.busy = true;
      if (settings_.allowOverwrites) {
        ex.step_ = Exchange::Step::CommitSyncDir;
        parentOf(ex.dest_, ex.partial_);
        storage_.syncDir(ex.op_, ex.partial_);
      } else {
        ex.step_ = Exchange::Step::CommitUnlink;
        storage_.remove(ex.op_, ex.partial_);
      }
      return;
    }
    case Exchange::Step::CommitUnlink: {
      if (!st.isOk()) logf(LogLevel::Warn, "removing %s after commit: %s", ex.partial_, st.message());
      ex.step_ = Exchange::Step::CommitSyncDir;
      ex.op_.busy = true;
      parentOf(ex.dest_, ex.partial_);
      storage_.syncDir(ex.op_, ex.partial_);
      return;
    }
    case Exchange::Step::CommitSyncDir: {
      if (!st.isOk()) logf(LogLevel::Warn, "directory sync after commit: %s", st.message());
      Session& s = *ex.session_;
      logf(LogLevel::Info, "committed %s (%" PRIu64 " bytes)", ex.dest_, s.totalBytes);
      if (s.hashValid && s.hashedBytes == s.totalBytes) {
        sha_.finish(s.hash, s.sha256);
      } else if (settings_.digest) {
        logf(LogLevel::Warn, "no SHA-256 for %s: a failed write interrupted the running digest", ex.dest_);
      }
      s.hashValid = false;
      JournalRecord rec;
      rec.type = RecordType::Committed;
      rec.id = s.id;
      rec.wallSeconds = clock_.wallSeconds();
      rec.totalBytes = s.totalBytes;
      std::memcpy(rec.sha256, s.sha256, 32);
      if (!appendOrFail(ex, rec, Exchange::Step::JournalCommit)) return ready(ex);
      return;
    }
    case Exchange::Step::CleanupRemove: {
      if (!st.isOk()) logf(LogLevel::Warn, "removing %s: %s", ex.partial_, st.message());
      respond(ex, 200, false);
      return ready(ex);
    }
    case Exchange::Step::Idle:
    case Exchange::Step::JournalCreate:
    case Exchange::Step::JournalProgress:
    case Exchange::Step::JournalCommit:
    case Exchange::Step::JournalClose: break;
  }
  BITS_CHECK(false && "storage completion without a step");
}

void UploadEngine::finish(Exchange& ex) {
  BITS_CHECK(!ex.op_.busy);
  if (ex.session_ != nullptr) {
    if (ex.session_->holder == &ex) {
      ex.session_->busy = false;
      ex.session_->holder = nullptr;
    }
    ex.session_ = nullptr;
  }
  ex.step_ = Exchange::Step::Idle;
}

// ---------------------------------------------------------------------------------------------------
// Expiry

Session* UploadEngine::evictForNewSession() {
  // The table is full. Tombstones are the cheapest to forget: drop the oldest one.
  Session* oldest = nullptr;
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Closed && !s.busy &&
        (oldest == nullptr || s.lastActivityMs < oldest->lastActivityMs)) {
      oldest = &s;
    }
  }
  if (oldest == nullptr) return nullptr;
  sessions_.erase(oldest);
  return oldest;
}

bool UploadEngine::removeInBackground(const SessionId& id) {
  for (int i = 0; i < kBackgroundOps; ++i) {
    if (!background_[i].busy) {
      formatPartialPath(id, backgroundPath_[i]);
      background_[i].busy = true;
      storage_.remove(background_[i], backgroundPath_[i]);
      return true;
    }
  }
  return false;
}

void UploadEngine::onStorageDone(StorageOp& op) {
  op.busy = false;
  if (!op.status.isOk()) logf(LogLevel::Warn, "deleting expired session data: %s", op.status.message());
}

void UploadEngine::sweep() {
  const uint64_t now = clock_.nowMs();
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Free || s.busy) continue;
    if (now - s.lastActivityMs < sessionTimeoutMs_) continue;
    // Forget it in the journal first (no need to wait: if that record is lost, recovery expires the
    // session again), then delete its data. When the journal buffer or the background ops are
    // full, the next sweep tries again.
    JournalRecord rec;
    rec.type = RecordType::Forget;
    rec.id = s.id;
    bool open = s.state == SessionState::Open;
    if (open && !backgroundOpFree()) continue;
    if (!journal_.append(rec, nullptr).isOk()) continue;
    if (open) {
      closeFile(s);
      removeInBackground(s.id);
      char id[kSessionIdTextBytes];
      formatSessionId(s.id, id);
      logf(LogLevel::Info, "session %.38s expired; in-progress data deleted", id);
    }
    ++stats_.sessionsExpired;
    sessions_.erase(&s);
  }
}

// ---------------------------------------------------------------------------------------------------
// Recovery and compaction

// While restoring, Session::lastActivityMs holds the journal's wall-clock seconds; finishRestore
// turns them into loop milliseconds. The semantics match JournalState::apply (every record states a
// fact; a record for a forgotten session is ignored).
void UploadEngine::onRecord(const JournalRecord& r, uint64_t, uint64_t) {
  auto bumpWall = [](Session& s, uint64_t wall) {
    if (wall > s.lastActivityMs) s.lastActivityMs = wall;
  };
  if (r.type == RecordType::Delivered) {
    uint64_t& w = delivered_[std::string(r.txid)];
    if (r.wallSeconds > w) w = r.wallSeconds;
    return;
  }
  Session* s = sessions_.find(r.id);
  switch (r.type) {
    case RecordType::SessionCreated:
      if (s == nullptr) {
        if (r.path.size() > settings_.maxPathBytes) return;  // cannot be served under this config
        s = sessions_.insert(r.id, r.path);
        if (s == nullptr) {
          restoreOverflow_ = true;
          return;
        }
        if (s->slot + 1 > highWater_) highWater_ = s->slot + 1;
        sha_.start(s->hash);
        s->hashValid = settings_.digest;  // over zero bytes
      }
      bumpWall(*s, r.wallSeconds);
      return;
    case RecordType::Progress:
      if (s == nullptr || s->state != SessionState::Open) return;
      s->totalKnown = true;
      s->totalBytes = r.totalBytes;
      if (r.haveBytes >= s->haveBytes) {
        s->haveBytes = s->journaledBytes = r.haveBytes;
        // Resume the digest where it stood: no upload data is read back.
        s->hashValid = settings_.digest && r.shaStateLen > 0 && sha_.importState(s->hash, r.shaState, r.shaStateLen);
        s->hashedBytes = s->hashValid ? r.haveBytes : 0;
      }
      bumpWall(*s, r.wallSeconds);
      return;
    case RecordType::Committed:
      if (s == nullptr) return;
      s->committed = true;
      if (s->state == SessionState::Open) s->state = SessionState::Complete;
      s->totalKnown = true;
      s->totalBytes = s->haveBytes = s->journaledBytes = r.totalBytes;
      std::memcpy(s->sha256, r.sha256, 32);
      s->hashValid = false;
      bumpWall(*s, r.wallSeconds);
      return;
    case RecordType::Closed:
      if (s == nullptr) return;
      s->state = SessionState::Closed;
      bumpWall(*s, r.wallSeconds);
      return;
    case RecordType::Forget:
      if (s != nullptr) sessions_.erase(s);
      return;
    case RecordType::Pad:
    case RecordType::Delivered: return;
  }
}

Status UploadEngine::finishRestore(std::vector<SessionId>* expired) {
  if (restoreOverflow_) return Status(Code::Exhausted, "the journal holds more sessions than max-sessions");
  const uint64_t wallNow = clock_.wallSeconds();
  const uint64_t nowMs = clock_.nowMs();
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Free) continue;
    uint64_t wall = s.lastActivityMs;
    uint64_t idleMs = wall >= wallNow ? 0 : (wallNow - wall) * 1000;
    if (idleMs >= sessionTimeoutMs_) {
      expired->push_back(s.id);
      sessions_.erase(&s);
      continue;
    }
    s.lastActivityMs = nowMs > idleMs ? nowMs - idleMs : 0;
    if (settings_.digest && s.state == SessionState::Open && !s.hashValid && s.haveBytes == 0) {
      sha_.start(s.hash);
      s.hashValid = true;
      s.hashedBytes = 0;
    }
  }
  return Status::ok();
}

uint32_t UploadEngine::reconcile(RecoveryInspector& inspector) {
  char partial[Exchange::kPathBufBytes];
  char dest[Exchange::kPathBufBytes];
  uint32_t dropped = 0;
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state != SessionState::Open) continue;
    formatPartialPath(s.id, partial);
    std::string_view rel = sessions_.path(s);
    std::memcpy(dest, root_.data(), root_.size());
    dest[root_.size()] = '/';
    std::memcpy(dest + root_.size() + 1, rel.data(), rel.size());
    dest[root_.size() + 1 + rel.size()] = '\0';
    RecoveryItem item;
    item.id = s.id;
    item.haveBytes = s.haveBytes;
    item.totalBytes = s.totalBytes;
    item.totalKnown = s.totalKnown;
    item.partialPath = partial;
    item.destPath = dest;
    RecoveryDecision d = inspector.inspect(item);
    JournalRecord rec;
    rec.id = s.id;
    rec.wallSeconds = clock_.wallSeconds();
    switch (d.action) {
      case RecoveryAction::Keep: break;
      case RecoveryAction::Drop:
        rec.type = RecordType::Forget;
        (void)journal_.append(rec, nullptr);
        sessions_.erase(&s);
        ++dropped;
        break;
      case RecoveryAction::Committed:
        s.state = SessionState::Complete;
        s.committed = true;
        s.haveBytes = s.journaledBytes = s.totalBytes;
        rec.type = RecordType::Committed;
        rec.totalBytes = s.totalBytes;
        (void)journal_.append(rec, nullptr);
        break;
      case RecoveryAction::SetHave:
        s.haveBytes = s.journaledBytes = d.haveBytes;
        s.hashValid = false;  // rebuilt by rehashOpenSessions
        sha_.start(s.hash);
        rec.type = RecordType::Progress;
        rec.totalBytes = s.totalBytes;
        rec.haveBytes = d.haveBytes;
        (void)journal_.append(rec, nullptr);
        break;
    }
  }
  return dropped;
}

void UploadEngine::rehashOpenSessions(RecoveryHasher& hasher) {
  if (!settings_.digest) return;
  char path[Exchange::kPathBufBytes];
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state != SessionState::Open || s.hashValid) continue;
    formatPartialPath(s.id, path);
    sha_.start(s.hash);
    if (hasher.hashPrefix(path, s.haveBytes, sha_, s.hash)) {
      s.hashValid = true;
      s.hashedBytes = s.haveBytes;
    }
  }
}

void UploadEngine::snapshot(JournalState* out) {
  const uint64_t wallNow = clock_.wallSeconds();
  const uint64_t nowMs = clock_.nowMs();
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Free) continue;
    RecoveredSession& r = out->sessions[s.id];
    r.id = s.id;
    r.path = std::string(sessions_.path(s));
    uint64_t idleSeconds = (nowMs - s.lastActivityMs) / 1000;
    r.wallSeconds = wallNow > idleSeconds ? wallNow - idleSeconds : 0;
    r.totalKnown = s.totalKnown;
    r.totalBytes = s.totalBytes;
    // Only what the journal already holds durably, or the data is synced: haveBytes is synced data.
    r.haveBytes = s.haveBytes;
    if (s.state == SessionState::Open && s.hashValid && s.hashedBytes == s.haveBytes) {
      r.shaStateLen = static_cast<uint8_t>(sha_.exportState(s.hash, r.shaState));
    }
    r.committed = s.committed;
    std::memcpy(r.sha256, s.sha256, 32);
    r.closed = s.state == SessionState::Closed;
  }
  out->delivered = delivered_;
}

}  // namespace bitsd
