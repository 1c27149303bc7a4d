// UvFarm (platform/uv_farm.h) against a real 3-member etcd cluster (tests/support/etcd_cluster.h) on
// a real loop: claims raced by two nodes, ends, takeovers fenced by revision, session owners, a lost
// lease, the leader killed, quorum lost, and start-up before etcd is up.
#include "platform/uv_farm.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>

#include "core/journal_format.h"
#include "core/log.h"
#include "platform/tls.h"
#include "tests/platform/scratch_dir.h"
#include "tests/support/etcd_cluster.h"
#include "tools/gencert.h"

namespace bitsd::platform {
namespace {

using testing::EtcdCluster;
using Clock = std::chrono::steady_clock;

int64_t msSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

struct Waiter final : FarmCallback {
  int calls = 0;
  bool insideCall = false;  // a completion from inside the call that started it
  bool starting = false;
  void onFarmDone(FarmOp&) override {
    ++calls;
    if (starting) insideCall = true;
  }
};

class FarmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdCluster::installed()) GTEST_SKIP() << EtcdCluster::kSkipReason;
    uv_loop_init(&loop_);
  }
  void TearDown() override {
    if (!EtcdCluster::installed()) return;
    while (!farms_.empty()) stopFarm(farms_.back().get(), true);
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle was left open";
  }

  // Runs the loop until `pred` holds or `ms` pass; returns pred().
  bool runUntil(const std::function<bool()>& pred, int ms) {
    auto t0 = Clock::now();
    uv_timer_t t;
    uv_timer_init(&loop_, &t);
    uv_timer_start(&t, [](uv_timer_t*) {}, 10, 10);
    while (!pred() && msSince(t0) < ms) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return pred();
  }

  UvFarm* makeFarm(const std::string& node, const std::vector<std::string>& urls, uint64_t leaseSeconds = 10,
                   uint64_t callTimeoutMs = 3000) {
    UvFarmConfig c;
    c.callTimeoutMs = callTimeoutMs;
    c.endpoints = urls;
    c.farmName = farmName_;
    c.node = node;
    c.peerUrl = "http://" + node + ":8080";
    c.leaseSeconds = leaseSeconds;
    c.retentionSeconds = 60;
    std::string err;
    std::unique_ptr<UvFarm> f = UvFarm::create(&loop_, c, &err);
    EXPECT_TRUE(f) << err;
    if (!f) return nullptr;
    f->start();
    farms_.push_back(std::move(f));
    return farms_.back().get();
  }

  UvFarm* liveFarm(const std::string& node, uint64_t leaseSeconds = 10) {
    UvFarm* f = makeFarm(node, etcd_.clientUrls(), leaseSeconds);
    EXPECT_TRUE(f != nullptr && runUntil([&] { return f->live(); }, 10000)) << node << " never became live";
    return f;
  }

  void stopFarm(UvFarm* f, bool revoke) {
    bool done = false;
    f->stop([](void* a) { *static_cast<bool*>(a) = true; }, &done, revoke);
    EXPECT_TRUE(runUntil([&] { return done; }, 5000)) << "stop() did not finish";
    for (size_t i = 0; i < farms_.size(); ++i) {
      if (farms_[i].get() == f) {
        if (!done) farms_[i].release();  // its handles may still refer to it
        farms_.erase(farms_.begin() + static_cast<ptrdiff_t>(i));
        break;
      }
    }
  }

  // Starts an operation and runs the loop until it completes (at most `ms`).
  FarmOp& run(const std::function<void(FarmOp&)>& start, int ms = 8000) {
    ops_.push_back(std::make_unique<FarmOp>());
    waiters_.push_back(std::make_unique<Waiter>());
    FarmOp& op = *ops_.back();
    Waiter& w = *waiters_.back();
    op.callback = &w;
    w.starting = true;
    start(op);
    w.starting = false;
    EXPECT_TRUE(runUntil([&] { return w.calls > 0; }, ms)) << "the operation never completed";
    EXPECT_FALSE(w.insideCall) << "completed from inside the call";
    EXPECT_EQ(w.calls, 1);
    EXPECT_FALSE(op.busy);
    return op;
  }

  bool startCluster() {
    if (!etcd_.start()) {
      ADD_FAILURE() << etcd_.error();
      return false;
    }
    return true;
  }

  static SessionId sid(uint8_t b) {
    SessionId s;
    s.bytes.fill(b);
    return s;
  }

  uv_loop_t loop_;
  EtcdCluster etcd_;
  std::string farmName_ = "test";
  std::vector<std::unique_ptr<UvFarm>> farms_;
  std::vector<std::unique_ptr<FarmOp>> ops_;
  std::vector<std::unique_ptr<Waiter>> waiters_;
};

