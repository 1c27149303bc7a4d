// libFuzzer target for the header-buffering path of the real server (issue 20, hole 1): UvServer,
// UploadEngine, Journal and UvStorage run in this process on a libuv loop (as in
// tests/integration/zero_alloc_test.cc, but on this thread), started once on 127.0.0.1:0 with small
// limits (4 request slots, so 1 reserved for complete heads; 4 connections; a 10 ms header budget),
// so that the slot reserve (headComplete's recv(MSG_PEEK)), the hand-over of freed slots (handSlot)
// and the eviction of slow heads all happen within a few milliseconds.
//
// Each input is a script for up to 6 client sockets: connect, send fuzzer bytes or a canned request
// piece, send one byte, pause a few ms, half-close, close. Between steps the loop runs and every
// client reads what came back. After the script (a violation aborts, which the fuzzer reports):
//   - every client's received bytes are a sequence of whole HTTP/1.1 responses (status line,
//     headers, Content-Length body); only a connection the server reset may end in a cut one;
//   - once the clients have closed, the server returns, in bounded time, to no connection and every
//     request slot free;
//   - a fresh client's Ping gets 200 in bounded time: the server still serves.
// Server state (sessions, journal) carries over from input to input, as in a long-running bitsd.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "core/journal.h"
#include "core/log.h"
#include "core/upload_engine.h"
#include "platform/recovery.h"
#include "platform/system.h"
#include "platform/uv_server.h"
#include "platform/uv_storage.h"

namespace {

using namespace bitsd;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_server invariant broken: %s\n", what);
    std::abort();
  }
}

constexpr uint32_t kSlots = 4;
constexpr int kClients = 6;

struct World {
  std::string dir;
  Settings settings;
  uv_loop_t loop;
  platform::DrbgRandom random;
  platform::UvClock clock;
  platform::MbedSha256 sha;
  platform::UvStorage* storage = nullptr;
  platform::UvFlushScheduler* scheduler = nullptr;
  Journal* journal = nullptr;
  UploadEngine* engine = nullptr;
  platform::UvServer* server = nullptr;
  int port = 0;
};

World* gWorld = nullptr;

World& world() {
  if (gWorld != nullptr) return *gWorld;
  World* w = new World();
  ::signal(SIGPIPE, SIG_IGN);
  if (std::getenv("FUZZ_SERVER_LOG") != nullptr) {  // the server's log on stderr, to debug an input
    setLogSink([](LogLevel, const char* line) { std::fprintf(stderr, "bitsd: %s\n", line); });
    setLogLevel(LogLevel::Debug);
  }  // as bitsd does: a write to a closed client is an error, not a signal
  const char* env = std::getenv("TMPDIR");
  std::string tmpl = std::string(env != nullptr && *env != '\0' ? env : "/tmp") + "/fuzz_server.XXXXXX";
  require(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  w->dir = tmpl;
  std::atexit([] {
    ::nftw(gWorld->dir.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
           FTW_DEPTH | FTW_PHYS);
  });
  Settings& s = w->settings;
  std::string err;
  s.listen = "127.0.0.1:0";
  s.root = w->dir + "/root";
  s.state = w->dir + "/state";
  s.maxConnections = 4;
  s.requestSlots = kSlots;
  s.readBuffers = 3;
  s.readBufferBytes = 16384;
  s.maxHeaderBytes = 2048;
  s.maxSessions = 64;
  s.maxOpenFiles = 8;
  s.maxFragmentBytes = 65536;
  s.headerBudgetMs = 10;
  s.headerMinRate = 500;
  s.headerTimeoutMs = 120;
  s.idleTimeoutMs = 200;
  s.bodyTimeoutMs = 200;
  s.journalMaxBytes = 1 << 20;
  std::string rootReal;
  Outcome prepared = platform::prepareDirectories(s, &rootReal);
  require(prepared.isOk(), prepared.message().c_str());
  uv_loop_init(&w->loop);
  require(w->random.init().isOk(), "random generator");
  w->storage = new platform::UvStorage(&w->loop, w->sha);
  w->scheduler = new platform::UvFlushScheduler(&w->loop);
  w->journal = new Journal(*w->storage, *w->scheduler, w->random);
  w->scheduler->setJournal(w->journal);
  w->engine = new UploadEngine(*w->storage, w->clock, w->random, w->sha, *w->journal);
  Settings es = s;
  es.root = rootReal;
  require(w->engine->init(es).isOk(), "engine init");
  require(w->journal->init(s.journalBufferBytes, 64, s.journalMaxBytes, s.state + "/journal").isOk(), "journal init");
  platform::RecoveryReport rep;
  Outcome recovered = platform::recoverState(s, *w->engine, *w->journal, w->sha, w->random, &rep);
  require(recovered.isOk(), recovered.message().c_str());
  w->server = new platform::UvServer(&w->loop, s, *w->engine);
  w->server->setJournal(w->journal, w->scheduler);
  std::string url;
  Outcome started = w->server->start(&url);
  require(started.isOk(), started.message().c_str());
  w->port = std::atoi(url.c_str() + url.rfind(':') + 1);
  gWorld = w;
  return *w;
}

struct Client {
  int fd = -1;
  bool reset = false;
  std::string got;
};

Client gClients[kClients + 1];

void readAll() {
  for (Client& c : gClients) {
    if (c.fd < 0) continue;
    char buf[4096];
    while (true) {
      ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        c.got.append(buf, static_cast<size_t>(r));
        continue;
      }
      if (r < 0 && errno == ECONNRESET) c.reset = true;
      break;
    }
  }
}

