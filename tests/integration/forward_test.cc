// Farm mode, "any node takes any packet" (issue 17 item 3), with two real servers in this process:
// node A (the owner of the sessions) and node B (the node the client happens to reach), each a
// UvServer + UploadEngine + Journal + UvStorage with its own root and state, on one libuv loop in a
// thread of the test, on 127.0.0.1 with ports picked by the kernel. The test thread is the client
// (blocking sockets). They share a test double of the farm's session lookup: a map from session id
// to owner node and peer URL (the etcd-backed Farm comes with the lead's integration tests), which
// completes on the loop, never inside the call.
//
// What can fail here: B answering BG_E_SESSION_NOT_FOUND instead of forwarding, a forwarded answer
// that differs from what A answers directly, bytes lost or reordered on the way (the file on A is
// compared byte for byte), B buffering a whole body (its heap is sampled during a 64 MiB fragment),
// a dead or silent owner not turned into 503 + Retry-After, a reply download not streamed through,
// pools not given back (slots and buffers are checked after every scenario).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/farm.h"
#include "core/journal.h"
#include "core/upload_engine.h"
#include "platform/recovery.h"
#include "platform/sha256.h"
#include "platform/system.h"
#include "platform/tls.h"
#include "platform/uv_notifier.h"
#include "platform/uv_server.h"
#include "platform/uv_storage.h"
#include "tests/integration/bitsd_process.h"
#include "tests/integration/test_app.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

// Who owns which session: written by the test thread, read on the loop.
struct Owners {
  std::mutex mu;
  std::map<std::string, std::pair<std::string, std::string>> byId;  // id text -> (node, peer URL)
  std::atomic<int> lookups{0};
  void set(const std::string& id, const std::string& node, const std::string& url) {
    std::lock_guard<std::mutex> g(mu);
    byId[id] = {node, url};
  }
};

// The Farm port's lookup from the map; recordSession, claims and ends succeed (the test fills the
// map itself). Completions run from a zero-delay timer on the loop.
class MapFarm final : public Farm {
 public:
  MapFarm(uv_loop_t* loop, Owners* owners, std::string node) : owners_(owners), node_(std::move(node)) {
    uv_timer_init(loop, &timer_);
    timer_.data = this;
  }
  void close() { uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr); }
  bool live() const override { return true; }
  std::string_view node() const override { return node_; }
  void recordSession(FarmOp& op, const SessionId&) override {
    op.resetResult();
    later(op);
    op.outcome = FarmOutcome::Done;
  }
  // Every claim and end is won: these tests are about forwarding, not about the hand-off.
  void claim(FarmOp& op, std::string_view, std::string_view, const SessionId&) override { won(op); }
  void takeOver(FarmOp& op, std::string_view, std::string_view, const SessionId&, int64_t) override { won(op); }
  void end(FarmOp& op, std::string_view, int64_t, const FarmEnded&) override { won(op); }
  void lookupSession(FarmOp& op, const SessionId& id) override {
    ++owners_->lookups;
    op.resetResult();
    char text[kSessionIdTextBytes];
    formatSessionId(id, text);
    {
      std::lock_guard<std::mutex> g(owners_->mu);
      auto it = owners_->byId.find(std::string(text, sizeof text));
      if (it != owners_->byId.end()) {
        op.owner.found = true;
        op.owner.node = it->second.first;
        op.owner.self = it->second.first == node_;
        op.owner.live = true;
        op.owner.peerUrl = it->second.second;
      }
    }
    later(op);
    op.outcome = FarmOutcome::Done;
  }

 private:
  void won(FarmOp& op) {
    op.resetResult();
    later(op);
    op.outcome = FarmOutcome::Done;
    op.won = true;
    op.revision = 1;
  }
  void later(FarmOp& op) {
    op.outcome = FarmOutcome::Unavailable;
    queue_.push_back(&op);
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<MapFarm*>(t->data)->drain(); }, 0, 0);
  }
  void drain() {
    while (!queue_.empty()) {
      FarmOp* op = queue_.front();
      queue_.pop_front();
      op->callback->onFarmDone(*op);
    }
  }
  Owners* owners_;
  std::string node_;
  uv_timer_t timer_;
  std::deque<FarmOp*> queue_;
};

