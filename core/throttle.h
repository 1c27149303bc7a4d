// Failed password checks cost the one who fails them (issue 20). Each attempt whose credentials
// are not already known to be right is charged to its client address and, when the name is a known
// user's, to that user. After `freeFailures` failures a key's next check waits firstDelayMs, then
// twice that after each further failure, up to maxDelayMs; every quiet period without a failure
// halves the count, and a right password clears it. A key has at most one check running at a time,
// and at most maxPendingPerKey attempts admitted (waiting or running); beyond that an attempt is
// refused at once, without a check, with the time to try again.
//
// The table has a fixed number of entries, allocated at construction: a flood of distinct
// addresses or names replaces the least recently used entries and never grows memory (user keys
// are only made for names in the users file, so invented names cost no entries). An entry with
// attempts admitted is pinned and never replaced. Pure logic on explicit millisecond times, so
// that the tests drive it with a fake clock; the platform arms one timer for the next due check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bitsd {

struct ThrottleKey {
  enum Kind : uint8_t { None = 0, Address = 1, User = 2 };
  uint8_t kind = None;
  uint8_t bytes[16] = {};
  // `len` 4: IPv4. `len` 16: IPv6; an IPv4-mapped address counts as its IPv4 address, any other
  // as its /64 network (one host usually has a whole /64 to pick addresses from).
  static ThrottleKey address(const uint8_t* ip, size_t len);
  static ThrottleKey user(int32_t id);
  bool operator==(const ThrottleKey& o) const;
};

struct ThrottlePolicy {
  uint32_t freeFailures = 1;      // failures before any delay
  uint32_t firstDelayMs = 250;
  uint32_t maxDelayMs = 8000;
  uint32_t quietMs = 60000;       // each such period without a failure halves the count
  uint32_t maxPendingPerKey = 8;  // attempts admitted at once per key (waiting or being checked)
};

// How long a key's next check waits after `failures` failed ones.
uint32_t throttleDelayMs(const ThrottlePolicy& policy, uint32_t failures);

class AuthThrottle {
 public:
  static constexpr size_t kMaxKeys = 2;  // an address and a user
  static constexpr uint64_t kBlocked = UINT64_MAX;

  explicit AuthThrottle(size_t capacity, ThrottlePolicy policy = {});

  // Admits one attempt charged to `keys` (n <= kMaxKeys): each gets an entry (its own, or the least
  // recently used unpinned one), pinned while the attempt lasts; `slots` receives their indices
  // for the calls below. False: refused, the attempt is not counted (though an entry made for one
  // of its keys may already have replaced another key's unpinned entry), and *retryAfterMs (at least 1000) says
  // when trying again makes sense: a key has maxPendingPerKey attempts already, or every entry is
  // pinned.
  bool admit(const ThrottleKey* keys, size_t n, uint64_t nowMs, int* slots, uint32_t* retryAfterMs);
  // When the admitted attempt may be checked: the latest "not before" of its keys, or kBlocked
  // while another check of one of its keys runs (call again when that one has finished).
  uint64_t dueAt(const int* slots, size_t n) const;
  // Its check starts now.
  void started(const int* slots, size_t n);
  // The attempt is over and unpins its entries. `checked`: its own check ran (started() was called)
  // and `ok` is the outcome; otherwise it took another check's answer or was dropped, and only
  // unpins.
  void finished(const int* slots, size_t n, bool checked, bool ok, uint64_t nowMs);

  // The failure count a key has now (0 if it has no entry); for tests and logs.
  uint32_t failures(const ThrottleKey& key, uint64_t nowMs) const;
  size_t capacity() const { return entries_.size(); }
  const ThrottlePolicy& policy() const { return policy_; }

 private:
  struct Entry {
    ThrottleKey key;
    uint32_t failures = 0;
    uint32_t pending = 0;     // attempts admitted and not finished (pinned while > 0)
    bool running = false;     // one of them is being checked
    uint64_t lastFailureMs = 0;
    uint64_t notBeforeMs = 0;  // no check of this key starts before this
    uint64_t lastUseMs = 0;
  };
  void decay(Entry& e, uint64_t nowMs) const;
  int find(const ThrottleKey& key) const;
  int take(const ThrottleKey& key, uint64_t nowMs);  // find, or replace the LRU unpinned entry; -1: all pinned

  ThrottlePolicy policy_;
  std::vector<Entry> entries_;  // sized at construction, never grows
};

}  // namespace bitsd
