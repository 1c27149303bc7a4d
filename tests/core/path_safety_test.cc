// The engine's side of issue 20's hole 3: a directory on the destination's path is swapped for a
// symlink between Create-Session and the final fragment. The storage seam refuses to pass through
// it (AccessDenied); the engine answers 403 + E_ACCESSDENIED ctx 0x5, as a symlink at Create-Session
// gets, keeps the session and its data (a retry commits once the directory is back), and for a
// hand-off's Copy-File-To-Destination records the refusal like any other copy failure.
#include <gtest/gtest.h>

#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

void expectError(const Reply& r, int status, const char* code, const char* ctx = "0x5") {
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.get("BITS-Packet-Type"), "Ack") << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), code) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), ctx) << r.raw;
}

class CommitBeneath : public ::testing::TestWithParam<bool> {
 protected:
  Settings settings() const {
    Settings s = EngineDriver::defaultSettings();
    s.allowOverwrites = GetParam();
    return s;
  }
};

TEST_P(CommitBeneath, ParentSwappedForASymlinkIs403AndTheDataStaysForARetry) {
  EngineDriver d(settings());
  d.storage.addDir("/root/d");
  std::string id = d.createSession("/d/x.bin");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(d.fragment("/d/x.bin", id, 0, "hello ", 11).status, 200);
  d.storage.swapDirForSymlink("/root/d");
  Reply last = d.fragment("/d/x.bin", id, 6, "world", 11);
  expectError(last, 403, "0x80070005");
  EXPECT_EQ(last.get("BITS-Received-Content-Range"), "11") << "as for a destination that appeared meanwhile";
  EXPECT_FALSE(d.storage.exists("/root/d/x.bin"));
  ASSERT_TRUE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(d.storage.contents(d.partialPath(id)), "hello world");
  EXPECT_EQ(d.engine.stats().commits, 0u);
  // The directory comes back: the final fragment's retry commits the kept data.
  d.storage.removeSymlink("/root/d");
  d.storage.addDir("/root/d");
  Reply retry = d.fragment("/d/x.bin", id, 6, "world", 11);
  EXPECT_EQ(retry.status, 200) << retry.raw;
  ASSERT_TRUE(d.storage.exists("/root/d/x.bin"));
  EXPECT_EQ(d.storage.contents("/root/d/x.bin"), "hello world");
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(d.engine.stats().commits, 1u);
}

// Deeper: /a/b/x.bin with `a` swapped; and a missing parent at commit stays 404.
TEST_P(CommitBeneath, DeeperComponentSwappedIs403AndAMissingOneIs404) {
  EngineDriver d(settings());
  d.storage.addDir("/root/a");
  d.storage.addDir("/root/a/b");
  std::string id = d.createSession("/a/b/x.bin");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(d.fragment("/a/b/x.bin", id, 0, "12", 4).status, 200);
  d.storage.swapDirForSymlink("/root/a");
  expectError(d.fragment("/a/b/x.bin", id, 2, "34", 4), 403, "0x80070005");
  d.storage.removeSymlink("/root/a");
  expectError(d.fragment("/a/b/x.bin", id, 2, "34", 4), 404, "0x80070003");
  EXPECT_FALSE(d.storage.exists("/root/a/b/x.bin"));
  EXPECT_TRUE(d.storage.exists(d.partialPath(id)));
}

INSTANTIATE_TEST_SUITE_P(Overwrites, CommitBeneath, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "On" : "Off"; });

// BITS-Copy-File-To-Destination goes through the same checked directory: refused as for a plain
// commit (§10.1: a refused copy is 403 + 0x80070005 ctx 0x5), and the delivery still counts as made.
TEST(CommitBeneathHandOff, CopyThroughASwappedParentIs403AndTheDeliveryCounts) {
  Settings s = EngineDriver::defaultSettings();
  s.notifyType = "reference";
  s.notifyUrl = "app/notify";
  EngineDriver d(s);
  d.notifier.answer.copy = true;
  d.storage.addDir("/root/d");
  std::string id = d.createSession("/d/c.bin");
  ASSERT_FALSE(id.empty());
  d.storage.swapDirForSymlink("/root/d");
  auto finalFragment = [&] {
    return d.send(bitsRequest("/d/c.bin", "Fragment",
                              {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-3/4"}, {"BITS-Transaction-Id", "tx"}},
                              "data"));
  };
  expectError(finalFragment(), 403, "0x80070005");
  EXPECT_FALSE(d.storage.exists("/root/d/c.bin"));
  // A repeat replays the recorded answer; the application is not asked again.
  expectError(finalFragment(), 403, "0x80070005");
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_FALSE(d.storage.exists("/root/d/c.bin"));
}

}  // namespace
}  // namespace bitsd::testing
