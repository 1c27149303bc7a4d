// UploadEngine at start-up and compaction: journal replay into the session table (onRecord),
// finishRestore, reconcile with the files on disk, the digest catch-up (rehashOpenSessions), and the
// snapshot a compaction writes. See docs/JOURNAL.md.
#include "core/upload_engine.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/log.h"

namespace bitsd {

// The engine's session table as applyRecord (core/journal_model.h) sees it: the replay rules are
// there, shared with JournalState; this says how each one lands in a Session. While restoring,
// Session::lastActivityMs holds the journal's wall-clock seconds; finishRestore turns them into loop
// milliseconds.
struct UploadEngine::ReplayTarget {
  using Session = bitsd::Session;
  UploadEngine& e;
  // Replay (true): lastActivityMs still holds wall seconds. Reconciliation runs after finishRestore
  // made them loop milliseconds, and a fact it proves is no client activity: it leaves them be.
  bool restoring = true;
  uint32_t unjournaled = 0;  // reconciliation's records the journal could not take

  // Reconciliation: journals a fact recovery proved about the files, and applies it to the table by
  // the same rules as replay. If the journal cannot take it, the table still gets it; the next
  // start proves it again from the same files.
  void prove(const JournalRecord& r) {
    if (!e.journal_.append(r, nullptr).isOk()) ++unjournaled;
    applyRecord(*this, r);
  }

  Session* find(const SessionId& id) { return e.sessions_.find(id); }
  Session* create(const JournalRecord& r) {
    if (r.path.size() > e.settings_.maxPathBytes) return nullptr;  // cannot be served under this config
    Session* s = e.sessions_.insert(r.id, r.path);
    if (s == nullptr) {
      e.restoreOverflow_ = true;
      return nullptr;
    }
    if (s->slot + 1 > e.highWater_) e.highWater_ = s->slot + 1;
    s->createdMs = e.clock_.nowMs();  // the admin page's age: since this start for restored sessions
    e.sha_.start(s->hash);
    s->hashValid = e.settings_.digest;  // over zero bytes
    return s;
  }
  void erase(Session& s) {
    e.book_.sessionTxid.erase(s.id);
    e.sessions_.erase(&s);
  }
  DeliveryMap& deliveries() { return e.book_.deliveries; }
  void touch(Session& s, uint64_t wall) {
    if (restoring && wall > s.lastActivityMs) s.lastActivityMs = wall;
  }
  bool ended(const Session& s) const { return s.state != SessionState::Open; }
  uint64_t have(const Session& s) const { return s.haveBytes; }
  uint64_t total(const Session& s) const { return s.totalBytes; }
  void setTotal(Session& s, uint64_t total) {
    s.totalKnown = true;
    s.totalBytes = total;
  }
  void setHave(Session& s, uint64_t have, const JournalRecord* progress) {
    s.haveBytes = s.journaledBytes = have;
    if (progress == nullptr) return;  // complete: the digest is no longer kept
    // Resume the digest from its checkpoint (whole blocks only); rehashOpenSessions re-reads the
    // short tail after it.
    s.hashValid = e.settings_.digest && progress->shaStateLen == kDigestCheckpointBytes &&
                  e.sha_.importState(s.hash, progress->shaState, kDigestChainBytes);
    s.hashedBytes = s.hashValid ? digestCheckpointBytes(progress->shaState) : 0;
  }
  void complete(Session& s) {
    if (s.state == SessionState::Open) s.state = SessionState::Complete;
    s.hashValid = false;
  }
  void commit(Session& s, const uint8_t* sha256) {
    s.committed = true;
    if (sha256 != nullptr) std::memcpy(s.sha256, sha256, sizeof s.sha256);
  }
  void close(Session& s, bool) { s.state = SessionState::Closed; }
  void handOff(Session& s, std::string_view txid) {
    e.book_.sessionTxid[s.id] = std::string(txid);
    s.handedOff = true;
  }
  void setOwner(Session& s, std::string_view owner) {
    if (parsePartyAddress(owner, &s.party)) {  // created without authentication, from this address
      s.owner = e.authenticator_ != nullptr ? kNobody : -1;
      return;
    }
    // A user removed from the users file since owns nothing any more: the session only expires.
    s.owner = e.authenticator_ != nullptr ? e.authenticator_->userId(owner) : -1;
    if (s.owner < 0) s.owner = kNobody;
    s.party = s.owner >= 0 ? Party{Party::User, static_cast<uint64_t>(s.owner)} : Party{};
  }
};

void UploadEngine::onRecord(const JournalRecord& r, uint64_t, uint64_t) {
  ReplayTarget t{*this};
  applyRecord(t, r);
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
    if (idleMs >= expiryLimitMs(s)) {
      expired->push_back(s.id);
      book_.forgetSession(s.id);
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
  char reply[Exchange::kPathBufBytes];
  uint32_t dropped = 0;
  ReplayTarget facts{*this, false};
  // Hand-offs that began and did not end, by the session that began them.
  const auto pending = book_.unfinishedBySession();
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state != SessionState::Open) continue;
    auto pend = pending.find(s.id);
    formatPartialPath(s.id, partial);
    const Destination dst = resolveDestination(sessions_.path(s));  // as requests map it
    std::string_view base = dst.base, rest = dst.below;
    std::memcpy(dest, base.data(), base.size());
    dest[base.size()] = '/';
    std::memcpy(dest + base.size() + 1, rest.data(), rest.size());
    dest[base.size() + 1 + rest.size()] = '\0';
    RecoveryItem item;
    item.id = s.id;
    item.haveBytes = s.haveBytes;
    item.totalBytes = s.totalBytes;
    item.totalKnown = s.totalKnown;
    item.partialPath = partial;
    item.destPath = dest;
    item.destBaseBytes = base.size();
    if (pend != pending.end()) {
      formatReplyPath(s.id, reply);
      item.replyPath = reply;
    }
    RecoveryDecision d = inspector.inspect(item);
    JournalRecord rec;
    rec.id = s.id;
    rec.wallSeconds = clock_.wallSeconds();
    switch (d.action) {
      case RecoveryAction::Keep: break;
      case RecoveryAction::Drop:
        rec.type = RecordType::Forget;
        facts.prove(rec);  // erases the session
        ++dropped;
        break;
      case RecoveryAction::Committed:
        if (pend != pending.end()) {
          concludeCopiedDelivery(facts, s, *pend->second, d);
          break;
        }
        rec.type = RecordType::Committed;
        rec.totalBytes = s.totalBytes;
        facts.prove(rec);  // complete and committed, `have` = the size
        break;
      case RecoveryAction::SetHave:
        // Not a replay rule: `have` goes back (the file holds less than the journal says), which
        // replay never does; the file is the fact here.
        s.haveBytes = s.journaledBytes = d.haveBytes;
        s.hashValid = false;  // rebuilt by rehashOpenSessions
        sha_.start(s.hash);
        rec.type = RecordType::Progress;
        rec.totalBytes = s.totalBytes;
        rec.haveBytes = d.haveBytes;
        if (!journal_.append(rec, nullptr).isOk()) ++facts.unjournaled;
        break;
    }
  }
  if (facts.unjournaled > 0) {
    logf(LogLevel::Warn, "recovery: the journal could not take %u record(s) of what the files showed; the next start finds them again",
         facts.unjournaled);
  }
  return dropped;
}

