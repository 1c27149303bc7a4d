// FarmHandoff: the farm's part of a delivery (core/flows.h; docs/DESIGN.md, "The farm hand-off").
//
// The order, in farm mode: DeliveryBegan is made durable locally (DeliveryFlow), then the
// transaction id is claimed in the farm's shared store with a fresh token, then the application
// gets the POST, then (after any copy) "ended" is recorded in the store, fenced by the claim's
// revision, then DeliveryEnded is journaled locally, the request file goes and the Ack is sent.
// What the claim finds decides:
//   - nothing: won, POST;
//   - "ended" (by any node): no POST; the answer is the record's (a small reply travels inline and
//     is written to this session's reply file);
//   - "began" by this node with our token: our own claim, whose answer was lost: won;
//   - "began" by this node with another token: an earlier life of this node: take it over;
//   - "began" by another node that is live: 503 + Retry-After (it is delivering right now);
//   - "began" by a node whose lease expired: take it over (fenced by revision), then POST again
//     with the same transaction id.
// The store unavailable (or no live lease) answers 503 + Retry-After. A claim that got no answer
// may have been applied: its token is kept in the book, and the retry claims with it, so it
// recognises its own claim. An "ended" that got no answer keeps the application's answer in the
// book ("pending end"): the retry on this node records it without another POST.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

void FarmHandoff::issue(Exchange& ex, DeliveryFlow& d, Step step) {
  step_ = step;
  d.wait_ = DeliveryFlow::Wait::Farm;
  ex.farm_.callback = &ex;
  ex.farm_.resetResult();
  ex.farm_.busy = true;
}

void FarmHandoff::claim(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  const FarmPending* p = e.book_.farmPending(d.txid());
  if (p != nullptr && p->kind == FarmPending::Kind::Claim && p->token.size() == kTokenBytes) {
    // An earlier attempt's claim got no answer: claim with its token, so that if it was applied the
    // store's record is recognised as ours.
    std::memcpy(token_, p->token.data(), kTokenBytes);
  } else {
    uint8_t rnd[kTokenBytes / 2];
    if (!e.random_.fill(rnd, sizeof rnd)) {
      logf(LogLevel::Error, "farm claim of transaction %.*s: random generator failed", static_cast<int>(d.txidLen_),
           d.txid_);
      return d.retryLater(e, ex, 500, hresult::kInternal, ErrorContext::RemoteFile);
    }
    static const char kHex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof rnd; ++i) {
      token_[2 * i] = kHex[rnd[i] >> 4];
      token_[2 * i + 1] = kHex[rnd[i] & 15];
    }
  }
  ++e.stats_.farmClaims;
  issue(ex, d, Step::Claim);
  e.farm_->claim(ex.farm_, d.txid(), token(), ex.session_->id);
}

void FarmHandoff::takeOver(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const char* why) {
  int64_t expect = ex.farm_.record.modRevision;
  std::string node = ex.farm_.record.node;
  logf(LogLevel::Info, "transaction %.*s began on node %s, %s: taking it over", static_cast<int>(d.txidLen_), d.txid_,
       node.c_str(), why);
  issue(ex, d, Step::TakeOver);
  e.farm_->takeOver(ex.farm_, d.txid(), token(), ex.session_->id, expect);
}

void FarmHandoff::onFarm(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  Step s = step_;
  step_ = Step::None;
  switch (s) {
    case Step::Claim:
    case Step::TakeOver:
      step_ = s;  // claimed() reads which one it was
      return claimed(e, ex, d);
    case Step::End: return ended(e, ex, d);
    case Step::None:
    case Step::ReplyCreate:
    case Step::ReplyWrite:
    case Step::ReplySync: break;
  }
  step_ = s;
  e.stray(ex, "farm");
}

