// libFuzzer target for the password throttle (core/throttle.h, issue 20). The input picks a policy
// and a table size, then a sequence of operations on one AuthThrottle: attempts admitted from a few
// addresses and users (or from many invented addresses, to put the fixed table under pressure), due
// checks started, checks finished right or wrong, attempts dropped, and the clock moved on. Beside
// the throttle runs a small reference model of what core/throttle.h promises, and after every
// operation the two are compared (a violation aborts, which the fuzzer reports):
//   - the table keeps its size; slots are in range and distinct for an attempt's two keys;
//   - throttleDelayMs is 0 for up to freeFailures, then firstDelayMs, never shrinks as failures grow,
//     never exceeds maxDelayMs;
//   - a key has at most maxPendingPerKey attempts admitted; a key at that bound makes admit refuse,
//     and with no key at the bound and enough unpinned entries admit succeeds; a refusal changes
//     nothing and says to retry after a whole number of seconds, at least 1, at most the cap;
//   - one check at a time per key: dueAt is kBlocked exactly while a check of one of its keys runs;
//   - a check is never due later than the cap after its keys' last failure, nor before the delay the
//     model computes (unless the entry was replaced, which only an unpinned entry can be);
//   - a right password clears the count; a wrong one adds one; otherwise a count only shrinks by
//     the documented halving per quiet period, or to 0 when an unpinned entry is replaced;
//   - with no more keys than entries, no entry is ever replaced: counts match the model exactly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/throttle.h"

namespace {

using namespace bitsd;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_throttle invariant broken: %s\n", what);
    std::abort();
  }
}

struct Input {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint16_t u16() { return static_cast<uint16_t>(byte() | (byte() << 8)); }
};

struct Model {
  ThrottleKey key;
  uint32_t failures = 0;     // as of lastFailureMs
  uint64_t lastFailureMs = 0;
  uint64_t notBeforeMs = 0;
  uint32_t pending = 0;
  bool running = false;
};

struct Attempt {
  ThrottleKey keys[AuthThrottle::kMaxKeys];
  size_t n = 0;
  int slots[AuthThrottle::kMaxKeys] = {-1, -1};
  bool started = false;
};

class Driver {
 public:
  Driver(size_t capacity, ThrottlePolicy policy) : t_(capacity, policy), capacity_(capacity), policy_(policy) {}

  void run(Input& in) {
    int ops = 0;
    while (!in.empty() && ops++ < 4000) {
      uint8_t op = in.byte();
      switch (op % 8) {
        case 0:
        case 1: admit(in); break;
        case 2: start(in.byte()); break;
        case 3: finish(in.byte(), (op & 0x80) != 0); break;
        case 4: drop(in.byte()); break;
        case 5: advance(in); break;
        case 6: {  // a burst of attempts from invented addresses, finished wrong at once
          uint8_t count = in.byte() % 32;
          for (uint8_t i = 0; i < count; ++i) burst(static_cast<uint16_t>(in.u16() + i));
          break;
        }
        case 7: checkKeys(); break;
      }
      checkAll();
    }
    // Whatever was left: finish it, and the table unpins everything.
    while (!attempts_.empty()) {
      if (attempts_.back().started) {
        finish(static_cast<uint8_t>(attempts_.size() - 1), false);
      } else {
        drop(static_cast<uint8_t>(attempts_.size() - 1));
      }
      checkAll();
    }
    for (const Model& m : models_) require(m.pending == 0 && !m.running, "attempts left pending");
  }

