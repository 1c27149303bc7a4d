// A farm of three real bitsd nodes on a real three-member etcd cluster (issue 17), all on this
// machine: etcd members and nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3, the nodes on one port so that
// Host-Id works as on a LAN, and TestApp as the server application every node posts to. Each test
// counts the POSTs per transaction id and compares what the application received byte for byte.
// Skipped (with a message) only when etcd is not installed.
#include <gtest/gtest.h>
#include <mbedtls/base64.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <cstring>
#include <random>
#include <thread>

#include "tests/integration/bitsd_process.h"
#include "tests/integration/test_app.h"
#include "tests/support/etcd_cluster.h"

namespace bitsd::testing {
namespace {

const char* const kAddr[3] = {"127.0.0.1", "127.0.0.2", "127.0.0.3"};

// A port free on all three loopback addresses (bound and released: a race with another process is
// possible but unlikely, and start() would then fail visibly).
int freePortOnAll() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, kAddr[0], &a.sin_addr);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(fd);
      continue;
    }
    int port = ntohs(a.sin_port);
    bool ok = true;
    for (int i = 1; i < 3 && ok; ++i) {
      int g = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in b{};
      b.sin_family = AF_INET;
      b.sin_port = htons(static_cast<uint16_t>(port));
      ::inet_pton(AF_INET, kAddr[i], &b.sin_addr);
      ok = ::bind(g, reinterpret_cast<sockaddr*>(&b), sizeof b) == 0;
      ::close(g);
    }
    ::close(fd);
    if (ok) return port;
  }
  return 0;
}

std::string finalRequest(const std::string& path, const std::string& id, uint64_t first, const std::string& bytes,
                         uint64_t total, const std::string& txid) {
  return fragmentRequest(path, id, first, bytes, total, txid);
}

std::string replyTarget(const Reply& ack) {
  std::string url = ack.get("BITS-Reply-URL");
  size_t slash = url.find('/', std::string("http://").size());
  return slash == std::string::npos ? std::string() : url.substr(slash);
}

class FarmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdCluster::installed()) GTEST_SKIP() << EtcdCluster::kSkipReason;
    ASSERT_TRUE(etcd.start()) << etcd.error();
    port = freePortOnAll();
    ASSERT_GT(port, 0);
    farmName = "t" + std::to_string(::getpid()) + "-" + std::to_string(port);
    TestApp::Behaviour b;
    b.reply = "receipt";
    app.set(b);
  }

  std::string joinedUrls() const {
    std::string all;
    for (const std::string& u : etcd.clientUrls()) all += (all.empty() ? "" : ",") + u;
    return all;
  }
  bool restartMember(int i) { return etcd.startMember(i) && etcd.waitHealthy(i, 20000); }
  std::vector<std::string> nodeArgs(int i) {
    return {"--listen", std::string(kAddr[i]) + ":" + std::to_string(port), "--host-id", kAddr[i],
            "--farm-etcd", joinedUrls(), "--farm-name", farmName, "--farm-lease-seconds", "2",
            "--notify-type", "value", "--notify-url", app.url("/app"), "--log-level", "debug"};
  }
  // Starts node i (its directories kept across restarts) and waits until it holds its lease.
  void makeNode(int i) {
    node[i] = std::make_unique<BitsdProcess>();
    node[i]->args() = nodeArgs(i);
    std::vector<std::string>& a = node[i]->args();
    a.push_back("--root");
    a.push_back(node[i]->root());
    a.push_back("--state");
    a.push_back(node[i]->state());
  }
  bool startNode(int i) {
    if (!node[i]) makeNode(i);
    if (!node[i]->start()) return false;
    return waitUntil([&] { return nodeLive(i); }, 15000, 50);
  }
  bool startAll() { return startNode(0) && startNode(1) && startNode(2); }
  // Node i took part in the farm: a Create-Session there succeeds (it records the session's owner).
  bool nodeLive(int i) {
    Client c;
    if (!c.connectTo(kAddr[i], port)) return false;
    Reply r = c.roundTrip(bitsRequest("/probe.bin", "Create-Session", {{"BITS-Supported-Protocols",
                                                                         "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}),
                          5000);
    if (r.status != 200) return false;
    c.roundTrip(bitsRequest("/probe.bin", "Cancel-Session", {{"BITS-Session-Id", r.get("BITS-Session-Id")}}), 5000);
    return true;
  }
  std::string createOn(int i, const std::string& path) {
    Client c;
    if (!c.connectTo(kAddr[i], port)) return "";
    return createSession(c, path);
  }
  Reply sendTo(int i, const std::string& request, int timeoutMs = 20000) {
    Client c;
    if (!c.connectTo(kAddr[i], port)) return Reply();
    return c.roundTrip(request, timeoutMs);
  }
  std::string logs() {
    std::string s;
    for (int i = 0; i < 3; ++i) {
      if (node[i]) s += "--- node " + std::to_string(i + 1) + "\n" + node[i]->stderrText();
    }
    return s;
  }

  EtcdCluster etcd;
  TestApp app;
  int port = 0;
  std::string farmName;
  std::unique_ptr<BitsdProcess> node[3];
};

TEST_F(FarmTest, TheSameTransactionOnTwoNodesAtOncePostsOnce) {
  ASSERT_TRUE(startAll()) << logs();
  TestApp::Behaviour hold;
  hold.mode = TestApp::Mode::Hold;
  hold.reply = "receipt-A";
  app.set(hold);
  std::string data = randomBytes(20000, 1);
  std::string a = createOn(0, "/same.bin");
  std::string b = createOn(1, "/same.bin");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  Reply first;
  std::thread t([&] { first = sendTo(0, finalRequest("/same.bin", a, 0, data, data.size(), "tx-same"), 30000); });
  ASSERT_TRUE(app.waitForPosts(1, 15000)) << logs();
  // Node 2 finds the id claimed by node 1, which is alive: a transient 503, no POST.
  Reply second = sendTo(1, finalRequest("/same.bin", b, 0, data, data.size(), "tx-same"));
  EXPECT_EQ(second.status, 503) << second.raw;
  EXPECT_FALSE(second.get("Retry-After").empty()) << second.raw;
  EXPECT_FALSE(second.get("BITS-Error-Code").empty()) << second.raw;
  app.release();
  t.join();
  ASSERT_EQ(first.status, 200) << first.raw << logs();
  // The client retries: now "ended" is recorded, so node 2 answers from it.
  app.set(TestApp::Behaviour{});
  Reply retry = sendTo(1, finalRequest("/same.bin", b, 0, data, data.size(), "tx-same"));
  EXPECT_EQ(retry.status, 200) << retry.raw << logs();
  EXPECT_EQ(app.countFor("tx-same"), 1u);
  EXPECT_TRUE(app.seen()[0].content == data);
  // Its reply (small: kept in etcd) downloads from node 2.
  std::string target = replyTarget(retry);
  ASSERT_FALSE(target.empty()) << retry.raw;
  Reply got = sendTo(1, EngineDriver::httpRequest("GET", target, {}));
  EXPECT_EQ(got.status, 200) << got.raw;
  EXPECT_EQ(got.body, "receipt-A");
}

TEST_F(FarmTest, TheFinalFragmentRetriedOnAnotherNodeAfterEndedIsNotPostedAgain) {
  ASSERT_TRUE(startAll()) << logs();
  std::string data = randomBytes(150000, 2);
  std::string id = createOn(0, "/retry.bin");
  ASSERT_FALSE(id.empty());
  Reply mid = sendTo(0, finalRequest("/retry.bin", id, 0, data.substr(0, 100000), data.size(), "tx-retry"));
  ASSERT_EQ(mid.status, 200) << mid.raw;
  std::string last = finalRequest("/retry.bin", id, 100000, data.substr(100000), data.size(), "tx-retry");
  Reply ack = sendTo(0, last);
  ASSERT_EQ(ack.status, 200) << ack.raw << logs();
  // The client did not hear the Ack and retries through another node (no Host-Id stickiness): the
  // packet is forwarded to node 1, which answers as before.
  Reply again = sendTo(2, last);
  EXPECT_EQ(again.status, 200) << again.raw << logs();
  EXPECT_EQ(again.get("BITS-Reply-URL"), ack.get("BITS-Reply-URL"));
  // A new session with the same transaction on node 3: answered from etcd's "ended".
  std::string other = createOn(2, "/retry.bin");
  Reply fresh = sendTo(2, finalRequest("/retry.bin", other, 0, data, data.size(), "tx-retry"));
  EXPECT_EQ(fresh.status, 200) << fresh.raw << logs();
  EXPECT_EQ(app.countFor("tx-retry"), 1u) << logs();
  ASSERT_EQ(app.count(), 1u);
  EXPECT_TRUE(app.seen()[0].content == data);
}

TEST_F(FarmTest, AClientThatSendsEveryPacketToARandomNodeUploadsOnce) {
  ASSERT_TRUE(startAll()) << logs();
  std::mt19937 rng(17);
  for (int u = 0; u < 4; ++u) {
    std::string data = randomBytes(300000 + 1000 * u, 100 + u);
    std::string path = "/rr" + std::to_string(u) + ".bin";
    std::string tx = "tx-rr-" + std::to_string(u);
    std::string id = createOn(static_cast<int>(rng() % 3), path);
    ASSERT_FALSE(id.empty()) << logs();
    Reply last;
    for (size_t off = 0; off < data.size(); off += 64000) {
      std::string part = data.substr(off, 64000);
      last = sendTo(static_cast<int>(rng() % 3), finalRequest(path, id, off, part, data.size(), tx));
      ASSERT_EQ(last.status, 200) << last.raw << logs();
    }
    std::string target = replyTarget(last);
    ASSERT_FALSE(target.empty()) << last.raw;
    Reply got = sendTo(static_cast<int>(rng() % 3), EngineDriver::httpRequest("GET", target, {}));
    EXPECT_EQ(got.status, 200) << got.raw << logs();
    EXPECT_EQ(got.body, "receipt");
    EXPECT_EQ(app.countFor(tx), 1u);
  }
  for (const TestApp::Seen& s : app.seen()) {
    int u = s.header("bits-transaction-id").back() - '0';
    EXPECT_TRUE(s.content == randomBytes(300000 + 1000 * u, 100 + u)) << "upload " << u << " differs";
  }
}

TEST_F(FarmTest, TheDeliveringNodeKilledWhileTheApplicationHoldsThePostIsTakenOver) {
  ASSERT_TRUE(startAll()) << logs();
  TestApp::Behaviour hold;
  hold.mode = TestApp::Mode::Hold;
  app.set(hold);
  std::string data = randomBytes(30000, 3);
  std::string a = createOn(0, "/kill.bin");
  ASSERT_FALSE(a.empty());
  std::thread t([&] { (void)sendTo(0, finalRequest("/kill.bin", a, 0, data, data.size(), "tx-kill"), 30000); });
  ASSERT_TRUE(app.waitForPosts(1, 15000)) << logs();
  node[0]->stop(SIGKILL);
  t.join();
  TestApp::Behaviour answer;
  answer.reply = "receipt-B";
  app.set(answer);
  app.release();  // the first POST's answer goes nowhere: its node is dead
  // The client falls back and uploads again in a new session on node 2. Until node 1's lease has
  // expired (2 s) node 2 answers 503; then it takes the transaction over and posts once more.
  std::string b = createOn(1, "/kill.bin");
  ASSERT_FALSE(b.empty());
  Reply r;
  ASSERT_TRUE(waitUntil(
      [&] {
        r = sendTo(1, finalRequest("/kill.bin", b, 0, data, data.size(), "tx-kill"));
        return r.status != 503;
      },
      20000, 300))
      << r.raw << logs();
  EXPECT_EQ(r.status, 200) << r.raw << logs();
  EXPECT_EQ(app.countFor("tx-kill"), 2u);
  for (const TestApp::Seen& s : app.seen()) EXPECT_TRUE(s.content == data);
  // Node 1 comes back with its journal ("began", no "ended") and the client's retry of its final
  // fragment there finds node 2's "ended": no third POST.
  ASSERT_TRUE(startNode(0)) << logs();
  Reply back = sendTo(0, finalRequest("/kill.bin", a, 0, data, data.size(), "tx-kill"));
  EXPECT_EQ(back.status, 200) << back.raw << logs();
  EXPECT_EQ(app.countFor("tx-kill"), 2u) << logs();
}

TEST_F(FarmTest, EtcdLosingItsLeaderAndThenQuorum) {
  ASSERT_TRUE(startAll()) << logs();
  std::string data = randomBytes(40000, 4);
  // The leader is SIGKILLed: after an election everything works, hand-offs included.
  int leader = etcd.leader();
  ASSERT_GE(leader, 0) << etcd.error();
  etcd.kill(leader);
  // Until the election ends (seconds; more on a loaded machine) the farm may answer 503.
  std::string id;
  ASSERT_TRUE(waitUntil(
      [&] {
        id = createOn(1, "/quorum.bin");
        return !id.empty();
      },
      45000, 300))
      << logs();
  Reply ack;
  ASSERT_TRUE(waitUntil(
      [&] {
        ack = sendTo(1, finalRequest("/quorum.bin", id, 0, data, data.size(), "tx-q1"));
        return ack.status != 503;
      },
      45000, 300))
      << ack.raw << logs();
  EXPECT_EQ(ack.status, 200) << ack.raw;
  EXPECT_EQ(app.countFor("tx-q1"), 1u);
  // A second member stops: no quorum. Fragments of a session go on; the final one gets 503.
  std::string id2 = createOn(2, "/quorum2.bin");
  ASSERT_FALSE(id2.empty()) << logs();
  etcd.stop((leader + 1) % 3);
  Reply part = sendTo(2, finalRequest("/quorum2.bin", id2, 0, data.substr(0, 20000), data.size(), "tx-q2"));
  EXPECT_EQ(part.status, 200) << part.raw;
  std::string rest = finalRequest("/quorum2.bin", id2, 20000, data.substr(20000), data.size(), "tx-q2");
  Reply refused = sendTo(2, rest);
  EXPECT_EQ(refused.status, 503) << refused.raw << logs();
  EXPECT_FALSE(refused.get("Retry-After").empty());
  EXPECT_EQ(app.countFor("tx-q2"), 0u);
  // Quorum back: the retry delivers, once.
  ASSERT_TRUE(restartMember((leader + 1) % 3)) << etcd.error();
  ASSERT_TRUE(waitUntil(
      [&] {
        ack = sendTo(2, rest);
        return ack.status == 200;
      },
      45000, 300))
      << ack.raw << logs();
  EXPECT_EQ(app.countFor("tx-q2"), 1u);
  EXPECT_TRUE(app.seen().back().content == data);
}

// A reply over 64 KiB is not copied into etcd: a node that answers from the "ended" record points
// the client at the session that holds the reply, and its download is forwarded to that session's
// owner, whichever node the client asks.
TEST_F(FarmTest, ABigReplyIsDownloadedFromTheNodeThatHoldsItThroughAnyNode) {
  ASSERT_TRUE(startAll()) << logs();
  TestApp::Behaviour b;
  b.reply = randomBytes(100000, 77);
  app.set(b);
  std::string data = randomBytes(10000, 6);
  std::string first = createOn(0, "/big-reply.bin");
  Reply ack = sendTo(0, finalRequest("/big-reply.bin", first, 0, data, data.size(), "tx-big"));
  ASSERT_EQ(ack.status, 200) << ack.raw << logs();
  std::string second = createOn(2, "/big-reply.bin");
  Reply replay = sendTo(2, finalRequest("/big-reply.bin", second, 0, data, data.size(), "tx-big"));
  ASSERT_EQ(replay.status, 200) << replay.raw << logs();
  EXPECT_EQ(app.countFor("tx-big"), 1u);
  std::string target = replyTarget(replay);
  ASSERT_FALSE(target.empty()) << replay.raw;
  for (int i = 0; i < 3; ++i) {
    Reply got = sendTo(i, EngineDriver::httpRequest("GET", target, {}));
    EXPECT_EQ(got.status, 200) << "through node " << i + 1 << ": " << got.raw;
    EXPECT_TRUE(got.body == b.reply) << "through node " << i + 1 << ": the reply differs (" << got.body.size()
                                     << " bytes)";
  }
}

// The etcd lease a key of this farm is on, and that lease's granted TTL in seconds (-1 if etcd does
// not say), read through member 0's JSON gateway.
long long grantedTtlOf(const EtcdCluster& etcd, const std::string& key) {
  unsigned char b64[512];
  size_t n = 0;
  if (mbedtls_base64_encode(b64, sizeof b64, &n, reinterpret_cast<const unsigned char*>(key.data()), key.size()) != 0) {
    return -1;
  }
  auto field = [](const std::string& json, const std::string& name) -> std::string {
    std::string tag = "\"" + name + "\":\"";
    size_t at = json.find(tag);
    if (at == std::string::npos) return "";
    size_t end = json.find('"', at + tag.size());
    return end == std::string::npos ? "" : json.substr(at + tag.size(), end - at - tag.size());
  };
  std::string range = etcd.request(0, "/v3/kv/range",
                                   ("{\"key\":\"" + std::string(reinterpret_cast<char*>(b64), n) + "\"}").c_str(), 3000);
  std::string lease = field(range, "lease");
  if (lease.empty()) return -1;
  std::string ttl = etcd.request(0, "/v3/lease/timetolive", ("{\"ID\":" + lease + "}").c_str(), 3000);
  std::string granted = field(ttl, "grantedTTL");
  return granted.empty() ? -1 : std::atoll(granted.c_str());
}

// A delivered-retention shorter than session-timeout: the session's owner record must still last as
// long as the session may, or other nodes could no longer forward to a session idle for a day.
TEST_F(FarmTest, SessionOwnerRecordsOutliveAShortDeliveredRetention) {
  makeNode(0);
  for (const char* a : {"--delivered-retention", "60", "--session-timeout", "86400"}) node[0]->args().push_back(a);
  ASSERT_TRUE(startNode(0)) << logs();
  std::string id = createOn(0, "/owner.bin");
  ASSERT_FALSE(id.empty()) << logs();
  long long ttl = grantedTtlOf(etcd, "/bitsd/" + farmName + "/session/" + id);
  EXPECT_EQ(ttl, 86400 + 3600) << "the session key's lease (session-timeout 86400 s, delivered-retention 60 s)";
  // The delivered records share it, so they are kept at least as long as asked.
  std::string data = randomBytes(5000, 8);
  Reply ack = sendTo(0, finalRequest("/owner.bin", id, 0, data, data.size(), "tx-owner"));
  ASSERT_EQ(ack.status, 200) << ack.raw << logs();
  EXPECT_GE(grantedTtlOf(etcd, "/bitsd/" + farmName + "/tx/tx-owner"), 60 + 3600);
}

// A real round-robin load balancer in front (Debian's haproxy, per-request balancing, no stickiness,
// no Host-Id followed): one keep-alive client connection whose packets land on every node in turn.
TEST_F(FarmTest, BehindHaproxyRoundRobinWithoutStickiness) {
  if (::access("/usr/sbin/haproxy", X_OK) != 0) GTEST_SKIP() << "haproxy is not installed";
  ASSERT_TRUE(startAll()) << logs();
  int lbPort = freePortOnAll();
  ASSERT_GT(lbPort, 0);
  TempDir dir;
  std::string cfg = dir.path() + "/haproxy.cfg";
  std::string text = "global\n  maxconn 64\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n"
                     "  timeout server 30s\nfrontend bits\n  bind 127.0.0.1:" + std::to_string(lbPort) +
                     "\n  default_backend farm\nbackend farm\n  balance roundrobin\n";
  for (int i = 0; i < 3; ++i) {
    text.append("  server n").append(std::to_string(i + 1)).append(" ").append(kAddr[i]).append(":");
    text.append(std::to_string(port)).append("\n");
  }
  FILE* f = std::fopen(cfg.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  std::string logPath = dir.path() + "/haproxy.log";
  int logFd = ::open(logPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t lb = spawnProgram("/usr/sbin/haproxy", {"-db", "-f", cfg}, logFd, logFd, {}, -1, false);
  ::close(logFd);
  ASSERT_GT(lb, 0);
  // Stopped by PID however the test ends (a failed assertion returns early).
  struct StopByPid {
    pid_t pid;
    ~StopByPid() {
      ::kill(pid, SIGTERM);
      if (waitProcess(pid, 5000) < 0) {
        ::kill(pid, SIGKILL);
        waitProcess(pid, 5000);
      }
    }
  } stopLb{lb};
  Client c;
  ASSERT_TRUE(waitUntil([&] { return c.connect(lbPort); }, 5000, 50));
  std::string data = randomBytes(500000, 9);
  std::string id = createSession(c, "/lb.bin");
  ASSERT_FALSE(id.empty()) << logs();
  Reply last;
  for (size_t off = 0; off < data.size(); off += 50000) {
    last = c.roundTrip(finalRequest("/lb.bin", id, off, data.substr(off, 50000), data.size(), "tx-lb"), 20000);
    ASSERT_EQ(last.status, 200) << last.raw << logs();
  }
  EXPECT_EQ(app.countFor("tx-lb"), 1u);
  ASSERT_EQ(app.count(), 1u);
  EXPECT_TRUE(app.seen()[0].content == data);
  Reply got = c.roundTrip(EngineDriver::httpRequest("GET", replyTarget(last), {}));
  EXPECT_EQ(got.status, 200) << got.raw;
  EXPECT_EQ(got.body, "receipt");
  // Every node took part: two of three forwarded packets to the session's owner.
  int forwardedBy = 0;
  for (int i = 0; i < 3; ++i) {
    if (node[i]->stderrText().find("forward") != std::string::npos) ++forwardedBy;
  }
  EXPECT_GE(forwardedBy, 1) << logs();
}

// Start-up with etcd unreachable: the node serves (Ping answers), says so in one line, refuses what
// needs the farm with 503 + Retry-After, and joins once etcd is there. /metrics shows the lease.
TEST_F(FarmTest, ANodeStartedWithoutEtcdServesPingAndJoinsWhenEtcdComes) {
  for (int i = 0; i < 3; ++i) etcd.stop(i);
  makeNode(0);
  node[0]->args().push_back("--admin-listen");
  node[0]->args().push_back("127.0.0.1:0");
  ASSERT_TRUE(node[0]->start()) << logs();
  EXPECT_EQ(sendTo(0, bitsRequest("/x", "Ping")).status, 200);
  Reply refused = sendTo(0, bitsRequest("/x.bin", "Create-Session",
                                        {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  EXPECT_EQ(refused.status, 503) << refused.raw;
  EXPECT_FALSE(refused.get("Retry-After").empty()) << refused.raw;
  EXPECT_FALSE(refused.get("BITS-Error-Code").empty()) << refused.raw;
  auto metric = [&](const std::string& name) { return node[0]->metric(name); };
  EXPECT_EQ(metric("bitsd_farm_live"), "0");
  // A few retries later there is still one line about it, not one per retry.
  ASSERT_TRUE(waitUntil([&] { return node[0]->stderrText().find("unreachable") != std::string::npos; }, 5000));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  std::string err = node[0]->stderrText();
  size_t first = err.find("unreachable");
  EXPECT_EQ(err.find("unreachable", first + 1), std::string::npos) << err;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(etcd.startMember(i));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(etcd.waitHealthy(i, 20000)) << etcd.error();
  ASSERT_TRUE(waitUntil([&] { return nodeLive(0); }, 20000, 100)) << logs();
  EXPECT_EQ(metric("bitsd_farm_live"), "1");
}

// A bounded random run of faults: nodes SIGKILLed and restarted, etcd members SIGKILLed and
// restarted, connections cut in the middle of a fragment, while a client uploads through random
// nodes and retries as BITS does (503 and cut connections: the same packet later; an unknown
// session: a new session with the same transaction id). Afterwards every transaction was posted,
// every POST carried exactly the uploaded bytes, and a transaction was posted a second time only if
// a node was killed while it was being delivered.
TEST_F(FarmTest, ChaosKeepsEveryUploadWholeAndPostsEachTransactionOnce) {
  ASSERT_TRUE(startAll()) << logs();
  std::mt19937 rng(2026);
  const int kUploads = 6;
  int nodeKills = 0;
  int etcdKills = 0;
  int cuts = 0;
  int etcdDown = -1;
  auto chaos = [&] {
    int roll = static_cast<int>(rng() % 100);
    if (roll < 6) {
      int i = static_cast<int>(rng() % 3);
      node[i]->stop(SIGKILL);
      ++nodeKills;
      ASSERT_TRUE(startNode(i)) << logs();
    } else if (roll < 10) {
      if (etcdDown >= 0) {
        ASSERT_TRUE(restartMember(etcdDown)) << etcd.error();
        etcdDown = -1;
      } else {
        etcdDown = static_cast<int>(rng() % 3);
        etcd.kill(etcdDown);
        ++etcdKills;
      }
    }
  };
  for (int u = 0; u < kUploads; ++u) {
    const std::string data = randomBytes(120000 + 777 * u, 500 + u);
    const std::string path = "/chaos" + std::to_string(u) + ".bin";
    const std::string tx = "tx-chaos-" + std::to_string(u);
    std::string id;
    uint64_t have = 0;
    bool done = false;
    for (int attempt = 0; attempt < 300 && !done; ++attempt) {
      chaos();
      if (HasFatalFailure()) return;
      int to = static_cast<int>(rng() % 3);
      if (id.empty()) {
        id = createOn(to, path);
        have = 0;
        continue;
      }
      size_t len = std::min<size_t>(40000, data.size() - have);
      std::string req = finalRequest(path, id, have, data.substr(have, len), data.size(), tx);
      if (rng() % 100 < 5) {
        // Cut: half the packet, then the connection goes.
        Client c;
        if (c.connectTo(kAddr[to], port)) c.sendAll(req.substr(0, req.size() / 2));
        ++cuts;
        continue;
      }
      Reply r = sendTo(to, req, 15000);
      if (r.status == 200) {
        have += len;
        done = have == data.size();
      } else if (r.status == 416) {
        // The server holds a different prefix (a cut fragment was partly stored): resume there.
        std::string range = r.get("BITS-Received-Content-Range");
        have = range.empty() ? 0 : std::stoull(range);
      } else if (r.status == 500 && (r.get("BITS-Error-Code").find("8020001F") != std::string::npos ||
                                     r.get("BITS-Error-Code").find("8020001f") != std::string::npos)) {
        id.clear();  // the session is gone: start over, same transaction
      }
      // 503, 0 (no answer) and the rest: the same packet again.
    }
    ASSERT_TRUE(done) << "upload " << u << " did not finish within 300 attempts; " << logs();
  }
  if (etcdDown >= 0) {
    ASSERT_TRUE(restartMember(etcdDown));
  }
  for (int u = 0; u < kUploads; ++u) {
    const std::string tx = "tx-chaos-" + std::to_string(u);
    size_t n = app.countFor(tx);
    EXPECT_GE(n, 1u) << tx;
    EXPECT_LE(n, 1u + static_cast<size_t>(nodeKills)) << tx << " posted again without a node kill";
  }
  for (const TestApp::Seen& s : app.seen()) {
    std::string tx = s.header("bits-transaction-id");
    int u = tx.back() - '0';
    EXPECT_TRUE(s.content == randomBytes(120000 + 777 * u, 500 + u)) << tx << ": the POST's bytes differ";
  }
  std::printf("chaos: %d node kills, %d etcd kills, %d cut connections, %zu POSTs for %d uploads\n", nodeKills,
              etcdKills, cuts, app.count(), kUploads);
}

}  // namespace
}  // namespace bitsd::testing
