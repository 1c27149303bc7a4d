// The farm hand-off (issue 17, docs/DESIGN.md "The farm hand-off") on fake storage, a fake
// application and a fake farm store shared by one or two engines (nodes): the order (DeliveryBegan,
// claim, POST, end, DeliveryEnded, Ack), every answer a claim can find, the pending end, takeovers,
// Create-Session's owner record, and a restart in the middle of a hand-off.
#include <gtest/gtest.h>

#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

constexpr const char* kBusyCode = "0x800700AA";  // BG_E busy (ERROR_BUSY), as every farm 503

Settings nodeSettings(const char* node) {
  Settings s = EngineDriver::defaultSettings();
  s.notifyType = "reference";
  s.notifyUrl = "app/notify";
  s.hostId = node;
  s.farmEtcd = "http://127.0.0.1:2379";
  return s;
}

std::string rangeOf(const std::string& body) {
  return "bytes 0-" + std::to_string(body.size() - 1) + "/" + std::to_string(body.size());
}

std::string finalRequest(const std::string& path, const std::string& id, const std::string& body,
                         const std::string& txid) {
  return bitsRequest(path, "Fragment",
                     {{"BITS-Session-Id", id}, {"Content-Range", rangeOf(body)}, {"BITS-Transaction-Id", txid}}, body);
}

Reply finalFragment(EngineDriver& d, const std::string& path, const std::string& id, const std::string& body,
                    const std::string& txid) {
  return d.send(finalRequest(path, id, body, txid));
}

// Records of `type` in the journal file as it is now (no settling: callable from inside a flow).
int journalCount(EngineDriver& d, RecordType type) {
  struct Counter : ReplaySink {
    RecordType t;
    int n = 0;
    void onRecord(const JournalRecord& r, uint64_t, uint64_t) override { n += r.type == t; }
  } c;
  c.t = type;
  const std::string& bytes = d.storage.contents(EngineDriver::kJournalPath);
  replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &c);
  return c.n;
}

int settledCount(EngineDriver& d, RecordType type) {
  d.settle();
  return journalCount(d, type);
}

void expectRetryLater(const Reply& r) {
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), kBusyCode) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), "0x5") << r.raw;
  EXPECT_EQ(r.get("Retry-After"), "5") << r.raw;
  EXPECT_FALSE(r.has("BITS-Reply-URL")) << r.raw;
}

std::string replyUrlFor(const std::string& host, const std::string& sessionId) {
  return "http://" + host + "/in/BITS-Sessions/Replies/%7B" + sessionId.substr(1, 36) + "%7D/responsefile.bin";
}

// One node of a farm: an engine with its own disk, application and view of the shared store.
struct Node {
  Node(FakeFarmStore* store, const char* name) : farm(store, name), d(nodeSettings(name)) {
    d.storage.addDir("/root/in");
    farm.setDisk(&d.storage);
    d.useFarm(&farm);
  }
  FakeFarm farm;
  EngineDriver d;
};

// ---------------------------------------------------------------------------------------------------