 private:
  ThrottleKey pickKey(uint8_t b, Input& in) {
    uint8_t v = b >> 3;
    switch (b & 7) {
      case 0:
      case 1: {  // one of four IPv4 addresses, also as IPv4-mapped IPv6 (the same key)
        uint8_t ip4[4] = {192, 0, 2, static_cast<uint8_t>(v % 4)};
        ThrottleKey k = ThrottleKey::address(ip4, 4);
        uint8_t ip6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, static_cast<uint8_t>(v % 4)};
        require(ThrottleKey::address(ip6, 16) == k, "an IPv4-mapped address is its IPv4 address");
        return k;
      }
      case 2: {  // two IPv6 /64 networks, any host in them
        uint8_t ip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, static_cast<uint8_t>(v % 2)};
        ip6[15] = in.byte();
        ip6[9] = in.byte();
        ThrottleKey k = ThrottleKey::address(ip6, 16);
        ip6[15] ^= 0x5a;
        require(ThrottleKey::address(ip6, 16) == k, "an IPv6 address counts as its /64");
        uint8_t ip4[4] = {0x20, 0x01, 0x0d, 0xb8};
        require(!(ThrottleKey::address(ip4, 4) == k), "an IPv6 key never equals an IPv4 key");
        return k;
      }
      case 3:
      case 4: return ThrottleKey::user(v % 3);
      default: {  // many invented addresses: table pressure
        uint16_t x = in.u16();
        uint8_t ip4[4] = {10, static_cast<uint8_t>(v), static_cast<uint8_t>(x >> 8), static_cast<uint8_t>(x)};
        return ThrottleKey::address(ip4, 4);
      }
    }
  }

  Model& model(const ThrottleKey& k) {
    for (Model& m : models_) {
      if (m.key == k) return m;
    }
    Model m;
    m.key = k;
    models_.push_back(m);
    return models_.back();
  }

  uint32_t decayed(const Model& m) const {
    if (m.failures == 0 || policy_.quietMs == 0 || now_ <= m.lastFailureMs) return m.failures;
    uint64_t periods = (now_ - m.lastFailureMs) / policy_.quietMs;
    return periods >= 32 ? 0 : m.failures >> periods;
  }

  bool exact() const { return models_.size() <= capacity_; }  // no entry was ever replaced

  // The throttle's count for `m`, against the model; a replaced entry (only unpinned) starts over.
  void syncCount(Model& m) {
    uint32_t actual = t_.failures(m.key, now_);
    uint32_t expected = decayed(m);
    if (actual == expected) return;
    require(!exact(), "a count differs from the model with no entry replaced");
    require(m.pending == 0, "the count of a pinned entry changed");
    require(actual == 0, "a replaced entry kept a count");
    m.failures = 0;
    m.lastFailureMs = now_;
    m.notBeforeMs = 0;
  }

  size_t pinned() const {
    size_t n = 0;
    for (const Model& m : models_) n += m.pending > 0 ? 1 : 0;
    return n;
  }

  void admit(Input& in) {
    Attempt a;
    uint8_t b = in.byte();
    a.keys[0] = pickKey(in.byte(), in);
    a.n = 1;
    if (b & 1) {
      a.keys[1] = pickKey(static_cast<uint8_t>(3 + 8 * (b >> 1)), in);  // a user key
      a.n = 2;
    }
    if (a.n == 2 && a.keys[0] == a.keys[1]) a.n = 1;
    tryAdmit(a);
  }

  bool tryAdmit(Attempt& a) {
    bool atBound = false;
    size_t needed = 0;
    for (size_t i = 0; i < a.n; ++i) {
      Model& m = model(a.keys[i]);
      syncCount(m);
      if (m.pending >= policy_.maxPendingPerKey) atBound = true;
      if (m.pending == 0) ++needed;
    }
    bool room = needed + pinned() <= capacity_;
    uint32_t retry = 0;
    bool ok = t_.admit(a.keys, a.n, now_, a.slots, &retry);
    if (atBound) require(!ok, "a key at maxPendingPerKey was admitted again");
    if (!atBound && room) require(ok, "refused with no key at its bound and room in the table");
    if (!ok) {
      require(retry >= 1000 && retry % 1000 == 0, "retry-after not a whole number of seconds");
      uint64_t cap = policy_.maxDelayMs < 1000 ? 1000 : (policy_.maxDelayMs + 999ull) / 1000 * 1000;
      require(retry <= cap, "retry-after beyond the cap");
      for (size_t i = 0; i < a.n; ++i) syncCount(model(a.keys[i]));  // nothing changed
      return false;
    }
    for (size_t i = 0; i < a.n; ++i) {
      require(a.slots[i] >= 0 && static_cast<size_t>(a.slots[i]) < capacity_, "slot out of range");
      for (size_t j = 0; j < i; ++j) require(a.slots[i] != a.slots[j], "two keys share a slot");
      Model& m = model(a.keys[i]);
      if (m.pending == 0) syncCount(m);  // a fresh entry may have replaced its old one
      ++m.pending;
      require(m.pending <= policy_.maxPendingPerKey, "queue bound");
    }
    if (attempts_.size() < 64) {
      attempts_.push_back(a);
    } else {  // keep the driver bounded: drop it at once
      t_.finished(a.slots, a.n, false, false, now_);
      for (size_t i = 0; i < a.n; ++i) --model(a.keys[i]).pending;
    }
    return true;
  }

  void burst(uint16_t x) {
    Attempt a;
    uint8_t ip4[4] = {10, 200, static_cast<uint8_t>(x >> 8), static_cast<uint8_t>(x)};
    a.keys[0] = ThrottleKey::address(ip4, 4);
    a.n = 1;
    if (!tryAdmit(a)) return;
    start(static_cast<uint8_t>(attempts_.size() - 1));
    if (!attempts_.empty() && attempts_.back().started) finish(static_cast<uint8_t>(attempts_.size() - 1), false);
  }

  void start(uint8_t which) {
    if (attempts_.empty()) return;
    Attempt& a = attempts_[which % attempts_.size()];
    if (a.started) return;
    uint64_t due = t_.dueAt(a.slots, a.n);
    bool blocked = false;
    uint64_t modelDue = 0;
    uint64_t lastFailure = 0;
    for (size_t i = 0; i < a.n; ++i) {
      const Model& m = model(a.keys[i]);
      blocked = blocked || m.running;
      if (m.notBeforeMs > modelDue) modelDue = m.notBeforeMs;
      if (m.lastFailureMs > lastFailure) lastFailure = m.lastFailureMs;
    }
    require((due == AuthThrottle::kBlocked) == blocked, "dueAt blocked iff a check of one of its keys runs");
    if (blocked) return;
    require(due <= lastFailure + policy_.maxDelayMs || due == 0, "a delay beyond the cap");
    require(due <= modelDue, "a check due later than its keys' delays");
    if (exact()) require(due == modelDue, "a check due at another time than its keys' delays");
    if (due > now_) return;  // not yet: the platform's timer would wait
    t_.started(a.slots, a.n);
    a.started = true;
    for (size_t i = 0; i < a.n; ++i) model(a.keys[i]).running = true;
  }

  void finish(uint8_t which, bool ok) {
    if (attempts_.empty()) return;
    size_t at = which % attempts_.size();
    Attempt a = attempts_[at];
    if (!a.started) return;
    attempts_.erase(attempts_.begin() + static_cast<long>(at));
    t_.finished(a.slots, a.n, true, ok, now_);
    for (size_t i = 0; i < a.n; ++i) {
      Model& m = model(a.keys[i]);
      --m.pending;
      m.running = false;
      if (ok) {
        m.failures = 0;
        m.notBeforeMs = 0;
        require(t_.failures(m.key, now_) == 0, "a right password did not clear the count");
      } else {
        uint32_t f = decayed(m);
        m.failures = f < UINT32_MAX ? f + 1 : f;
        m.lastFailureMs = now_;
        m.notBeforeMs = now_ + throttleDelayMs(policy_, m.failures);
        require(t_.failures(m.key, now_) == m.failures, "a wrong password did not add one failure");
      }
    }
  }

  void drop(uint8_t which) {
    if (attempts_.empty()) return;
    size_t at = which % attempts_.size();
    Attempt a = attempts_[at];
    if (a.started) return;
    attempts_.erase(attempts_.begin() + static_cast<long>(at));
    t_.finished(a.slots, a.n, false, false, now_);
    for (size_t i = 0; i < a.n; ++i) {
      Model& m = model(a.keys[i]);
      --m.pending;
      syncCount(m);  // an unchecked attempt changes no count
    }
  }

  void advance(Input& in) {
    uint8_t b = in.byte();
    uint64_t step = b >> 2;
    switch (b & 3) {
      case 0: break;                                    // 0..63 ms
      case 1: step *= 97; break;                        // up to ~6 s
      case 2: step = policy_.quietMs * (step % 5) + (step & 1); break;  // around quiet periods
      case 3: step = step * 3600000ull; break;          // hours
    }
    now_ += step;
  }

  void checkKeys() {
    for (Model& m : models_) syncCount(m);
  }

  void checkAll() {
    require(t_.capacity() == capacity_, "the table changed size");
    size_t live = 0;
    for (const Model& m : models_) {
      require(m.pending <= policy_.maxPendingPerKey, "queue bound");
      if (m.pending > 0) {
        ++live;
        require(t_.failures(m.key, now_) == decayed(m), "a pinned entry's count differs from the model");
      }
    }
    require(live <= capacity_, "more pinned keys than entries");
  }

  AuthThrottle t_;
  size_t capacity_;
  ThrottlePolicy policy_;
  uint64_t now_ = 1000;
  std::vector<Model> models_;
  std::vector<Attempt> attempts_;
};

