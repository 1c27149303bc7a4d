// The password-check throttle (issue 20), on explicit millisecond times: the delay grows from the
// second failure and is capped, a key has one check at a time and a bounded queue, quiet time and a
// right password forgive, and the fixed-size table replaces its least recently used unpinned entry
// instead of growing.
#include "core/throttle.h"

#include <gtest/gtest.h>

namespace bitsd {
namespace {

ThrottleKey addr(uint8_t last) {
  uint8_t ip[4] = {192, 0, 2, last};
  return ThrottleKey::address(ip, 4);
}

// One attempt from `key` at `now`, checked at once and failing; false if it had to wait or was refused.
bool failNow(AuthThrottle& t, const ThrottleKey& key, uint64_t now) {
  int slot = -1;
  uint32_t retry = 0;
  if (!t.admit(&key, 1, now, &slot, &retry)) return false;
  if (t.dueAt(&slot, 1) > now) {
    t.finished(&slot, 1, false, false, now);
    return false;
  }
  t.started(&slot, 1);
  t.finished(&slot, 1, true, false, now);
  return true;
}

TEST(Throttle, DelayIsFreeOnceThenDoublesUpToTheCap) {
  ThrottlePolicy p;  // 1 free, 250 ms, cap 8 s
  EXPECT_EQ(throttleDelayMs(p, 0), 0u);
  EXPECT_EQ(throttleDelayMs(p, 1), 0u);
  EXPECT_EQ(throttleDelayMs(p, 2), 250u);
  EXPECT_EQ(throttleDelayMs(p, 3), 500u);
  EXPECT_EQ(throttleDelayMs(p, 4), 1000u);
  EXPECT_EQ(throttleDelayMs(p, 7), 8000u);
  EXPECT_EQ(throttleDelayMs(p, 8), 8000u);
  EXPECT_EQ(throttleDelayMs(p, 4000000000u), 8000u);
}

TEST(Throttle, EachFailureMakesTheNextCheckOfThatKeyWait) {
  AuthThrottle t(16);
  ThrottleKey a = addr(1);
  uint64_t now = 1000;
  EXPECT_TRUE(failNow(t, a, now));   // 1st failure: free
  EXPECT_TRUE(failNow(t, a, now));   // 2nd attempt right after: no delay yet
  EXPECT_FALSE(failNow(t, a, now + 249));  // now 250 ms
  EXPECT_TRUE(failNow(t, a, now + 250));
  EXPECT_EQ(t.failures(a, now + 250), 3u);
  EXPECT_FALSE(failNow(t, a, now + 250 + 499));  // 500 ms
  EXPECT_TRUE(failNow(t, a, now + 750));
  // Another address is not affected.
  EXPECT_TRUE(failNow(t, addr(2), now + 750));
  EXPECT_EQ(t.failures(addr(2), now + 750), 1u);
}

TEST(Throttle, OneCheckAtATimePerKeyAndABoundedQueue) {
  ThrottlePolicy p;
  p.maxPendingPerKey = 3;
  AuthThrottle t(16, p);
  ThrottleKey a = addr(1);
  int s1 = -1, s2 = -1, s3 = -1, s4 = -1;
  uint32_t retry = 0;
  ASSERT_TRUE(t.admit(&a, 1, 0, &s1, &retry));
  ASSERT_TRUE(t.admit(&a, 1, 0, &s2, &retry));
  ASSERT_TRUE(t.admit(&a, 1, 0, &s3, &retry));
  EXPECT_FALSE(t.admit(&a, 1, 0, &s4, &retry)) << "a fourth attempt of the same key is refused";
  EXPECT_GE(retry, 1000u);
  EXPECT_EQ(retry % 1000, 0u) << "whole seconds, for Retry-After";
  EXPECT_EQ(t.dueAt(&s1, 1), 0u);
  t.started(&s1, 1);
  EXPECT_EQ(t.dueAt(&s2, 1), AuthThrottle::kBlocked) << "the key is being checked";
  t.finished(&s1, 1, true, false, 10);
  EXPECT_EQ(t.dueAt(&s2, 1), 10u);  // 1st failure free
  t.started(&s2, 1);
  t.finished(&s2, 1, true, false, 20);
  EXPECT_EQ(t.dueAt(&s3, 1), 270u);  // 2nd failure: 250 ms
  // A place in the queue is free again.
  EXPECT_TRUE(t.admit(&a, 1, 20, &s4, &retry));
  t.finished(&s3, 1, false, false, 20);
  t.finished(&s4, 1, false, false, 20);
}

TEST(Throttle, AnAttemptWaitsForTheSlowerOfItsAddressAndItsUser) {
  AuthThrottle t(16);
  ThrottleKey keys[2] = {addr(1), ThrottleKey::user(0)};
  ThrottleKey other[2] = {addr(9), ThrottleKey::user(0)};  // the same user from elsewhere
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(failNow(t, keys[1], static_cast<uint64_t>(i) * 10000));
  int slots[2];
  uint32_t retry = 0;
  ASSERT_TRUE(t.admit(other, 2, 30000, slots, &retry));
  EXPECT_EQ(t.dueAt(slots, 2), 30000u + throttleDelayMs(t.policy(), 4));
  t.finished(slots, 2, false, false, 30000);
  EXPECT_EQ(t.failures(addr(9), 30000), 0u);
  (void)keys;
}

TEST(Throttle, QuietTimeHalvesAndARightPasswordClears) {
  AuthThrottle t(16);
  ThrottleKey a = addr(1);
  uint64_t now = 0;
  for (int i = 0; i < 6; ++i) {
    int slot;
    uint32_t retry;
    ASSERT_TRUE(t.admit(&a, 1, now, &slot, &retry));
    now = t.dueAt(&slot, 1) > now ? t.dueAt(&slot, 1) : now;
    t.started(&slot, 1);
    t.finished(&slot, 1, true, false, now);
  }
  EXPECT_EQ(t.failures(a, now), 6u);
  EXPECT_EQ(t.failures(a, now + 59999), 6u);
  EXPECT_EQ(t.failures(a, now + 60000), 3u);
  EXPECT_EQ(t.failures(a, now + 120000), 1u);
  EXPECT_EQ(t.failures(a, now + 3600000), 0u);
  int slot;
  uint32_t retry;
  ASSERT_TRUE(t.admit(&a, 1, now + 60000, &slot, &retry));
  EXPECT_EQ(t.dueAt(&slot, 1), now + throttleDelayMs(t.policy(), 6)) << "quiet time does not shorten a delay already set";
  t.started(&slot, 1);
  t.finished(&slot, 1, true, true, now + 60000);
  EXPECT_EQ(t.failures(a, now + 60000), 0u);
  ASSERT_TRUE(t.admit(&a, 1, now + 60000, &slot, &retry));
  EXPECT_EQ(t.dueAt(&slot, 1), 0u);
}

TEST(Throttle, TheTableNeverGrowsAndReplacesTheLeastRecentlyUsed) {
  AuthThrottle t(4);
  for (uint8_t i = 0; i < 4; ++i) ASSERT_TRUE(failNow(t, addr(i), 100 + i));
  // A flood of new addresses: each replaces the oldest unpinned entry; the capacity stays.
  for (int i = 0; i < 1000; ++i) {
    uint8_t ip[4] = {10, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i), 1};
    ThrottleKey k = ThrottleKey::address(ip, 4);
    ASSERT_TRUE(failNow(t, k, 1000 + static_cast<uint64_t>(i)));
    EXPECT_EQ(t.capacity(), 4u);
  }
  EXPECT_EQ(t.failures(addr(0), 5000), 0u) << "replaced";
  // Recently used entries survive one newcomer.
  AuthThrottle u(3);
  ASSERT_TRUE(failNow(u, addr(1), 10));
  ASSERT_TRUE(failNow(u, addr(2), 20));
  ASSERT_TRUE(failNow(u, addr(3), 30));
  ASSERT_TRUE(failNow(u, addr(1), 40));  // addr(1) used again
  ASSERT_TRUE(failNow(u, addr(4), 50));  // replaces addr(2), the least recently used
  EXPECT_EQ(u.failures(addr(1), 50), 2u);
  EXPECT_EQ(u.failures(addr(2), 50), 0u);
  EXPECT_EQ(u.failures(addr(3), 50), 1u);
}

TEST(Throttle, PinnedEntriesAreNeverReplacedAndAFullTableRefuses) {
  AuthThrottle t(2);
  int s1, s2, s3;
  uint32_t retry = 0;
  ThrottleKey a = addr(1), b = addr(2), c = addr(3);
  ASSERT_TRUE(t.admit(&a, 1, 0, &s1, &retry));
  ASSERT_TRUE(t.admit(&b, 1, 0, &s2, &retry));
  EXPECT_FALSE(t.admit(&c, 1, 0, &s3, &retry));
  EXPECT_GE(retry, 1000u);
  // Two keys where only one entry is free: refused, and the first key's pin is undone.
  t.finished(&s2, 1, false, false, 1);
  ThrottleKey two[2] = {c, ThrottleKey::user(7)};
  int slots[2];
  EXPECT_FALSE(t.admit(two, 2, 2, slots, &retry));
  t.finished(&s1, 1, false, false, 3);
  EXPECT_TRUE(t.admit(two, 2, 4, slots, &retry)) << "both entries unpinned again";
}

TEST(Throttle, AddressKeys) {
  uint8_t v4[4] = {203, 0, 113, 7};
  uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 7};
  EXPECT_TRUE(ThrottleKey::address(v4, 4) == ThrottleKey::address(mapped, 16));
  uint8_t six1[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8};
  uint8_t six2[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 9, 9, 9, 9, 9, 9, 9, 9};
  uint8_t six3[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_TRUE(ThrottleKey::address(six1, 16) == ThrottleKey::address(six2, 16)) << "one /64";
  EXPECT_FALSE(ThrottleKey::address(six1, 16) == ThrottleKey::address(six3, 16));
  EXPECT_FALSE(ThrottleKey::address(v4, 4) == ThrottleKey::user(0));
}

}  // namespace
}  // namespace bitsd
