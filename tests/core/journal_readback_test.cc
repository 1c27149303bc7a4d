// The journal reads back every batch it writes (and the file a compaction writes) before it calls a
// record durable, as littlefs's lfs_dir_commitcrc does: a device that stores other bytes than it
// was given fails the append, the client is not acknowledged, and the journal stays whole. And no
// append's refusal goes unnoticed.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/journal.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

struct Waiter : JournalWaiter {
  void onJournalDurable(const Status& s) override {
    ++calls;
    last = s;
  }
  int calls = 0;
  Status last;
};

JournalRecord created(uint8_t n, std::string_view path) {
  JournalRecord r;
  r.type = RecordType::SessionCreated;
  r.id.bytes[0] = n;
  r.path = path;
  return r;
}

TEST(JournalReadBack, AnAppendIsNotDurableWhenTheDeviceCorruptsWhatItWrote) {
  EngineDriver d;
  d.storage.corruptJournalWrites = true;
  Waiter w;
  ASSERT_TRUE(d.journal.append(created(1, "a"), &w).isOk());
  d.settle();
  ASSERT_EQ(w.calls, 1);
  EXPECT_FALSE(w.last.isOk());
  EXPECT_EQ(w.last.code(), Code::Io);
  EXPECT_STREQ(w.last.message(), "journal read-back mismatch");
  EXPECT_EQ(d.journal.stats().readBackMismatches, 1u);
  EXPECT_EQ(d.journal.stats().failures, 1u);

  // The device heals: the next batch goes where the bad one was, and replays with no gap.
  d.storage.corruptJournalWrites = false;
  Waiter w2;
  ASSERT_TRUE(d.journal.append(created(2, "b"), &w2).isOk());
  d.settle();
  ASSERT_EQ(w2.calls, 1);
  EXPECT_TRUE(w2.last.isOk());
  JournalState st = d.replayed();
  EXPECT_EQ(st.sessions.size(), 1u);
  SessionId two;
  two.bytes[0] = 2;
  EXPECT_EQ(st.sessions.count(two), 1u);
}

TEST(JournalReadBack, AFragmentWhoseProgressDoesNotReadBackIsNotAcked) {
  EngineDriver d;
  std::string id = d.createSession("/f.bin");
  ASSERT_FALSE(id.empty());
  d.storage.corruptJournalWrites = true;
  Reply r = d.fragment("/f.bin", id, 0, "0123456789", 20);
  EXPECT_EQ(r.status, 500) << r.raw;
  d.storage.corruptJournalWrites = false;
  // The client repeats the fragment; now it is durable and acked.
  r = d.fragment("/f.bin", id, 0, "0123456789", 20);
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "10");
  JournalState st = d.replayed();
  ASSERT_EQ(st.sessions.size(), 1u);
  EXPECT_EQ(st.sessions.begin()->second.haveBytes, 10u);
}

TEST(JournalReadBack, EachBatchIsReadBackOnceWhole) {
  EngineDriver d;
  std::string id = d.createSession("/f.bin");
  const uint64_t reads = d.storage.journalReads;
  const uint64_t writes = d.storage.journalWrites;
  ASSERT_EQ(d.fragment("/f.bin", id, 0, "0123456789", 20).status, 200);
  // A fragment's Progress record is one block: one write, one sync, one read of that block.
  EXPECT_EQ(d.storage.journalWrites - writes, 1u);
  EXPECT_EQ(d.storage.journalReads - reads, 1u);
  EXPECT_EQ(d.journal.stats().readBackMismatches, 0u);
}

TEST(JournalReadBack, ACompactionThatDoesNotReadBackLeavesTheOldJournal) {
  EngineDriver d;
  std::string id = d.createSession("/keep.bin");
  ASSERT_EQ(d.fragment("/keep.bin", id, 0, "abcd", 10).status, 200);
  const std::string before = d.storage.contents(d.storage.journalPath);
  d.storage.corruptJournalWrites = true;
  d.journal.compactSoon();
  d.settle();
  EXPECT_EQ(d.journal.stats().compactions, 0u);
  EXPECT_EQ(d.journal.stats().readBackMismatches, 1u);
  EXPECT_EQ(d.storage.contents(d.storage.journalPath), before) << "the old journal stays as it was";
  d.storage.corruptJournalWrites = false;
  JournalState st = d.replayed();
  ASSERT_EQ(st.sessions.size(), 1u);
  EXPECT_EQ(st.sessions.begin()->second.haveBytes, 4u);
  // And the journal still takes records.
  ASSERT_EQ(d.fragment("/keep.bin", id, 4, "efgh", 10).status, 200);
  EXPECT_EQ(d.replayed().sessions.begin()->second.haveBytes, 8u);
}

TEST(JournalAppend, ACreateSessionWhoseRecordTheJournalRefusesGets503AndNoOwnerRecord) {
  // With authentication off, a Create-Session journals SessionCreated, then SessionOwner ("@" and
  // the client's address). Leave the pending buffer room for the owner's record (47 bytes) but not
  // for the session's (63): the session's refusal must not let its owner's record through, which
  // would ack a session the journal never heard of.
  EngineDriver d;
  ClientAddress peer;
  peer.family = 4;
  const uint8_t addr[4] = {198, 51, 100, 7};
  std::memcpy(peer.bytes, addr, 4);
  d.setPeer(peer);
  const std::string filler(4000, 'f');
  size_t left = EngineDriver::defaultSettings().journalBufferBytes - 55;  // room left: 55 bytes
  for (uint8_t n = 100; left > 0; ++n) {
    size_t size = left > 2000 ? 1000 : left;  // a SessionCreated record is 43 + path bytes
    ASSERT_TRUE(d.journal.append(created(n, std::string_view(filler).substr(0, size - 43)), nullptr).isOk());
    left -= size;
  }
  d.scheduler.requested = false;  // hold the fillers in the pending buffer
  const uint64_t refusals = d.engine.stats().journalRefusals;
  Reply r = d.send(bitsRequest("/quota-owner-test.bin", "Create-Session",
                               {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(d.engine.stats().journalRefusals, refusals + 1);
  d.scheduler.requested = true;
  d.settle();
  JournalState st = d.replayed();
  for (const auto& [id, s] : st.sessions) EXPECT_NE(s.path, "quota-owner-test.bin");
}

}  // namespace
}  // namespace bitsd::testing