std::vector<std::string> gLines;  // log lines, while a test captures them

const char kTokA[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const char kTokB[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

// Two nodes claim the same id at once: exactly one wins, the other sees the winner's live claim; a
// retried claim with the winner's token counts as won; after end() a claim finds "ended" with the
// status and the reply inline.
TEST_F(FarmTest, ClaimRaceOneWinnerThenEndedWithInlineReply) {
  ASSERT_TRUE(startCluster());
  UvFarm* a = liveFarm("a");
  UvFarm* b = liveFarm("b");
  ASSERT_TRUE(a && b);
  std::string txid = "tx \x01\xff-race";  // any bytes (the key is base64 on the wire)

  FarmOp opA, opB;
  Waiter wA, wB;
  opA.callback = &wA;
  opB.callback = &wB;
  a->claim(opA, txid, kTokA, sid(1));
  b->claim(opB, txid, kTokB, sid(2));
  EXPECT_EQ(wA.calls + wB.calls, 0) << "completed inside claim()";
  ASSERT_TRUE(runUntil([&] { return wA.calls == 1 && wB.calls == 1; }, 8000));
  ASSERT_EQ(opA.outcome, FarmOutcome::Done);
  ASSERT_EQ(opB.outcome, FarmOutcome::Done);
  ASSERT_NE(opA.won, opB.won) << "exactly one claim wins";
  FarmOp& win = opA.won ? opA : opB;
  FarmOp& lose = opA.won ? opB : opA;
  UvFarm* winner = opA.won ? a : b;
  UvFarm* loser = opA.won ? b : a;
  const char* winTok = opA.won ? kTokA : kTokB;
  EXPECT_GT(win.revision, 0);
  EXPECT_EQ(lose.record.state, FarmTxRecord::State::Began);
  EXPECT_EQ(lose.record.node, std::string(winner->node()));
  EXPECT_EQ(lose.record.token, winTok);
  EXPECT_TRUE(lose.record.nodeLive);
  EXPECT_EQ(lose.record.modRevision, win.revision);

  // The winner's claim again with its token (an answer lost to a timeout): won, same revision.
  FarmOp& again = run([&](FarmOp& op) { winner->claim(op, txid, winTok, sid(1)); });
  ASSERT_EQ(again.outcome, FarmOutcome::Done);
  EXPECT_TRUE(again.won);
  EXPECT_EQ(again.revision, win.revision);
  // ... and with another token: not won.
  FarmOp& other = run([&](FarmOp& op) { winner->claim(op, txid, "cccccccccccccccccccccccccccccccc", sid(1)); });
  EXPECT_FALSE(other.won);

  testing::ScratchDir dir;
  std::string replyPath = dir.path() + "/reply";
  std::string replyBytes = "the application's reply\n";
  std::ofstream(replyPath, std::ios::binary) << replyBytes;
  FarmEnded e;
  e.session = sid(1);
  e.status = 200;
  e.flags = kDeliveryHasReplyFile;
  e.replyBytes = replyBytes.size();
  e.replySession = sid(1);
  e.replyFile = replyPath.c_str();
  FarmOp& ended = run([&](FarmOp& op) { winner->end(op, txid, win.revision, e); });
  ASSERT_EQ(ended.outcome, FarmOutcome::Done);
  EXPECT_TRUE(ended.won);
  EXPECT_GT(ended.revision, win.revision);

  FarmOp& after = run([&](FarmOp& op) { loser->claim(op, txid, kTokB, sid(2)); });
  ASSERT_EQ(after.outcome, FarmOutcome::Done);
  EXPECT_FALSE(after.won);
  EXPECT_EQ(after.record.state, FarmTxRecord::State::Ended);
  EXPECT_EQ(after.record.status, 200);
  EXPECT_EQ(after.record.flags, kDeliveryHasReplyFile);
  EXPECT_EQ(after.record.replySession, sid(1));
  EXPECT_TRUE(after.record.replyInline);
  EXPECT_EQ(after.record.reply, replyBytes);
  EXPECT_EQ(after.record.modRevision, ended.revision);

  // A second end with the old revision: fenced out, sees the ended record.
  FarmOp& twice = run([&](FarmOp& op) { winner->end(op, txid, win.revision, e); });
  EXPECT_FALSE(twice.won);
  EXPECT_EQ(twice.record.state, FarmTxRecord::State::Ended);
}

// A crashes while holding a claim (its lease is left to expire): B sees it not live, takes over;
// A, back, cannot end with its old revision and sees B's claim.
TEST_F(FarmTest, TakeOverAfterTheClaimersLeaseExpires) {
  ASSERT_TRUE(startCluster());
  UvFarm* a = liveFarm("a", 2);
  UvFarm* b = liveFarm("b");
  ASSERT_TRUE(a && b);
  FarmOp& claimed = run([&](FarmOp& op) { a->claim(op, "tx-take", kTokA, sid(1)); });
  ASSERT_TRUE(claimed.won);
  auto t0 = Clock::now();
  stopFarm(a, /*revoke=*/false);  // as SIGKILL would: the lease lapses on its own

  FarmOp& busy = run([&](FarmOp& op) { b->claim(op, "tx-take", kTokB, sid(2)); });
  ASSERT_EQ(busy.outcome, FarmOutcome::Done);
  EXPECT_FALSE(busy.won);
  if (msSince(t0) < 1500) {
    EXPECT_TRUE(busy.record.nodeLive) << "A's lease cannot have lapsed yet";
  }
  int64_t rev = 0;
  ASSERT_TRUE(runUntil(
      [&] {
        FarmOp& seen = run([&](FarmOp& op) { b->claim(op, "tx-take", kTokB, sid(2)); });
        rev = seen.record.modRevision;
        return seen.outcome == FarmOutcome::Done && !seen.record.nodeLive;
      },
      8000))
      << "A's node key never went away";
  EXPECT_EQ(rev, claimed.revision);
  FarmOp& taken = run([&](FarmOp& op) { b->takeOver(op, "tx-take", kTokB, sid(2), rev); });
  ASSERT_EQ(taken.outcome, FarmOutcome::Done);
  ASSERT_TRUE(taken.won);
  EXPECT_GT(taken.revision, rev);
  // A second takeover at the same revision loses.
  FarmOp& late = run([&](FarmOp& op) { b->takeOver(op, "tx-take", "dddddddddddddddddddddddddddddddd", sid(2), rev); });
  EXPECT_FALSE(late.won);

  UvFarm* a2 = liveFarm("a");  // A's next life
  ASSERT_TRUE(a2);
  FarmEnded e;
  e.session = sid(1);
  e.status = 200;
  FarmOp& fenced = run([&](FarmOp& op) { a2->end(op, "tx-take", claimed.revision, e); });
  ASSERT_EQ(fenced.outcome, FarmOutcome::Done);
  EXPECT_FALSE(fenced.won);
  EXPECT_EQ(fenced.record.state, FarmTxRecord::State::Began);
  EXPECT_EQ(fenced.record.node, "b");
  EXPECT_EQ(fenced.record.token, kTokB);
  EXPECT_TRUE(fenced.record.nodeLive);
}

TEST_F(FarmTest, SessionOwnersAndTheirLiveness) {
  ASSERT_TRUE(startCluster());
  UvFarm* a = liveFarm("a");
  UvFarm* b = liveFarm("b");
  ASSERT_TRUE(a && b);
  FarmOp& rec = run([&](FarmOp& op) { a->recordSession(op, sid(9)); });
  ASSERT_EQ(rec.outcome, FarmOutcome::Done);

  FarmOp& seen = run([&](FarmOp& op) { b->lookupSession(op, sid(9)); });
  ASSERT_EQ(seen.outcome, FarmOutcome::Done);
  EXPECT_TRUE(seen.owner.found);
  EXPECT_FALSE(seen.owner.self);
  EXPECT_TRUE(seen.owner.live);
  EXPECT_EQ(seen.owner.node, "a");
  EXPECT_EQ(seen.owner.peerUrl, "http://a:8080");
  FarmOp& cached = run([&](FarmOp& op) { b->lookupSession(op, sid(9)); });  // from the cache: still later
  EXPECT_TRUE(cached.owner.found && cached.owner.live);
  FarmOp& own = run([&](FarmOp& op) { a->lookupSession(op, sid(9)); });
  EXPECT_TRUE(own.owner.found && own.owner.self && own.owner.live);
  FarmOp& unknown = run([&](FarmOp& op) { b->lookupSession(op, sid(10)); });
  ASSERT_EQ(unknown.outcome, FarmOutcome::Done);
  EXPECT_FALSE(unknown.owner.found);

  stopFarm(a, /*revoke=*/true);  // others see it gone at once (within the node list's second)
  ASSERT_TRUE(runUntil(
      [&] {
        FarmOp& now = run([&](FarmOp& op) { b->lookupSession(op, sid(9)); });
        return now.outcome == FarmOutcome::Done && now.owner.found && !now.owner.live;
      },
      4000))
      << "the revoked owner still looks live";
}

// etcd forgets the node's lease (revoked behind its back): the node takes a new one and writes its
// node key again.
TEST_F(FarmTest, LostLeaseIsReplaced) {
  ASSERT_TRUE(startCluster());
  UvFarm* a = liveFarm("a", 3);
  UvFarm* b = liveFarm("b");
  ASSERT_TRUE(a && b);
  int64_t first = a->leaseId();
  std::string body = "{\"ID\":\"" + std::to_string(first) + "\"}";
  ASSERT_NE(etcd_.request(0, "/v3/lease/revoke", body.c_str()), "");
  ASSERT_TRUE(runUntil([&] { return a->leaseId() != first && a->live(); }, 6000)) << "no new lease";
  FarmOp& rec = run([&](FarmOp& op) { a->recordSession(op, sid(3)); });
  ASSERT_EQ(rec.outcome, FarmOutcome::Done);
  ASSERT_TRUE(runUntil(
      [&] {
        FarmOp& seen = run([&](FarmOp& op) { b->lookupSession(op, sid(3)); });
        return seen.owner.found && seen.owner.live;
      },
      3000))
      << "the node key was not written again";
}

// SIGKILL of etcd's leader: operations still succeed, on the members that remain.
TEST_F(FarmTest, LeaderKilledOperationsGoOn) {
  ASSERT_TRUE(startCluster());
  int leader = etcd_.waitLeader(5000);
  ASSERT_GE(leader, 0);
  // The leader first in the node's list: its kept-alive connection goes there, and the calls after
  // the kill must fail over.
  std::vector<std::string> urls = etcd_.clientUrls();
  std::rotate(urls.begin(), urls.begin() + leader, urls.end());
  UvFarm* a = makeFarm("a", urls);
  ASSERT_TRUE(a && runUntil([&] { return a->live(); }, 10000));
  FarmOp& warm = run([&](FarmOp& op) { a->claim(op, "tx-warm", kTokA, sid(1)); });
  ASSERT_TRUE(warm.won);
  etcd_.kill(leader);
  for (int i = 0; i < 3; ++i) {
    std::string txid = "tx-after-kill-" + std::to_string(i);
    FarmOp& op = run([&](FarmOp& o) { a->claim(o, txid, kTokA, sid(1)); });
    ASSERT_EQ(op.outcome, FarmOutcome::Done) << "claim " << i << " after the leader died";
    EXPECT_TRUE(op.won);
  }
  EXPECT_TRUE(a->live());
  // The killed member rejoins on its data dir.
  ASSERT_TRUE(etcd_.startMember(leader));
  EXPECT_TRUE(etcd_.waitHealthy(leader, 10000)) << "the old leader did not rejoin";
}

// Two of three members stopped: no quorum; a claim ends Unavailable within its deadline, and the
// node stops being live once its lease can no longer be confirmed.
TEST_F(FarmTest, NoQuorumIsUnavailableWithinTheDeadline) {
  ASSERT_TRUE(startCluster());
  UvFarm* a = liveFarm("a", 2);
  ASSERT_TRUE(a);
  etcd_.stop(1);
  etcd_.stop(2);
  // Still live for up to 2 s: the claim goes to etcd and times out there.
  auto t0 = Clock::now();
  FarmOp& op = run([&](FarmOp& o) { a->claim(o, "tx-noquorum", kTokA, sid(1)); });
  int64_t took = msSince(t0);
  EXPECT_EQ(op.outcome, FarmOutcome::Unavailable);
  EXPECT_FALSE(op.won);
  EXPECT_LE(took, 3000 + 1500) << "the 3 s deadline was not kept";
  ASSERT_TRUE(runUntil([&] { return !a->live(); }, 4000)) << "still live without quorum";
  FarmOp& refused = run([&](FarmOp& o) { a->claim(o, "tx-noquorum-2", kTokA, sid(1)); });
  EXPECT_EQ(refused.outcome, FarmOutcome::Unavailable);
}

// Start-up while etcd is down: not live (the loop keeps running); once etcd is up, live.
TEST_F(FarmTest, StartsBeforeEtcdAndBecomesLive) {
  gLines.clear();
  setLogSink([](LogLevel, const char* line) { gLines.emplace_back(line); });
  // Calls of 500 ms: several grants fail before etcd is up (one line is logged for all of them).
  UvFarm* a = makeFarm("a", etcd_.clientUrls(), 3, 500);
  ASSERT_TRUE(a);
  EXPECT_FALSE(runUntil([&] { return a->live(); }, 1500));
  FarmOp& op = run([&](FarmOp& o) { a->claim(o, "tx-early", kTokA, sid(1)); });
  EXPECT_EQ(op.outcome, FarmOutcome::Unavailable);
  ASSERT_TRUE(startCluster());
  EXPECT_TRUE(runUntil([&] { return a->live(); }, 10000)) << "never became live after etcd came up";
  setLogSink(nullptr);
  // One line while etcd is away (however many retries), one when the node is live.
  int unreachable = 0, live = 0;
  for (const std::string& l : gLines) {
    if (l.find("unreachable") != std::string::npos && l.find("serving Ping meanwhile") != std::string::npos) ++unreachable;
    if (l.find("node a live") != std::string::npos) ++live;
  }
  EXPECT_EQ(unreachable, 1);
  EXPECT_EQ(live, 1);
}

// https to etcd: the members' certificates verified against the CA file; a CA that did not sign
// them leaves the node not live, and says why.
TEST_F(FarmTest, HttpsVerifiedAgainstTheCaFile) {
  if (!kTlsBuilt) GTEST_SKIP() << "built without TLS (BITSD_TLS=OFF)";
  testing::ScratchDir certs;
  std::vector<std::string> crt, key;
  std::string ca;
  for (int i = 0; i < 3; ++i) {
    tools::GenCertOptions g;
    g.cn = "127.0.0." + std::to_string(i + 1);
    g.certPath = certs.path() + "/m" + std::to_string(i) + ".crt";
    g.keyPath = certs.path() + "/m" + std::to_string(i) + ".key";
    std::string err;
    ASSERT_TRUE(tools::genCert(g, &err)) << err;
    crt.push_back(g.certPath);
    key.push_back(g.keyPath);
    std::ifstream in(g.certPath);
    ca += std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(certs.path() + "/ca.pem") << ca;
  tools::GenCertOptions other;
  other.cn = "127.0.0.1";
  other.certPath = certs.path() + "/other.crt";
  other.keyPath = certs.path() + "/other.key";
  std::string err;
  ASSERT_TRUE(tools::genCert(other, &err)) << err;
  etcd_.useTls(crt, key);
  ASSERT_TRUE(startCluster());

  UvFarmConfig c;
  c.endpoints = etcd_.clientUrls();
  c.farmName = farmName_;
  c.node = "a";
  c.peerUrl = "https://a:8443";
  c.caFile = certs.path() + "/ca.pem";
  std::unique_ptr<UvFarm> a = UvFarm::create(&loop_, c, &err);
  ASSERT_TRUE(a) << err;
  a->start();
  farms_.push_back(std::move(a));
  UvFarm* fa = farms_.back().get();
  ASSERT_TRUE(runUntil([&] { return fa->live(); }, 10000)) << "no lease over https";
  FarmOp& op = run([&](FarmOp& o) { fa->claim(o, "tx-tls", kTokA, sid(1)); });
  EXPECT_EQ(op.outcome, FarmOutcome::Done);
  EXPECT_TRUE(op.won);

  gLines.clear();
  setLogSink([](LogLevel, const char* line) { gLines.emplace_back(line); });
  c.node = "b";
  c.caFile = other.certPath;  // not the members' CA
  c.callTimeoutMs = 500;
  std::unique_ptr<UvFarm> b = UvFarm::create(&loop_, c, &err);
  ASSERT_TRUE(b) << err;
  b->start();
  farms_.push_back(std::move(b));
  UvFarm* fb = farms_.back().get();
  EXPECT_FALSE(runUntil([&] { return fb->live(); }, 1500)) << "live through an untrusted certificate";
  setLogSink(nullptr);
  bool said = false;
  for (const std::string& l : gLines) said = said || l.find("not trusted") != std::string::npos;
  EXPECT_TRUE(said) << "no line says the certificate is not trusted";

  c.certFile = certs.path() + "/missing.crt";
  c.keyFile = certs.path() + "/missing.key";
  EXPECT_FALSE(UvFarm::create(&loop_, c, &err));
  EXPECT_NE(err.find("missing.crt"), std::string::npos) << err;
}

}  // namespace
}  // namespace bitsd::platform