// The answer to a claim or a takeover.
void FarmHandoff::claimed(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  const bool wasTakeOver = step_ == Step::TakeOver;
  step_ = Step::None;
  const FarmOp& op = ex.farm_;
  if (op.outcome != FarmOutcome::Done) {
    // Nothing is known: the claim may have been applied. The retry claims with the same token.
    FarmPending p;
    p.kind = FarmPending::Kind::Claim;
    p.token = std::string(token());
    p.wallSeconds = e.clock_.wallSeconds();
    e.book_.setFarmPending(d.txid(), std::move(p));
    return unavailable(e, ex, d, wasTakeOver ? "the farm did not answer the takeover" : "the farm did not answer the claim");
  }
  const FarmTxRecord& r = op.record;
  bool ours = op.won;
  int64_t revision = op.revision;
  if (!ours && r.state == FarmTxRecord::State::Began && r.node == e.farm_->node() && r.token == token()) {
    ours = true;  // our own claim, applied although its answer was lost
    revision = r.modRevision;
  }
  if (ours) {
    revision_ = revision;
    if (wasTakeOver) ++e.stats_.farmTakeovers;
    if (!e.farm_->live()) {
      // The lease went while we claimed: post nothing. The claim is ours; the retry recognises it.
      FarmPending p;
      p.kind = FarmPending::Kind::Claim;
      p.token = std::string(token());
      p.wallSeconds = e.clock_.wallSeconds();
      e.book_.setFarmPending(d.txid(), std::move(p));
      return unavailable(e, ex, d, "this node lost its farm lease");
    }
    e.book_.clearFarmPending(d.txid());
    return d.beginNotify(e, ex);
  }
  e.book_.clearFarmPending(d.txid());
  switch (r.state) {
    case FarmTxRecord::State::Ended:
      ++e.stats_.farmReplays;
      return answerFromRecord(e, ex, d);
    case FarmTxRecord::State::Began:
      if (wasTakeOver) return busy(e, ex, d, "another node took it over first");
      if (r.node == e.farm_->node()) return takeOver(e, ex, d, "in an earlier life of this node");
      if (r.nodeLive) return busy(e, ex, d, "another node is delivering it");
      return takeOver(e, ex, d, "which lost its lease");
    case FarmTxRecord::State::None: break;
  }
  // The record went between the compare and the read (its retention lease expired): try again later.
  busy(e, ex, d, "its farm record changed under the claim");
}

void FarmHandoff::endPending(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const FarmPending& p) {
  std::memcpy(token_, p.token.data(), std::min(p.token.size(), kTokenBytes));
  revision_ = p.revision;
  d.outcome_ = DeliveryOutcome{p.status, p.hresult, p.flags, p.replyBytes, p.replySession};
  NotifyResult& r = ex.notify_.result;
  r = NotifyResult{};
  r.staticUrlLen = std::min(p.staticUrl.size(), sizeof r.staticUrl);
  std::memcpy(r.staticUrl, p.staticUrl.data(), r.staticUrlLen);
  logf(LogLevel::Info, "transaction %.*s: the application answered an earlier attempt; recording its end in the farm",
       static_cast<int>(d.txidLen_), d.txid_);
  end(e, ex, d);
}

void FarmHandoff::end(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  const DeliveryOutcome& o = d.outcome_;
  FarmEnded en;
  en.session = ex.session_->id;
  en.status = o.status;
  en.hresult = o.hresult;
  en.flags = o.flags;
  en.replyBytes = o.replyBytes;
  en.replySession = o.replySession;
  en.staticUrl = ex.notify_.result.staticResponseUrl();
  if ((o.flags & kDeliveryHasReplyFile) != 0 && o.replyBytes <= kFarmInlineReplyBytes) {
    e.formatReplyPath(o.replySession, ex.partial_);  // kept until the completion
    en.replyFile = ex.partial_;
  }
  issue(ex, d, Step::End);
  e.farm_->end(ex.farm_, d.txid(), revision_, en);
}

// The answer to end().
void FarmHandoff::ended(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  const FarmOp& op = ex.farm_;
  if (op.outcome != FarmOutcome::Done) {
    // The answer is kept here; the client's retry records it (no second POST on this node).
    const DeliveryOutcome& o = d.outcome_;
    FarmPending p;
    p.kind = FarmPending::Kind::End;
    p.token = std::string(token());
    p.revision = revision_;
    p.wallSeconds = e.clock_.wallSeconds();
    p.status = o.status;
    p.hresult = o.hresult;
    p.flags = o.flags;
    p.replyBytes = o.replyBytes;
    p.replySession = o.replySession;
    p.staticUrl = std::string(ex.notify_.result.staticResponseUrl());
    e.book_.setFarmPending(d.txid(), std::move(p));
    return unavailable(e, ex, d, "the farm did not record its end; the answer is kept for the retry");
  }
  e.book_.clearFarmPending(d.txid());
  if (op.won) {
    if (!d.journalEnded(e, ex)) e.ready(ex);
    return;
  }
  // Lost: another node took the hand-off over while this one had no lease.
  if (op.record.state == FarmTxRecord::State::Ended) {
    ++e.stats_.farmReplays;
    return answerFromRecord(e, ex, d);
  }
  busy(e, ex, d, "another node took it over");
}