TEST(FarmHandOff, ClaimsBeforeThePostAndRecordsEndedBeforeDeliveryEndedAndTheAck) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "receipt-1";
  // What the journal and the application had seen when each farm operation was issued and done.
  std::vector<std::string> timeline;
  n.farm.observer = [&](const std::string& what) {
    timeline.push_back(what + " posts=" + std::to_string(d.notifier.posts.size()) +
                       " began=" + std::to_string(journalCount(d, RecordType::DeliveryBegan)) +
                       " ended=" + std::to_string(journalCount(d, RecordType::DeliveryEnded)));
  };
  std::string id = d.createSession("/in/a.bin");
  ASSERT_FALSE(id.empty());
  Reply ack = finalFragment(d, "/in/a.bin", id, "hello", "order-1");
  ASSERT_EQ(ack.status, 200) << ack.raw;
  // The reply URL names the request's Host, not the host-id: the farm forwards downloads.
  EXPECT_EQ(ack.get("BITS-Reply-URL"), replyUrlFor("appliance", id));
  ASSERT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(d.notifier.posts[0].txid, "order-1");
  EXPECT_EQ(timeline, (std::vector<std::string>{
                          "recordSession " + id + " posts=0 began=0 ended=0",
                          "done recordSession " + id + " posts=0 began=0 ended=0",
                          "claim order-1 posts=0 began=1 ended=0",
                          "done claim order-1 posts=0 began=1 ended=0",
                          "end order-1 @101 posts=1 began=1 ended=0",
                          "done end order-1 @101 posts=1 began=1 ended=0",
                      }));
  EXPECT_EQ(settledCount(d, RecordType::DeliveryEnded), 1);
  const FarmTxRecord* r = store.find("order-1");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->state, FarmTxRecord::State::Ended);
  EXPECT_EQ(r->node, "n1");
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->replyInline);
  EXPECT_EQ(r->reply, "receipt-1");
  EXPECT_EQ(d.engine.stats().farmClaims, 1u);
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  // Repeats on this node are answered from its own journal: no farm round trip, no POST.
  Reply again = finalFragment(d, "/in/a.bin", id, "hello", "order-1");
  EXPECT_EQ(again.status, 200) << again.raw;
  std::string id2 = d.createSession("/in/a.bin");
  Reply fresh = finalFragment(d, "/in/a.bin", id2, "hello", "order-1");
  EXPECT_EQ(fresh.status, 200) << fresh.raw;
  EXPECT_EQ(fresh.get("BITS-Reply-URL"), replyUrlFor("appliance", id));
  EXPECT_EQ(n.farm.count("claim"), 1u);
  EXPECT_EQ(d.notifier.posts.size(), 1u);
}

TEST(FarmHandOff, WithoutALiveLeaseTheFinalFragmentIs503AndNothingIsClaimedOrPosted) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  std::string id = d.createSession("/in/b.bin");
  n.farm.setLive(false);
  expectRetryLater(finalFragment(d, "/in/b.bin", id, "data", "tx-b"));
  EXPECT_EQ(n.farm.count("claim"), 0u);
  EXPECT_EQ(d.notifier.posts.size(), 0u);
  EXPECT_EQ(settledCount(d, RecordType::DeliveryBegan), 0);
  EXPECT_EQ(d.engine.stats().farmUnavailable, 1u);
  n.farm.setLive(true);
  Reply ok = finalFragment(d, "/in/b.bin", id, "data", "tx-b");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(d.notifier.posts.size(), 1u);
}

TEST(FarmHandOff, AnUnavailableFarmAtTheClaimIs503AndTheRetryPostsOnce) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  std::string id = d.createSession("/in/c.bin");
  n.farm.down = true;
  expectRetryLater(finalFragment(d, "/in/c.bin", id, "data", "tx-c"));
  EXPECT_EQ(n.farm.count("claim"), 1u);
  EXPECT_EQ(d.notifier.posts.size(), 0u);
  EXPECT_EQ(settledCount(d, RecordType::DeliveryBegan), 1);  // stays, as after a crash
  EXPECT_EQ(settledCount(d, RecordType::DeliveryEnded), 0);
  EXPECT_TRUE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(store.find("tx-c"), nullptr);
  n.farm.down = false;
  Reply ok = finalFragment(d, "/in/c.bin", id, "data", "tx-c");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(d.engine.stats().farmUnavailable, 1u);
}

TEST(FarmHandOff, AnAmbiguousClaimIsRecognisedByItsTokenOnTheRetry) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  std::string id = d.createSession("/in/d.bin");
  n.farm.ambiguousNext = 1;  // the claim is applied in the store, its answer is lost
  expectRetryLater(finalFragment(d, "/in/d.bin", id, "data", "tx-d"));
  ASSERT_NE(store.find("tx-d"), nullptr);
  EXPECT_EQ(store.find("tx-d")->state, FarmTxRecord::State::Began);
  std::string token = store.find("tx-d")->token;
  EXPECT_EQ(token.size(), 32u);
  EXPECT_EQ(d.notifier.posts.size(), 0u);
  Reply ok = finalFragment(d, "/in/d.bin", id, "data", "tx-d");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  // Recognised as our own claim: no takeover was needed.
  EXPECT_EQ(n.farm.count("claim"), 2u);
  EXPECT_EQ(n.farm.count("takeOver"), 0u);
  EXPECT_EQ(d.engine.stats().farmTakeovers, 0u);
  EXPECT_EQ(store.find("tx-d")->state, FarmTxRecord::State::Ended);
}

