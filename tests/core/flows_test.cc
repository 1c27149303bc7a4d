// The flows of the engine (core/flows.h) only take the completions they wait for: a storage,
// journal or notifier completion that reaches an exchange whose flow does not wait for it (a stray,
// e.g. from a port that completes twice) is logged and dropped. It never runs another flow's logic
// (before issue 16, a stray storage completion ran the hand-off's copy-failure code) and never
// wakes the host.
#include <gtest/gtest.h>

#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

std::string body(size_t n) { return std::string(n, 'x'); }

Reply wholeUpload(EngineDriver& d, const std::string& path, std::string* id) {
  *id = d.createSession(path);
  EXPECT_FALSE(id->empty());
  return d.fragment(path, *id, 0, body(100), 100);
}

TEST(Flows, AStrayStorageCompletionAfterACommitIsDropped) {
  EngineDriver d;
  std::string id;
  Reply ack = wholeUpload(d, "/a.bin", &id);
  ASSERT_EQ(ack.status, 200) << ack.raw;
  d.settle();
  const int ready = d.readyCalls;
  const uint64_t errors = d.engine.stats().errors;
  const std::string response(d.exchange().response());
  StorageOp bogus;
  bogus.status = Status(Code::AlreadyExists, "stray");  // the copy-failure path, were it taken
  static_cast<StorageCallback&>(d.exchange()).onStorageDone(bogus);
  bogus.status = Status::ok();
  static_cast<StorageCallback&>(d.exchange()).onStorageDone(bogus);
  d.settle();
  EXPECT_EQ(d.readyCalls, ready);
  EXPECT_EQ(d.engine.stats().errors, errors);
  EXPECT_EQ(std::string(d.exchange().response()), response);
  EXPECT_EQ(d.engine.stats().commits, 1u);
  // The engine carries on.
  std::string id2;
  EXPECT_EQ(wholeUpload(d, "/b.bin", &id2).status, 200);
  EXPECT_EQ(d.engine.stats().commits, 2u);
}

TEST(Flows, AStrayJournalCompletionAfterAPingIsDropped) {
  EngineDriver d;
  Reply r = d.send(bitsRequest("/", "Ping"));
  ASSERT_EQ(r.status, 200);
  const int ready = d.readyCalls;
  static_cast<JournalWaiter&>(d.exchange()).onJournalDurable(Status::ok());
  static_cast<JournalWaiter&>(d.exchange()).onJournalDurable(Status(Code::Io, "stray"));
  EXPECT_EQ(d.readyCalls, ready);
  EXPECT_EQ(d.send(bitsRequest("/", "Ping")).status, 200);
}

TEST(Flows, AStrayNotifierCompletionOnAFragmentIsDropped) {
  EngineDriver d;
  std::string id = d.createSession("/c.bin");
  ASSERT_FALSE(id.empty());
  Reply r = d.fragment("/c.bin", id, 0, body(10), 100);
  ASSERT_EQ(r.status, 200) << r.raw;
  const int ready = d.readyCalls;
  const uint64_t failures = d.engine.stats().notifyFailures;
  NotifyOp op;
  op.result.outcome = NotifyOutcome::Unreachable;
  static_cast<NotifyCallback&>(d.exchange()).onNotifyDone(op);
  EXPECT_EQ(d.readyCalls, ready);
  EXPECT_EQ(d.engine.stats().notifyFailures, failures);
  EXPECT_EQ(d.fragment("/c.bin", id, 10, body(90), 100).status, 200);
  EXPECT_EQ(d.engine.stats().commits, 1u);
}

}  // namespace
}  // namespace bitsd::testing
