// UploadEngine: set-up, admission of each request (HTTP checks, the password check, the packet
// type, the destination by resolveDestination, the session it names), the start of its flow
// (core/flows.h), the routing of every completion to the flow that waits for it, the answers, and
// finish(). The flows themselves are in core/flow_*.cc; session quotas, eviction and expiry in
// upload_engine_sessions.cc; replay, reconciliation and snapshots in upload_engine_recovery.cc.
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

uint32_t hresultFor(const Status& s) {
  switch (s.code()) {
    case Code::NoSpace: return hresult::kDiskFull;
    case Code::NotFound: return hresult::kPathNotFound;
    case Code::AlreadyExists:
    case Code::AccessDenied: return hresult::kAccessDenied;
    default: return hresult::kInternal;
  }
}

// ---------------------------------------------------------------------------------------------------
// Exchange

void Exchange::clear() {
  flow_.emplace<std::monostate>();
  type_ = PacketType::Unknown;
  session_ = nullptr;
  hasSessionId_ = false;
  failed_ = false;
  respondNow_ = false;
  expectContinue_ = false;
  close_ = false;
  status_ = 0;
  counted_ = false;
  errorCode_ = 0;
  errorAnswered_ = false;
  reason_ = nullptr;
  relOffset_ = 0;
  relLen_ = 0;
  destBase_ = nullptr;
  responseLen_ = 0;
  head_ = nullptr;
  holdOffMs_ = 0;
}

void Exchange::onStorageDone(StorageOp& op) {
  (void)op;
  op_.busy = false;
  engine_->dispatchStorage(*this);
}

void Exchange::onNotifyDone(NotifyOp& op) {
  (void)op;
  notify_.busy = false;
  engine_->dispatchNotify(*this);
}

void Exchange::onFarmDone(FarmOp& op) {
  (void)op;
  farm_.busy = false;
  engine_->dispatchFarm(*this);
}

void Exchange::onJournalDurable(const Status& status) {
  journalWait_ = false;
  engine_->dispatchJournal(*this, status);
}

void Exchange::onAuthDone(AuthOp& op) {
  (void)op;
  auth_.busy = false;
  engine_->authDone(*this);
}

// ---------------------------------------------------------------------------------------------------
// Completions: each goes to the flow that waits for it, and only there

void UploadEngine::stray(const Exchange& ex, const char* what) {
  logf(LogLevel::Error, "a %s completion reached a request (flow %zu) that does not wait for one: ignored", what,
       ex.flow_.index());
}

void UploadEngine::dispatchStorage(Exchange& ex) {
  if (auto* f = std::get_if<CreateFlow>(&ex.flow_)) return f->onStorage(*this, ex);
  if (auto* f = std::get_if<FragmentFlow>(&ex.flow_)) return f->onStorage(*this, ex);
  if (auto* f = std::get_if<CommitFlow>(&ex.flow_)) return f->onStorage(*this, ex);
  if (auto* f = std::get_if<CloseFlow>(&ex.flow_)) return f->onStorage(*this, ex);
  if (auto* f = std::get_if<DeliveryFlow>(&ex.flow_)) return f->onStorage(*this, ex);
  if (auto* f = std::get_if<ReplyFlow>(&ex.flow_)) return f->onStorage(*this, ex);
  stray(ex, "storage");
}

void UploadEngine::dispatchJournal(Exchange& ex, const Status& st) {
  if (auto* f = std::get_if<CreateFlow>(&ex.flow_)) return f->onJournal(*this, ex, st);
  if (auto* f = std::get_if<FragmentFlow>(&ex.flow_)) return f->onJournal(*this, ex, st);
  if (auto* f = std::get_if<CommitFlow>(&ex.flow_)) return f->onJournal(*this, ex, st);
  if (auto* f = std::get_if<CloseFlow>(&ex.flow_)) return f->onJournal(*this, ex, st);
  if (auto* f = std::get_if<DeliveryFlow>(&ex.flow_)) return f->onJournal(*this, ex, st);
  stray(ex, "journal");
}

void UploadEngine::dispatchNotify(Exchange& ex) {
  if (auto* f = std::get_if<DeliveryFlow>(&ex.flow_)) return f->onNotify(*this, ex);
  stray(ex, "notification");
}

// The farm's completions: Create-Session's owner record, the hand-off's claim and end
// (FarmHandoff, inside DeliveryFlow), and forwarding's session lookups (ForwardFlow).
void UploadEngine::dispatchFarm(Exchange& ex) {
  if (auto* f = std::get_if<CreateFlow>(&ex.flow_)) return f->onFarm(*this, ex);
  if (auto* f = std::get_if<DeliveryFlow>(&ex.flow_)) return f->onFarm(*this, ex);
  if (auto* f = std::get_if<ForwardFlow>(&ex.flow_)) return f->onFarm(*this, ex);
  stray(ex, "farm");
}

