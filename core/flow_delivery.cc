// DeliveryFlow: the hand-off of a complete upload to the server application (BITS-UPLOAD.md §5, §8),
// and the final Ack that carries its answer (respondDelivered, the reply URL).
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
// Farm mode adds the farm's shared record around the POST (FarmHandoff, core/flow_farm.cc): after 3
// the transaction is claimed in the farm, and before 4 "ended" is recorded there.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

namespace {
bool validTxid(std::string_view t) {
  if (t.empty() || t.size() > kMaxTxidBytes) return false;
  for (char c : t) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}
}  // namespace

Flow DeliveryFlow::start(UploadEngine& e, Exchange& ex) {
  return ex.flow_.emplace<DeliveryFlow>().begin(e, ex);
}

Flow DeliveryFlow::begin(UploadEngine& e, Exchange& ex) {
  Session& s = *ex.session_;
  e.closeFile(s);
  if (!s.digestKnown && s.hashValid && s.hashedBytes == s.totalBytes) {
    e.sha_.finish(s.hash, s.sha256);
    s.digestKnown = true;
    s.hashValid = false;
  }
  std::string_view tx;
  if (ex.head_ != nullptr && ex.head_->has(HeaderId::TransactionId)) {
    tx = trimOws(ex.head_->value(HeaderId::TransactionId));
    if (!validTxid(tx)) {
      logf(LogLevel::Info, "final fragment refused: the %s header is empty, too long or has control characters",
           e.settings_.transactionHeader.c_str());
      return e.fail(ex, 400, hresult::kInvalidArg, true);
    }
  }
  char idText[kSessionIdTextBytes];
  if (tx.empty()) {
    formatSessionId(s.id, idText);
    tx = std::string_view(idText, kSessionIdTextBytes);
  }
  std::memcpy(txid_, tx.data(), tx.size());
  txidLen_ = static_cast<uint16_t>(tx.size());
  std::string key(tx);
  const DeliveryInfo* d = e.book_.find(key);
  if (d != nullptr && d->ended && e.farm_ != nullptr && (d->flags & kDeliveryHasReplyFile) != 0 &&
      !(d->replySession == s.id)) {
    // Farm mode: the reply file belongs to an earlier session of this transaction. Once that session
    // is closed its reply is gone, and a replay here would name a URL that answers 404. The farm's
    // "ended" record carries a small reply inline: ask the farm instead (no POST; the claim finds
    // "ended" and the reply is written to this session's own reply file).
    const Session* earlier = e.sessions_.find(d->replySession);
    if (earlier == nullptr || !keepsReply(*earlier)) d = nullptr;
  }
  if (d != nullptr && d->ended) {
    // Delivered before, by this server: answer as the application did then. Journal that this
    // session has its answer, so its repeats and restarts answer the same.
    ++e.stats_.deliveriesReplayed;
    logf(LogLevel::Info, "transaction %.*s was delivered before: replaying its answer, no POST",
         static_cast<int>(tx.size()), tx.data());
    outcome_ = DeliveryOutcome{d->status, d->hresult, d->flags, d->replyBytes, d->replySession};
    NotifyResult& r = ex.notify_.result;
    r.staticUrlLen = std::min(d->staticUrl.size(), sizeof r.staticUrl);
    std::memcpy(r.staticUrl, d->staticUrl.data(), r.staticUrlLen);
    if (!e.book_.beginDelivering(key)) return e.fail(ex, 503, hresult::kBusy, true);
    delivering_ = true;
    return journalEnded(e, ex) ? Flow::Wait : Flow::Continue;
  }
  if (e.farm_ != nullptr && !e.farm_->live()) {
    // No live lease: this node may neither claim nor post. Nothing is journaled.
    ++e.stats_.farmUnavailable;
    logf(LogLevel::Warn, "final fragment of transaction %.*s deferred: this node holds no live farm lease",
         static_cast<int>(tx.size()), tx.data());
    return e.fail(ex, 503, hresult::kBusy, true);
  }
  if (e.book_.delivering(key)) {
    // Another request is handing this transaction over right now; the client retries later.
    return e.fail(ex, 503, hresult::kBusy, true);
  }
  if (const FarmPending* p = e.farm_ != nullptr ? e.book_.farmPending(key) : nullptr;
      p != nullptr && p->kind == FarmPending::Kind::End) {
    // The application answered an earlier attempt; only the farm's "ended" is missing. No POST.
    e.book_.beginDelivering(key);
    delivering_ = true;
    farm_.endPending(e, ex, *this, *p);
    return Flow::Wait;
  }
  if (e.book_.deliveringCount() >= e.settings_.maxNotifications) {
    ++e.stats_.notificationsRefused;
    logf(LogLevel::Info, "final fragment deferred: %zu hand-offs to the application in flight (max-notifications)",
         e.book_.deliveringCount());
    return e.fail(ex, 503, hresult::kBusy, true);
  }
  e.book_.beginDelivering(key);
  delivering_ = true;
  outcome_.replySession = s.id;
  JournalRecord rec;
  rec.type = RecordType::DeliveryBegan;
  rec.id = s.id;
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.txid = tx;
  if (!e.appendOrFail(ex, rec)) {
    release(e);
    return Flow::Continue;
  }
  wait_ = Wait::JournalBegan;
  return Flow::Wait;
}

