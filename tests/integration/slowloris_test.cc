// Slow and trickling request heads against ready requests (issue 20, hole 1): a head that is not
// complete within header-budget-ms and comes slower than header-min-rate gives its request slot to a
// request that waits for one, and a crowd of tricklers cannot stall a real upload.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <thread>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

using Steady = std::chrono::steady_clock;

long msSince(Steady::time_point t) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - t).count());
}

// A head that never ends: a trickler sends it one byte at a time.
const std::string kEndlessHead = "BITS_POST /trickle HTTP/1.1\r\nHost: x\r\nBITS-Packet-Type: Ping\r\nX-Slow: " +
                                 std::string(8000, 'a');

// Two slow heads hold both slots; a Ping that comes after their budget gets its answer at once
// instead of after header-timeout-ms (30 s here), and the oldest slow head gets a 408.
TEST(Slowloris, SlowHeadsPastTheirBudgetGiveTheirSlotsToAReadyRequest) {
  BitsdProcess server({"--request-slots", "2", "--header-budget-ms", "200", "--header-timeout-ms", "30000"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  Client slow1, slow2;
  ASSERT_TRUE(slow1.connect(server.port()));
  ASSERT_TRUE(slow1.sendAll(kEndlessHead.substr(0, 10)));
  usleep(50000);  // deliberate: slow1 is the older head (the server orders heads by arrival time)
  ASSERT_TRUE(slow2.connect(server.port()));
  ASSERT_TRUE(slow2.sendAll(kEndlessHead.substr(0, 10)));
  usleep(300000);  // deliberate, the scenario: both heads are past their budget when the Ping comes
  Client ready;
  ASSERT_TRUE(ready.connect(server.port()));
  auto t0 = Steady::now();
  Reply r = ready.roundTrip(bitsRequest("/x", "Ping"), 10000);
  EXPECT_EQ(r.status, 200) << server.stderrText();
  EXPECT_LT(msSince(t0), 10000);
  // The first slow head gave its slot: a best-effort 408, then the close.
  Reply evicted;
  ASSERT_TRUE(slow1.readResponse(&evicted, 5000));
  EXPECT_EQ(evicted.status, 408);
  EXPECT_EQ(evicted.get("Connection"), "close");
  EXPECT_TRUE(slow1.waitClosed(5000));
  // The ready connection goes on at once: the other slow head's slot is now its to take.
  EXPECT_EQ(ready.roundTrip(bitsRequest("/x", "Ping"), 10000).status, 200);
}

// A head that comes at least at header-min-rate keeps its slot past the budget (a slow link, not a
// trickler): with one slot, a Ping waits for it and the head is answered, not cut off.
TEST(Slowloris, AHeadAtTheMinimumRateKeepsItsSlot) {
  BitsdProcess server({"--request-slots", "1", "--header-budget-ms", "200", "--header-min-rate", "20"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  std::string head = bitsRequest("/x", "Ping");
  Client steady;
  ASSERT_TRUE(steady.connect(server.port()));
  ASSERT_TRUE(steady.sendAll(head.substr(0, 60)));  // 60 bytes: 20 B/s for 3 s
  Client ready;
  ASSERT_TRUE(ready.connect(server.port()));
  ASSERT_TRUE(ready.sendAll(head));
  usleep(800000);  // deliberate: four budgets pass, still above the rate: the slot stays with `steady`
  ASSERT_TRUE(steady.sendAll(head.substr(60)));
  Reply r;
  ASSERT_TRUE(steady.readResponse(&r, 5000)) << server.stderrText();
  EXPECT_EQ(r.status, 200);
  ASSERT_TRUE(ready.readResponse(&r, 5000));
  EXPECT_EQ(r.status, 200);
}

int connectNonBlocking(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// `count` connections on one thread, each sending one byte of a head that never ends every 1-3 s
// (the first at once) and reconnecting when the server closes it, until stop().
class Tricklers {
 public:
  Tricklers(int port, int count) : port_(port), conns_(static_cast<size_t>(count)) {}
  ~Tricklers() { stop(); }
  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (Conn& c : conns_) {
      if (c.fd >= 0) ::close(c.fd);
      c.fd = -1;
    }
  }
  int connected() const { return connected_; }  // connections open now that have sent a byte
  int reconnects() const { return reconnects_; }

 private:
  struct Conn {
    int fd = -1;
    size_t sent = 0;
    Steady::time_point next;
  };
  void run() {
    std::mt19937 rng(20);
    std::uniform_int_distribution<int> gap(1000, 3000);
    std::vector<pollfd> pfds(conns_.size());
    while (!stop_) {
      auto now = Steady::now();
      int open = 0;
      for (size_t i = 0; i < conns_.size(); ++i) {
        Conn& c = conns_[i];
        if (c.fd < 0) {
          c.fd = connectNonBlocking(port_);
          c.sent = 0;
          c.next = now;
        }
        if (c.fd >= 0 && now >= c.next) {
          ssize_t n = ::send(c.fd, kEndlessHead.data() + (c.sent % kEndlessHead.size()), 1, MSG_NOSIGNAL);
          if (n == 1) {
            ++c.sent;
            c.next = now + std::chrono::milliseconds(gap(rng));
          } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) {
            reopen(c);
          } else {
            c.next = now + std::chrono::milliseconds(50);  // still connecting
          }
        }
        open += c.fd >= 0 && c.sent > 0;
        pfds[i] = {c.fd, POLLIN, 0};
      }
      connected_ = open;
      ::poll(pfds.data(), pfds.size(), 50);
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (pfds[i].fd < 0 || (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        char buf[512];
        ssize_t n = ::recv(conns_[i].fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) reopen(conns_[i]);
      }
    }
  }
  void reopen(Conn& c) {
    ::close(c.fd);
    c.fd = -1;
    ++reconnects_;
  }
  int port_;
  std::vector<Conn> conns_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connected_{0};
  std::atomic<int> reconnects_{0};
};

// One upload of `body` in `frag`-byte fragments; false (with *why) on a failed or late answer. Every
// answer has to come before `deadline`, so the old server (which answered after header-timeout-ms)
// fails in bounded time.
bool upload(int port, const std::string& path, const std::string& body, size_t frag, Steady::time_point deadline,
            std::string* why) {
  auto left = [&] { return static_cast<int>(std::max<long>(1, -msSince(deadline))); };
  Client c;
  if (!c.connect(port)) return *why = "connect", false;
  if (!c.sendAll(bitsRequest(path, "Create-Session", {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)}}))) {
    return *why = "send", false;
  }
  Reply r;
  if (!c.readResponse(&r, left()) || r.status != 200) return *why = "Create-Session: " + r.raw, false;
  std::string id = r.get("BITS-Session-Id");
  for (size_t off = 0; off < body.size(); off += frag) {
    if (!c.sendAll(fragmentRequest(path, id, off, body.substr(off, frag), body.size()))) return *why = "send", false;
    Reply a;
    if (!c.readResponse(&a, left()) || a.status != 200) {
      return *why = "fragment at " + std::to_string(off) + ": " + (a.raw.empty() ? "no answer in time" : a.raw), false;
    }
  }
  return true;
}

// The attack: 500 connections, each sending one header byte every 1-3 s and reconnecting
// when closed, against the host board's 256 request slots, and a 20 MiB upload in 1 MiB fragments.
// The upload must finish within max(10 x its time alone, alone + 15 s); the server before the fix
// answered its first request only when a trickler's header-timeout-ms (30 s) ran out.
TEST(Slowloris, FiveHundredTricklersDoNotStallAnUpload) {
  constexpr int kTricklers = 500;
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur < 2 * kTricklers) {  // ours, plus room; bitsd raises its own for max-connections
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4 * kTricklers);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  ASSERT_GE(lim.rlim_cur, static_cast<rlim_t>(kTricklers + 100)) << "open-file limit too low for the test";
  BitsdProcess server({"--request-slots", "256", "--max-connections", "2048", "--header-timeout-ms", "30000",
                       "--header-budget-ms", "2000", "--header-min-rate", "500", "--fdatasync", "off"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  std::string body = randomBytes(20 * 1024 * 1024, 2020);
  constexpr size_t kFrag = 1024 * 1024;
  std::string why;

  auto t0 = Steady::now();
  ASSERT_TRUE(upload(server.port(), "/alone.bin", body, kFrag, t0 + std::chrono::seconds(30), &why)) << why;
  long alone = msSince(t0);

  Tricklers attack(server.port(), kTricklers);
  attack.start();
  // Let the attack settle in: every trickler connected and started its head, and the first ones
  // past their 2 s budget.
  waitUntil([&] { return attack.connected() >= kTricklers; }, 10000, 20);
  ASSERT_EQ(attack.connected(), kTricklers) << "the tricklers could not all connect";
  usleep(2500000);  // deliberate: the first tricklers get past their 2 s budget (the scenario)

  long bound = std::max(10 * alone, alone + 15000);
  auto t1 = Steady::now();
  bool ok = upload(server.port(), "/attacked.bin", body, kFrag, t1 + std::chrono::milliseconds(bound), &why);
  long attacked = msSince(t1);
  attack.stop();
  std::cout << "upload of 20 MiB alone " << alone << " ms, under " << kTricklers << " tricklers " << attacked
            << " ms (bound " << bound << " ms); tricklers reconnected " << attack.reconnects() << " times\n";
  ASSERT_TRUE(ok) << why << " after " << attacked << " ms (alone: " << alone << " ms)";
  EXPECT_LE(attacked, bound);
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/attacked.bin", &got));
  EXPECT_TRUE(got == body);
}

// The connection cap (issue 20): at max-connections a new connection takes the place of the oldest
// idle keep-alive connection past header-budget-ms (closed quietly), else of the oldest slow head
// (408), and is served; the 503 comes only when there is neither.
TEST(Slowloris, AtTheConnectionCapTheIdleConnectionGoesFirstThenASlowHead) {
  BitsdProcess server({"--max-connections", "2", "--header-budget-ms", "1000", "--header-timeout-ms", "30000"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  Client idle, slow;
  ASSERT_TRUE(idle.connect(server.port()));
  ASSERT_EQ(idle.roundTrip(bitsRequest("/x", "Ping")).status, 200);
  ASSERT_TRUE(slow.connect(server.port()));
  ASSERT_TRUE(slow.sendAll(kEndlessHead.substr(0, 10)));
  usleep(1200000);  // deliberate: both get past their budget (the scenario)
  Client first;
  ASSERT_TRUE(first.connect(server.port()));
  EXPECT_EQ(first.roundTrip(bitsRequest("/x", "Ping")).status, 200) << server.stderrText();
  // The idle one went, quietly (EOF, no answer); the slow head is still open.
  EXPECT_TRUE(idle.waitClosed(5000));
  pollfd p{slow.fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 100), 0) << "the slow head should still be open";
  // `first` is idle now, but not past its budget: the slow head goes next.
  Client second;
  ASSERT_TRUE(second.connect(server.port()));
  EXPECT_EQ(second.roundTrip(bitsRequest("/x", "Ping")).status, 200) << server.stderrText();
  Reply evicted;
  ASSERT_TRUE(slow.readResponse(&evicted, 5000));
  EXPECT_EQ(evicted.status, 408);
  EXPECT_TRUE(slow.waitClosed(5000));
  // Nothing left to give way (both idle less than their budget): 503.
  Client third;
  ASSERT_TRUE(third.connect(server.port()));
  Reply refused;
  ASSERT_TRUE(third.readResponse(&refused, 5000));
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(first.roundTrip(bitsRequest("/x", "Ping")).status, 200);
}

// The router board's limits (board/router/board.conf: 64 connections, 16 slots, 4 x 64 KiB buffers)
// against 500 tricklers: they fill the connection cap, and the upload's connection must still get in
// and finish within max(10 x its time alone, alone + 15 s). Before the fix its connection got 503.
TEST(Slowloris, FiveHundredTricklersOnTheRouterBoardsConnectionCap) {
  constexpr int kTricklers = 500;
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_cur < 2 * kTricklers) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4 * kTricklers);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  ASSERT_GE(lim.rlim_cur, static_cast<rlim_t>(kTricklers + 100)) << "open-file limit too low for the test";
  BitsdProcess server({"--max-connections", "64", "--request-slots", "16", "--read-buffers", "4",
                       "--read-buffer-bytes", "64K", "--max-open-files", "32", "--header-timeout-ms", "30000",
                       "--header-budget-ms", "2000", "--header-min-rate", "500", "--fdatasync", "off"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  std::string body = randomBytes(8 * 1024 * 1024, 2064);
  constexpr size_t kFrag = 1024 * 1024;
  std::string why;

  auto t0 = Steady::now();
  ASSERT_TRUE(upload(server.port(), "/alone.bin", body, kFrag, t0 + std::chrono::seconds(30), &why)) << why;
  long alone = msSince(t0);

  Tricklers attack(server.port(), kTricklers);
  attack.start();
  // Every trickler is open (accepted, or in the listen backlog) and the first accepted ones are past
  // their budget.
  waitUntil([&] { return attack.connected() >= kTricklers; }, 10000, 20);
  usleep(2500000);  // deliberate: the first accepted ones get past their budget (the scenario)

  long bound = std::max(10 * alone, alone + 15000);
  auto t1 = Steady::now();
  bool ok = upload(server.port(), "/attacked.bin", body, kFrag, t1 + std::chrono::milliseconds(bound), &why);
  long attacked = msSince(t1);
  attack.stop();
  std::cout << "router limits: upload of 8 MiB alone " << alone << " ms, under " << kTricklers << " tricklers "
            << attacked << " ms (bound " << bound << " ms); tricklers reconnected " << attack.reconnects()
            << " times\n";
  ASSERT_TRUE(ok) << why << " after " << attacked << " ms (alone: " << alone << " ms)";
  EXPECT_LE(attacked, bound);
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/attacked.bin", &got));
  EXPECT_TRUE(got == body);
}

}  // namespace
}  // namespace bitsd::testing