// One node: the parts bitsd_main wires, on the shared loop.
struct Node {
  Node(uv_loop_t* loop, const std::string& dir, const std::string& name, Owners* owners, Settings s,
       const std::string& notifyUrl = "", const std::string& certBase = "")
      : farm(loop, owners, name) {
    s.listen = "127.0.0.1:0";
    if (!certBase.empty()) {  // https
      s.tlsCert = certBase + ".crt";
      s.tlsKey = certBase + ".key";
    }
    s.root = dir + "/root";
    s.state = dir + "/state";
    if (!notifyUrl.empty()) {
      s.notifyType = "value";
      s.notifyUrl = notifyUrl;
    }
    std::string rootReal;
    Outcome prepared = platform::prepareDirectories(s, &rootReal);
    EXPECT_TRUE(prepared.isOk()) << prepared.message();
    EXPECT_TRUE(random.init().isOk());
    storage = std::make_unique<platform::UvStorage>(loop, sha);
    scheduler = std::make_unique<platform::UvFlushScheduler>(loop);
    journal = std::make_unique<Journal>(*storage, *scheduler, random);
    scheduler->setJournal(journal.get());
    engine = std::make_unique<UploadEngine>(*storage, clock, random, sha, *journal);
    if (!notifyUrl.empty()) {
      notifier = std::make_unique<platform::UvNotifier>(loop, s.maxNotifications, *storage);
      engine->setNotifier(notifier.get());
    }
    engine->setFarm(&farm);
    Settings es = s;
    es.root = rootReal;
    EXPECT_TRUE(engine->init(es).isOk());
    EXPECT_TRUE(journal->init(s.journalBufferBytes, 64, s.journalMaxBytes, s.state + "/journal").isOk());
    platform::RecoveryReport rep;
    Outcome recovered = platform::recoverState(s, *engine, *journal, sha, random, &rep);
    EXPECT_TRUE(recovered.isOk()) << recovered.message();
    server = std::make_unique<platform::UvServer>(loop, s, *engine);
    server->setJournal(journal.get(), scheduler.get());
    if (notifier) server->setNotifier(notifier.get());
    std::string url;
    Outcome started = server->start(&url);
    EXPECT_TRUE(started.isOk()) << started.message();
    port = std::atoi(url.c_str() + url.rfind(':') + 1);
    peerUrl = (certBase.empty() ? "http://127.0.0.1:" : "https://127.0.0.1:") + std::to_string(port);
    root = rootReal;
    settings = s;
  }

  MapFarm farm;
  platform::DrbgRandom random;
  platform::UvClock clock;
  platform::UploadSha256 sha;
  std::unique_ptr<platform::UvStorage> storage;
  std::unique_ptr<platform::UvFlushScheduler> scheduler;
  std::unique_ptr<Journal> journal;
  std::unique_ptr<UploadEngine> engine;
  std::unique_ptr<platform::UvNotifier> notifier;
  std::unique_ptr<platform::UvServer> server;
  Settings settings;
  int port = 0;
  std::string peerUrl;
  std::string root;
};

