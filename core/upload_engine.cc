// UploadEngine's request flows: Create-Session, Fragment (write, sync, journal), commit, Close and
// Cancel, the hand-off to the application and reply downloads, with the Exchange each request runs
// in. Session quotas, eviction and expiry are in upload_engine_sessions.cc; replay, reconciliation
// and snapshots in upload_engine_recovery.cc.
#include "core/upload_engine.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/content_range.h"
#include "core/http_reply.h"
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
  hashSnapValid_ = false;
  respondNow_ = false;
  expectContinue_ = false;
  close_ = false;
  status_ = 0;
  counted_ = false;
  errorCode_ = 0;
  reason_ = nullptr;
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
  destBase_ = nullptr;
  responseLen_ = 0;
  head_ = nullptr;
  dStatus_ = 0;
  dHresult_ = 0;
  dFlags_ = 0;
  dReplyBytes_ = 0;
  txidLen_ = 0;
  sendFile_ = false;
  fileOffset_ = 0;
  fileLength_ = 0;
  holdOffMs_ = 0;
}

void Exchange::onStorageDone(StorageOp& op) {
  (void)op;
  op_.busy = false;
  engine_->step(*this);
}

void Exchange::onNotifyDone(NotifyOp& op) {
  (void)op;
  notify_.busy = false;
  engine_->notifyStep(*this);
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

void UploadEngine::deriveTimeouts() {
  sessionTimeoutMs_ = settings_.sessionTimeoutSeconds > UINT64_MAX / 1000
                          ? UINT64_MAX
                          : settings_.sessionTimeoutSeconds * 1000;
  idleSessionTimeoutMs_ = settings_.idleSessionTimeoutSeconds > UINT64_MAX / 1000
                              ? UINT64_MAX
                              : settings_.idleSessionTimeoutSeconds * 1000;
  retentionSeconds_ = settings_.deliveredRetentionSeconds != 0 ? settings_.deliveredRetentionSeconds
                                                               : settings_.sessionTimeoutSeconds;
}

void UploadEngine::applyLive(const Settings& next) {
  copyLiveSettings(next, &settings_);
  deriveTimeouts();
}

Status UploadEngine::init(const Settings& settings, BulkAllocator* bulk) {
  settings_ = settings;
  deriveTimeouts();
  creating_.reserve(settings.requestSlots);
  partyScratch_.reserve(settings.maxSessions);
  root_ = settings.root;
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  partialDir_ = settings.state;
  while (partialDir_.size() > 1 && partialDir_.back() == '/') partialDir_.pop_back();
  partialDir_ += "/partial";
  if (root_.size() + 2 + settings.maxPathBytes > Exchange::kPathBufBytes) {
    return Status(Code::InvalidArgument, "root path plus max-path-bytes is too long");
  }
  for (const Location& l : locations_) {
    // "<dir>/<rest>\0<rel>\0" in one buffer (see Exchange::relOffset_).
    if (!l.dir.empty() && l.dir.size() + 3 + 2 * uint64_t{settings.maxPathBytes} > Exchange::kPathBufBytes) {
      return Status(Code::InvalidArgument, "a location's directory plus max-path-bytes is too long");
    }
  }
  if (partialDir_.size() + 2 + kSessionIdTextBytes + kPartialSuffix.size() > Exchange::kPathBufBytes) {
    return Status(Code::InvalidArgument, "state path is too long");
  }
  repliesDir_ = settings.state;
  while (repliesDir_.size() > 1 && repliesDir_.back() == '/') repliesDir_.pop_back();
  repliesDir_ += "/replies";
  notifyMode_ = parseNotifyMode(settings.notifyType);
  if (notifyMode_ != NotifyMode::None && notifier_ == nullptr) {
    return Status(Code::InvalidArgument, "notify-type is set but no notifier is attached");
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

void UploadEngine::touch(Session& s) { s.lastActivityMs = clock_.nowMs(); }

void UploadEngine::noteAcked(Exchange& ex, Session& s, uint64_t newHave) {
  if (newHave > s.haveBytes) noteRate(s, newHave - s.haveBytes, clock_.nowMs());
  if (ex.peer_.family != 0) s.client = ex.peer_;
  s.haveBytes = newHave;
}

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
  spec.authenticate = status == 401;
  if (status == 503) spec.retryAfterSeconds = ex.holdOffMs_ > 0 ? (ex.holdOffMs_ + 999) / 1000 : 5;
  if (withRange && ex.session_ != nullptr) {
    spec.hasReceived = true;
    spec.receivedBytes = ex.session_->haveBytes;
  }
  // Answer at once, before the body, and close: when the client waits for 100 Continue (§10.1), and
  // when the body is larger than any Fragment may be (reading it only to throw it away would hold
  // the request slot for as long as the client cares to send).
  bool bigBody = ex.head_ != nullptr && ex.head_->contentLength > settings_.maxFragmentBytes;
  if (ex.expectContinue_ || ex.respondNow_ || bigBody) {
    ex.expectContinue_ = false;
    ex.respondNow_ = true;
    ex.close_ = true;
  }
  spec.close = ex.close_;
  ex.failed_ = true;
  ex.writing_ = false;
  ex.status_ = status;
  ex.errorCode_ = code;
  ex.responseLen_ = formatAck(spec, ex.response_);
  if (status != 416) ++stats_.errors;
  return Flow::Continue;
}

std::string_view UploadEngine::userOf(const Exchange& ex) const {
  if (authenticator_ == nullptr || ex.user_ < 0) return {};
  return authenticator_->userName(ex.user_);
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
  endCreating(ex);
  ex.clear();
  ex.engine_ = this;
  ex.op_.callback = &ex;
  ex.close_ = !head.keepAlive;
  ex.head_ = &head;
  bool hasBody = head.contentLength > 0;
  // Remember the client's wish now: a refusal must then be sent before the body (§10.1).
  bool expects = head.has(HeaderId::Expect) && equalsIgnoreCase(head.value(HeaderId::Expect), "100-continue");
  ex.respondNow_ = expects && hasBody;

  if (head.httpMajor != 1 || head.httpMinor != 1) {
    ex.close_ = true;
    return fail(ex, 505, hresult::kInsufficientHttp);
  }
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400, whatever it asks for (an empty
  // Host is allowed; the reply URL then names the listen address).
  if (!head.has(HeaderId::Host)) return fail(ex, 400, hresult::kInvalidArg);
  if (authenticator_ != nullptr) {
    // Every request proves who sends it (Windows sends the credentials again on each one after the
    // first 401). The check runs on the thread pool: PBKDF2 is slow on purpose.
    std::string_view a = trimOws(head.value(HeaderId::Authorization));
    if (a.size() < 6 || !equalsIgnoreCase(a.substr(0, 6), "Basic ")) return fail(ex, 401, hresult::kAccessDenied);
    ex.auth_.callback = &ex;
    ex.auth_.busy = true;
    ex.auth_.user = -1;
    ex.auth_.retryAfterMs = 0;
    ex.auth_.slow = false;
    ex.auth_.clientLen = ex.host_ != nullptr ? static_cast<uint8_t>(ex.host_->clientAddress(ex.auth_.client)) : 0;
    ex.step_ = Exchange::Step::Auth;
    authenticator_->check(ex.auth_, trimOws(a.substr(6)));
    return Flow::Wait;
  }
  return afterAuth(ex, head);
}

void Exchange::onAuthDone(AuthOp& op) {
  (void)op;
  auth_.busy = false;
  engine_->authDone(*this);
}

void UploadEngine::authDone(Exchange& ex) {
  ex.step_ = Exchange::Step::Idle;
  if (ex.auth_.user < 0 && ex.auth_.retryAfterMs > 0) {
    // Not checked: too many failed or waiting checks for this address or user. The connection
    // then sits unread for the Retry-After time (holdOffMs), costing the server nothing.
    ex.reason_ = "password checks throttled for this client or user";
    ex.holdOffMs_ = ex.auth_.retryAfterMs;
    fail(ex, 503, hresult::kBusy);
    return ready(ex);
  }
  if (ex.auth_.user < 0) {
    ex.reason_ = "wrong user name or password";
    fail(ex, 401, hresult::kAccessDenied);
    return ready(ex);
  }
  ex.user_ = ex.auth_.user;
  if (afterAuth(ex, *ex.head_) == Flow::Continue) ready(ex);
}

Flow UploadEngine::afterAuth(Exchange& ex, const RequestHead& head) {
  bool hasBody = head.contentLength > 0;
  if (head.method == HttpMethod::Get || head.method == HttpMethod::Head) return serveReply(ex, head);
  if (head.method != HttpMethod::BitsPost) return fail(ex, 405, hresult::kInvalidArg);
  if (head.has(HeaderId::TransferEncoding)) {
    // A chunked body cannot be framed by us: answer and close (411 asks for a Content-Length).
    ex.close_ = true;
    return fail(ex, head.hasContentLength ? 400 : 411, hresult::kInvalidArg);
  }
  if (head.duplicateHeader || head.oversizedValue) return fail(ex, 400, hresult::kInvalidArg);
  if (head.has(HeaderId::SessionId)) {
    ex.hasSessionId_ = parseSessionId(head.value(HeaderId::SessionId), &ex.sessionId_);
  }
  ex.type_ = parsePacketType(head.value(HeaderId::PacketType));
  if (ex.type_ == PacketType::Unknown) return fail(ex, 400, hresult::kInvalidArg);
  if (!head.hasContentLength && ex.type_ == PacketType::Fragment) {
    // §10.1: a Fragment needs its length. Without Content-Length (or Transfer-Encoding) any other
    // request has an empty body (RFC 9112 §6.3) and is answered normally. Close: body bytes the
    // client sends anyway must not be read as the next request.
    ex.close_ = true;
    return fail(ex, 411, hresult::kInvalidArg);
  }
  if (head.has(HeaderId::ContentEncoding) &&
      !equalsIgnoreCase(head.value(HeaderId::ContentEncoding), "identity")) {
    return fail(ex, 400, hresult::kInvalidArg);
  }
  if (ex.type_ == PacketType::Ping) {
    // §0.1 item 3, §2.2: Ping is answered at any time, to any URL, with or without a session. Its
    // URL names no destination, so it is neither normalised nor matched against locations.
    if (hasBody) return fail(ex, 400, hresult::kInvalidArg);
    respond(ex, 200, false);
    return Flow::Continue;
  }

  // Destination: <root>/<normalised URL path>, decoded straight into dest_.
  std::memcpy(ex.dest_, root_.data(), root_.size());
  ex.dest_[root_.size()] = '/';
  ex.relOffset_ = static_cast<uint32_t>(root_.size() + 1);
  UploadPath up;
  PathError pe = resolveUploadPath(head.target, settings_.maxPathBytes, ex.dest_ + ex.relOffset_, &up);
  if (pe != PathError::None) {
    ex.reason_ = pathErrorText(pe);
    return fail(ex, 400, hresult::kInvalidArg);
  }
  ex.relLen_ = static_cast<uint32_t>(up.relative.size());
  ex.dest_[ex.relOffset_ + ex.relLen_] = '\0';
  ex.destBase_ = root_.c_str();
  const Location* loc = locationFor(locations_, up.relative);  // once: the directory and who may upload
  if (loc != nullptr && !loc->dir.empty()) {
    // The location's own directory: build "<dir>/<rest>" in partial_ (free until startCreate),
    // move the relative path to just after it, then put the destination in front.
    size_t restLen = ex.relLen_ - loc->prefix.size();
    size_t destLen = loc->dir.size() + 1 + restLen;
    std::memcpy(ex.partial_, loc->dir.data(), loc->dir.size());
    ex.partial_[loc->dir.size()] = '/';
    std::memcpy(ex.partial_ + loc->dir.size() + 1, ex.dest_ + ex.relOffset_ + loc->prefix.size(), restLen);
    std::memmove(ex.dest_ + destLen + 1, ex.dest_ + ex.relOffset_, ex.relLen_);
    std::memcpy(ex.dest_, ex.partial_, destLen);
    ex.dest_[destLen] = '\0';
    ex.relOffset_ = static_cast<uint32_t>(destLen + 1);
    ex.dest_[ex.relOffset_ + ex.relLen_] = '\0';
    ex.destBase_ = loc->dir.c_str();
  }
  up.relative = std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_);
  if (authenticator_ != nullptr && !mayUploadAt(locations_, loc, authenticator_->userName(ex.user_))) {
    std::string_view who = authenticator_->userName(ex.user_);
    ex.reason_ = "the user may not upload there (locations)";
    logf(LogLevel::Debug, "refused %s: %.*s may not upload to /%.*s", packetTypeName(ex.type_),
         static_cast<int>(who.size()), who.data(), static_cast<int>(up.relative.size()), up.relative.data());
    return fail(ex, 403, hresult::kAccessDenied);
  }

  if (ex.type_ == PacketType::CreateSession) {
    if (hasBody) return fail(ex, 400, hresult::kInvalidArg);
    if (!offersUploadProtocol(head.value(HeaderId::SupportedProtocols))) {
      return fail(ex, 400, hresult::kInvalidArg);
    }
    return startCreate(ex);
  }

  // Packets of an existing session. An unknown id, a malformed id, or a session created for another
  // URL all get the same answer, so it reveals nothing.
  Session* s = ex.hasSessionId_ ? sessions_.find(ex.sessionId_) : nullptr;
  std::string_view rel(ex.dest_ + ex.relOffset_, ex.relLen_);
  // Another user's session is answered like an unknown one.
  if (s == nullptr || sessions_.path(*s) != rel || (authenticator_ != nullptr && s->owner != ex.user_)) {
    return fail(ex, 500, hresult::kSessionNotFound);
  }
  if (ex.type_ == PacketType::Fragment) return startFragment(ex, head);
  if (hasBody) return fail(ex, 400, hresult::kInvalidArg);
  if (!takeOver(*s)) return fail(ex, 503, hresult::kBusy);
  if (s->state == SessionState::Open) hold(*s, ex);
  return Flow::Continue;  // Close/Cancel do their work at message end
}

Flow UploadEngine::startCreate(Exchange& ex) {
  // max-sessions-per-user: the answer is transient (503 + Retry-After): a client with many jobs
  // gets its session once one of its own ends; an abuser only gets more 503s, which cost nothing.
  ex.party_ = partyOf(ex);
  if (settings_.maxSessionsPerUser != 0 && ex.party_.known()) {
    uint32_t held = openSessionsOf(ex.party_);
    if (held >= settings_.maxSessionsPerUser) {
      ++stats_.quotaRefusals;
      char who[80];
      describeParty(ex.party_, who, sizeof who);
      ex.reason_ = "the client or user holds max-sessions-per-user open sessions";
    logf(LogLevel::Debug, "create-session refused: %s holds %u open sessions (max-sessions-per-user)", who, held);
      return fail(ex, 503, hresult::kNoSystemResources);
    }
  }
  creating_.push_back(&ex);
  ex.creating_ = true;
  ex.step_ = Exchange::Step::CreateCheck;
  ex.op_.busy = true;
  storage_.checkDestination(ex.op_, ex.destBase_, destBelow(ex));
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
    touch(s);
    ex.session_ = nullptr;
    if (s.handedOff) {
      // The application has answered: replay its answer, never post again (§8).
      auto tx = sessionTxid_.find(s.id);
      auto d = tx == sessionTxid_.end() ? deliveries_.end() : deliveries_.find(tx->second);
      if (d != deliveries_.end() && d->second.ended) {
        if (ex.respondNow_) {
          ex.respondNow_ = false;
          ex.expectContinue_ = head.contentLength > 0;
        }
        ex.failed_ = true;  // answer decided; discard the body
        ex.rangeTotal_ = s.totalBytes;
        loadDelivery(ex, d->second);
        respondDelivered(ex);
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
  if (ex.type_ == PacketType::Fragment) stats_.bytesReceived += bytes.size();
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
  if (ex.hashing_ && !ex.hashSnapValid_ && ex.writeOffset_ == s.haveBytes) {
    ex.hashSnap_ = s.hash;
    ex.hashSnapAt_ = s.haveBytes;
    ex.hashSnapValid_ = true;
  }
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
    noteAcked(ex, s, ex.writeOffset_);
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
    rec.shaStateLen = digestCheckpoint(s, rec.shaState);
    ex.journaledTo_ = s.haveBytes;
    if (!appendOrFail(ex, rec, Exchange::Step::JournalProgress)) return Flow::Continue;
    return Flow::Wait;
  }
  if (s.haveBytes == s.totalBytes) return startCompletion(ex);
  respond(ex, 200, true);
  return Flow::Continue;
}

void UploadEngine::commitDone(Exchange& ex) {
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
  if (!appendOrFail(ex, rec, Exchange::Step::JournalCommit)) ready(ex);
}

const char* UploadEngine::destBelow(const Exchange& ex) { return ex.dest_ + std::strlen(ex.destBase_) + 1; }

uint8_t UploadEngine::digestCheckpoint(const Session& s, uint8_t* out) {
  const Sha256State* hash = &s.hash;
  uint64_t hashed = s.hashedBytes;
  const Exchange* ex = s.holder;
  if (ex != nullptr && (ex->hashing_ || hashed > s.haveBytes)) {
    // A fragment is feeding `hash` off the loop (a compaction's snapshot), or has hashed bytes not
    // yet durable: use the state its first write started from, at the durable length then.
    if (!ex->hashSnapValid_) return 0;
    hash = &ex->hashSnap_;
    hashed = ex->hashSnapAt_;
  }
  if (!s.hashValid || hashed > s.haveBytes) return 0;
  // The chaining state at the last whole block: no upload data. Recovery re-reads the rest.
  if (sha_.exportState(*hash, out) != kDigestChainBytes || digestCheckpointBytes(out) > hashed) return 0;
  out[kDigestChainBytes] = kDigestCheckpointForm;
  return static_cast<uint8_t>(kDigestCheckpointBytes);
}

Flow UploadEngine::startCommit(Exchange& ex) {
  Session& s = *ex.session_;
  closeFile(s);
  formatPartialPath(s.id, ex.partial_);
  // dest_ still holds <base>/<path> from onHeaders. The commit goes through the destination's
  // directory opened afresh below the base, never by path (a directory swapped for a symlink since
  // Create-Session is refused, not followed).
  ex.step_ = Exchange::Step::CommitLink;
  ex.op_.busy = true;
  storage_.commitBeneath(ex.op_, ex.partial_, ex.destBase_, destBelow(ex), settings_.allowOverwrites);
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
  endCreating(ex);  // from here on the table counts it
  Session* s = sessions_.insert(ex.sessionId_, std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_));
  if (s == nullptr) {  // cannot happen: room was made before the file was created, and we are single-threaded
    storage_.closeNow(ex.newFile_);
    ex.newFile_ = kNoFile;
    fail(ex, 503, hresult::kNoSystemResources);
    return;
  }
  if (s->slot + 1 > highWater_) highWater_ = s->slot + 1;
  s->owner = ex.user_;
  s->party = ex.party_;
  s->client = ex.peer_;
  s->createdMs = clock_.nowMs();
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
        if (startCompletion(ex) == Flow::Continue) return ready(ex);
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
      // The reply is kept until Close/Cancel-Session (§5.4, §10.1).
      if (s->handedOff && !removeReplyInBackground(s->id)) {
        logf(LogLevel::Warn, "reply file of a closed session left behind: background deletions are busy");
      }
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
    case Exchange::Step::JournalBegan: {
      if (!st.isOk()) {
        endDelivering(ex);
        fail(ex, 500, hresultFor(st), true);
        return ready(ex);
      }
      JournalRecord rec;
      rec.type = RecordType::DeliveryBegan;
      rec.id = ex.session_->id;
      rec.wallSeconds = clock_.wallSeconds();
      rec.txid = std::string_view(ex.txid_, ex.txidLen_);
      applyDelivery(rec, &deliveries_);
      beginNotify(ex);
      return;
    }
    case Exchange::Step::JournalEnded: {
      Session& s = *ex.session_;
      if (!st.isOk()) {
        // Not recorded: the client retries, and the application is asked again with the same id.
        endDelivering(ex);
        fail(ex, 500, hresultFor(st), true);
        return ready(ex);
      }
      JournalRecord rec;
      rec.type = RecordType::DeliveryEnded;
      rec.id = s.id;
      rec.txid = std::string_view(ex.txid_, ex.txidLen_);
      rec.wallSeconds = clock_.wallSeconds();
      rec.replySession = ex.dReplySession_;
      rec.status = ex.dStatus_;
      rec.hresult = ex.dHresult_;
      rec.flags = ex.dFlags_;
      rec.replyBytes = ex.dReplyBytes_;
      rec.url = ex.notify_.result.staticResponseUrl();
      applyDelivery(rec, &deliveries_);
      sessionTxid_[s.id] = std::string(rec.txid);
      s.handedOff = true;
      s.state = SessionState::Complete;
      ++stats_.deliveriesEnded;
      endDelivering(ex);
      // The request file goes once the application has answered (§5.3, §10.1).
      formatPartialPath(s.id, ex.partial_);
      ex.step_ = Exchange::Step::RemoveRequest;
      ex.op_.busy = true;
      storage_.remove(ex.op_, ex.partial_);
      return;
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
          ex.reason_ = "the destination's directory does not exist";
          fail(ex, 404, hresult::kPathNotFound);
        } else if (st.code() == Code::AccessDenied) {
          ex.reason_ = "the destination's directory may not be written (or is a symlink)";
          fail(ex, 403, hresult::kAccessDenied);
        } else {
          logf(LogLevel::Warn, "create-session: checking %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
          fail(ex, 500, hresult::kInternal);
        }
        return ready(ex);
      }
      if (ex.op_.kind == FileKind::Directory) {
        ex.reason_ = "the destination is a directory";
        fail(ex, 400, hresult::kInvalidArg);
        return ready(ex);
      }
      if (ex.op_.kind != FileKind::Missing && !settings_.allowOverwrites) {
        ex.reason_ = "the file exists and allow-overwrites is off";
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
      if (sessions_.find(ex.sessionId_) != nullptr || !makeRoomForNewSession(ex)) {
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
      // Who it belongs to: the user, or with authentication off the client's address ("@...", so
      // the per-address count survives a restart).
      char partyText[kMaxPartyTextBytes];
      std::string_view owner;
      if (authenticator_ != nullptr && ex.user_ >= 0) {
        owner = authenticator_->userName(ex.user_);
      } else if (authenticator_ == nullptr) {
        owner = std::string_view(partyText, formatPartyAddress(ex.party_, partyText));
      }
      // The owner goes in the same flush, after the session it names; the Ack waits for both. If
      // the session's record cannot be queued, neither is the owner's: appendOrFail below tries the
      // session's record again, fails the same way (nothing ran in between) and answers 503.
      if (!owner.empty() && journal_.append(rec, nullptr).isOk()) {
        rec = JournalRecord();
        rec.type = RecordType::SessionOwner;
        rec.id = ex.sessionId_;
        rec.owner = owner;
      }
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
      noteAcked(ex, s, ex.writeOffset_);
      if (journalProgress(ex) == Flow::Continue) return ready(ex);
      return;
    }
    case Exchange::Step::CommitLink: {
      if (!st.isOk()) {
        // The session stays open with all its data: a repeat of the final fragment tries the
        // commit again (and succeeds once the cause is gone), or the session expires.
        if (st.code() == Code::AlreadyExists) {
          // The destination appeared after Create-Session; overwrites are off (§10.1).
          ex.reason_ = "the file exists and allow-overwrites is off";
          fail(ex, 403, hresult::kAccessDenied, true);
        } else if (st.code() == Code::NotFound) {
          fail(ex, 404, hresult::kPathNotFound, true);
        } else if (st.code() == Code::AccessDenied) {
          // A directory on the way was swapped for a symlink after Create-Session (or may not be
          // written): refused like a symlink at Create-Session, and nothing was written.
          logf(LogLevel::Warn, "commit of %s refused: %s (%d)", ex.dest_, st.message(), st.sysCode());
          fail(ex, 403, hresult::kAccessDenied, true);
        } else {
          logf(LogLevel::Warn, "commit of %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
          fail(ex, 500, hresultFor(st), true);
        }
        return ready(ex);
      }
      if (!ex.op_.syncStatus.isOk()) {
        logf(LogLevel::Warn, "directory sync after commit: %s", ex.op_.syncStatus.message());
      }
      // The upload is now at its destination. From here on, never commit it again (recovery finds
      // the file in place even if the Committed record does not make it to the journal).
      ex.session_->state = SessionState::Complete;
      ex.session_->committed = true;
      if (settings_.allowOverwrites) return commitDone(ex);
      ex.step_ = Exchange::Step::CommitUnlink;
      ex.op_.busy = true;
      storage_.remove(ex.op_, ex.partial_);
      return;
    }
    case Exchange::Step::CommitUnlink:
      if (!st.isOk()) logf(LogLevel::Warn, "removing %s after commit: %s", ex.partial_, st.message());
      return commitDone(ex);
    case Exchange::Step::CleanupRemove: {
      if (!st.isOk()) logf(LogLevel::Warn, "removing %s: %s", ex.partial_, st.message());
      respond(ex, 200, false);
      return ready(ex);
    }
    case Exchange::Step::Idle:
    case Exchange::Step::JournalCreate:
    case Exchange::Step::JournalProgress:
    case Exchange::Step::JournalCommit:
    case Exchange::Step::CopyLink: {
      if (!st.isOk()) {
        // The delivery still counts as made (§10.1): the answer is the copy's failure.
        ex.dFlags_ &= static_cast<uint8_t>(~kDeliveryCopied);
        if (st.code() == Code::AlreadyExists) {
          ex.dStatus_ = 403;
          ex.dHresult_ = hresult::kAccessDenied;
        } else if (st.code() == Code::NotFound) {
          ex.dStatus_ = 404;
          ex.dHresult_ = hresult::kPathNotFound;
        } else if (st.code() == Code::AccessDenied) {  // a symlink swapped in, as for a commit
          logf(LogLevel::Warn, "copy of the upload to %s refused: %s (%d)", ex.dest_, st.message(), st.sysCode());
          ex.dStatus_ = 403;
          ex.dHresult_ = hresult::kAccessDenied;
        } else {
          logf(LogLevel::Warn, "copy of the upload to %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
          ex.dStatus_ = 500;
          ex.dHresult_ = hresultFor(st);
        }
        if (!journalEnded(ex)) ready(ex);
        return;
      }
      ex.session_->committed = true;
      if (!ex.op_.syncStatus.isOk()) {
        logf(LogLevel::Warn, "directory sync after copy: %s", ex.op_.syncStatus.message());
      }
      logf(LogLevel::Info, "copied the upload to %s as the application asked", ex.dest_);
      if (!journalEnded(ex)) ready(ex);
      return;
    }
    case Exchange::Step::RemoveRequest:
      // NotFound: the copy to the destination renamed it (allow-overwrites).
      if (!st.isOk() && st.code() != Code::NotFound) {
        logf(LogLevel::Warn, "removing the request file %s: %s", ex.partial_, st.message());
      }
      respondDelivered(ex);
      return ready(ex);
    case Exchange::Step::Notify:
    case Exchange::Step::JournalBegan:
    case Exchange::Step::JournalEnded:
    case Exchange::Step::JournalClose:
    case Exchange::Step::Auth: break;
  }
  BITS_CHECK(false && "storage completion without a step");
}

void UploadEngine::finish(Exchange& ex) {
  BITS_CHECK(!ex.op_.busy && !ex.notify_.busy);
  if (ex.status_ != 0 && !ex.counted_) {
    ex.counted_ = true;
    auto packet = static_cast<size_t>(ex.type_);
    if (packet < kPacketKinds) ++stats_.requests[packet][statusIndex(ex.status_)];
  }
  endDelivering(ex);
  endCreating(ex);
  ex.head_ = nullptr;
  if (ex.session_ != nullptr) {
    Session& s = *ex.session_;
    if (ex.hashSnapValid_ && s.hashValid && s.haveBytes == ex.hashSnapAt_ && s.hashedBytes > s.haveBytes) {
      // This fragment was hashed further than it was acked (its connection died mid-body): rewind
      // the digest to `have`, where the client's retry will start.
      s.hash = ex.hashSnap_;
      s.hashedBytes = s.haveBytes;
    }
    if (ex.session_->holder == &ex) {
      ex.session_->busy = false;
      ex.session_->holder = nullptr;
    }
    ex.session_ = nullptr;
  }
  ex.step_ = Exchange::Step::Idle;
}

// ---------------------------------------------------------------------------------------------------
// Hand-off to the server application (BITS-UPLOAD.md §5, §8)
//
// At the last byte, with notify-type reference or value, the upload is not committed to its
// destination: it stays at its in-progress path, which is the request file, and:
//   1. the transaction id is the request's transaction header, or else the session id;
//   2. an id whose delivery has ended is answered from the journal: no POST (a repeat, or a new
//      session that uploaded the same transaction again);
//   3. otherwise DeliveryBegan is made durable, then the application gets the POST;
//   4. its answer (status, reply file, static URL, copy request) is made durable as DeliveryEnded,
//      after any copy to the destination and after the reply file was synced; then the request file
//      goes and the final Ack is sent.
// A crash before 3 posts nothing; between 3 and 4 the next attempt posts again with the same id
// (the application de-duplicates by it); after 4 nothing is ever posted again for that id.
// Transient failures (unreachable, timeout, a transient status) journal nothing after 3, so the
// client's retry of the final fragment posts again, as IIS does.

Flow UploadEngine::startCompletion(Exchange& ex) {
  return notifyMode_ == NotifyMode::None ? startCommit(ex) : startHandOff(ex);
}

namespace {
bool validTxid(std::string_view t) {
  if (t.empty() || t.size() > kMaxTxidBytes) return false;
  for (char c : t) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}
}  // namespace

Flow UploadEngine::startHandOff(Exchange& ex) {
  Session& s = *ex.session_;
  closeFile(s);
  if (!s.digestKnown && s.hashValid && s.hashedBytes == s.totalBytes) {
    sha_.finish(s.hash, s.sha256);
    s.digestKnown = true;
    s.hashValid = false;
  }
  std::string_view tx;
  if (ex.head_ != nullptr && ex.head_->has(HeaderId::TransactionId)) {
    tx = trimOws(ex.head_->value(HeaderId::TransactionId));
    if (!validTxid(tx)) {
      logf(LogLevel::Info, "final fragment refused: the %s header is empty, too long or has control characters",
           settings_.transactionHeader.c_str());
      return fail(ex, 400, hresult::kInvalidArg, true);
    }
  }
  char idText[kSessionIdTextBytes];
  if (tx.empty()) {
    formatSessionId(s.id, idText);
    tx = std::string_view(idText, kSessionIdTextBytes);
  }
  std::memcpy(ex.txid_, tx.data(), tx.size());
  ex.txidLen_ = static_cast<uint16_t>(tx.size());
  ex.rangeTotal_ = s.totalBytes;
  std::string key(tx);
  auto d = deliveries_.find(key);
  if (d != deliveries_.end() && d->second.ended) {
    // Delivered before, by this server: answer as the application did then. Journal that this
    // session has its answer, so its repeats and restarts answer the same.
    ++stats_.deliveriesReplayed;
    logf(LogLevel::Info, "transaction %.*s was delivered before: replaying its answer, no POST",
         static_cast<int>(tx.size()), tx.data());
    loadDelivery(ex, d->second);
    if (!delivering_.insert(key).second) return fail(ex, 503, hresult::kBusy, true);
    ex.delivering_ = true;
    return journalEnded(ex) ? Flow::Wait : Flow::Continue;
  }
  if (delivering_.count(key) != 0) {
    // Another request is handing this transaction over right now; the client retries later.
    return fail(ex, 503, hresult::kBusy, true);
  }
  if (delivering_.size() >= settings_.maxNotifications) {
    ++stats_.notificationsRefused;
    logf(LogLevel::Info, "final fragment deferred: %zu hand-offs to the application in flight (max-notifications)",
         delivering_.size());
    return fail(ex, 503, hresult::kBusy, true);
  }
  delivering_.insert(key);
  ex.delivering_ = true;
  ex.dReplySession_ = s.id;
  JournalRecord rec;
  rec.type = RecordType::DeliveryBegan;
  rec.id = s.id;
  rec.wallSeconds = clock_.wallSeconds();
  rec.txid = tx;
  if (!appendOrFail(ex, rec, Exchange::Step::JournalBegan)) {
    endDelivering(ex);
    return Flow::Continue;
  }
  return Flow::Wait;
}

std::string_view UploadEngine::requestHost(const Exchange& ex) const {
  if (ex.head_ != nullptr && ex.head_->has(HeaderId::Host) && !ex.head_->value(HeaderId::Host).empty()) {
    return ex.head_->value(HeaderId::Host);
  }
  return settings_.listen;
}

void UploadEngine::beginNotify(Exchange& ex) {
  Session& s = *ex.session_;
  std::string_view target = ex.head_ != nullptr ? ex.head_->target : std::string_view("/");
  char url[NotifyResult::kMaxUrlBytes + 64];
  if (!resolveNotifyUrl(settings_.notifyUrl, requestHost(ex), target, url, sizeof url)) {
    endDelivering(ex);
    logf(LogLevel::Warn, "hand-off refused: the notification URL would exceed %zu bytes", NotifyResult::kMaxUrlBytes);
    fail(ex, 400, hresult::kInvalidArg, true);
    return ready(ex);
  }
  char original[NotifyResult::kMaxUrlBytes + 64];
  size_t olen = 0;
  std::string_view host = requestHost(ex);
  std::string_view path = target.substr(0, target.find('?'));
  if (path.substr(0, 7) == "http://") {
    olen = std::min(path.size(), sizeof original - 1);
    std::memcpy(original, path.data(), olen);
  } else if (7 + host.size() + path.size() < sizeof original) {
    std::memcpy(original, "http://", 7);
    std::memcpy(original + 7, host.data(), host.size());
    std::memcpy(original + 7 + host.size(), path.data(), path.size());
    olen = 7 + host.size() + path.size();
  }
  char reply[Exchange::kPathBufBytes];
  formatReplyPath(s.id, reply);
  formatPartialPath(s.id, ex.partial_);
  char idText[kSessionIdTextBytes];
  formatSessionId(s.id, idText);
  NotifyRequest req;
  req.url = url;
  req.originalUrl = std::string_view(original, olen);
  req.requestFile = ex.partial_;
  req.replyFile = reply;
  req.byValue = notifyMode_ == NotifyMode::Value;
  req.contentBytes = s.totalBytes;
  req.transactionId = std::string_view(ex.txid_, ex.txidLen_);
  req.sessionId = std::string_view(idText, kSessionIdTextBytes);
  req.sha256 = s.digestKnown ? s.sha256 : nullptr;
  req.timeoutMs = settings_.notifyTimeoutSeconds * 1000;
  ex.step_ = Exchange::Step::Notify;
  ex.notify_.callback = &ex;
  ex.notify_.busy = true;
  ex.notify_.result = NotifyResult{};
  ++stats_.notifications;
  logf(LogLevel::Info, "posting transaction %.*s (%.38s) to %s", static_cast<int>(ex.txidLen_), ex.txid_, idText, url);
  notifier_->post(ex.notify_, req);
}

void UploadEngine::notifyStep(Exchange& ex) {
  NotifyResult& r = ex.notify_.result;
  auto transient = [&](int status, uint32_t code, ErrorContext ctx, const char* why) {
    ++stats_.notifyFailures;
    logf(LogLevel::Warn, "hand-off of transaction %.*s: %s; the client will retry", static_cast<int>(ex.txidLen_),
         ex.txid_, why);
    endDelivering(ex);
    fail(ex, status, code, true);
    ex.status_ = status;
    AckSpec spec;
    spec.status = status;
    spec.sessionId = &ex.sessionId_;
    spec.hasError = true;
    spec.errorCode = code;
    spec.context = ctx;
    spec.close = ex.close_;
    if (status == 503) spec.retryAfterSeconds = 5;
    ex.responseLen_ = formatAck(spec, ex.response_);
    ready(ex);
  };
  if (r.outcome == NotifyOutcome::Answered && r.status == 200 && r.staticUrlLen > 0) {
    std::string_view u = r.staticResponseUrl();
    if (u.substr(0, 7) != "http://" && u.substr(0, 8) != "https://") r.outcome = NotifyOutcome::Malformed;
  }
  switch (r.outcome) {
    case NotifyOutcome::Answered: break;
    case NotifyOutcome::Busy:
      return transient(503, hresult::kBusy, ErrorContext::RemoteFile, "all notification slots are busy");
    case NotifyOutcome::TimedOut:
      return transient(408, hresult::kTimeout, ErrorContext::RemoteApplication, "the application did not answer in time");
    case NotifyOutcome::LocalError:
      return transient(500, hresult::kInternal, ErrorContext::RemoteFile, "a local file error");
    case NotifyOutcome::Unreachable:
    case NotifyOutcome::Malformed:
      return transient(502, hresult::kRemoteApplication, ErrorContext::RemoteApplication, notifyOutcomeName(r.outcome));
  }
  if (r.status != 200 && isTransientStatus(r.status)) {
    char why[64];
    std::snprintf(why, sizeof why, "the application answered %d (transient)", r.status);
    return transient(r.status, hresult::kHttpErrorBase + static_cast<uint32_t>(r.status),
                     ErrorContext::RemoteApplication, why);
  }
  // A final answer: success, or an error the client will not retry. It is recorded either way.
  ex.dStatus_ = static_cast<uint16_t>(r.status);
  ex.dHresult_ = r.status == 200 ? 0 : hresult::kHttpErrorBase + static_cast<uint32_t>(r.status);
  ex.dFlags_ = 0;
  ex.dReplyBytes_ = 0;
  if (r.status == 200 && r.staticUrlLen == 0 && r.hasReplyFile) {
    ex.dFlags_ |= kDeliveryHasReplyFile;
    ex.dReplyBytes_ = r.replyBytes;
  }
  if (r.status != 200) r.staticUrlLen = 0;
  if (r.status == 200 && r.copyToDestination) {
    ex.dFlags_ |= kDeliveryCopied;
    formatPartialPath(ex.session_->id, ex.partial_);
    ex.step_ = Exchange::Step::CopyLink;
    ex.op_.busy = true;
    storage_.commitBeneath(ex.op_, ex.partial_, ex.destBase_, destBelow(ex), settings_.allowOverwrites);
    return;
  }
  if (!journalEnded(ex)) ready(ex);
}

bool UploadEngine::journalEnded(Exchange& ex) {
  Session& s = *ex.session_;
  JournalRecord rec;
  rec.type = RecordType::DeliveryEnded;
  rec.id = s.id;
  rec.replySession = ex.dReplySession_;
  rec.wallSeconds = clock_.wallSeconds();
  rec.status = ex.dStatus_;
  rec.hresult = ex.dHresult_;
  rec.flags = ex.dFlags_;
  rec.replyBytes = ex.dReplyBytes_;
  rec.txid = std::string_view(ex.txid_, ex.txidLen_);
  rec.url = ex.notify_.result.staticResponseUrl();
  if (!appendOrFail(ex, rec, Exchange::Step::JournalEnded)) {
    endDelivering(ex);
    return false;
  }
  return true;
}

void UploadEngine::loadDelivery(Exchange& ex, const DeliveryInfo& d) {
  ex.dStatus_ = d.status;
  ex.dHresult_ = d.hresult;
  ex.dFlags_ = d.flags;
  ex.dReplyBytes_ = d.replyBytes;
  ex.dReplySession_ = d.replySession;
  NotifyResult& r = ex.notify_.result;
  r.staticUrlLen = std::min(d.staticUrl.size(), sizeof r.staticUrl);
  std::memcpy(r.staticUrl, d.staticUrl.data(), r.staticUrlLen);
}

void UploadEngine::endDelivering(Exchange& ex) {
  if (!ex.delivering_) return;
  ex.delivering_ = false;
  delivering_.erase(std::string(ex.txid_, ex.txidLen_));
}

size_t UploadEngine::formatReplyUrl(const Exchange& ex, const SessionId& replySession, char* out, size_t cap) {
  // http://<host-id or Host>/<upload directory>/BITS-Sessions/Replies/%7B...%7D/responsefile.bin
  std::string_view host = settings_.hostId.empty() ? requestHost(ex) : std::string_view(settings_.hostId);
  std::string_view target = ex.head_ != nullptr ? ex.head_->target : std::string_view("/");
  std::string_view path = target.substr(0, target.find('?'));
  if (path.substr(0, 7) == "http://") {
    size_t slash = path.find('/', 7);
    path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
  }
  size_t dirEnd = path.rfind('/');
  std::string_view dir = dirEnd == std::string_view::npos ? std::string_view("/") : path.substr(0, dirEnd + 1);
  char id[kSessionIdTextBytes];
  formatSessionId(replySession, id);
  int n = std::snprintf(out, cap, "http://%.*s%.*sBITS-Sessions/Replies/%%7B%.36s%%7D/responsefile.bin",
                        static_cast<int>(host.size()), host.data(), static_cast<int>(dir.size()), dir.data(), id + 1);
  if (n < 0 || static_cast<size_t>(n) >= cap || static_cast<size_t>(n) > NotifyResult::kMaxUrlBytes) return 0;
  return static_cast<size_t>(n);
}

void UploadEngine::respondDelivered(Exchange& ex) {
  AckSpec spec;
  spec.status = ex.dStatus_;
  spec.sessionId = ex.hasSessionId_ ? &ex.sessionId_ : nullptr;
  spec.hasReceived = true;
  spec.receivedBytes = ex.rangeTotal_;
  spec.close = ex.close_;
  char url[NotifyResult::kMaxUrlBytes + 1];
  if (ex.dStatus_ == 200) {
    std::string_view staticUrl = ex.notify_.result.staticResponseUrl();
    if (!staticUrl.empty()) {
      spec.replyUrl = staticUrl;
    } else {
      size_t n = formatReplyUrl(ex, ex.dReplySession_, url, sizeof url);
      if (n == 0) {
        (void)fail(ex, 400, hresult::kInvalidArg, true);  // §5.4: reply URLs over 2,200 characters
        return;
      }
      spec.replyUrl = std::string_view(url, n);
    }
  } else {
    ++stats_.errors;
    spec.hasError = true;
    spec.errorCode = ex.dHresult_;
    // The application's own status carries BG_E_HTTP_ERROR_<status> and context 0x7; a refused
    // copy to the destination is a remote-file error (0x5), as for a plain commit.
    spec.context = ex.dHresult_ == hresult::kHttpErrorBase + ex.dStatus_ ? ErrorContext::RemoteApplication
                                                                          : ErrorContext::RemoteFile;
  }
  ex.status_ = spec.status;
  ex.responseLen_ = formatAck(spec, ex.response_);
}

void UploadEngine::formatReplyPath(const SessionId& id, char* out) {
  std::memcpy(out, repliesDir_.data(), repliesDir_.size());
  size_t n = repliesDir_.size();
  out[n++] = '/';
  formatSessionId(id, out + n);
  n += kSessionIdTextBytes;
  out[n] = '\0';
}

bool UploadEngine::removePathInBackground(const char* path) {
  for (int i = 0; i < kBackgroundOps; ++i) {
    if (!background_[i].busy) {
      std::snprintf(backgroundPath_[i], sizeof backgroundPath_[i], "%s", path);
      background_[i].busy = true;
      storage_.remove(background_[i], backgroundPath_[i]);
      return true;
    }
  }
  return false;
}

bool UploadEngine::removeReplyInBackground(const SessionId& id) {
  char path[Exchange::kPathBufBytes];
  formatReplyPath(id, path);
  return removePathInBackground(path);
}

void UploadEngine::expireDeliveries() {
  if (deliveries_.empty()) return;
  const uint64_t now = clock_.wallSeconds();
  for (auto it = deliveries_.begin(); it != deliveries_.end();) {
    const DeliveryInfo& d = it->second;
    bool old = d.wallSeconds + retentionSeconds_ <= now;
    // Kept while the session holding its reply is alive, or while it is being delivered.
    const Session* owner = sessions_.find(d.replySession);
    if (!old || (owner != nullptr && owner->handedOff && owner->state == SessionState::Complete) ||
        delivering_.count(it->first) != 0) {
      ++it;
      continue;
    }
    it = deliveries_.erase(it);
  }
}

const DeliveryInfo* UploadEngine::findDelivery(std::string_view txid) const {
  auto it = deliveries_.find(std::string(txid));
  return it == deliveries_.end() ? nullptr : &it->second;
}

// GET and HEAD on a reply URL (§5.4, §10.1). The session id in the URL must name a session whose
// application answer left a reply file; anything else is 404, which reveals nothing.
Flow UploadEngine::serveReply(Exchange& ex, const RequestHead& head) {
  ++stats_.replies;
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
  constexpr std::string_view kMarker = "/BITS-Sessions/Replies/";
  constexpr std::string_view kFile = "/responsefile.bin";
  size_t at = target.find(kMarker);
  if (at == std::string_view::npos || target.size() < kFile.size() ||
      target.substr(target.size() - kFile.size()) != kFile) {
    --stats_.replies;
    ex.failed_ = false;
    return fail(ex, 405, hresult::kInvalidArg);  // not a reply URL: uploads take BITS_POST only
  }
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
  // The reply belongs to the session that posted it; a later session that was answered from the
  // same delivery points at it too.
  auto known = [&](const SessionId& sid) -> const DeliveryInfo* {
    const Session* s = sessions_.find(sid);
    if (s == nullptr || !s->handedOff || s->state != SessionState::Complete) return nullptr;
    if (authenticator_ != nullptr && s->owner != ex.user_) return nullptr;  // someone else's reply: unknown
    auto tx = sessionTxid_.find(sid);
    if (tx == sessionTxid_.end()) return nullptr;
    auto d = deliveries_.find(tx->second);
    if (d == deliveries_.end() || !d->second.ended || d->second.status != 200 || !d->second.staticUrl.empty() ||
        !(d->second.replySession == sid)) {
      return nullptr;
    }
    return &d->second;
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
    switch (interpretRange(head.value(HeaderId::Range), size, &begin, &end)) {
      case RangeAnswer::Whole: break;
      case RangeAnswer::Partial: status = 206; break;
      case RangeAnswer::Unsatisfiable: return answer(416);
    }
  }
  spec.contentLength = end - begin;
  spec.rangeBegin = begin;
  spec.rangeEnd = end;
  if (head.method == HttpMethod::Get && end > begin) {
    formatReplyPath(d->replySession, ex.partial_);
    ex.sendFile_ = true;
    ex.fileOffset_ = begin;
    ex.fileLength_ = end - begin;
  }
  return answer(status);
}

}  // namespace bitsd
