// What a journal means: the replay rules (applyRecord), the in-memory model a journal describes
// (JournalState: sessions and deliveries, as bitsctl and compaction see them), and the snapshot a
// compaction writes from it. The bytes are core/journal_format.h's business; the engine's own model
// (its session table) replays through the same applyRecord (core/upload_engine_recovery.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/journal_format.h"

namespace bitsd {

// What is known about one transaction id (the key of the maps below).
struct DeliveryInfo {
  uint64_t wallSeconds = 0;  // when it began, then when it ended
  bool ended = false;
  SessionId replySession{};  // the session that POSTed it; its reply file holds the reply
  uint16_t status = 0;
  uint32_t hresult = 0;
  uint8_t flags = 0;
  uint64_t replyBytes = 0;
  std::string staticUrl;
};

using DeliveryMap = std::unordered_map<std::string, DeliveryInfo>;

// Applies a Delivered/DeliveryBegan/DeliveryEnded record to a delivery map (applyRecord's rule for
// deliveries; the engine also calls it for the records it appends while serving).
void applyDelivery(const JournalRecord& r, DeliveryMap* deliveries);

// The replay rules, in one place for every model a journal is replayed into. Every record states a
// fact ("session S has `have` durable bytes"), never a change, so applying one twice is harmless.
//   SessionCreated  creates the session (a known one keeps its path);
//   Progress        sets the total; `have` (and its digest checkpoint) only ever advances; ignored
//                   once the session has ended (closed, committed or handed off);
//   Committed       marks it committed and complete: `have` = the size, and its SHA-256;
//   Closed          marks it closed (the tombstone after Close/Cancel-Session);
//   Forget          erases it;
//   SessionOwner    records who it belongs to;
//   Delivered, DeliveryBegan, DeliveryEnded
//                   update the delivery map (applyDelivery); DeliveryEnded also marks its session
//                   handed off and complete (and committed when the upload was copied);
// and every record for a session unknown (or forgotten) is ignored, and the session's last activity
// is the latest wall time any of its records carries.
//
// `Target` is a model, seen through these members (T::Session is its session type):
//   Session* find(const SessionId&);
//   Session* create(const JournalRecord& created);   // a new session; nullptr if it is not kept
//   void erase(Session&);
//   DeliveryMap& deliveries();
//   void touch(Session&, uint64_t wallSeconds);      // last activity = max(last activity, wall)
//   bool ended(const Session&);                      // closed, committed or handed off
//   uint64_t have(const Session&);
//   uint64_t total(const Session&);
//   void setTotal(Session&, uint64_t totalBytes);    // and it is known
//   void setHave(Session&, uint64_t haveBytes, const JournalRecord* progress);  // progress: its
//                                                    // digest checkpoint; nullptr: none (complete)
//   void complete(Session&);                         // all bytes are there; no more data comes
//   void commit(Session&, const uint8_t* sha256);    // at its destination (sha256 may be null)
//   void close(Session&, bool cancelled);
//   void handOff(Session&, std::string_view txid);
//   void setOwner(Session&, std::string_view owner);
template <typename Target>
void applyRecord(Target& t, const JournalRecord& r) {
  using TargetSession = typename Target::Session;
  if (r.type == RecordType::Delivered || r.type == RecordType::DeliveryBegan ||
      r.type == RecordType::DeliveryEnded) {
    applyDelivery(r, &t.deliveries());
    if (r.type != RecordType::DeliveryEnded) return;  // about the transaction, not a session
  }
  if (r.type == RecordType::Pad) return;
  TargetSession* s = t.find(r.id);
  if (r.type == RecordType::SessionCreated && s == nullptr) s = t.create(r);
  if (s == nullptr) return;  // a record for a session forgotten (or never kept)
  switch (r.type) {
    case RecordType::SessionCreated: break;
    case RecordType::Progress:
      if (t.ended(*s)) return;
      t.setTotal(*s, r.totalBytes);
      if (r.haveBytes >= t.have(*s)) t.setHave(*s, r.haveBytes, &r);
      break;
    case RecordType::Committed:
      t.complete(*s);
      t.commit(*s, r.sha256);
      t.setTotal(*s, r.totalBytes);
      t.setHave(*s, r.totalBytes, nullptr);
      break;
    case RecordType::Closed: t.close(*s, r.cancelled); break;
    case RecordType::Forget: t.erase(*s); return;
    case RecordType::SessionOwner: t.setOwner(*s, r.owner); return;
    case RecordType::DeliveryEnded:
      t.handOff(*s, r.txid);
      t.complete(*s);
      if (r.flags & kDeliveryCopied) t.commit(*s, nullptr);
      t.setTotal(*s, t.total(*s));
      t.setHave(*s, t.total(*s), nullptr);
      break;
    case RecordType::Pad:
    case RecordType::Delivered:
    case RecordType::DeliveryBegan: return;
  }
  t.touch(*s, r.wallSeconds);
}

// One session as the journal describes it.
struct RecoveredSession {
  SessionId id{};
  std::string path;
  uint64_t wallSeconds = 0;  // last activity
  bool totalKnown = false;
  uint64_t totalBytes = 0;
  uint64_t haveBytes = 0;
  uint8_t shaStateLen = 0;  // digest checkpoint within [0, haveBytes], from the last Progress
  uint8_t shaState[104] = {};
  bool committed = false;
  uint8_t sha256[32] = {};
  bool closed = false;
  bool cancelled = false;
  bool handedOff = false;  // a DeliveryEnded names this session: the application has answered
  std::string txid;        // with handedOff
  std::string owner;       // SessionOwner: the user who created it (authentication on)
};

struct SessionIdHash {
  size_t operator()(const SessionId& id) const {
    uint64_t h = 0;
    for (int i = 0; i < 8; ++i) h = h << 8 | id.bytes[i];
    return static_cast<size_t>(h);
  }
};

// The state a journal describes, rebuilt by applying its records in order (applyRecord).
class JournalState final : public ReplaySink {
 public:
  void onRecord(const JournalRecord& r, uint64_t seq, uint64_t offset) override;
  void apply(const JournalRecord& r);

  std::unordered_map<SessionId, RecoveredSession, SessionIdHash> sessions;
  DeliveryMap delivered;  // by transaction id
};

// Appends records describing `state` (as a compacted journal holds it) to `out`, starting at
// sequence `seq` (updated) and file offset `offset` (updated; a Pad closes the last block).
void encodeSnapshot(const JournalState& state, uint32_t salt, uint64_t* seq, uint64_t* offset,
                    std::vector<uint8_t>* out);

}  // namespace bitsd
