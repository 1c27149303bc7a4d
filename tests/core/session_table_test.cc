#include "core/session_table.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace bitsd {
namespace {

SessionId idFrom(uint64_t n) {
  SessionId id;
  for (int i = 0; i < 16; ++i) id.bytes[i] = static_cast<uint8_t>(n >> ((i % 8) * 8));
  // Force collisions in the index: the low bytes (the hash) repeat every 8 ids.
  id.bytes[0] = static_cast<uint8_t>(n % 8);
  for (int i = 1; i < 8; ++i) id.bytes[i] = 0;
  id.bytes[8] = static_cast<uint8_t>(n);
  id.bytes[9] = static_cast<uint8_t>(n >> 8);
  return id;
}

TEST(SessionTable, InsertFindEraseUnderCollisions) {
  SessionTable t;
  ASSERT_TRUE(t.init(256, 32).isOk());
  std::vector<SessionId> live;
  std::mt19937 rng(7);
  for (uint64_t n = 0; n < 5000; ++n) {
    if (live.size() < 200 && (rng() % 3 != 0 || live.empty())) {
      SessionId id = idFrom(n);
      Session* s = t.insert(id, "p/" + std::to_string(n));
      ASSERT_NE(s, nullptr);
      live.push_back(id);
    } else {
      size_t k = rng() % live.size();
      Session* s = t.find(live[k]);
      ASSERT_NE(s, nullptr);
      t.erase(s);
      EXPECT_EQ(t.find(live[k]), nullptr);
      live.erase(live.begin() + static_cast<long>(k));
    }
    ASSERT_EQ(t.size(), live.size());
    for (const SessionId& id : live) ASSERT_NE(t.find(id), nullptr) << "lost after step " << n;
  }
}

TEST(SessionTable, FullTableRefusesAndKeepsPaths) {
  SessionTable t;
  ASSERT_TRUE(t.init(4, 8).isOk());
  for (uint64_t n = 0; n < 4; ++n) ASSERT_NE(t.insert(idFrom(n), "f" + std::to_string(n)), nullptr);
  EXPECT_EQ(t.insert(idFrom(9), "x"), nullptr);
  EXPECT_EQ(t.path(*t.find(idFrom(2))), "f2");
  EXPECT_EQ(t.insert(idFrom(10), "longer-than-8"), nullptr);
}

}  // namespace
}  // namespace bitsd
