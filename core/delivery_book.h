// The delivered-ID book: what bitsd knows about each transaction id handed to the server
// application (BITS-UPLOAD.md §8). It holds the journal's facts about every id (began, ended and
// with which answer), which session was answered from which id (a later session that uploads the
// same transaction again is answered from the first delivery), and the ids being handed over right
// now (a second final fragment with the same id waits: 503). Replay, the hand-off (DeliveryFlow),
// reply downloads, expiry, reconciliation and snapshots all read and write it through here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "core/session_table.h"

namespace bitsd {

class DeliveryBook {
 public:
  using Deliveries = std::unordered_map<std::string, DeliveryInfo>;
  using SessionTxids = std::unordered_map<SessionId, std::string, SessionIdHash>;

  // The journal's facts, by transaction id (replay fills it directly, through applyDelivery).
  Deliveries deliveries;
  // The transaction id each handed-off session was answered from.
  SessionTxids sessionTxid;

  // What is known about `txid` (nullptr if nothing).
  const DeliveryInfo* find(std::string_view txid) const;
  // The ended delivery that answered session `sid` (nullptr if none or not ended).
  const DeliveryInfo* endedFor(const SessionId& sid) const;
  // A DeliveryBegan or DeliveryEnded record was made durable: record it.
  void apply(const JournalRecord& r) { applyDelivery(r, &deliveries); }
  // A DeliveryEnded record for session r.id was made durable: the session is answered from r.txid.
  void ended(const JournalRecord& r);
  // Session `sid` is forgotten.
  void forgetSession(const SessionId& sid) { sessionTxid.erase(sid); }

  // Hand-offs in flight, by transaction id.
  bool delivering(const std::string& txid) const { return delivering_.count(txid) != 0; }
  size_t deliveringCount() const { return delivering_.size(); }
  // False if `txid` is already being delivered.
  bool beginDelivering(const std::string& txid) { return delivering_.insert(txid).second; }
  void endDelivering(std::string_view txid) { delivering_.erase(std::string(txid)); }

  // Forgets ids delivered more than `retentionSeconds` before `nowWall`, except those still in
  // flight and those whose reply session is alive and keeps its reply (core/state_files.h).
  void expire(uint64_t nowWall, uint64_t retentionSeconds, SessionTable& sessions);

  // Hand-offs that began and did not end, by the session that began them (start-up reconciliation).
  std::unordered_map<SessionId, const std::string*, SessionIdHash> unfinishedBySession() const;

 private:
  std::unordered_set<std::string> delivering_;
};

}  // namespace bitsd