// Two nodes on one loop thread; A owns the sessions the test registers.
class Farm2 {
 public:
  // `aCertBase`: A serves https with <aCertBase>.crt and .key.
  explicit Farm2(Settings s = Settings(), const std::string& notifyUrl = "", const std::string& aCertBase = "",
                 std::shared_ptr<platform::TlsContext> bPeerTls = nullptr) {
    uv_loop_init(&loop_);
    a = std::make_unique<Node>(&loop_, dirA_.path(), "A", &owners, s, notifyUrl, aCertBase);
    b = std::make_unique<Node>(&loop_, dirB_.path(), "B", &owners, s, notifyUrl);
    b->server->setFarmPeerTls(std::move(bPeerTls));
    uv_async_init(&loop_, &stop_, [](uv_async_t* h) {
      Farm2* f = static_cast<Farm2*>(h->data);
      for (Node* n : {f->a.get(), f->b.get()}) {
        n->server->shutdown();
        n->farm.close();
      }
      uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    });
    stop_.data = this;
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
  }
  ~Farm2() {
    uv_async_send(&stop_);
    thread_.join();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle was left open";
  }
  // Pools back to idle on both nodes (read from the test thread once the loop is quiet: the values
  // are plain integers the loop thread writes; the wait tolerates a stale read).
  bool idle() {
    return waitUntil([&] {
      return a->server->freeRequestSlots() == a->settings.requestSlots && a->server->buffersInUse() == 0 &&
             b->server->freeRequestSlots() == b->settings.requestSlots && b->server->buffersInUse() == 0;
    });
  }

  Owners owners;
  std::unique_ptr<Node> a, b;

 private:
  TempDir dirA_, dirB_;
  uv_loop_t loop_;
  uv_async_t stop_;
  std::thread thread_;
};

std::string create(Client& c, const std::string& path) { return createSession(c, path); }

TEST(FarmForward, FragmentsThroughAnotherNodeCompleteTheUploadOnTheOwnerWithTheSameAnswers) {
  Farm2 f;
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  ASSERT_TRUE(toB.connect(f.b->port));
  // Two sessions on A: one uploaded to A directly, one through B, with the same packets.
  std::string direct = create(toA, "/direct.bin");
  std::string viaB = create(toA, "/via.bin");
  ASSERT_FALSE(direct.empty());
  ASSERT_FALSE(viaB.empty());
  f.owners.set(direct, "A", f.a->peerUrl);
  f.owners.set(viaB, "A", f.a->peerUrl);
  const std::string data = randomBytes(300000, 17);
  struct Step {
    uint64_t first, len;
  };
  // In order, a repeat (overlap), a gap (416), then the rest: each answer through B must be A's.
  const Step steps[] = {{0, 100000}, {50000, 100000}, {250000, 50000}, {150000, 100000}, {250000, 50000}};
  for (const Step& st : steps) {
    std::string bytes = data.substr(st.first, st.len);
    Reply ra = toA.roundTrip(fragmentRequest("/direct.bin", direct, st.first, bytes, data.size()));
    Reply rb = toB.roundTrip(fragmentRequest("/via.bin", viaB, st.first, bytes, data.size()));
    ASSERT_NE(ra.status, 0);
    EXPECT_EQ(rb.status, ra.status) << rb.raw;
    EXPECT_EQ(rb.get("BITS-Received-Content-Range"), ra.get("BITS-Received-Content-Range")) << rb.raw;
    EXPECT_EQ(rb.get("BITS-Error-Code"), ra.get("BITS-Error-Code")) << rb.raw;
    EXPECT_EQ(rb.get("BITS-Session-Id"), viaB);
  }
  std::string got;
  ASSERT_TRUE(readFile(f.a->root + "/via.bin", &got));
  EXPECT_TRUE(got == data) << "the upload through B differs on A (" << got.size() << " bytes)";
  EXPECT_FALSE(fileExists(f.b->root + "/via.bin"));
  // Close-Session through B closes A's session.
  Reply ca = toA.roundTrip(bitsRequest("/direct.bin", "Close-Session", {{"BITS-Session-Id", direct}}));
  Reply cb = toB.roundTrip(bitsRequest("/via.bin", "Close-Session", {{"BITS-Session-Id", viaB}}));
  EXPECT_EQ(cb.status, ca.status) << cb.raw;
  EXPECT_EQ(cb.status, 200) << cb.raw;
  // The client's connection to B stayed open through all of it (keep-alive both ways), and B
  // forwarded every packet (5 fragments and the close) without a session of its own.
  EXPECT_EQ(toB.roundTrip(bitsRequest("/", "Ping")).status, 200);
  EXPECT_EQ(f.b->engine->stats().forwarded, 6u);
  EXPECT_EQ(f.b->server->stats().forwarded, 6u);
  EXPECT_EQ(f.b->server->stats().forwardFailures, 0u);
  EXPECT_EQ(f.b->engine->sessionCount(), 0u);
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
}