// Runs the loop for about `ms` (0: one pass without waiting), reading the clients as it goes. Only
// UV_RUN_NOWAIT: UV_RUN_ONCE would block until the server's own next timer (seconds away) after a
// timer of ours had run. In between, it waits on the loop's backend descriptor.
void spin(uint32_t ms) {
  World& w = world();
  uint64_t end = uv_hrtime() + static_cast<uint64_t>(ms) * 1000000;
  while (true) {
    uv_run(&w.loop, UV_RUN_NOWAIT);
    readAll();
    uint64_t now = uv_hrtime();
    if (now >= end) return;
    int left = static_cast<int>((end - now + 999999) / 1000000);
    int next = uv_backend_timeout(&w.loop);
    if (next >= 0 && next < left) left = next;
    pollfd p{uv_backend_fd(&w.loop), POLLIN, 0};
    ::poll(&p, 1, left);
  }
}

template <typename Pred>
bool settle(Pred done, uint32_t maxMs) {
  uint64_t start = uv_hrtime();
  while (!done()) {
    if (uv_hrtime() - start > static_cast<uint64_t>(maxMs) * 1000000) return false;
    spin(1);
  }
  return true;
}

bool connectClient(Client& c) {
  World& w = world();
  c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  require(c.fd >= 0, "socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(w.port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Blocking: on loopback the kernel completes it from the backlog, before the server accepts.
  if (::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(c.fd);
    c.fd = -1;
    return false;
  }
  int one = 1;
  ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
  c.got.clear();
  c.reset = false;
  return true;
}

void sendBytes(Client& c, std::string_view bytes) {
  if (c.fd < 0 || bytes.empty()) return;
  ssize_t r = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)r;  // a full socket (the server is not reading) or a closed one: the rest is dropped
}

// Checks that `got` is a sequence of whole HTTP/1.1 responses; returns the last status (0: none).
int checkResponses(const Client& c) {
  std::string_view s = c.got;
  int last = 0;
  while (!s.empty()) {
    size_t end = s.find("\r\n\r\n");
    if (end == std::string_view::npos) {
      require(c.reset, "a response head cut short on a connection that was not reset");
      return last;
    }
    std::string_view head = s.substr(0, end + 2);
    require(head.size() > 13 && head.substr(0, 9) == "HTTP/1.1 ", "not an HTTP/1.1 status line");
    int status = 0;
    for (size_t i = 9; i < 12; ++i) {
      require(head[i] >= '0' && head[i] <= '9', "status code not 3 digits");
      status = status * 10 + (head[i] - '0');
    }
    require(status >= 100 && status <= 599 && head[12] == ' ', "status code");
    size_t cl = std::string_view::npos;
    size_t pos = head.find("\r\n") + 2;
    while (pos < head.size()) {
      size_t eol = head.find("\r\n", pos);
      std::string_view line = head.substr(pos, eol - pos);
      size_t colon = line.find(':');
      require(colon != std::string_view::npos && colon > 0, "a header line without a name");
      std::string name(line.substr(0, colon));
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (name == "content-length") {
        require(cl == std::string_view::npos, "two Content-Length headers");
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        require(!v.empty() && v.size() < 10, "Content-Length value");
        cl = 0;
        for (char ch : v) {
          require(ch >= '0' && ch <= '9', "Content-Length not a number");
          cl = cl * 10 + static_cast<size_t>(ch - '0');
        }
      }
      pos = eol + 2;
    }
    require(cl != std::string_view::npos, "a response without Content-Length");
    if (s.size() < end + 4 + cl) {
      require(c.reset, "a response body cut short on a connection that was not reset");
      return status;
    }
    s.remove_prefix(end + 4 + cl);
    last = status;
  }
  return last;
}

