// The delivered-ID book (see core/delivery_book.h).
#include "core/delivery_book.h"

#include <iterator>

#include "core/state_files.h"

namespace bitsd {

const DeliveryInfo* DeliveryBook::find(std::string_view txid) const {
  auto it = deliveries.find(std::string(txid));
  return it == deliveries.end() ? nullptr : &it->second;
}

const DeliveryInfo* DeliveryBook::endedFor(const SessionId& sid) const {
  auto tx = sessionTxid.find(sid);
  if (tx == sessionTxid.end()) return nullptr;
  auto d = deliveries.find(tx->second);
  return d != deliveries.end() && d->second.ended ? &d->second : nullptr;
}

void DeliveryBook::ended(const JournalRecord& r) {
  applyDelivery(r, &deliveries);
  sessionTxid[r.id] = std::string(r.txid);
}

const FarmPending* DeliveryBook::farmPending(std::string_view txid) const {
  auto it = farmPending_.find(std::string(txid));
  return it == farmPending_.end() ? nullptr : &it->second;
}

const std::string* DeliveryBook::firstFarmPending(FarmPending::Kind kind) const {
  for (const auto& [txid, p] : farmPending_) {
    if (p.kind == kind) return &txid;
  }
  return nullptr;
}

void DeliveryBook::expire(uint64_t nowWall, uint64_t retentionSeconds, SessionTable& sessions,
                          std::vector<SessionId>* replyFiles) {
  for (auto it = farmPending_.begin(); it != farmPending_.end();) {
    bool old = it->second.wallSeconds + retentionSeconds <= nowWall && delivering_.count(it->first) == 0;
    it = old ? farmPending_.erase(it) : std::next(it);
  }
  if (deliveries.empty()) return;
  // Single node (replyFiles): every session answered from a delivery serves its reply at its own URL,
  // so the delivery (and its reply file) stays while any of them keeps its reply. Found once, and
  // only if some delivery is old enough to go.
  std::unordered_set<std::string_view> inUse;
  bool inUseKnown = false;
  for (auto it = deliveries.begin(); it != deliveries.end();) {
    const DeliveryInfo& d = it->second;
    bool old = d.wallSeconds + retentionSeconds <= nowWall;
    // Kept while the session holding its reply is alive, or while it is being delivered.
    const Session* owner = sessions.find(d.replySession);
    if (!old || (owner != nullptr && keepsReply(*owner)) || delivering_.count(it->first) != 0) {
      ++it;
      continue;
    }
    if (replyFiles != nullptr && !inUseKnown) {
      inUseKnown = true;
      for (const auto& [sid, txid] : sessionTxid) {
        const Session* s = sessions.find(sid);
        if (s != nullptr && keepsReply(*s)) inUse.insert(txid);
      }
    }
    if (inUse.count(it->first) != 0) {
      ++it;
      continue;
    }
    if (replyFiles != nullptr && servesReplyFile(d)) replyFiles->push_back(d.replySession);
    it = deliveries.erase(it);
  }
}

std::unordered_map<SessionId, const std::string*, SessionIdHash> DeliveryBook::unfinishedBySession() const {
  std::unordered_map<SessionId, const std::string*, SessionIdHash> pending;
  for (const auto& [txid, info] : deliveries) {
    if (!info.ended) pending[info.replySession] = &txid;
  }
  return pending;
}

}  // namespace bitsd