void DeliveryFlow::release(UploadEngine& e) {
  if (!delivering_) return;
  delivering_ = false;
  e.book_.endDelivering(txid());
}

void DeliveryFlow::onJournal(UploadEngine& e, Exchange& ex, const Status& st) {
  Wait w = wait_;
  if (w != Wait::JournalBegan && w != Wait::JournalEnded) return e.stray(ex, "journal");
  wait_ = Wait::None;
  if (!st.isOk()) {
    // Not recorded: the client retries, and the application is asked again with the same id.
    release(e);
    e.fail(ex, 500, hresultFor(st), true);
    return e.ready(ex);
  }
  if (w == Wait::JournalBegan) {
    JournalRecord rec;
    rec.type = RecordType::DeliveryBegan;
    rec.id = ex.session_->id;
    rec.wallSeconds = e.clock_.wallSeconds();
    rec.txid = txid();
    e.book_.apply(rec);
    if (e.farm_ != nullptr) return farm_.claim(e, ex, *this);  // then the POST, or an answer from the farm
    return beginNotify(e, ex);
  }
  Session& s = *ex.session_;
  JournalRecord rec;
  rec.type = RecordType::DeliveryEnded;
  rec.id = s.id;
  rec.txid = txid();
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.replySession = outcome_.replySession;
  rec.status = outcome_.status;
  rec.hresult = outcome_.hresult;
  rec.flags = outcome_.flags;
  rec.replyBytes = outcome_.replyBytes;
  rec.url = ex.notify_.result.staticResponseUrl();
  e.book_.ended(rec);
  s.handedOff = true;
  s.state = SessionState::Complete;
  ++e.stats_.deliveriesEnded;
  release(e);
  // The request file goes once the application has answered (§5.3, §10.1).
  e.formatPartialPath(s.id, ex.partial_);
  wait_ = Wait::RemoveRequest;
  ex.op_.busy = true;
  e.storage_.remove(ex.op_, ex.partial_);
}