TEST(FarmForward, AnUnknownSessionIsNotFoundOnTheForwardingNode) {
  Farm2 f;
  Client toB;
  ASSERT_TRUE(toB.connect(f.b->port));
  Reply r = toB.roundTrip(fragmentRequest("/x.bin", "{00000000-0000-4000-8000-000000000001}", 0, "abc", 3));
  EXPECT_EQ(r.status, 500) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x8020001F") << r.raw;
  EXPECT_EQ(f.owners.lookups.load(), 1);
  EXPECT_EQ(f.b->server->stats().forwarded, 0u);
}

// `Expect: 100-continue` is answered by the forwarding node; the owner gets the body without it.
TEST(FarmForward, Expect100ContinueIsAnsweredByTheForwardingNode) {
  Farm2 f;
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  ASSERT_TRUE(toB.connect(f.b->port));
  std::string id = create(toA, "/e.bin");
  ASSERT_FALSE(id.empty());
  f.owners.set(id, "A", f.a->peerUrl);
  std::string req = bitsRequest("/e.bin", "Fragment",
                                {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-4/10"}, {"Expect", "100-continue"}},
                                "hello");
  size_t headEnd = req.find("\r\n\r\n") + 4;
  ASSERT_TRUE(toB.sendAll(req.substr(0, headEnd)));
  Reply cont;
  ASSERT_TRUE(toB.readResponse(&cont, 5000));
  EXPECT_EQ(cont.status, 100) << cont.raw;
  ASSERT_TRUE(toB.sendAll(req.substr(headEnd)));
  Reply r;
  ASSERT_TRUE(toB.readResponse(&r, 5000));
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "5") << r.raw;
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
}

// The owner answers before the body is all there (413: larger than its max-fragment-bytes; it
// answers at once and closes): B sends that answer and closes the client connection, with a write
// of the body to A possibly still in flight from B's read buffer. Nothing leaks.
TEST(FarmForward, AnOwnerThatAnswersBeforeTheBodyEndsClosesTheClientConnection) {
  Settings s;
  s.maxFragmentBytes = 65536;
  s.readBufferBytes = 16384;
  Farm2 f(s);
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  ASSERT_TRUE(toB.connect(f.b->port));
  std::string id = create(toA, "/big413.bin");
  ASSERT_FALSE(id.empty());
  f.owners.set(id, "A", f.a->peerUrl);
  Reply r = toB.roundTrip(fragmentRequest("/big413.bin", id, 0, randomBytes(4u << 20, 3), 4u << 20));
  EXPECT_EQ(r.status, 413) << r.raw;
  EXPECT_TRUE(toB.waitClosed(10000));
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
  EXPECT_EQ(f.b->server->stats().forwardFailures, 0u);
}