// The upload of a hand-off that began but did not end is at its destination: the application had
// answered 200 with BITS-Copy-File-To-Destination (nothing else puts it there), its reply file was
// synced before the copy, and the crash came before DeliveryEnded. Journal the end recovery can
// prove, so the client's retry gets the reply and the application is not asked again. A static
// reply URL was not journaled yet and is lost: the reply is then empty.
void UploadEngine::concludeCopiedDelivery(ReplayTarget& facts, Session& s, const std::string& txid,
                                          const RecoveryDecision& d) {
  const std::string key = txid;  // a copy: applying the record updates the map that owns `txid`
  JournalRecord rec;
  rec.type = RecordType::DeliveryEnded;
  rec.id = s.id;
  rec.replySession = s.id;
  rec.wallSeconds = clock_.wallSeconds();
  rec.txid = key;
  rec.status = 200;
  rec.flags = kDeliveryCopied;
  if (d.replyExists) {
    rec.flags |= kDeliveryHasReplyFile;
    rec.replyBytes = d.replyBytes;
  }
  facts.prove(rec);  // the delivery ended; the session handed off, committed and complete
  ++stats_.deliveriesEnded;
  if (farm_ != nullptr) {
    // The farm still holds this node's "began" (other nodes answer that id 503 meanwhile): the
    // client's repeat of its final fragment records "ended" there (FarmHandoff::publish).
    FarmPending p;
    p.kind = FarmPending::Kind::Publish;
    p.wallSeconds = rec.wallSeconds;
    p.status = rec.status;
    p.flags = rec.flags;
    p.replyBytes = rec.replyBytes;
    p.replySession = rec.replySession;
    book_.setFarmPending(key, std::move(p));
  }
  logf(LogLevel::Info, "recovery: transaction %s was copied to its destination before the crash; its delivery is ended",
       key.c_str());
}