TEST(FarmHandOff, TwoNodesDeliveringTheSameTransactionPostOnce) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  std::string ida = a.d.createSession("/in/e.bin");
  std::string idb = b.d.createSession("/in/e.bin");
  a.d.notifier.hold = true;  // n1's application takes its time
  ASSERT_TRUE(a.d.start(finalRequest("/in/e.bin", ida, "order", "tx-e")));
  ASSERT_EQ(a.d.notifier.held(), 1u);
  // n2 finds the transaction began by a live node: 503, no POST.
  expectRetryLater(finalFragment(b.d, "/in/e.bin", idb, "order", "tx-e"));
  EXPECT_EQ(b.d.notifier.posts.size(), 0u);
  EXPECT_EQ(settledCount(b.d, RecordType::DeliveryEnded), 0);
  a.d.notifier.hold = false;
  Reply acka = a.d.complete();
  EXPECT_EQ(acka.status, 200) << acka.raw;
  // n2's retry finds "ended": the answer, no POST.
  Reply ackb = finalFragment(b.d, "/in/e.bin", idb, "order", "tx-e");
  EXPECT_EQ(ackb.status, 200) << ackb.raw;
  EXPECT_EQ(a.d.notifier.posts.size() + b.d.notifier.posts.size(), 1u);
  EXPECT_EQ(b.d.engine.stats().farmReplays, 1u);
  EXPECT_EQ(settledCount(b.d, RecordType::DeliveryEnded), 1);
}

TEST(FarmHandOff, AnotherNodeReplaysAnEndedTransactionWithItsInlineReply) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  a.d.notifier.answer.writeReply = true;
  a.d.notifier.answer.replyBody = "receipt-77";
  std::string ida = a.d.createSession("/in/f.bin");
  ASSERT_EQ(finalFragment(a.d, "/in/f.bin", ida, "order", "order-77").status, 200);
  // The client failed over to n2 and uploads the same transaction in a new session there.
  std::string idb = b.d.createSession("/in/f.bin");
  Reply ack = finalFragment(b.d, "/in/f.bin", idb, "order", "order-77");
  ASSERT_EQ(ack.status, 200) << ack.raw;
  EXPECT_EQ(b.d.notifier.posts.size(), 0u);
  // The reply came with the record: n2's own reply file for its session holds it.
  EXPECT_EQ(ack.get("BITS-Reply-URL"), replyUrlFor("appliance", idb));
  b.d.settle();
  ASSERT_TRUE(b.d.storage.exists(b.d.replyPath(idb)));
  EXPECT_EQ(b.d.storage.contents(b.d.replyPath(idb)), "receipt-77");
  std::string target = ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  Reply get = b.d.send(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(get.status, 200) << get.raw;
  EXPECT_EQ(get.body, "receipt-77");
  EXPECT_EQ(b.d.engine.stats().farmReplays, 1u);
  EXPECT_EQ(settledCount(b.d, RecordType::DeliveryEnded), 1);
  EXPECT_FALSE(b.d.storage.exists(b.d.partialPath(idb)));
  EXPECT_EQ(b.d.engine.findDelivery("order-77")->status, 200);
}