// The client goes away in the middle of a forwarded body: B drops its link to A, and both nodes
// give every slot and buffer back; A keeps the bytes it had acknowledged before (none here) and
// the session goes on through B afterwards.
TEST(FarmForward, AClientThatLeavesMidBodyLeavesNothingBehind) {
  Farm2 f;
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  std::string id = create(toA, "/cut.bin");
  ASSERT_FALSE(id.empty());
  f.owners.set(id, "A", f.a->peerUrl);
  const std::string data = randomBytes(1u << 20, 8);
  std::string req = fragmentRequest("/cut.bin", id, 0, data, data.size());
  ASSERT_TRUE(toB.connect(f.b->port));
  ASSERT_TRUE(toB.sendAll(req.substr(0, req.size() / 2)));
  EXPECT_TRUE(waitUntil([&] { return f.a->server->slotsInUse() > 0; }));  // the forward reached A
  toB.close();
  EXPECT_TRUE(f.idle());
  ASSERT_TRUE(toB.connect(f.b->port));
  Reply r = toB.roundTrip(req);
  EXPECT_EQ(r.status, 200) << r.raw;
  std::string got;
  ASSERT_TRUE(readFile(f.a->root + "/cut.bin", &got));
  EXPECT_TRUE(got == data);
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
}

// Pipelined requests on one connection to B: each is forwarded in turn and answered in order.
TEST(FarmForward, PipelinedRequestsAreForwardedInOrder) {
  Farm2 f;
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  std::string id = create(toA, "/pipe.bin");
  ASSERT_FALSE(id.empty());
  f.owners.set(id, "A", f.a->peerUrl);
  const std::string data = randomBytes(3000, 2);
  ASSERT_TRUE(toB.connect(f.b->port));
  ASSERT_TRUE(toB.sendAll(fragmentRequest("/pipe.bin", id, 0, data.substr(0, 1000), 3000) +
                          fragmentRequest("/pipe.bin", id, 1000, data.substr(1000, 1000), 3000) +
                          bitsRequest("/", "Ping") +
                          fragmentRequest("/pipe.bin", id, 2000, data.substr(2000), 3000)));
  const char* want[] = {"1000", "2000", nullptr, "3000"};
  for (const char* w : want) {
    Reply r;
    ASSERT_TRUE(toB.readResponse(&r, 10000));
    EXPECT_EQ(r.status, 200) << r.raw;
    if (w != nullptr) {
      EXPECT_EQ(r.get("BITS-Received-Content-Range"), w) << r.raw;
    }
  }
  std::string got;
  ASSERT_TRUE(readFile(f.a->root + "/pipe.bin", &got));
  EXPECT_TRUE(got == data);
  EXPECT_EQ(f.b->server->stats().forwarded, 3u);
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
}

// One 64 MiB fragment through B: B's heap must not grow with the body (it streams from its pool
// buffers). The heap of the whole process is sampled while the bytes flow; the client's copy of
// the request is made before the baseline.
TEST(FarmForward, A64MiBFragmentThroughAnotherNodeKeepsItsMemoryBounded) {
  Settings s;
  s.maxFragmentBytes = 64u << 20;
  Farm2 f(s);
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  ASSERT_TRUE(toB.connect(f.b->port));
  std::string id = create(toA, "/big.bin");
  ASSERT_FALSE(id.empty());
  f.owners.set(id, "A", f.a->peerUrl);
  const size_t kBytes = 64u << 20;
  std::string request = fragmentRequest("/big.bin", id, 0, randomBytes(kBytes, 9), kBytes);
  auto inUse = [] {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
  };
  const size_t base = inUse();
  std::atomic<bool> sampling{true};
  std::atomic<size_t> peak{base};
  std::thread sampler([&] {
    while (sampling) {
      size_t now = inUse();
      if (now > peak) peak = now;
      usleep(500);
    }
  });
  Reply r = toB.roundTrip(request, 60000);
  sampling = false;
  sampler.join();
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), std::to_string(kBytes)) << r.raw;
  // Links, a ResponseParser's head buffer, libuv's requests: well under one MiB. A whole body
  // buffered anywhere would be 64 MiB.
  EXPECT_LT(peak - base, size_t{8} << 20) << "heap grew by " << (peak - base) << " bytes during the upload";
  std::string got;
  ASSERT_TRUE(readFile(f.a->root + "/big.bin", &got));
  EXPECT_EQ(got.size(), kBytes);
  EXPECT_TRUE(got == request.substr(request.size() - kBytes));
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
}