void UploadEngine::ready(Exchange& ex) { ex.host_->onExchangeReady(ex); }

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
  retentionSeconds_ = deliveredRetentionSeconds(settings_.deliveredRetentionSeconds, settings_.sessionTimeoutSeconds);
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
  partialDir_ = partialDirOf(settings.state);
  if (root_.size() + 2 + settings.maxPathBytes > Exchange::kPathBufBytes) {
    return Status(Code::InvalidArgument, "root path plus max-path-bytes is too long");
  }
  for (const Location& l : locations_) {
    // "<dir>/<rest>\0<rel>\0" in one buffer (see Exchange::relOffset_).
    if (!l.dir.empty() && l.dir.size() + 3 + 2 * uint64_t{settings.maxPathBytes} > Exchange::kPathBufBytes) {
      return Status(Code::InvalidArgument, "a location's directory plus max-path-bytes is too long");
    }
  }
  if (partialDir_.size() + 2 + kPartialNameBytes > Exchange::kPathBufBytes) {
    return Status(Code::InvalidArgument, "state path is too long");
  }
  repliesDir_ = repliesDirOf(settings.state);
  notifyMode_ = parseNotifyMode(settings.notifyType);
  if (notifyMode_ != NotifyMode::None && notifier_ == nullptr) {
    return Status(Code::InvalidArgument, "notify-type is set but no notifier is attached");
  }
  journal_.setSnapshotSource(this);
  return sessions_.init(settings.maxSessions, settings.maxPathBytes, bulk);
}

bool UploadEngine::appendOrFail(Exchange& ex, const JournalRecord& r) {
  Status st = journal_.append(r, &ex);
  if (!st.isOk()) {
    ++stats_.journalRefusals;
    logf(LogLevel::Warn, "journal cannot take a record (%s): answering 503", st.message());
    fail(ex, 503, hresult::kNoSystemResources, true);
    return false;
  }
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

uint8_t UploadEngine::digestCheckpoint(const Session& s, uint8_t* out) {
  const Sha256State* hash = &s.hash;
  uint64_t hashed = s.hashedBytes;
  const FragmentFlow* f = s.holder != nullptr ? std::get_if<FragmentFlow>(&s.holder->flow_) : nullptr;
  if (s.holder != nullptr && ((f != nullptr && f->hashing()) || hashed > s.haveBytes)) {
    // A fragment is feeding `hash` off the loop (a compaction's snapshot), or has hashed bytes not
    // yet durable: use the state its first write started from, at the durable length then.
    uint64_t at = 0;
    const Sha256State* snap = f != nullptr ? f->snapshot(&at) : nullptr;
    if (snap == nullptr) return 0;
    hash = snap;
    hashed = at;
  }
  if (!s.hashValid || hashed > s.haveBytes) return 0;
  // The chaining state at the last whole block: no upload data. Recovery re-reads the rest.
  if (sha_.exportState(*hash, out) != kDigestChainBytes || digestCheckpointBytes(out) > hashed) return 0;
  out[kDigestChainBytes] = kDigestCheckpointForm;
  return static_cast<uint8_t>(kDigestCheckpointBytes);
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
  // A reply URL also takes GET and HEAD (§10.1, "Other methods on an upload path").
  spec.allowReplyMethods = status == 405 && ex.head_ != nullptr && isReplyTarget(ex.head_->target);
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
  ex.status_ = status;
  ex.errorCode_ = code;
  ex.errorAnswered_ = true;
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
  if (auto* d = std::get_if<DeliveryFlow>(&ex.flow_)) d->release(*this);
  ex.clear();
  ex.session_ = held;
  ex.engine_ = this;
  ex.close_ = true;
  uint32_t code = status == 505 ? hresult::kInsufficientHttp : hresult::kInvalidArg;
  (void)fail(ex, status, code);
}

void UploadEngine::formatForwardFailure(Exchange& ex) {
  ex.flow_.emplace<std::monostate>();  // no longer forwarded: this answer is ours
  ex.close_ = true;
  ex.reason_ = "the session's owner node did not answer the forwarded request";
  (void)fail(ex, 503, hresult::kBusy);
}

// ---------------------------------------------------------------------------------------------------
// Admission

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
  // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with an invalid one, is answered 400,
  // whatever it asks for (an empty Host is allowed; the reply URL then names the listen address).
  // A valid Host is what keeps BITS-Reply-URL a well-formed URL on this server.
  if (!head.has(HeaderId::Host) || !isValidHostHeader(head.value(HeaderId::Host))) {
    ex.reason_ = "the Host header is missing or not a valid host";
    return fail(ex, 400, hresult::kInvalidArg);
  }
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
    ex.flow_.emplace<Authenticating>();
    authenticator_->check(ex.auth_, trimOws(a.substr(6)));
    return Flow::Wait;
  }
  return afterAuth(ex, head);
}