// The node that delivered a transaction gets it again in a new session after the first one was
// closed (its reply file went with it): the answer comes from the farm's record, whose inline reply
// becomes the new session's reply file, so the reply URL works. No second POST.
TEST(FarmHandOff, ARepeatOnTheDeliveringNodeAfterItsSessionClosedGetsTheReplyFromTheRecord) {
  FakeFarmStore store;
  Node a(&store, "n1");
  a.d.notifier.answer.writeReply = true;
  a.d.notifier.answer.replyBody = "receipt-88";
  std::string first = a.d.createSession("/in/g.bin");
  ASSERT_EQ(finalFragment(a.d, "/in/g.bin", first, "order", "order-88").status, 200);
  ASSERT_EQ(a.d.send(bitsRequest("/in/g.bin", "Close-Session", {{"BITS-Session-Id", first}})).status, 200);
  a.d.settle();
  std::string second = a.d.createSession("/in/g.bin");
  Reply ack = finalFragment(a.d, "/in/g.bin", second, "order", "order-88");
  ASSERT_EQ(ack.status, 200) << ack.raw;
  EXPECT_EQ(a.d.notifier.posts.size(), 1u);
  EXPECT_EQ(ack.get("BITS-Reply-URL"), replyUrlFor("appliance", second));
  std::string target = ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  Reply get = a.d.send(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(get.status, 200) << get.raw;
  EXPECT_EQ(get.body, "receipt-88");
}

TEST(FarmHandOff, ALargeReplyStaysWithItsSessionAndTheReplayNamesIt) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  a.d.notifier.answer.writeReply = true;
  a.d.notifier.answer.replyBody = std::string(kFarmInlineReplyBytes + 1, 'r');
  std::string ida = a.d.createSession("/in/g.bin");
  ASSERT_EQ(finalFragment(a.d, "/in/g.bin", ida, "order", "tx-g").status, 200);
  EXPECT_FALSE(store.find("tx-g")->replyInline);
  std::string idb = b.d.createSession("/in/g.bin");
  Reply ack = finalFragment(b.d, "/in/g.bin", idb, "order", "tx-g");
  ASSERT_EQ(ack.status, 200) << ack.raw;
  // The download is n1's session's: forwarded to n1 by the farm.
  EXPECT_EQ(ack.get("BITS-Reply-URL"), replyUrlFor("appliance", ida));
  EXPECT_EQ(b.d.notifier.posts.size(), 0u);
  b.d.settle();
  EXPECT_FALSE(b.d.storage.exists(b.d.replyPath(idb)));
}

TEST(FarmHandOff, AnAppErrorRecordedAsEndedIsReplayedOnAnotherNode) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  a.d.notifier.answer.status = 400;
  std::string ida = a.d.createSession("/in/h.bin");
  EXPECT_EQ(finalFragment(a.d, "/in/h.bin", ida, "x", "tx-h").status, 400);
  std::string idb = b.d.createSession("/in/h.bin");
  Reply r = finalFragment(b.d, "/in/h.bin", idb, "x", "tx-h");
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x80190190");
  EXPECT_EQ(r.get("BITS-Error-Context"), "0x7");
  EXPECT_EQ(b.d.notifier.posts.size(), 0u);
}

TEST(FarmHandOff, ANodeThatLostItsLeaseIsTakenOverAndItsLateEndLoses) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  std::string ida = a.d.createSession("/in/i.bin");
  std::string idb = b.d.createSession("/in/i.bin");
  a.d.notifier.hold = true;
  ASSERT_TRUE(a.d.start(finalRequest("/in/i.bin", ida, "order", "tx-i")));
  a.farm.setLive(false);  // n1's lease expires while its application holds the POST
  b.d.notifier.hold = true;
  ASSERT_TRUE(b.d.start(finalRequest("/in/i.bin", idb, "order", "tx-i")));
  EXPECT_EQ(b.farm.count("takeOver"), 1u);
  EXPECT_EQ(store.find("tx-i")->node, "n2");
  ASSERT_EQ(b.d.notifier.posts.size(), 1u);  // the repeat POST, same transaction id
  EXPECT_EQ(b.d.notifier.posts[0].txid, "tx-i");
  // n1 gets its lease back and its application answers: its end is fenced out (n2 holds the
  // record now, still "began"): 503, nothing journaled as ended.
  a.farm.setLive(true);
  a.d.notifier.hold = false;
  expectRetryLater(a.d.complete());
  EXPECT_EQ(settledCount(a.d, RecordType::DeliveryEnded), 0);
  b.d.notifier.hold = false;
  Reply ackb = b.d.complete();
  EXPECT_EQ(ackb.status, 200) << ackb.raw;
  EXPECT_EQ(b.d.engine.stats().farmTakeovers, 1u);
  // The client's retry on n1 finds n2's "ended": answered from it, no third POST.
  Reply acka = finalFragment(a.d, "/in/i.bin", ida, "order", "tx-i");
  EXPECT_EQ(acka.status, 200) << acka.raw;
  EXPECT_EQ(a.d.notifier.posts.size(), 1u);
  EXPECT_EQ(b.d.notifier.posts.size(), 1u);
  EXPECT_EQ(a.d.engine.stats().farmReplays, 1u);
}

