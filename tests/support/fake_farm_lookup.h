// A test double of the Farm port's session lookup only (forwarding tests): owners come from a map,
// completions are queued and run when the test says (runAll), never inside the call. The hand-off
// operations (claim, takeOver, end) and recordSession complete Unavailable: tests of the farm
// hand-off use their own fake.
#pragma once

#include <deque>
#include <map>
#include <string>

#include "core/farm.h"
#include "core/protocol.h"

namespace bitsd::testing {

class FakeFarmLookup final : public Farm {
 public:
  struct Owner {
    std::string node;
    std::string peerUrl;
    bool live = true;
  };
  bool live() const override { return live_; }
  std::string_view node() const override { return self_; }
  void recordSession(FarmOp& op, const SessionId&) override { queue(op, false); }
  void claim(FarmOp& op, std::string_view, std::string_view, const SessionId&) override { queue(op, false); }
  void takeOver(FarmOp& op, std::string_view, std::string_view, const SessionId&, int64_t) override {
    queue(op, false);
  }
  void end(FarmOp& op, std::string_view, int64_t, const FarmEnded&) override { queue(op, false); }
  void lookupSession(FarmOp& op, const SessionId& id) override {
    ++lookups;
    lastLookup = id;
    op.resetResult();
    if (unavailable) return queue(op, false);
    char text[kSessionIdTextBytes];
    formatSessionId(id, text);
    auto it = owners.find(std::string(text, sizeof text));
    if (it != owners.end()) {
      op.owner.found = true;
      op.owner.node = it->second.node;
      op.owner.self = it->second.node == self_;
      op.owner.live = it->second.live;
      op.owner.peerUrl = it->second.peerUrl;
    }
    queue(op, true);
  }

  // Completes every queued operation, in order (and those they start).
  void runAll() {
    while (!pending_.empty()) {
      FarmOp* op = pending_.front();
      pending_.pop_front();
      op->callback->onFarmDone(*op);
    }
  }
  size_t pending() const { return pending_.size(); }

  bool live_ = true;
  bool unavailable = false;  // lookups complete Unavailable
  std::string self_ = "n1";
  std::map<std::string, Owner> owners;  // by the session id's text form ("{...}")
  int lookups = 0;
  SessionId lastLookup{};

 private:
  void queue(FarmOp& op, bool done) {
    op.outcome = done ? FarmOutcome::Done : FarmOutcome::Unavailable;
    pending_.push_back(&op);
  }
  std::deque<FarmOp*> pending_;
};

}  // namespace bitsd::testing