void UploadEngine::authDone(Exchange& ex) {
  if (!std::holds_alternative<Authenticating>(ex.flow_)) return stray(ex, "password check");
  ex.flow_.emplace<std::monostate>();
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

UploadEngine::Destination UploadEngine::resolveDestination(std::string_view rel) const {
  Destination d;
  d.location = locationFor(locations_, rel);  // once: the directory and who may upload
  d.base = root_;
  d.below = rel;
  if (d.location != nullptr && !d.location->dir.empty()) {
    d.base = d.location->dir;
    d.below = rel.substr(d.location->prefix.size());
  }
  return d;
}

Flow UploadEngine::afterAuth(Exchange& ex, const RequestHead& head) {
  bool hasBody = head.contentLength > 0;
  if (head.method == HttpMethod::Get || head.method == HttpMethod::Head) return ReplyFlow::start(*this, ex, head);
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
  const Destination dst = resolveDestination(std::string_view(ex.dest_ + ex.relOffset_, ex.relLen_));
  const Location* loc = dst.location;
  if (dst.base.data() != root_.data()) {
    // The location's own directory: build "<dir>/<rest>" in partial_ (free until a flow starts),
    // move the relative path to just after it, then put the destination in front.
    size_t destLen = dst.base.size() + 1 + dst.below.size();
    std::memcpy(ex.partial_, dst.base.data(), dst.base.size());
    ex.partial_[dst.base.size()] = '/';
    std::memcpy(ex.partial_ + dst.base.size() + 1, dst.below.data(), dst.below.size());
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
    return CreateFlow::start(*this, ex);
  }

  // Packets of an existing session. An unknown id, a malformed id, or a session created for another
  // URL all get the same answer, so it reveals nothing.
  Session* s = ex.hasSessionId_ ? sessions_.find(ex.sessionId_) : nullptr;
  std::string_view rel(ex.dest_ + ex.relOffset_, ex.relLen_);
  // Another user's session is answered like an unknown one.
  if (s == nullptr && ex.hasSessionId_ && ForwardFlow::applies(*this, head)) {
    return ForwardFlow::start(*this, ex, ex.sessionId_, false);  // another node's, perhaps
  }
  if (s == nullptr || sessions_.path(*s) != rel || (authenticator_ != nullptr && s->owner != ex.user_)) {
    return fail(ex, 500, hresult::kSessionNotFound);
  }
  if (ex.type_ == PacketType::Fragment) return FragmentFlow::start(*this, ex, head);
  if (hasBody) return fail(ex, 400, hresult::kInvalidArg);
  return CloseFlow::start(*this, ex, *s);  // Close/Cancel do their work at message end
}

const char* UploadEngine::destBelow(const Exchange& ex) { return ex.dest_ + std::strlen(ex.destBase_) + 1; }

// ---------------------------------------------------------------------------------------------------
// Body and message end: the flow's

Flow UploadEngine::onBody(Exchange& ex, std::span<const char> bytes) {
  if (ex.type_ == PacketType::Fragment) stats_.bytesReceived += bytes.size();
  if (ex.failed_) return Flow::Continue;
  if (auto* f = std::get_if<FragmentFlow>(&ex.flow_)) return f->onBody(*this, ex, bytes);
  return Flow::Continue;
}

Flow UploadEngine::onMessageComplete(Exchange& ex) {
  if (auto* f = std::get_if<FragmentFlow>(&ex.flow_)) return f->onMessageComplete(*this, ex);
  // Early answers (errors, Ping, Create-Session, repeats after completion) are already formatted.
  if (ex.failed_ || ex.responseLen_ > 0) return Flow::Continue;
  if (auto* f = std::get_if<CloseFlow>(&ex.flow_)) return f->onMessageComplete(*this, ex);
  return Flow::Continue;
}

Flow UploadEngine::readReply(Exchange& ex, std::span<char> buf) {
  auto* r = std::get_if<ReplyFlow>(&ex.flow_);
  BITS_CHECK(r != nullptr && r->sendsFile() && !ex.inFlight());
  return r->read(*this, ex, buf);
}

Flow UploadEngine::startCompletion(Exchange& ex) {
  return notifyMode_ == NotifyMode::None ? CommitFlow::start(*this, ex) : DeliveryFlow::start(*this, ex);
}

void UploadEngine::finish(Exchange& ex) {
  BITS_CHECK(!ex.op_.busy && !ex.notify_.busy && !ex.farm_.busy);
  if (ex.status_ != 0 && !ex.counted_) {
    ex.counted_ = true;
    auto packet = static_cast<size_t>(ex.type_);
    if (packet < kPacketKinds) ++stats_.requests[packet][statusIndex(ex.status_)];
  }
  if (auto* d = std::get_if<DeliveryFlow>(&ex.flow_)) d->release(*this);
  if (auto* r = std::get_if<ReplyFlow>(&ex.flow_)) r->release(*this);
  endCreating(ex);
  ex.head_ = nullptr;
  if (ex.session_ != nullptr) {
    Session& s = *ex.session_;
    if (auto* f = std::get_if<FragmentFlow>(&ex.flow_)) f->release(s);
    if (ex.session_->holder == &ex) {
      ex.session_->busy = false;
      ex.session_->holder = nullptr;
    }
    ex.session_ = nullptr;
  }
}

}  // namespace bitsd