void DeliveryFlow::beginNotify(UploadEngine& e, Exchange& ex) {
  Session& s = *ex.session_;
  std::string_view target = ex.head_ != nullptr ? ex.head_->target : std::string_view("/");
  char url[NotifyResult::kMaxUrlBytes + 64];
  if (!resolveNotifyUrl(e.settings_.notifyUrl, e.requestHost(ex), target, url, sizeof url)) {
    release(e);
    logf(LogLevel::Warn, "hand-off refused: the notification URL would exceed %zu bytes", NotifyResult::kMaxUrlBytes);
    e.fail(ex, 400, hresult::kInvalidArg, true);
    return e.ready(ex);
  }
  char original[NotifyResult::kMaxUrlBytes + 64];
  size_t olen = 0;
  std::string_view host = e.requestHost(ex);
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
  e.formatReplyPath(s.id, reply);
  e.formatPartialPath(s.id, ex.partial_);
  char idText[kSessionIdTextBytes];
  formatSessionId(s.id, idText);
  NotifyRequest req;
  req.url = url;
  req.originalUrl = std::string_view(original, olen);
  req.requestFile = ex.partial_;
  req.replyFile = reply;
  req.byValue = e.notifyMode_ == NotifyMode::Value;
  req.contentBytes = s.totalBytes;
  req.transactionId = txid();
  req.sessionId = std::string_view(idText, kSessionIdTextBytes);
  req.sha256 = s.digestKnown ? s.sha256 : nullptr;
  req.timeoutMs = e.settings_.notifyTimeoutSeconds * 1000;
  wait_ = Wait::Notify;
  ex.notify_.callback = &ex;
  ex.notify_.busy = true;
  ex.notify_.result = NotifyResult{};
  ++e.stats_.notifications;
  logf(LogLevel::Info, "posting transaction %.*s (%.38s) to %s", static_cast<int>(txidLen_), txid_, idText, url);
  e.notifier_->post(ex.notify_, req);
}

// A failure the client retries: nothing is journaled, the id is free again.
void DeliveryFlow::transient(UploadEngine& e, Exchange& ex, int status, uint32_t code, ErrorContext ctx,
                             const char* why) {
  ++e.stats_.notifyFailures;
  logf(LogLevel::Warn, "hand-off of transaction %.*s: %s; the client will retry", static_cast<int>(txidLen_), txid_,
       why);
  retryLater(e, ex, status, code, ctx);
}

void DeliveryFlow::retryLater(UploadEngine& e, Exchange& ex, int status, uint32_t code, ErrorContext ctx) {
  release(e);
  e.fail(ex, status, code, true);
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
  e.ready(ex);
}

void DeliveryFlow::onNotify(UploadEngine& e, Exchange& ex) {
  if (wait_ != Wait::Notify) return e.stray(ex, "notification");
  wait_ = Wait::None;
  NotifyResult& r = ex.notify_.result;
  if (r.outcome == NotifyOutcome::Answered && r.status == 200 && r.staticUrlLen > 0) {
    std::string_view u = r.staticResponseUrl();
    if (u.substr(0, 7) != "http://" && u.substr(0, 8) != "https://") r.outcome = NotifyOutcome::Malformed;
  }
  switch (r.outcome) {
    case NotifyOutcome::Answered: break;
    case NotifyOutcome::Busy:
      return transient(e, ex, 503, hresult::kBusy, ErrorContext::RemoteFile, "all notification slots are busy");
    case NotifyOutcome::TimedOut:
      return transient(e, ex, 408, hresult::kTimeout, ErrorContext::RemoteApplication,
                       "the application did not answer in time");
    case NotifyOutcome::LocalError:
      return transient(e, ex, 500, hresult::kInternal, ErrorContext::RemoteFile, "a local file error");
    case NotifyOutcome::Unreachable:
    case NotifyOutcome::Malformed:
      return transient(e, ex, 502, hresult::kRemoteApplication, ErrorContext::RemoteApplication,
                       notifyOutcomeName(r.outcome));
  }
  if (r.status != 200 && isTransientStatus(r.status)) {
    char why[64];
    std::snprintf(why, sizeof why, "the application answered %d (transient)", r.status);
    return transient(e, ex, r.status, hresult::kHttpErrorBase + static_cast<uint32_t>(r.status),
                     ErrorContext::RemoteApplication, why);
  }
  // A final answer: success, or an error the client will not retry. It is recorded either way.
  outcome_.status = static_cast<uint16_t>(r.status);
  outcome_.hresult = r.status == 200 ? 0 : hresult::kHttpErrorBase + static_cast<uint32_t>(r.status);
  outcome_.flags = 0;
  outcome_.replyBytes = 0;
  if (r.status == 200 && r.staticUrlLen == 0 && r.hasReplyFile) {
    outcome_.flags |= kDeliveryHasReplyFile;
    outcome_.replyBytes = r.replyBytes;
  }
  if (r.status != 200) r.staticUrlLen = 0;
  if (r.status == 200 && r.copyToDestination) {
    outcome_.flags |= kDeliveryCopied;
    e.formatPartialPath(ex.session_->id, ex.partial_);
    wait_ = Wait::CopyLink;
    ex.op_.busy = true;
    e.storage_.commitBeneath(ex.op_, ex.partial_, ex.destBase_, UploadEngine::destBelow(ex),
                             e.settings_.allowOverwrites);
    return;
  }
  answered(e, ex);
}

