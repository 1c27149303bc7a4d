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
#include <vector>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "core/session_table.h"

namespace bitsd {

// Farm mode: what this node keeps in memory about a transaction whose farm step was left unanswered
// (core/flows.h FarmHandoff), until the client's retry of the final fragment finishes it.
struct FarmPending {
  enum class Kind : uint8_t {
    Claim,  // a claim (or takeover) got no answer: it may have been applied with `token`
    End,    // the POST was answered, "ended" did not reach the farm: the answer below, fenced by `revision`
    Publish,  // start-up proved the delivery ended (a copy) but the farm still says "began": the answer below
  };
  Kind kind = Kind::Claim;
  std::string token;     // 32 hex
  int64_t revision = 0;  // End: our claim's revision
  uint64_t wallSeconds = 0;
  // End: the application's answer (as DeliveryOutcome holds it) and its static reply URL.
  uint16_t status = 0;
  uint32_t hresult = 0;
  uint8_t flags = 0;
  uint64_t replyBytes = 0;
  SessionId replySession{};
  std::string staticUrl;
};

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

  // Farm mode: unfinished farm steps by transaction id (FarmPending).
  const FarmPending* farmPending(std::string_view txid) const;
  void setFarmPending(std::string_view txid, FarmPending p) { farmPending_[std::string(txid)] = std::move(p); }
  void clearFarmPending(std::string_view txid) { farmPending_.erase(std::string(txid)); }
  size_t farmPendingCount() const { return farmPending_.size(); }
  // The transaction id of some unfinished farm step of `kind` (nullptr if none).
  const std::string* firstFarmPending(FarmPending::Kind kind) const;

  // Forgets ids delivered more than `retentionSeconds` before `nowWall`, except those still in
  // flight and those whose reply session is alive and keeps its reply (core/state_files.h).
  // `replyFiles` (if not null) gets the reply sessions of forgotten deliveries that served a reply
  // file (servesReplyFile): their retained reply files go too.
  void expire(uint64_t nowWall, uint64_t retentionSeconds, SessionTable& sessions,
              std::vector<SessionId>* replyFiles = nullptr);

  // (Farm steps left unfinished longer than the retention go too.)
  // Hand-offs that began and did not end, by the session that began them (start-up reconciliation).
  std::unordered_map<SessionId, const std::string*, SessionIdHash> unfinishedBySession() const;

 private:
  std::unordered_set<std::string> delivering_;
  std::unordered_map<std::string, FarmPending> farmPending_;
};

}  // namespace bitsd