TEST(FarmHandOff, ATakeoverThatLosesTheRaceIs503AndPostsNothing) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  std::string ida = a.d.createSession("/in/p.bin");
  std::string idb = b.d.createSession("/in/p.bin");
  a.d.notifier.hold = true;
  ASSERT_TRUE(a.d.start(finalRequest("/in/p.bin", ida, "order", "tx-p")));
  a.farm.setLive(false);
  // A third node takes it over between n2's read and n2's takeover (and loses its lease too): n2's
  // compare fails, and n2 answers 503 rather than trying again at once.
  b.farm.observer = [&](const std::string& what) {
    if (what.rfind("takeOver", 0) == 0) {
      store.tx["tx-p"].node = "n3";
      store.tx["tx-p"].modRevision = ++store.revision;
    }
  };
  expectRetryLater(finalFragment(b.d, "/in/p.bin", idb, "order", "tx-p"));
  EXPECT_EQ(b.farm.count("takeOver"), 1u);
  EXPECT_EQ(b.d.notifier.posts.size(), 0u);
  EXPECT_EQ(b.d.engine.stats().farmTakeovers, 0u);
  a.d.notifier.forget();
}

TEST(FarmHandOff, ALeaseLostDuringTheClaimPostsNothingAndTheRetryKeepsTheClaim) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  std::string id = d.createSession("/in/q.bin");
  n.farm.observer = [&](const std::string& what) {
    if (what == "done claim tx-q" && n.farm.count("claim") == 1) n.farm.setLive(false);
  };
  expectRetryLater(finalFragment(d, "/in/q.bin", id, "data", "tx-q"));
  EXPECT_EQ(d.notifier.posts.size(), 0u);
  EXPECT_EQ(store.find("tx-q")->node, "n1");
  n.farm.setLive(true);
  Reply ok = finalFragment(d, "/in/q.bin", id, "data", "tx-q");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(n.farm.count("takeOver"), 0u);  // the retry recognised its claim by the token
}

TEST(FarmHandOff, ALostEndFoundEndedByTheTakeoverIsAnsweredFromTheRecord) {
  FakeFarmStore store;
  Node a(&store, "n1");
  Node b(&store, "n2");
  b.d.notifier.answer.writeReply = true;
  b.d.notifier.answer.replyBody = "from-n2";
  std::string ida = a.d.createSession("/in/j.bin");
  std::string idb = b.d.createSession("/in/j.bin");
  a.d.notifier.hold = true;
  ASSERT_TRUE(a.d.start(finalRequest("/in/j.bin", ida, "order", "tx-j")));
  a.farm.setLive(false);
  EXPECT_EQ(finalFragment(b.d, "/in/j.bin", idb, "order", "tx-j").status, 200);  // takes over, ends
  a.farm.setLive(true);
  a.d.notifier.answer.writeReply = true;
  a.d.notifier.answer.replyBody = "from-n1";
  a.d.notifier.hold = false;
  Reply acka = a.d.complete();
  EXPECT_EQ(acka.status, 200) << acka.raw;
  // n2's answer is the one: it replaced n1's reply file, and n1 journaled it as its session's.
  EXPECT_EQ(acka.get("BITS-Reply-URL"), replyUrlFor("appliance", ida));
  a.d.settle();
  EXPECT_EQ(a.d.storage.contents(a.d.replyPath(ida)), "from-n2");
  EXPECT_EQ(settledCount(a.d, RecordType::DeliveryEnded), 1);
  EXPECT_EQ(a.d.engine.stats().farmReplays, 1u);
}

