// The farm's shared record (docs/FARMS.md), as a seam: core/ decides what a claim, a takeover or a
// session's owner means for a request; platform/ keeps it in etcd (platform/uv_farm.*), and tests use
// a fake. Owns nothing of the engine's.
//
// Like StorageOp and NotifyOp, one FarmOp is owned by its caller, carries at most one operation at a
// time, and completes later through op.callback->onFarmDone(op) on the loop, never from inside the
// call that started it.
//
// Records (docs/FARMS.md, "Key layout"): a session's owner node, written at Create-Session; and per
// transaction id one record in one of two states, "began" (a node claimed the hand-off, with a token
// unique to that claim) and "ended" (the application's answer), fenced by the key's revision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/session_table.h"

namespace bitsd {

// Replies up to this size are copied into the "ended" record, so any node can answer with them.
inline constexpr uint64_t kFarmInlineReplyBytes = 64 * 1024;

enum class FarmOutcome : uint8_t {
  Done,         // the operation ran in the shared store; see the result fields
  Unavailable,  // unreachable, no quorum, timed out, or this node holds no live lease: nothing is
                // known (a claim may or may not have been applied: its token tells, on a retry)
};

struct FarmTxRecord {
  enum class State : uint8_t { None, Began, Ended };
  State state = State::None;
  std::string node;         // the node that began or ended it
  std::string token;        // Began: the claim's token
  bool nodeLive = false;    // the node's liveness key exists
  int64_t modRevision = 0;  // the key's revision when read (takeovers compare it)
  SessionId session{};      // the session whose final fragment began (or ended) it
  // Ended: the application's answer, as DeliveryOutcome holds it.
  uint16_t status = 0;
  uint32_t hresult = 0;
  uint8_t flags = 0;        // kDeliveryHasReplyFile, kDeliveryCopied (core/journal_format.h)
  uint64_t replyBytes = 0;
  SessionId replySession{};
  std::string staticUrl;
  bool replyInline = false;  // `reply` holds the reply file's bytes (at most kFarmInlineReplyBytes)
  std::string reply;
};

// What end() records.
struct FarmEnded {
  SessionId session{};
  uint16_t status = 0;
  uint32_t hresult = 0;
  uint8_t flags = 0;
  uint64_t replyBytes = 0;
  SessionId replySession{};
  std::string_view staticUrl;
  // The reply file, read for the inline copy when flags has kDeliveryHasReplyFile and replyBytes is
  // at most kFarmInlineReplyBytes (else null). Must stay valid until completion.
  const char* replyFile = nullptr;
};

struct FarmSessionOwner {
  bool found = false;  // a session record exists
  bool self = false;   // ... naming this node
  bool live = false;   // its node holds a live lease
  std::string node;
  std::string peerUrl;  // where that node takes forwarded requests (http:// or https://)
};

class FarmOp;

class FarmCallback {
 public:
  virtual void onFarmDone(FarmOp& op) = 0;

 protected:
  ~FarmCallback() = default;
};

class FarmOp {
 public:
  FarmCallback* callback = nullptr;
  bool busy = false;
  FarmOutcome outcome = FarmOutcome::Unavailable;
  bool won = false;        // claim, takeOver, end: the compare held and the put was made
  int64_t revision = 0;    // won: the revision the put was made at (the fence for end())
  FarmTxRecord record;     // claim, takeOver, end, not won: the record as it is now
  FarmSessionOwner owner;  // lookupSession
  void* impl = nullptr;    // the platform's state while busy

  void resetResult() {
    outcome = FarmOutcome::Unavailable;
    won = false;
    revision = 0;
    record = FarmTxRecord{};
    owner = FarmSessionOwner{};
  }
};

class Farm {
 public:
  virtual ~Farm() = default;
  // This node holds a lease that the store confirmed less than its TTL ago. Not live: no claim and
  // no POST (the engine answers 503 without asking).
  virtual bool live() const = 0;
  // This node's name in the farm (its host-id).
  virtual std::string_view node() const = 0;
  // Create-Session: records this node as the session's owner.
  virtual void recordSession(FarmOp& op, const SessionId& id) = 0;
  // Claims `txid` for this node if no record exists (create_revision == 0): began, with `token`.
  virtual void claim(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session) = 0;
  // Takes a began record over (its node is gone, or is an earlier life of this one) if its revision
  // is still `expectRevision`.
  virtual void takeOver(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session,
                        int64_t expectRevision) = 0;
  // Records "ended" if the record is still this node's claim at `ourRevision`.
  virtual void end(FarmOp& op, std::string_view txid, int64_t ourRevision, const FarmEnded& ended) = 0;
  // The owner of a session (forwarding, reply downloads).
  virtual void lookupSession(FarmOp& op, const SessionId& id) = 0;
};

}  // namespace bitsd