void UploadEngine::publishEnded() {
  if (farm_ == nullptr || publishOp_.busy || !farm_->live()) return;
  const std::string* tx = book_.firstFarmPending(FarmPending::Kind::Publish);
  if (tx == nullptr) return;
  uint8_t rnd[FarmHandoff::kTokenBytes / 2];
  if (!random_.fill(rnd, sizeof rnd)) return;  // the next sweep tries again
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof rnd; ++i) {
    publishToken_[2 * i] = kHex[rnd[i] >> 4];
    publishToken_[2 * i + 1] = kHex[rnd[i] & 15];
  }
  publishTxid_ = *tx;
  publishStep_ = PublishStep::Claim;
  publishOp_.callback = this;
  publishOp_.resetResult();
  publishOp_.busy = true;
  farm_->claim(publishOp_, publishTxid_, std::string_view(publishToken_, sizeof publishToken_),
               book_.farmPending(publishTxid_)->replySession);
}

void UploadEngine::onFarmDone(FarmOp& op) {
  op.busy = false;
  const PublishStep step = publishStep_;
  publishStep_ = PublishStep::None;
  const FarmPending* p = book_.farmPending(publishTxid_);
  if (p == nullptr || p->kind != FarmPending::Kind::Publish) return publishEnded();  // expired meanwhile
  if (op.outcome != FarmOutcome::Done) return;  // the next sweep tries again
  const FarmTxRecord& r = op.record;
  const std::string_view token(publishToken_, sizeof publishToken_);
  const bool ours = op.won || (r.state == FarmTxRecord::State::Began && r.node == farm_->node() && r.token == token);
  if (step != PublishStep::End && ours) {
    FarmEnded en;
    en.session = p->replySession;
    en.status = p->status;
    en.hresult = p->hresult;
    en.flags = p->flags;
    en.replyBytes = p->replyBytes;
    en.replySession = p->replySession;
    if ((p->flags & kDeliveryHasReplyFile) != 0 && p->replyBytes <= kFarmInlineReplyBytes) {
      formatReplyPath(p->replySession, publishReplyPath_);
      en.replyFile = publishReplyPath_;
    }
    const int64_t revision = op.won ? op.revision : r.modRevision;
    publishStep_ = PublishStep::End;
    publishOp_.resetResult();
    publishOp_.busy = true;
    return farm_->end(publishOp_, publishTxid_, revision, en);
  }
  if (step == PublishStep::Claim && r.state == FarmTxRecord::State::Began &&
      (r.node == farm_->node() || !r.nodeLive)) {
    // This node's earlier life (the one that crashed), or a node that lost its lease.
    const int64_t expect = r.modRevision;
    publishStep_ = PublishStep::TakeOver;
    publishOp_.resetResult();
    publishOp_.busy = true;
    return farm_->takeOver(publishOp_, publishTxid_, token, p->replySession, expect);
  }
  // Recorded (won, or "ended" by someone), gone, or another live node has it: nothing more to do.
  logf(LogLevel::Info, "farm: transaction %s, ended before a crash, %s", publishTxid_.c_str(),
       step == PublishStep::End && op.won ? "is now recorded as ended in the farm"
                                          : "needs no record from this node (the farm has moved on)");
  book_.clearFarmPending(publishTxid_);
  publishEnded();
}

void UploadEngine::rehashOpenSessions(RecoveryHasher& hasher) {
  if (!settings_.digest) return;
  char path[Exchange::kPathBufBytes];
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state != SessionState::Open) continue;
    if (s.hashValid && s.hashedBytes == s.haveBytes) continue;
    if (!s.hashValid || s.hashedBytes > s.haveBytes) {  // no checkpoint: the whole acked prefix
      sha_.start(s.hash);
      s.hashedBytes = 0;
    }
    formatPartialPath(s.id, path);
    s.hashValid = hasher.hashRange(path, s.hashedBytes, s.haveBytes - s.hashedBytes, sha_, s.hash);
    s.hashedBytes = s.hashValid ? s.haveBytes : 0;
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
    if (s.state == SessionState::Open) r.shaStateLen = digestCheckpoint(s, r.shaState);
    r.committed = s.committed;
    std::memcpy(r.sha256, s.sha256, 32);
    r.closed = s.state == SessionState::Closed;
    if (s.owner >= 0 && authenticator_ != nullptr) {
      r.owner = std::string(authenticator_->userName(s.owner));
    } else if (s.party.kind == Party::Ipv4 || s.party.kind == Party::Ipv6Prefix) {
      char text[kMaxPartyTextBytes];
      r.owner = std::string(text, formatPartyAddress(s.party, text));
    }
    if (s.handedOff) {
      auto tx = book_.sessionTxid.find(s.id);
      if (tx != book_.sessionTxid.end()) {
        r.handedOff = true;
        r.txid = tx->second;
      }
    }
  }
  out->delivered = book_.deliveries;
}

}  // namespace bitsd