TEST(FarmHandOff, AnUnavailableEndKeepsTheAnswerAndTheRetryRecordsItWithoutPostingAgain) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "kept";
  n.farm.observer = [&](const std::string& what) {
    if (what.rfind("end ", 0) == 0 && n.farm.count("end") == 1) n.farm.unavailableNext = 1;
  };
  std::string id = d.createSession("/in/k.bin");
  expectRetryLater(finalFragment(d, "/in/k.bin", id, "data", "tx-k"));
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(settledCount(d, RecordType::DeliveryEnded), 0);
  EXPECT_EQ(store.find("tx-k")->state, FarmTxRecord::State::Began);
  EXPECT_TRUE(d.storage.exists(d.partialPath(id)));
  Reply ok = finalFragment(d, "/in/k.bin", id, "data", "tx-k");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(ok.get("BITS-Reply-URL"), replyUrlFor("appliance", id));
  EXPECT_EQ(d.notifier.posts.size(), 1u);  // no second POST
  EXPECT_EQ(n.farm.count("claim"), 1u);
  EXPECT_EQ(n.farm.count("end"), 2u);
  EXPECT_EQ(settledCount(d, RecordType::DeliveryEnded), 1);
  EXPECT_EQ(store.find("tx-k")->state, FarmTxRecord::State::Ended);
  EXPECT_EQ(store.find("tx-k")->reply, "kept");
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
}

TEST(FarmHandOff, ARestartedNodeTakesItsEarlierLifesClaimOverAndPostsAgain) {
  FakeFarmStore store;
  std::string id;
  {
    Node before(&store, "n1");
    id = before.d.createSession("/in/l.bin");
    before.d.notifier.hold = true;
    ASSERT_TRUE(before.d.start(finalRequest("/in/l.bin", id, "order", "tx-l")));
    EXPECT_EQ(store.find("tx-l")->node, "n1");
    before.d.notifier.forget();  // killed while the application held the POST
    Node after(&store, "n1");
    after.d.restartFrom(before.d);
    // Nothing at start-up touched the farm; the client's retry claims, finds this node's earlier
    // token, takes over, and posts again with the same id.
    EXPECT_EQ(after.farm.calls.size(), 0u);
    Reply ok = finalFragment(after.d, "/in/l.bin", id, "order", "tx-l");
    EXPECT_EQ(ok.status, 200) << ok.raw;
    ASSERT_EQ(after.d.notifier.posts.size(), 1u);
    EXPECT_EQ(after.d.notifier.posts[0].txid, "tx-l");
    EXPECT_EQ(after.farm.count("claim"), 1u);
    EXPECT_EQ(after.farm.count("takeOver"), 1u);
    EXPECT_EQ(after.d.engine.stats().farmTakeovers, 1u);
    EXPECT_EQ(store.find("tx-l")->state, FarmTxRecord::State::Ended);
    EXPECT_EQ(settledCount(after.d, RecordType::DeliveryEnded), 1);
  }
}

// A crash after the application's copy to the destination and before DeliveryEnded: start-up finds
// the upload at its destination and ends the delivery locally (as on a single node), but the farm
// still holds this node's "began", so other nodes answer that id 503. The node's next sweep records
// "ended" in the farm (no POST), and the other nodes then answer from it.
TEST(FarmHandOff, ACopyFoundAtStartUpIsRecordedAsEndedInTheFarmByTheNextSweep) {
  FakeFarmStore store;
  Node before(&store, "n1");
  std::string id = before.d.createSession("/in/c.bin");
  before.d.notifier.hold = true;
  ASSERT_TRUE(before.d.start(finalRequest("/in/c.bin", id, "order", "tx-c")));
  ASSERT_EQ(store.find("tx-c")->state, FarmTxRecord::State::Began);
  before.d.notifier.forget();  // killed after the copy (below, the inspector finds it done)
  Node after(&store, "n1");
  after.d.restartFrom(before.d);
  struct CopiedInspector final : RecoveryInspector {
    RecoveryDecision inspect(const RecoveryItem& item) override {
      RecoveryDecision d;
      if (item.replyPath != nullptr) d.action = RecoveryAction::Committed;
      return d;
    }
  } inspector;
  after.d.engine.reconcile(inspector);
  Node other(&store, "n2");
  std::string o = other.d.createSession("/in/c.bin");
  expectRetryLater(finalFragment(other.d, "/in/c.bin", o, "order", "tx-c"));
  // The next sweep records it: a claim finds the earlier life's "began", takes it over, ends it.
  after.d.engine.sweep();
  after.d.settle();
  ASSERT_NE(store.find("tx-c"), nullptr);
  EXPECT_EQ(store.find("tx-c")->state, FarmTxRecord::State::Ended);
  EXPECT_EQ(after.farm.count("claim"), 1u);
  EXPECT_EQ(after.farm.count("takeOver"), 1u);
  EXPECT_EQ(after.farm.count("end"), 1u);
  after.d.engine.sweep();  // nothing left to record
  after.d.settle();
  EXPECT_EQ(after.farm.count("claim"), 1u);
  Reply ok = finalFragment(after.d, "/in/c.bin", id, "order", "tx-c");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(after.d.notifier.posts.size(), 0u);
  Reply replay = finalFragment(other.d, "/in/c.bin", o, "order", "tx-c");
  EXPECT_EQ(replay.status, 200) << replay.raw;
  EXPECT_EQ(other.d.notifier.posts.size(), 0u);
  EXPECT_EQ(before.d.notifier.posts.size(), 1u);  // the one POST, before the crash
}