void closeClient(Client& c) {
  if (c.fd < 0) return;
  readAll();
  checkResponses(c);
  ::close(c.fd);
  c.fd = -1;
  c.got.clear();
}

const char* const kPieces[] = {
    "BITS_POST / HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n",
    "BITS_POST /up/x.bin HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Ping\r\n\r\n",
    "BITS_POST / HTTP/1.1\r\nBITS-Packet-Type: Ping\r\n\r\n",
    "BITS_POST /f.bin HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Create-Session\r\n"
    "BITS-Supported-Protocols: {7df0354d-249b-430f-820d-3d2a9bef4931}\r\n\r\n",
    "BITS_POST / HTTP/1.1\r\nHost: h\r\n",
    "BITS-Packet-Type: Ping\r\n",
    "\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "BITS_POST /f.bin HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Fragment\r\nContent-Length: 5\r\n\r\nhello",
    "BITS_POST /f.bin HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Cancel-Session\r\n"
    "BITS-Session-Id: {00000000-0000-0000-0000-000000000000}\r\n\r\n",
    "BITS_POST / HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Ping\r\nConnection: close\r\n\r\n",
    "\r\n\r\n",
    "B",
    "BITS_POST / HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n"
    "BITS_POST / HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n",
    "X-Pad: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
    "BITS_POST /f.bin HTTP/1.1\r\nHost: h\r\nBITS-Packet-Type: Fragment\r\n"
    "BITS-Session-Id: {00000000-0000-0000-0000-000000000000}\r\nContent-Range: bytes 0-4/5\r\n"
    "Content-Length: 5\r\n\r\nhello",
};

bool serverIdle() {
  World& w = world();
  return w.server->stats().active == 0 && w.server->freeRequestSlots() == kSlots;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();  // started on the first input
  size_t pos = 0;
  auto byte = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
  uint32_t pausedMs = 0;
  int steps = 0;
  while (pos < size && steps++ < 64) {
    uint8_t op = byte();
    Client& c = gClients[(op & 7) % kClients];  // low 3 bits: the client, next 3: the operation
    switch ((op >> 3) % 8) {
      case 0:
        if (c.fd < 0) connectClient(c);
        break;
      case 1: {  // raw fuzzer bytes
        size_t len = byte() % 64;
        if (len > size - pos) len = size - pos;
        sendBytes(c, std::string_view(reinterpret_cast<const char*>(data + pos), len));
        pos += len;
        break;
      }
      case 2:
      case 3: {  // a canned piece
        uint8_t b = byte();
        std::string_view piece = kPieces[b % (sizeof kPieces / sizeof kPieces[0])];
        if (b & 0x80) piece = piece.substr(0, piece.size() / 2);
        sendBytes(c, piece);
        break;
      }
      case 4: {  // one byte
        uint8_t b = byte();
        std::string_view piece = kPieces[b % (sizeof kPieces / sizeof kPieces[0])];
        sendBytes(c, piece.substr(0, 1));
        break;
      }
      case 5: {  // a pause: the header budget (10 ms) and timeouts run out
        uint32_t ms = byte() % 32;
        if (pausedMs + ms > 300) ms = 0;
        pausedMs += ms;
        spin(ms);
        break;
      }
      case 6:
        if (c.fd >= 0) ::shutdown(c.fd, SHUT_WR);
        break;
      case 7: closeClient(c); break;
    }
    spin(0);
    spin(0);
  }
  spin(1);
  if (std::getenv("FUZZ_SERVER_LOG") != nullptr) {
    std::fprintf(stderr, "script done: %u connections, %u free slots, %llu timeouts\n", w.server->stats().active,
                 w.server->freeRequestSlots(), static_cast<unsigned long long>(w.server->stats().timeouts));
  }
  for (int i = 0; i < kClients; ++i) closeClient(gClients[i]);
  require(settle(serverIdle, 5000), "the server did not return to no connection and all slots free");

  // Still serving: a fresh client's Ping gets 200.
  Client& probe = gClients[kClients];
  require(connectClient(probe), "cannot connect after the script");
  sendBytes(probe, kPieces[0]);
  bool answered = settle(
      [&] {
        std::string_view g = probe.got;
        size_t end = g.find("\r\n\r\n");
        return end != std::string_view::npos;
      },
      5000);
  require(answered, "no answer to a Ping after the script");
  require(checkResponses(probe) == 200, "a Ping after the script did not get 200");
  closeClient(probe);
  require(settle(serverIdle, 5000), "the server did not return to idle after the Ping");
  return 0;
}
