// Owns the password-failure throttle per client address and per user (core/throttle.h).
#include "core/throttle.h"

#include <cstring>

namespace bitsd {

ThrottleKey ThrottleKey::address(const uint8_t* ip, size_t len) {
  ThrottleKey k;
  k.kind = Address;
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (len == 16 && std::memcmp(ip, kMapped, sizeof kMapped) == 0) {
    ip += 12;
    len = 4;
  }
  if (len == 4) {
    std::memcpy(k.bytes, ip, 4);
  } else if (len == 16) {
    k.bytes[15] = 6;  // not an IPv4 key whatever the prefix
    std::memcpy(k.bytes, ip, 8);
  }
  return k;
}

ThrottleKey ThrottleKey::user(int32_t id) {
  ThrottleKey k;
  k.kind = User;
  uint32_t u = static_cast<uint32_t>(id);
  for (int i = 0; i < 4; ++i) k.bytes[i] = static_cast<uint8_t>(u >> (8 * i));
  return k;
}

bool ThrottleKey::operator==(const ThrottleKey& o) const {
  return kind == o.kind && std::memcmp(bytes, o.bytes, sizeof bytes) == 0;
}

uint32_t throttleDelayMs(const ThrottlePolicy& policy, uint32_t failures) {
  if (failures <= policy.freeFailures) return 0;
  uint32_t doublings = failures - policy.freeFailures - 1;
  uint64_t d = policy.firstDelayMs;
  for (uint32_t i = 0; i < doublings && d < policy.maxDelayMs; ++i) d *= 2;
  return d < policy.maxDelayMs ? static_cast<uint32_t>(d) : policy.maxDelayMs;
}

AuthThrottle::AuthThrottle(size_t capacity, ThrottlePolicy policy) : policy_(policy), entries_(capacity) {}

void AuthThrottle::decay(Entry& e, uint64_t nowMs) const {
  if (e.failures == 0 || policy_.quietMs == 0 || nowMs <= e.lastFailureMs) return;
  uint64_t periods = (nowMs - e.lastFailureMs) / policy_.quietMs;
  if (periods == 0) return;
  e.failures = periods >= 32 ? 0 : e.failures >> periods;
  e.lastFailureMs += periods * policy_.quietMs;
}

int AuthThrottle::find(const ThrottleKey& key) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].key.kind != ThrottleKey::None && entries_[i].key == key) return static_cast<int>(i);
  }
  return -1;
}

int AuthThrottle::take(const ThrottleKey& key, uint64_t nowMs) {
  int found = find(key);
  if (found >= 0) return found;
  int victim = -1;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (e.key.kind == ThrottleKey::None) {
      victim = static_cast<int>(i);
      break;
    }
    if (e.pending > 0) continue;
    if (victim < 0 || e.lastUseMs < entries_[static_cast<size_t>(victim)].lastUseMs) victim = static_cast<int>(i);
  }
  if (victim < 0) return -1;
  Entry& e = entries_[static_cast<size_t>(victim)];
  e = Entry();
  e.key = key;
  e.lastUseMs = nowMs;
  return victim;
}

bool AuthThrottle::admit(const ThrottleKey* keys, size_t n, uint64_t nowMs, int* slots, uint32_t* retryAfterMs) {
  // Refusals first, before anything changes.
  uint64_t wait = 0;
  bool full = false;
  for (size_t i = 0; i < n; ++i) {
    int at = find(keys[i]);
    if (at < 0) continue;
    Entry& e = entries_[static_cast<size_t>(at)];
    decay(e, nowMs);
    if (e.pending >= policy_.maxPendingPerKey) {
      full = true;
      // The queue ahead drains at one check per delay at best.
      uint64_t ahead = e.notBeforeMs > nowMs ? e.notBeforeMs - nowMs : 0;
      uint64_t w = ahead + static_cast<uint64_t>(e.pending) * throttleDelayMs(policy_, e.failures);
      if (w > wait) wait = w;
    }
  }
  if (!full) {
    for (size_t i = 0; i < n; ++i) {
      slots[i] = take(keys[i], nowMs);
      if (slots[i] < 0) {  // every entry pinned: undo
        for (size_t j = 0; j < i; ++j) {
          Entry& e = entries_[static_cast<size_t>(slots[j])];
          --e.pending;
        }
        full = true;
        wait = policy_.maxDelayMs;
        break;
      }
      Entry& e = entries_[static_cast<size_t>(slots[i])];
      ++e.pending;
      e.lastUseMs = nowMs;
    }
  }
  if (full) {
    if (wait > policy_.maxDelayMs) wait = policy_.maxDelayMs;
    if (wait < 1000) wait = 1000;
    *retryAfterMs = static_cast<uint32_t>((wait + 999) / 1000 * 1000);
    return false;
  }
  return true;
}

uint64_t AuthThrottle::dueAt(const int* slots, size_t n) const {
  uint64_t due = 0;
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries_[static_cast<size_t>(slots[i])];
    if (e.running) return kBlocked;
    if (e.notBeforeMs > due) due = e.notBeforeMs;
  }
  return due;
}

void AuthThrottle::started(const int* slots, size_t n) {
  for (size_t i = 0; i < n; ++i) entries_[static_cast<size_t>(slots[i])].running = true;
}

void AuthThrottle::finished(const int* slots, size_t n, bool checked, bool ok, uint64_t nowMs) {
  for (size_t i = 0; i < n; ++i) {
    Entry& e = entries_[static_cast<size_t>(slots[i])];
    if (e.pending > 0) --e.pending;
    e.lastUseMs = nowMs;
    if (!checked) continue;
    e.running = false;
    if (ok) {
      e.failures = 0;
      e.notBeforeMs = 0;
      continue;
    }
    decay(e, nowMs);
    if (e.failures < UINT32_MAX) ++e.failures;
    e.lastFailureMs = nowMs;
    e.notBeforeMs = nowMs + throttleDelayMs(policy_, e.failures);
  }
}

uint32_t AuthThrottle::failures(const ThrottleKey& key, uint64_t nowMs) const {
  int at = find(key);
  if (at < 0) return 0;
  Entry e = entries_[static_cast<size_t>(at)];
  decay(e, nowMs);
  return e.failures;
}

}  // namespace bitsd