TEST(FarmHandOff, CreateSessionRecordsItsOwnerBeforeTheAck) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  std::vector<size_t> sessionsWhenDone;
  n.farm.observer = [&](const std::string& what) {
    if (what.rfind("done recordSession", 0) == 0) sessionsWhenDone.push_back(d.engine.sessionCount());
  };
  std::string id = d.createSession("/in/m.bin");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(store.sessions[id], "n1");
  EXPECT_EQ(sessionsWhenDone, std::vector<size_t>{0});  // recorded before the session was acked
  EXPECT_EQ(n.farm.calls, std::vector<std::string>{"recordSession " + id});
}

TEST(FarmHandOff, CreateSessionIsUndoneWhenTheFarmCannotRecordItsOwner) {
  FakeFarmStore store;
  Node n(&store, "n1");
  EngineDriver& d = n.d;
  n.farm.unavailableNext = 1;
  Reply r = d.send(bitsRequest("/in/n.bin", "Create-Session",
                               {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), kBusyCode);
  EXPECT_EQ(r.get("Retry-After"), "5");
  EXPECT_FALSE(r.has("BITS-Session-Id"));
  EXPECT_EQ(d.engine.sessionCount(), 0u);
  EXPECT_EQ(settledCount(d, RecordType::SessionCreated), 1);
  EXPECT_EQ(settledCount(d, RecordType::Closed), 1);  // journaled as undone
  EXPECT_EQ(d.storage.files().size(), 1u) << "only the journal: the partial file went";
  EXPECT_TRUE(store.sessions.empty());
  EXPECT_EQ(d.engine.stats().farmUnavailable, 1u);
  // Not live: refused before anything is created or asked.
  n.farm.setLive(false);
  Reply r2 = d.send(bitsRequest("/in/n.bin", "Create-Session",
                                {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  EXPECT_EQ(r2.status, 503) << r2.raw;
  EXPECT_EQ(r2.get("Retry-After"), "5");
  EXPECT_EQ(n.farm.count("recordSession"), 1u);
  EXPECT_EQ(settledCount(d, RecordType::SessionCreated), 1);
  n.farm.setLive(true);
  EXPECT_FALSE(d.createSession("/in/n.bin").empty());
  EXPECT_EQ(d.engine.sessionCount(), 1u);
}

TEST(FarmHandOff, ASingleNodeStillNamesItsHostIdInReplyUrls) {
  Settings s = nodeSettings("node-7");
  s.farmEtcd.clear();
  EngineDriver d(s);
  d.storage.addDir("/root/in");
  std::string id = d.createSession("/in/o.bin");
  Reply ack = finalFragment(d, "/in/o.bin", id, "x", "tx-o");
  EXPECT_EQ(ack.get("BITS-Reply-URL"), replyUrlFor("node-7", id));
}

}  // namespace
}  // namespace bitsd::testing
