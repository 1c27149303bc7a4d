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

// ReplyFlow reads the reply through Storage, part by part, and closes the file at the end; a reply
// file that shrank after the head was sent gives a short body (the platform then closes).
TEST(Flows, ReplyDownloadsReadThroughStorageAndCloseTheFile) {
  Settings s = EngineDriver::defaultSettings();
  s.notifyType = "value";
  s.notifyUrl = "app/notify";
  EngineDriver d(s);
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "0123456789abcdefghij";  // 20 bytes: three reads of the driver's 7
  std::string id = d.createSession("/r.bin");
  ASSERT_FALSE(id.empty());
  Reply ack = d.send(bitsRequest("/r.bin", "Fragment",
                                 {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-1/2"}, {"BITS-Transaction-Id", "t"}},
                                 "up"));
  ASSERT_EQ(ack.status, 200) << ack.raw;
  std::string target = ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  const int handles = d.storage.openHandles();
  const uint64_t reads = d.storage.readCalls;
  Reply whole = d.send(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(whole.status, 200);
  EXPECT_EQ(whole.body, "0123456789abcdefghij");
  EXPECT_EQ(d.storage.readCalls - reads, 3u);
  EXPECT_EQ(d.storage.openHandles(), handles);
  // The file shrinks behind bitsd's back after the head: the body stops short, nothing stays open.
  d.storage.mutableContents(d.replyPath(id)).resize(9);
  Reply shorter = d.send(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(shorter.status, 200);
  EXPECT_EQ(shorter.body, "012345678");
  EXPECT_EQ(d.storage.openHandles(), handles);
}

}  // namespace
}  // namespace bitsd::testing