void DeliveryFlow::answered(UploadEngine& e, Exchange& ex) {
  if (e.farm_ != nullptr) return farm_.end(e, ex, *this);  // "ended" in the farm first, then the journal
  if (!journalEnded(e, ex)) e.ready(ex);
}

void DeliveryFlow::onFarm(UploadEngine& e, Exchange& ex) {
  if (wait_ != Wait::Farm) return e.stray(ex, "farm");
  wait_ = Wait::None;
  farm_.onFarm(e, ex, *this);
}

void DeliveryFlow::onStorage(UploadEngine& e, Exchange& ex) {
  const Status st = ex.op_.status;
  Wait w = wait_;
  wait_ = Wait::None;
  switch (w) {
    case Wait::CopyLink: return copied(e, ex, st);
    case Wait::FarmStorage: return farm_.onStorage(e, ex, *this);
    case Wait::RemoveRequest:
      // NotFound: the copy to the destination renamed it (always, unless the file system could only
      // link it there).
      if (!st.isOk() && st.code() != Code::NotFound) {
        logf(LogLevel::Warn, "removing the request file %s: %s", ex.partial_, st.message());
      }
      e.respondDelivered(ex, outcome_, ex.notify_.result.staticResponseUrl(), ex.session_->totalBytes);
      return e.ready(ex);
    case Wait::None:
    case Wait::JournalBegan:
    case Wait::Notify:
    case Wait::JournalEnded:
    case Wait::Farm: break;
  }
  wait_ = w;
  e.stray(ex, "storage");
}

// BITS-Copy-File-To-Destination (link or rename, and fsync) is done.
void DeliveryFlow::copied(UploadEngine& e, Exchange& ex, const Status& st) {
  if (!st.isOk()) {
    // The delivery still counts as made (§10.1): the answer is the copy's failure.
    outcome_.flags &= static_cast<uint8_t>(~kDeliveryCopied);
    if (st.code() == Code::AlreadyExists) {
      outcome_.status = 403;
      outcome_.hresult = hresult::kAccessDenied;
    } else if (st.code() == Code::NotFound) {
      outcome_.status = 404;
      outcome_.hresult = hresult::kPathNotFound;
    } else if (st.code() == Code::AccessDenied) {  // a symlink swapped in, as for a commit
      logf(LogLevel::Warn, "copy of the upload to %s refused: %s (%d)", ex.dest_, st.message(), st.sysCode());
      outcome_.status = 403;
      outcome_.hresult = hresult::kAccessDenied;
    } else {
      logf(LogLevel::Warn, "copy of the upload to %s failed: %s (%d)", ex.dest_, st.message(), st.sysCode());
      outcome_.status = 500;
      outcome_.hresult = hresultFor(st);
    }
    return answered(e, ex);
  }
  ex.session_->committed = true;
  if (!ex.op_.syncStatus.isOk()) {
    logf(LogLevel::Warn, "directory sync after copy: %s", ex.op_.syncStatus.message());
  }
  logf(LogLevel::Info, "copied the upload to %s as the application asked", ex.dest_);
  answered(e, ex);
}

