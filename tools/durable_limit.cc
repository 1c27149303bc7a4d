// durable_limit: the raw durable-write limit that bitsd's durable path is measured against
// (docs/BENCHMARKS.md, tools/bench-durable.sh). No HTTP, no BITS, no journal, no digest: N
// connections on 127.0.0.1, each one upload of --size bytes in --fragment pieces. Per connection a
// receiver thread reads into a --buffer byte buffer (give it bitsd's read-buffer-bytes), write()s
// each read to its own file, and at every fragment's end fdatasync()s the file and answers 1 byte;
// a sender thread sends a fragment, then waits for that byte before the next (as a BITS client
// waits for each Ack).
//
//   durable_limit --dir DIR [--size BYTES] [--fragment BYTES] [--conns N] [--buffer BYTES]
//                 [--sync on|off] [--writeback BYTES] [--hash off|thread]
// --writeback starts the kernel's writeback (sync_file_range SYNC_FILE_RANGE_WRITE) of every BYTES
// written while the fragment still arrives: an experiment, not part of the limit as defined.
// --hash thread (built with Nettle, as bitsd is) adds the best pipeline for a SHA-256 of the upload
// that this author knows: the receiver fills whole --buffer buffers from a ring of four, writes
// each and hands it to a hash thread of its own, which runs back to back over the full buffers
// without ever waiting for a write; at a fragment's end the receiver waits for the hash to catch
// up before the fdatasync and the answer (as bitsd journals the digest state with the fragment).
// It is the ceiling for item 3 of issue 18 (the digest's cost): no server can hash one upload
// faster than this on the same machine.
// Prints: conns=N bytes=TOTAL seconds=S MiBps=AGGREGATE (all connections' bytes over the wall time
// from the first connect to the last answer) sync_seconds=T (time in fdatasync, summed over the
// connections). The files are removed afterwards.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#ifdef DURABLE_LIMIT_NETTLE
#include <nettle/sha2.h>
#endif

namespace {

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "durable_limit: %s: %s\n", why.c_str(), std::strerror(errno));
  std::exit(1);
}

uint64_t number(const char* s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != 0 || v == 0) {
    std::fprintf(stderr, "durable_limit: not a positive number: %s\n", s);
    std::exit(2);
  }
  return v;
}

struct Options {
  std::string dir;
  uint64_t size = 512ull << 20;
  uint64_t fragment = 8ull << 20;
  uint64_t conns = 1;
  uint64_t buffer = 256 << 10;
  bool sync = true;
  uint64_t writeback = 0;  // --writeback: sync_file_range(WRITE) every this many bytes (0: never)
  bool hash = false;       // --hash thread: SHA-256 of the upload on a thread of its own
};

void writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die("write");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::atomic<uint64_t> syncNs{0};  // time spent in fdatasync, all connections

// A fragment's last byte is written: fdatasync (timed), answer 1 byte, and move to the next.
void endFragment(const Options& o, int file, int sock, uint64_t* fragmentEnd) {
  auto s0 = std::chrono::steady_clock::now();
  if (o.sync && ::fdatasync(file) != 0) die("fdatasync");
  syncNs += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - s0).count());
  char one = 1;
  writeAll(sock, &one, 1);
  *fragmentEnd = std::min(o.size, *fragmentEnd + o.fragment);
}

void receive(const Options& o, int sock, const std::string& path) {
  int file = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (file < 0) die("open " + path);
  std::vector<char> buf(o.buffer);
  uint64_t got = 0, fragmentEnd = std::min(o.fragment, o.size);
  while (got < o.size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), fragmentEnd - got));
    ssize_t r = ::recv(sock, buf.data(), want, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("recv");
    writeAll(file, buf.data(), static_cast<size_t>(r));
    if (o.writeback > 0 && (got + static_cast<uint64_t>(r)) / o.writeback > got / o.writeback) {
      // Start writeback of the whole units written so far (as RocksDB's bytes_per_sync).
      uint64_t from = got / o.writeback * o.writeback, to = (got + static_cast<uint64_t>(r)) / o.writeback * o.writeback;
      ::sync_file_range(file, static_cast<off_t>(from), static_cast<off_t>(to - from), SYNC_FILE_RANGE_WRITE);
    }
    got += static_cast<uint64_t>(r);
    if (got == fragmentEnd) {
      endFragment(o, file, sock, &fragmentEnd);
    }
  }
  ::close(file);
  ::unlink(path.c_str());
  ::close(sock);
}

