// The error log's rate limiter (core/log.h) on a fake clock.
#include "core/log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace bitsd {
namespace {

std::vector<std::string> gLines;
uint64_t gNow = 0;

void sink(LogLevel, const char* line) { gLines.emplace_back(line); }
uint64_t fakeNow() { return gNow; }

class LogLimit : public ::testing::Test {
 protected:
  void SetUp() override {
    gLines.clear();
    gNow = 1000000;
    resetLogLimits();
    setLogSink(sink);
    setLogClock(fakeNow);
    setLogLevel(LogLevel::Info);
  }
  void TearDown() override {
    setLogSink(nullptr);
    setLogClock(nullptr);
    setLogLevel(LogLevel::Info);
    resetLogLimits();
  }
};

TEST_F(LogLimit, SameKeyOncePerWindowThenCountsSuppressed) {
  for (int i = 0; i < 9; ++i) logLimited(LogLevel::Info, "compacted", "journal compacted to %d bytes", 100 + i);
  ASSERT_EQ(gLines.size(), 1u);
  EXPECT_EQ(gLines[0], "journal compacted to 100 bytes");
  gNow += kLogWindowMs - 1;
  logLimited(LogLevel::Info, "compacted", "journal compacted to %d bytes", 200);
  EXPECT_EQ(gLines.size(), 1u);
  gNow += 1;  // the window since the last written line is over
  logLimited(LogLevel::Info, "compacted", "journal compacted to %d bytes", 300);
  ASSERT_EQ(gLines.size(), 2u);
  EXPECT_EQ(gLines[1], "journal compacted to 300 bytes (9 more suppressed)");
  gNow += kLogWindowMs;
  logLimited(LogLevel::Info, "compacted", "journal compacted to %d bytes", 400);
  ASSERT_EQ(gLines.size(), 3u);
  EXPECT_EQ(gLines[2], "journal compacted to 400 bytes");  // nothing suppressed since
}

// A SIGHUP summary names every setting it applied and every one that needs a restart (60 keys):
// such a line is written whole, not cut at 512 bytes.
TEST_F(LogLimit, ALongLineIsWrittenWhole) {
  std::string keys;
  for (int i = 0; i < 60; ++i) keys += (i ? ", " : "") + std::string("setting-number-") + std::to_string(i);
  logf(LogLevel::Info, "SIGHUP: applied %s; needs a restart: listen", keys.c_str());
  ASSERT_EQ(gLines.size(), 1u);
  EXPECT_EQ(gLines[0], "SIGHUP: applied " + keys + "; needs a restart: listen");
}

TEST_F(LogLimit, KeysAreIndependent) {
  logLimited(LogLevel::Info, "a", "first a");
  logLimited(LogLevel::Info, "b", "first b");
  logLimited(LogLevel::Info, "a", "second a");
  ASSERT_EQ(gLines.size(), 2u);
  EXPECT_EQ(gLines[1], "first b");
}

TEST_F(LogLimit, FullTableRecyclesTheOldestKey) {
  static char keys[kLogKeys + 1][4];
  for (int i = 0; i <= kLogKeys; ++i) {
    gNow += 1;
    logLimited(LogLevel::Info, keys[i], "key %d", i);
  }
  EXPECT_EQ(gLines.size(), static_cast<size_t>(kLogKeys + 1));
  // Key 0 was recycled for the last one: it is written again at once; key 2 is still limited.
  logLimited(LogLevel::Info, keys[0], "key 0 again");
  logLimited(LogLevel::Info, keys[2], "key 2 again");
  ASSERT_EQ(gLines.size(), static_cast<size_t>(kLogKeys + 2));
  EXPECT_EQ(gLines.back(), "key 0 again");
}

TEST_F(LogLimit, BelowTheLevelIsNotCounted) {
  logLimited(LogLevel::Debug, "d", "debug line");
  EXPECT_TRUE(gLines.empty());
  setLogLevel(LogLevel::Debug);
  logLimited(LogLevel::Debug, "d", "debug line");
  ASSERT_EQ(gLines.size(), 1u);
  EXPECT_EQ(gLines[0], "debug line");
}

TEST_F(LogLimit, WithoutAClockNothingIsSuppressed) {
  setLogClock(nullptr);
  logLimited(LogLevel::Info, "k", "one");
  logLimited(LogLevel::Info, "k", "two");
  EXPECT_EQ(gLines.size(), 2u);
}

}  // namespace
}  // namespace bitsd