// A port nothing listens on: the connection is refused.
int deadPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(FarmForward, AnOwnerThatCannotBeReachedGives503WithRetryAfter) {
  Farm2 f;
  Client toB;
  ASSERT_TRUE(toB.connect(f.b->port));
  const std::string id = "{00000000-0000-4000-8000-0000000000AA}";
  f.owners.set(id, "C", "http://127.0.0.1:" + std::to_string(deadPort()));
  Reply r = toB.roundTrip(fragmentRequest("/gone.bin", id, 0, randomBytes(1000, 1), 5000));
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x800700AA") << r.raw;
  EXPECT_TRUE(r.has("Retry-After")) << r.raw;
  EXPECT_TRUE(toB.waitClosed(5000));  // the rest of the body is not read
  EXPECT_EQ(f.b->server->stats().forwardFailures, 1u);
  // The node still serves, and forwards once the owner is back (here: A).
  f.owners.set(id, "C", f.a->peerUrl);  // A does not have it: A's answer comes back unchanged
  ASSERT_TRUE(toB.connect(f.b->port));
  Reply again = toB.roundTrip(fragmentRequest("/gone.bin", id, 0, "abc", 3));
  EXPECT_EQ(again.status, 500) << again.raw;
  EXPECT_EQ(again.get("BITS-Error-Code"), "0x8020001F") << again.raw;
  EXPECT_EQ(f.b->server->stats().forwarded, 2u);
  toB.close();
  EXPECT_TRUE(f.idle());
}

// An owner that accepts the connection but never answers: 503 after body-timeout-ms.
TEST(FarmForward, AnOwnerThatNeverAnswersGives503AfterTheBodyTimeout) {
  Settings s;
  s.bodyTimeoutMs = 300;
  Farm2 f(s);
  int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(silent, 4), 0);  // the kernel accepts; nobody reads or answers
  socklen_t len = sizeof a;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string id = "{00000000-0000-4000-8000-0000000000BB}";
  f.owners.set(id, "C", "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
  Client toB;
  ASSERT_TRUE(toB.connect(f.b->port));
  Reply r = toB.roundTrip(fragmentRequest("/silent.bin", id, 0, "abcdef", 6), 10000);
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_TRUE(r.has("Retry-After")) << r.raw;
  ::close(silent);
  toB.close();
  EXPECT_TRUE(f.idle());
}