// The farm's record says "ended": answer as the application did then, no POST.
void FarmHandoff::answerFromRecord(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  const FarmTxRecord& r = ex.farm_.record;
  logf(LogLevel::Info, "transaction %.*s was delivered by node %s: replaying its answer, no POST",
       static_cast<int>(d.txidLen_), d.txid_, r.node.c_str());
  d.outcome_ = DeliveryOutcome{r.status, r.hresult, r.flags, r.replyBytes, r.replySession};
  NotifyResult& nr = ex.notify_.result;
  nr.staticUrlLen = std::min(r.staticUrl.size(), sizeof nr.staticUrl);
  std::memcpy(nr.staticUrl, r.staticUrl.data(), nr.staticUrlLen);
  if ((r.flags & kDeliveryHasReplyFile) != 0 && r.replyInline && r.status == 200 && r.staticUrl.empty()) {
    // A small reply came with the record: it becomes this session's reply file (synced before
    // DeliveryEnded names it), downloaded from this node.
    d.outcome_.replySession = ex.session_->id;
    d.outcome_.replyBytes = r.reply.size();
    replyAt_ = 0;
    e.formatReplyPath(ex.session_->id, ex.partial_);
    step_ = Step::ReplyCreate;
    d.wait_ = DeliveryFlow::Wait::FarmStorage;
    ex.op_.busy = true;
    e.storage_.createTruncate(ex.op_, ex.partial_);
    return;
  }
  // Otherwise the reply (if any) stays with the session that got it; its download is forwarded.
  if (!d.journalEnded(e, ex)) e.ready(ex);
}

void FarmHandoff::onStorage(UploadEngine& e, Exchange& ex, DeliveryFlow& d) {
  Step s = step_;
  step_ = Step::None;
  const Status st = ex.op_.status;
  const std::string& bytes = ex.farm_.record.reply;
  if (!st.isOk()) {
    logf(LogLevel::Warn, "writing the reply file %s from the farm's record: %s", ex.partial_, st.message());
    if (replyFile_ != kNoFile) e.storage_.closeNow(replyFile_);
    replyFile_ = kNoFile;
    return d.retryLater(e, ex, 500, hresultFor(st), ErrorContext::RemoteFile);
  }
  switch (s) {
    case Step::ReplyCreate:
      replyFile_ = static_cast<FileHandle>(ex.op_.result);
      break;
    case Step::ReplyWrite:
      if (ex.op_.result <= 0) {
        e.storage_.closeNow(replyFile_);
        replyFile_ = kNoFile;
        logf(LogLevel::Warn, "writing the reply file %s from the farm's record: nothing written", ex.partial_);
        return d.retryLater(e, ex, 500, hresult::kInternal, ErrorContext::RemoteFile);
      }
      replyAt_ += static_cast<uint64_t>(ex.op_.result);
      break;
    case Step::ReplySync:
      e.storage_.closeNow(replyFile_);
      replyFile_ = kNoFile;
      if (!d.journalEnded(e, ex)) e.ready(ex);
      return;
    case Step::None:
    case Step::Claim:
    case Step::TakeOver:
    case Step::End:
      step_ = s;
      return e.stray(ex, "storage");
  }
  d.wait_ = DeliveryFlow::Wait::FarmStorage;
  ex.op_.busy = true;
  if (replyAt_ < bytes.size()) {
    step_ = Step::ReplyWrite;
    e.storage_.write(ex.op_, replyFile_, replyAt_,
                     std::span<const char>(bytes.data() + replyAt_, bytes.size() - static_cast<size_t>(replyAt_)),
                     nullptr);
    return;
  }
  step_ = Step::ReplySync;
  e.storage_.syncData(ex.op_, replyFile_);
}

void FarmHandoff::unavailable(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const char* why) {
  ++e.stats_.farmUnavailable;
  logf(LogLevel::Warn, "hand-off of transaction %.*s: %s; 503, the client will retry", static_cast<int>(d.txidLen_),
       d.txid_, why);
  d.retryLater(e, ex, 503, hresult::kBusy, ErrorContext::RemoteFile);
}

void FarmHandoff::busy(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const char* why) {
  logf(LogLevel::Info, "hand-off of transaction %.*s: %s; 503, the client will retry", static_cast<int>(d.txidLen_),
       d.txid_, why);
  d.retryLater(e, ex, 503, hresult::kBusy, ErrorContext::RemoteFile);
}

}  // namespace bitsd
