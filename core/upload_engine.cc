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
  relOffset_ = 0;
  relLen_ = 0;
  responseLen_ = 0;
}

void Exchange::onStorageDone(StorageOp& op) {
  (void)op;
  op_.busy = false;
  engine_->step(*this);
}

// ---------------------------------------------------------------------------------------------------
// Engine set-up

UploadEngine::UploadEngine(Storage& storage, Clock& clock, Random& random)
    : storage_(storage), clock_(clock), random_(random) {
  for (StorageOp& op : background_) op.callback = this;
}

UploadEngine::~UploadEngine() = default;

Status UploadEngine::init(const Settings& settings) {
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
  return sessions_.init(settings.maxSessions, settings.maxPathBytes);
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
  if (s->busy) return fail(ex, 503, hresult::kBusy);
  if (s->state == SessionState::Open) {
    s->busy = true;
    ex.session_ = s;
  }
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
  if (s.busy) {
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
  s.busy = true;
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
  ex.step_ = Exchange::Step::Write;
  ex.op_.busy = true;
  storage_.write(ex.op_, ex.session_->file, ex.writeOffset_, ex.pending_);
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
  bool incomplete = s->state == SessionState::Open;
  s->state = SessionState::Closed;
  touch(*s);
  closeFile(*s);
  if (incomplete) {
    // A partial upload is never committed (§2.2): its data goes.
    formatPartialPath(s->id, ex.partial_);
    ex.step_ = Exchange::Step::CleanupRemove;
    ex.op_.busy = true;
    storage_.remove(ex.op_, ex.partial_);
    return Flow::Wait;
  }
  respond(ex, 200, false);
  return Flow::Continue;
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
      Session* s = sessions_.insert(ex.sessionId_, std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_));
      if (s == nullptr) {  // cannot happen: room was made above, on this same turn
        storage_.closeNow(static_cast<FileHandle>(ex.op_.result));
        fail(ex, 503, hresult::kNoSystemResources);
        return ready(ex);
      }
      if (s->slot + 1 > highWater_) highWater_ = s->slot + 1;
      s->file = static_cast<FileHandle>(ex.op_.result);
      ++openFiles_;
      touch(*s);
      ++stats_.sessionsCreated;
      AckSpec spec;
      spec.status = 200;
      spec.createSession = true;
      spec.sessionId = &ex.sessionId_;
      spec.close = ex.close_;
      ex.status_ = 200;
      ex.responseLen_ = formatAck(spec, ex.response_);
      return ready(ex);
    }
    case Exchange::Step::OpenFile: {
      Session& s = *ex.session_;
      if (!st.isOk()) {
        // The in-progress data is gone (deleted behind our back): the session cannot go on. The
        // client starts over with a new session, which is better than committing a hole.
        logf(LogLevel::Warn, "fragment: in-progress file %s lost: %s", ex.partial_, st.message());
        s.busy = false;
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
      if (!st.isOk() || ex.op_.result <= 0) {
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
      if (s.haveBytes == s.totalBytes) {
        startCommit(ex);
        return;
      }
      respond(ex, 200, true);
      return ready(ex);
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
      // The upload is now at its destination. From here on, never commit it again.
      ex.session_->state = SessionState::Complete;
      ++stats_.commits;
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
      logf(LogLevel::Info, "committed %s (%" PRIu64 " bytes)", ex.dest_, ex.session_->totalBytes);
      respond(ex, 200, true);
      return ready(ex);
    }
    case Exchange::Step::CleanupRemove: {
      if (!st.isOk()) logf(LogLevel::Warn, "removing %s: %s", ex.partial_, st.message());
      respond(ex, 200, false);
      return ready(ex);
    }
    case Exchange::Step::Idle: break;
  }
  BITS_CHECK(false && "storage completion without a step");
}

void UploadEngine::finish(Exchange& ex) {
  BITS_CHECK(!ex.op_.busy);
  if (ex.session_ != nullptr) {
    ex.session_->busy = false;
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
    if (s.state == SessionState::Open) {
      // Deleting the data needs a background op; if all are busy, try again next sweep.
      closeFile(s);
      if (!removeInBackground(s.id)) continue;
      char id[kSessionIdTextBytes];
      formatSessionId(s.id, id);
      logf(LogLevel::Info, "session %.38s expired; in-progress data deleted", id);
    }
    ++stats_.sessionsExpired;
    sessions_.erase(&s);
  }
}

}  // namespace bitsd