bool DeliveryFlow::journalEnded(UploadEngine& e, Exchange& ex) {
  Session& s = *ex.session_;
  JournalRecord rec;
  rec.type = RecordType::DeliveryEnded;
  rec.id = s.id;
  rec.replySession = outcome_.replySession;
  rec.wallSeconds = e.clock_.wallSeconds();
  rec.status = outcome_.status;
  rec.hresult = outcome_.hresult;
  rec.flags = outcome_.flags;
  rec.replyBytes = outcome_.replyBytes;
  rec.txid = txid();
  rec.url = ex.notify_.result.staticResponseUrl();
  if (!e.appendOrFail(ex, rec)) {
    release(e);
    return false;
  }
  wait_ = Wait::JournalEnded;
  return true;
}

// ---------------------------------------------------------------------------------------------------
// The answer

std::string_view UploadEngine::requestHost(const Exchange& ex) const {
  if (ex.head_ != nullptr && ex.head_->has(HeaderId::Host) && !ex.head_->value(HeaderId::Host).empty()) {
    return ex.head_->value(HeaderId::Host);
  }
  return settings_.listen;
}

size_t UploadEngine::formatReplyUrl(const Exchange& ex, const SessionId& replySession, char* out, size_t cap) {
  // http://<host-id or Host>/<upload directory>/BITS-Sessions/Replies/%7B...%7D/responsefile.bin
  // In a farm the request's Host (the farm forwards the download to the node that holds the reply).
  std::string_view host =
      settings_.hostId.empty() || farm_ != nullptr ? requestHost(ex) : std::string_view(settings_.hostId);
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

void UploadEngine::respondDelivered(Exchange& ex, const DeliveryOutcome& d, std::string_view staticUrl,
                                    uint64_t total) {
  AckSpec spec;
  spec.status = d.status;
  spec.sessionId = ex.hasSessionId_ ? &ex.sessionId_ : nullptr;
  spec.hasReceived = true;
  spec.receivedBytes = total;
  spec.close = ex.close_;
  char url[NotifyResult::kMaxUrlBytes + 1];
  if (d.status == 200) {
    if (!staticUrl.empty()) {
      spec.replyUrl = staticUrl;
    } else {
      // Single node: the asking session's own reply URL, which serves the delivery's reply of record
      // for as long as the session keeps its reply (ReplyFlow), even when another session of the
      // same transaction posted it and has ended since. A farm names the session that holds it.
      const SessionId& named = farm_ == nullptr && ex.hasSessionId_ ? ex.sessionId_ : d.replySession;
      size_t n = formatReplyUrl(ex, named, url, sizeof url);
      if (n == 0) {
        (void)fail(ex, 400, hresult::kInvalidArg, true);  // §5.4: reply URLs over 2,200 characters
        return;
      }
      spec.replyUrl = std::string_view(url, n);
    }
  } else {
    ++stats_.errors;
    spec.hasError = true;
    spec.errorCode = d.hresult;
    ex.errorCode_ = d.hresult;  // for the access log and the error log
    ex.errorAnswered_ = true;
    // The application's own status carries BG_E_HTTP_ERROR_<status> and context 0x7; a refused
    // copy to the destination is a remote-file error (0x5), as for a plain commit.
    spec.context = d.hresult == hresult::kHttpErrorBase + d.status ? ErrorContext::RemoteApplication
                                                                   : ErrorContext::RemoteFile;
  }
  ex.status_ = spec.status;
  ex.responseLen_ = formatAck(spec, ex.response_);
}

}  // namespace bitsd