// Upload-reply: the final fragment through B reaches A's application once; the reply URL in the
// answer is then downloaded through B (GET and HEAD), streamed from A.
TEST(FarmForward, AReplyDownloadIsStreamedThroughAnotherNode) {
  TestApp app;
  TestApp::Behaviour beh;
  beh.reply = randomBytes(200000, 4);  // larger than one read buffer of the test's settings
  app.set(beh);
  Settings s;
  s.readBufferBytes = 65536;
  Farm2 f(s, app.url("/app"));
  Client toA, toB;
  ASSERT_TRUE(toA.connect(f.a->port));
  ASSERT_TRUE(toB.connect(f.b->port));
  std::string id = create(toA, "/r.bin");
  ASSERT_FALSE(id.empty());
  f.owners.set(id, "A", f.a->peerUrl);
  Reply fin = toB.roundTrip(fragmentRequest("/r.bin", id, 0, "payload", 7));
  ASSERT_EQ(fin.status, 200) << fin.raw;
  EXPECT_EQ(app.count(), 1u);
  std::string url = fin.get("BITS-Reply-URL");
  ASSERT_FALSE(url.empty()) << fin.raw;
  std::string target = url.substr(url.find('/', url.find("//") + 2));
  Reply got = toB.roundTrip(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(got.status, 200) << got.raw;
  EXPECT_TRUE(got.body == beh.reply) << "reply body of " << got.body.size() << " bytes";
  ASSERT_TRUE(toB.sendAll(EngineDriver::httpRequest("HEAD", target)));
  Reply head;
  ASSERT_TRUE(toB.readResponse(&head, 10000, true));
  EXPECT_EQ(head.status, 200) << head.raw;
  EXPECT_EQ(head.get("Content-Length"), std::to_string(beh.reply.size()));
  // A reply of a session nobody knows: 404 from B itself.
  Reply none = toB.roundTrip(EngineDriver::httpRequest(
      "GET", "/BITS-Sessions/Replies/{00000000-0000-4000-8000-0000000000CC}/responsefile.bin"));
  EXPECT_EQ(none.status, 404) << none.raw;
  EXPECT_EQ(f.b->server->stats().forwarded, 3u);
  EXPECT_EQ(app.count(), 1u);
  toA.close();
  toB.close();
  EXPECT_TRUE(f.idle());
}

#ifndef BITSD_BUILT_WITHOUT_TLS
bool genCert(const std::string& base, const std::string& cn) {
  std::vector<std::string> args = {"gen-cert", "--cn", cn, "--cert", base + ".crt", "--key", base + ".key"};
  int out = ::open("/dev/null", O_WRONLY);
  pid_t pid = spawnProgram(BITSCTL_BINARY, args, out, out);
  ::close(out);
  return pid > 0 && waitProcess(pid, 60000) == 0;
}

// An https owner: B speaks TLS to it, verifying its certificate with the CA file it was given. A
// does not have the session (the client cannot speak TLS here): its own BG_E_SESSION_NOT_FOUND
// comes back through B unchanged, after a TLS handshake on A. Without a client configuration, or
// with one that does not trust A's certificate, A counts as unreachable: 503.
TEST(FarmForward, AnHttpsOwnerIsReachedOverVerifiedTls) {
  TempDir certs;
  ASSERT_TRUE(genCert(certs.path() + "/a", "127.0.0.1"));
  ASSERT_TRUE(genCert(certs.path() + "/other", "127.0.0.1"));
  std::string err;
  bool caUnreadable = false;
  auto trustA = platform::TlsContext::client(certs.path() + "/a.crt", false, 0, &err, &caUnreadable);
  ASSERT_NE(trustA, nullptr) << err;
  auto trustOther = platform::TlsContext::client(certs.path() + "/other.crt", false, 0, &err, &caUnreadable);
  ASSERT_NE(trustOther, nullptr) << err;
  const std::string id = "{00000000-0000-4000-8000-0000000000DD}";
  auto ask = [&](Farm2& f) {
    f.owners.set(id, "A", f.a->peerUrl);
    Client toB;
    EXPECT_TRUE(toB.connect(f.b->port));
    return toB.roundTrip(fragmentRequest("/t.bin", id, 0, "abc", 3));
  };
  {
    Farm2 f(Settings(), "", certs.path() + "/a", trustA);
    Reply r = ask(f);
    EXPECT_EQ(r.status, 500) << r.raw;
    EXPECT_EQ(r.get("BITS-Error-Code"), "0x8020001F") << r.raw;
    EXPECT_EQ(f.b->server->stats().forwarded, 1u);
    EXPECT_EQ(f.b->server->stats().forwardFailures, 0u);
    EXPECT_TRUE(waitUntil([&] { return f.a->server->stats().tlsHandshakes == 1; }));
    EXPECT_TRUE(f.idle());
  }
  for (auto tls : {std::shared_ptr<platform::TlsContext>(), trustOther}) {
    Farm2 f(Settings(), "", certs.path() + "/a", tls);
    Reply r = ask(f);
    EXPECT_EQ(r.status, 503) << r.raw;
    EXPECT_EQ(r.get("BITS-Error-Code"), "0x800700AA") << r.raw;
    EXPECT_EQ(f.b->server->stats().forwardFailures, 1u);
    EXPECT_TRUE(f.idle());
  }
}
#endif

}  // namespace
}  // namespace bitsd::testing