void checkDelays(const ThrottlePolicy& p) {
  uint32_t prev = 0;
  for (uint32_t f = 0; f < 80; ++f) {
    uint32_t d = throttleDelayMs(p, f);
    if (f <= p.freeFailures) require(d == 0, "a delay within the free failures");
    if (f == p.freeFailures + 1) {
      require(d == (p.firstDelayMs < p.maxDelayMs ? p.firstDelayMs : p.maxDelayMs), "the first delay");
    }
    require(d <= p.maxDelayMs, "a delay beyond the cap");
    require(d >= prev, "the delay shrank as failures grew");
    prev = d;
  }
  require(throttleDelayMs(p, UINT32_MAX) <= p.maxDelayMs, "a delay beyond the cap");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  ThrottlePolicy p;
  size_t capacity = 16;
  if (size >= 6) {
    p.freeFailures = in.byte() % 4;
    p.firstDelayMs = 1 + in.byte() * 8u;
    p.maxDelayMs = p.firstDelayMs * (1u + in.byte() % 64);
    uint8_t q = in.byte();
    p.quietMs = q == 0 ? 0 : q * 500u;
    p.maxPendingPerKey = 1 + in.byte() % 8;
    capacity = 1 + in.byte() % 16;
  }
  checkDelays(p);
  Driver d(capacity, p);
  d.run(in);
  return 0;
}
