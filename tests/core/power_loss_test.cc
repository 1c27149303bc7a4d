// Power-loss sweep (STYLE.md §8, after littlefs's powerloss runner and SQLite's crash tests).
//
// A scenario (sessions created, fragments with overlaps, a commit, a close, a cancel, and enough
// journal traffic to force a compaction) runs on FakeStorage. At operation N the device goes dead:
// that operation and all later ones fail and change nothing. Then a "reboot" builds the disk as it
// would be found: synced data as-is, each unsynced write kept, dropped, or torn at a random byte.
// The journal on that disk is replayed and checked against what the clients were told:
//   - replay never fails (a torn tail is a normal ending);
//   - nothing acked is lost: every acked session, `have`, commit and close is in the journal;
//   - nothing is invented: every journaled session was asked for, and the journal never claims
//     more bytes than the in-progress file durably holds, nor different bytes than were sent.
// N sweeps every operation of the scenario; each crash point runs with all writes kept, all
// dropped, and several random seeds. A failure prints the crash point, mode and seed to replay it.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

struct Facts {
  std::map<std::string, std::string> pathOfId;  // acked Create-Session
  std::map<std::string, uint64_t> ackedHave;     // highest acked BITS-Received-Content-Range
  std::set<std::string> committed;               // acked final fragment
  std::set<std::string> closed;                  // acked Close/Cancel
  std::set<std::string> requestedPaths;          // every Create-Session sent
};

std::string bodyFor(const std::string& path, size_t n) {
  std::string s(n, '\0');
  uint32_t x = static_cast<uint32_t>(std::hash<std::string>()(path));
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245 + 12345;
    s[i] = static_cast<char>(x >> 16);
  }
  return s;
}

Settings sweepSettings() {
  Settings s = EngineDriver::defaultSettings();
  s.journalMaxBytes = 8 * 1024;  // compaction within the scenario
  return s;
}

// Runs the scenario, stopping quietly when the device is dead. Returns the operations it took.
void runScenario(EngineDriver& d, Facts& f) {
  auto create = [&](const std::string& path) {
    f.requestedPaths.insert(path);
    std::string id = d.createSession(path);
    if (!id.empty()) f.pathOfId[id] = path;
    return id;
  };
  auto frag = [&](const std::string& path, const std::string& id, uint64_t first, uint64_t len, uint64_t total) {
    if (id.empty()) return;
    std::string body = bodyFor(path, total);
    Reply r = d.fragment(path, id, first, body.substr(first, len), total);
    if (r.status == 200) {
      uint64_t have = std::stoull(r.get("BITS-Received-Content-Range"));
      uint64_t& a = f.ackedHave[id];
      if (have > a) a = have;
      if (have == total) f.committed.insert(id);
    }
  };
  auto close = [&](const std::string& path, const std::string& id, const char* type) {
    if (id.empty()) return;
    if (d.close(path, id, type).status == 200) f.closed.insert(id);
  };
  std::string a = create("/a.bin");
  frag("/a.bin", a, 0, 700, 2000);
  frag("/a.bin", a, 500, 900, 2000);  // overlap
  std::string b = create("/b.bin");
  frag("/b.bin", b, 0, 300, 300);     // whole upload in one: commit
  frag("/a.bin", a, 1400, 600, 2000); // a completes
  close("/a.bin", a, "Close-Session");
  std::string c = create("/c.bin");
  frag("/c.bin", c, 0, 100, 1000);
  close("/c.bin", c, "Cancel-Session");
  for (int i = 0; i < 6; ++i) {       // journal traffic: a compaction happens in here
    std::string p = "/m" + std::to_string(i);
    std::string id = create(p);
    frag(p, id, 0, 50, 100);
    frag(p, id, 50, 50, 100);
  }
  std::string e = create("/e.bin");
  frag("/e.bin", e, 0, 400, 800);
  d.settle();
}