#ifdef DURABLE_LIMIT_NETTLE
// --hash thread: the receive loop of `receive`, in whole buffers, with a hash thread beside it.
void receiveHashed(const Options& o, int sock, const std::string& path) {
  int file = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (file < 0) die("open " + path);
  constexpr size_t kRing = 4;
  std::vector<std::vector<char>> bufs(kRing, std::vector<char>(o.buffer));
  std::mutex m;
  std::condition_variable cv;
  std::vector<char*> idle;                       // buffers free to receive into
  std::deque<std::pair<char*, size_t>> written;  // buffers written, waiting for the hash, in order
  bool end = false;
  for (auto& b : bufs) idle.push_back(b.data());
  sha256_ctx ctx;
  sha256_init(&ctx);
  std::thread hasher([&] {
    for (;;) {
      std::pair<char*, size_t> next;
      {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return !written.empty() || end; });
        if (written.empty()) return;
        next = written.front();
        written.pop_front();
      }
      sha256_update(&ctx, next.second, reinterpret_cast<const uint8_t*>(next.first));
      {
        std::lock_guard lock(m);
        idle.push_back(next.first);
      }
      cv.notify_all();
    }
  });
  uint64_t got = 0, fragmentEnd = std::min(o.fragment, o.size);
  while (got < o.size) {
    char* buf;
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return !idle.empty(); });
      buf = idle.back();
      idle.pop_back();
    }
    const size_t want = static_cast<size_t>(std::min<uint64_t>(o.buffer, fragmentEnd - got));
    size_t have = 0;
    while (have < want) {
      ssize_t r = ::recv(sock, buf + have, want - have, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("recv");
      have += static_cast<size_t>(r);
    }
    writeAll(file, buf, have);
    {
      std::lock_guard lock(m);
      written.emplace_back(buf, have);
    }
    cv.notify_all();
    got += have;
    if (got == fragmentEnd) {
      {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return idle.size() == kRing; });  // the hash has caught up
      }
      endFragment(o, file, sock, &fragmentEnd);
    }
  }
  {
    std::lock_guard lock(m);
    end = true;
  }
  cv.notify_all();
  hasher.join();
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, sizeof digest, digest);
  ::close(file);
  ::unlink(path.c_str());
  ::close(sock);
}
#endif

void sendUpload(const Options& o, uint16_t port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) die("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  int one = 1;
  ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::vector<char> data(static_cast<size_t>(std::min(o.fragment, o.size)));
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  for (uint64_t sent = 0; sent < o.size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(o.fragment, o.size - sent));
    writeAll(s, data.data(), n);
    sent += n;
    char ack;
    ssize_t r;
    do r = ::recv(s, &ack, 1, 0);
    while (r < 0 && errno == EINTR);
    if (r != 1) die("no answer from the receiver");
  }
  ::close(s);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (v != nullptr && a == "--dir") o.dir = argv[++i];
    else if (v != nullptr && a == "--size") o.size = number(argv[++i]);
    else if (v != nullptr && a == "--fragment") o.fragment = number(argv[++i]);
    else if (v != nullptr && a == "--conns") o.conns = number(argv[++i]);
    else if (v != nullptr && a == "--buffer") o.buffer = number(argv[++i]);
    else if (v != nullptr && a == "--sync") o.sync = std::string(argv[++i]) != "off";
    else if (v != nullptr && a == "--writeback") o.writeback = number(argv[++i]);
    else if (v != nullptr && a == "--hash" && (std::string(v) == "off" || std::string(v) == "thread")) {
      o.hash = std::string(argv[++i]) == "thread";
#ifndef DURABLE_LIMIT_NETTLE
      if (o.hash) {
        std::fprintf(stderr, "durable_limit: --hash thread needs a build with Nettle\n");
        return 2;
      }
#endif
    }
    else {
      std::fprintf(stderr,
                   "usage: durable_limit --dir DIR [--size BYTES] [--fragment BYTES] [--conns N] "
                   "[--buffer BYTES] [--sync on|off] [--writeback BYTES] [--hash off|thread]\n");
      return 2;
    }
  }
  if (o.dir.empty()) {
    std::fprintf(stderr, "durable_limit: --dir is required\n");
    return 2;
  }
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener, 1024) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    die("listen");
  }
  const uint16_t port = ntohs(a.sin_port);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (uint64_t i = 0; i < o.conns; ++i) threads.emplace_back(sendUpload, std::cref(o), port);
  for (uint64_t i = 0; i < o.conns; ++i) {
    int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) die("accept");
    std::string path = o.dir + "/limit-" + std::to_string(i) + ".bin";
#ifdef DURABLE_LIMIT_NETTLE
    if (o.hash) {
      threads.emplace_back(receiveHashed, std::cref(o), c, path);
      continue;
    }
#endif
    threads.emplace_back(receive, std::cref(o), c, path);
  }
  for (auto& t : threads) t.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double total = static_cast<double>(o.size) * static_cast<double>(o.conns);
  std::printf("conns=%llu bytes=%.0f seconds=%.3f MiBps=%.1f sync_seconds=%.3f\n", static_cast<unsigned long long>(o.conns),
              total, s, total / 1048576.0 / s, static_cast<double>(syncNs.load()) / 1e9);
  return 0;
}