void checkReboot(const FakeStorage& storage, const Facts& f, uint32_t seed, int mode) {
  auto image = storage.rebootImage(seed, mode);
  ASSERT_TRUE(image.count(EngineDriver::kJournalPath)) << "the journal file vanished";
  const std::string& bytes = image.at(EngineDriver::kJournalPath);
  JournalState st;
  ReplayResult rr =
      replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &st);
  ASSERT_EQ(rr.status, ReplayStatus::Ok) << replayStatusText(rr.status);

  for (const auto& [id, path] : f.pathOfId) {
    SessionId sid;
    ASSERT_TRUE(parseSessionId(id, &sid));
    auto it = st.sessions.find(sid);
    ASSERT_NE(it, st.sessions.end()) << "acked session " << path << " lost";
    const RecoveredSession& s = it->second;
    EXPECT_EQ("/" + s.path, path);
    if (f.ackedHave.count(id)) {
      EXPECT_GE(s.haveBytes, f.ackedHave.at(id)) << "acked bytes lost for " << path;
    }
    if (f.committed.count(id)) {
      EXPECT_TRUE(s.committed) << "acked commit lost for " << path;
    }
    if (f.closed.count(id)) {
      EXPECT_TRUE(s.closed) << "acked close lost for " << path;
    }
  }
  for (const auto& [sid, s] : st.sessions) {
    EXPECT_TRUE(f.requestedPaths.count("/" + s.path)) << "invented session " << s.path;
    if (s.committed || s.closed || s.haveBytes == 0) continue;
    char id[kSessionIdTextBytes];
    formatSessionId(sid, id);
    std::string partial = "/state/partial/" + std::string(id, kSessionIdTextBytes) + ".part";
    if (!image.count(partial) && s.totalKnown && s.haveBytes == s.totalBytes) {
      // Crashed inside the commit, after the data reached its destination and before the Committed
      // record did: recovery finds it there and marks it committed.
      ASSERT_TRUE(image.count("/root/" + s.path)) << "complete upload " << s.path << " is nowhere";
      EXPECT_EQ(image.at("/root/" + s.path), bodyFor("/" + s.path, s.totalBytes));
      continue;
    }
    ASSERT_TRUE(image.count(partial)) << "journal claims data for " << s.path << " but its file is gone";
    const std::string& data = image.at(partial);
    ASSERT_GE(data.size(), s.haveBytes) << "journal claims more bytes than are durable for " << s.path;
    EXPECT_EQ(data.substr(0, s.haveBytes), bodyFor("/" + s.path, s.totalBytes).substr(0, s.haveBytes))
        << "journaled prefix of " << s.path << " is not what was sent";
  }
  // The engine's own replay (what bitsd restores from) agrees with JournalState (what bitsctl and
  // compaction use) on this image.
  {
    EngineDriver fresh(sweepSettings());
    ReplayResult er = replayJournal(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &fresh.engine);
    ASSERT_EQ(er.status, ReplayStatus::Ok);
    std::vector<SessionId> expired;
    ASSERT_TRUE(fresh.engine.finishRestore(&expired).isOk());
    EXPECT_TRUE(expired.empty());
    JournalState live;
    fresh.engine.snapshot(&live);
    ASSERT_EQ(live.sessions.size(), st.sessions.size());
    for (const auto& [sid, s] : st.sessions) {
      ASSERT_TRUE(live.sessions.count(sid));
      const RecoveredSession& e = live.sessions.at(sid);
      EXPECT_EQ(e.haveBytes, s.haveBytes);
      EXPECT_EQ(e.committed, s.committed);
      EXPECT_EQ(e.closed, s.closed);
      EXPECT_EQ(e.path, s.path);
    }
  }
  for (const auto& [id, path] : f.pathOfId) {
    if (!f.committed.count(id)) continue;
    ASSERT_TRUE(image.count("/root" + path)) << "committed file " << path << " missing";
    EXPECT_EQ(image.at("/root" + path), bodyFor(path, image.at("/root" + path).size()));
  }
}

TEST(PowerLoss, SweepEveryStorageOperation) {
  // Count the operations of a clean run.
  uint64_t total = 0;
  {
    EngineDriver d(sweepSettings());
    Facts f;
    runScenario(d, f);
    total = d.storage.opsExecuted;
    ASSERT_GT(d.journal.stats().compactions, 0u) << "the scenario must exercise a compaction";
    checkReboot(d.storage, f, 1, 0);
  }
  ASSERT_GT(total, 50u);
  int runs = 0;
  for (uint64_t crashAt = 1; crashAt <= total + 1; ++crashAt) {
    for (int mode = 0; mode < 3; ++mode) {
      int seeds = mode == 2 ? 16 : 1;
      for (int k = 0; k < seeds; ++k) {
        uint32_t seed = static_cast<uint32_t>(crashAt * 131 + static_cast<uint64_t>(k));
        SCOPED_TRACE("replay with: crash at operation " + std::to_string(crashAt) + ", mode " +
                     std::to_string(mode) + " (0 keep, 1 drop, 2 random), seed " + std::to_string(seed));
        EngineDriver d(sweepSettings());
        d.storage.crashAtOp = crashAt;
        Facts f;
        runScenario(d, f);
        checkReboot(d.storage, f, seed, mode);
        ++runs;
        if (::testing::Test::HasFailure()) return;  // the trace above names the failing case
      }
    }
  }
  std::printf("power-loss sweep: %llu crash points, %d reboots checked\n", static_cast<unsigned long long>(total + 1),
              runs);
}

}  // namespace
}  // namespace bitsd::testing
