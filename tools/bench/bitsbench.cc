// bitsbench: the benchmark client for docs/BENCHMARKS.md (libuv's benchmark-*.c style: one scenario
// per mode, each printing key=value figures). It is a plain blocking client; tools/bench.sh drives it.
//
//   bitsbench upload --port P --size BYTES --fragment BYTES [--path /f] [--host A] [--fragment-host B]
//       One BITS upload (Create-Session, Fragments, Close-Session) over one keep-alive connection,
//       to IPv4 address A (default 127.0.0.1). With --fragment-host, Create-Session goes to A and
//       the Fragments and Close-Session go over a second connection to B (a farm node that forwards
//       them to A, the session's owner: tools/bench-farm.sh).
//   bitsbench raw --size BYTES --out FILE [--buffer BYTES]
//       The baseline: an in-process receiver reads a raw TCP stream on 127.0.0.1 into a buffer of
//       --buffer bytes (give it bitsd's read-buffer-bytes) and write()s it to FILE; the same size is
//       sent. Same client, same loopback, same read size, no HTTP, no BITS.
//   bitsbench idle --port P --count N --pid PID
//       Opens N keep-alive connections, each after one Ping, and reports bitsd's RSS growth.
//   bitsbench active --port P --count N --fragment BYTES --hold-file F
//       N uploads in flight at once over N connections: each creates a session and gets one
//       fragment acked, then sends the head and half the body of its next fragment. With all N
//       mid-fragment it prints "active N" and waits until F exists (the caller measures bitsd
//       meanwhile, then creates F), sends the rest, checks every Ack, and closes the sessions.
//   bitsbench tls-idle --port P --count N --pid PID
//       As idle, over TLS: N connections each finish a handshake and one Ping and stay open; bitsd's
//       RSS growth per connection (certificates are not verified: this measures the server).
//   bitsbench tls-handshakes --port P --plain-port Q --count N
//       N full TLS handshakes one after another (a new connection each, then one Ping) against the
//       https bitsd on P; then, as the baseline, N plain connect+Ping round trips to the http bitsd on Q.
//   bitsbench trickle --port P --count N --seconds S
//       Slowloris: N connections, each sending one byte of a request head that never ends every
//       1-3 s (the first at once) and reconnecting at once when bitsd closes it, for S seconds;
//       then prints how many were connected and how often they were closed.
//   bitsbench cipher --size BYTES
//       The ceiling for TLS: mbedTLS ChaCha20-Poly1305 and AES-128-GCM over BYTES in 16 KiB records
//       (one TLS record each) on one core, in this process.
//   bitsbench gen-journal --state DIR --sessions N --open 0|1
//       Writes a state directory as bitsd would leave it with N sessions: a journal (each session
//       created, then either 1 MiB acked of 4 MiB with an in-progress file, or committed and closed).
//   bitsbench read --file F
//       A recovery baseline: reads F once, as replay must, and prints the time.
//   bitsbench scan --dir D
//       The other recovery baseline: one readdir of D with an fstatat of every entry (what checking
//       every in-progress file costs the file system, before bitsd does anything).
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include <mbedtls/chachapoly.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/gcm.h>
#include <mbedtls/ssl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/journal_format.h"
#include "core/protocol.h"
#include "core/state_files.h"
#include "platform/system.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "bitsbench: %s\n", why.c_str());
  std::exit(1);
}

int connectTo(int port, const std::string& host = "127.0.0.1") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) die("not an IPv4 address: " + host);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect: " + std::string(strerror(errno)));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void sendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) die("send failed");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads one response head; returns the status and fills `headers`.
int readAck(int fd, std::map<std::string, std::string>* headers) {
  std::string buf;
  char c[4096];
  while (buf.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, c, sizeof c, 0);
    if (n <= 0) die("connection closed while waiting for an Ack");
    buf.append(c, static_cast<size_t>(n));
  }
  int status = std::atoi(buf.c_str() + 9);
  size_t pos = buf.find("\r\n") + 2;
  while (headers != nullptr && pos < buf.size()) {
    size_t e = buf.find("\r\n", pos);
    if (e == pos) break;
    std::string line = buf.substr(pos, e - pos);
    size_t colon = line.find(':');
    if (colon != std::string::npos) (*headers)[line.substr(0, colon)] = line.substr(colon + 2);
    pos = e + 2;
  }
  return status;
}

std::string head(const std::string& path, const std::string& type, const std::string& extra, uint64_t len) {
  return "BITS_POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bitsbench\r\nBITS-Packet-Type: " + type +
         "\r\n" + extra + "Content-Length: " + std::to_string(len) + "\r\n\r\n";
}

std::map<std::string, std::string> parseArgs(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strncmp(argv[i], "--", 2) != 0) die(std::string("bad argument ") + argv[i]);
    a[argv[i] + 2] = argv[i + 1];
  }
  return a;
}

uint64_t num(const std::map<std::string, std::string>& a, const char* k) {
  auto it = a.find(k);
  if (it == a.end()) die(std::string("missing --") + k);
  return std::strtoull(it->second.c_str(), nullptr, 10);
}

std::vector<char> pattern(size_t n) {
  std::vector<char> v(n);
  uint32_t x = 12345;
  for (char& c : v) {
    x = x * 1103515245 + 12345;
    c = static_cast<char>(x >> 16);
  }
  return v;
}

int upload(const std::map<std::string, std::string>& a) {
  int port = static_cast<int>(num(a, "port"));
  uint64_t size = num(a, "size"), frag = num(a, "fragment");
  std::string path = a.count("path") ? a.at("path") : "/bench.bin";
  std::string host = a.count("host") ? a.at("host") : "127.0.0.1";
  std::vector<char> body = pattern(frag);
  int fd = connectTo(port, host);
  auto t0 = Clock::now();
  std::string create =
      head(path, "Create-Session", "BITS-Supported-Protocols: " + std::string(bitsd::kUploadProtocolGuid) + "\r\n", 0);
  sendAll(fd, create.data(), create.size());
  std::map<std::string, std::string> h;
  if (readAck(fd, &h) != 200) die("Create-Session failed");
  std::string id = h["BITS-Session-Id"];
  if (a.count("fragment-host")) {
    ::close(fd);
    fd = connectTo(port, a.at("fragment-host"));
  }
  for (uint64_t off = 0; off < size; off += frag) {
    uint64_t n = std::min<uint64_t>(frag, size - off);
    std::string hd = head(path, "Fragment",
                          "BITS-Session-Id: " + id + "\r\nContent-Range: bytes " + std::to_string(off) + "-" +
                              std::to_string(off + n - 1) + "/" + std::to_string(size) + "\r\n",
                          n);
    iovec iov[2] = {{hd.data(), hd.size()}, {body.data(), static_cast<size_t>(n)}};
    size_t total = hd.size() + static_cast<size_t>(n), sent = 0;
    while (sent < total) {
      ssize_t w = ::writev(fd, iov, 2);
      if (w <= 0) die("writev failed");
      sent += static_cast<size_t>(w);
      size_t skip = static_cast<size_t>(w);
      for (iovec& v : iov) {
        size_t k = std::min(skip, v.iov_len);
        v.iov_base = static_cast<char*>(v.iov_base) + k;
        v.iov_len -= k;
        skip -= k;
      }
    }
    int st = readAck(fd, nullptr);
    if (st != 200) die("fragment answered " + std::to_string(st));
  }
  std::string cl = head(path, "Close-Session", "BITS-Session-Id: " + id + "\r\n", 0);
  sendAll(fd, cl.data(), cl.size());
  readAck(fd, nullptr);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  std::printf("bytes=%llu seconds=%.3f MiBps=%.1f\n", static_cast<unsigned long long>(size), s, size / s / 1048576.0);
  return 0;
}

int trickle(const std::map<std::string, std::string>& a) {
  int port = static_cast<int>(num(a, "port"));
  size_t count = num(a, "count");
  auto end = Clock::now() + std::chrono::seconds(num(a, "seconds"));
  const std::string endless = "BITS_POST /trickle HTTP/1.1\r\nHost: x\r\nBITS-Packet-Type: Ping\r\nX-Slow: " +
                              std::string(8000, 'a');
  struct Conn {
    int fd = -1;
    size_t sent = 0;
    Clock::time_point next;
  };
  std::vector<Conn> conns(count);
  std::vector<pollfd> pfds(count);
  uint32_t x = 2020;
  uint64_t closes = 0;
  size_t open = 0;
  auto reopen = [&](Conn& c) {
    ::close(c.fd);
    c.fd = -1;
    ++closes;
  };
  while (Clock::now() < end) {
    auto now = Clock::now();
    open = 0;
    for (size_t i = 0; i < count; ++i) {
      Conn& c = conns[i];
      if (c.fd < 0) {
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<uint16_t>(port));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) reopen(c);
        c.sent = 0;
        c.next = now;
      }
      if (c.fd >= 0 && now >= c.next) {
        ssize_t n = ::send(c.fd, endless.data() + c.sent % endless.size(), 1, MSG_NOSIGNAL);
        if (n == 1) {
          ++c.sent;
          x = x * 1103515245 + 12345;
          c.next = now + std::chrono::milliseconds(1000 + (x >> 16) % 2001);
        } else if (n < 0 && errno != EAGAIN && errno != ENOTCONN) {
          reopen(c);
        } else {
          c.next = now + std::chrono::milliseconds(50);
        }
      }
      open += c.fd >= 0 && c.sent > 0;
      pfds[i] = {c.fd, POLLIN, 0};
    }
    ::poll(pfds.data(), pfds.size(), 50);
    for (size_t i = 0; i < count; ++i) {
      if (pfds[i].fd < 0 || (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[512];
      ssize_t n = ::recv(conns[i].fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) reopen(conns[i]);
    }
  }
  std::printf("tricklers=%zu connected=%zu closed=%llu\n", count, open, static_cast<unsigned long long>(closes));
  return 0;
}

void writeAll(int fd, const std::string& hd, const char* body, size_t n) {
  sendAll(fd, hd.data(), hd.size());
  sendAll(fd, body, n);
}

int active(const std::map<std::string, std::string>& a) {
  int port = static_cast<int>(num(a, "port"));
  size_t count = static_cast<size_t>(num(a, "count")), frag = static_cast<size_t>(num(a, "fragment"));
  if (!a.count("hold-file")) die("missing --hold-file");
  const std::string hold = a.at("hold-file");
  std::vector<char> body = pattern(frag);
  const uint64_t total = 2 * uint64_t{frag};
  std::vector<int> fds(count);
  std::vector<std::string> ids(count);
  auto path = [](size_t i) { return "/active-" + std::to_string(i) + ".bin"; };
  auto fragHead = [&](size_t i, uint64_t off) {
    return head(path(i), "Fragment",
                "BITS-Session-Id: " + ids[i] + "\r\nContent-Range: bytes " + std::to_string(off) + "-" +
                    std::to_string(off + frag - 1) + "/" + std::to_string(total) + "\r\n",
                frag);
  };
  for (size_t i = 0; i < count; ++i) {
    fds[i] = connectTo(port);
    std::string create = head(path(i), "Create-Session",
                              "BITS-Supported-Protocols: " + std::string(bitsd::kUploadProtocolGuid) + "\r\n", 0);
    sendAll(fds[i], create.data(), create.size());
    std::map<std::string, std::string> h;
    int st = readAck(fds[i], &h);
    if (st != 200) die("Create-Session " + std::to_string(i) + " answered " + std::to_string(st));
    ids[i] = h["BITS-Session-Id"];
    writeAll(fds[i], fragHead(i, 0), body.data(), frag);
    st = readAck(fds[i], nullptr);
    if (st != 200) die("first fragment " + std::to_string(i) + " answered " + std::to_string(st));
  }
  for (size_t i = 0; i < count; ++i) writeAll(fds[i], fragHead(i, frag), body.data(), frag / 2);
  std::printf("active %zu\n", count);
  std::fflush(stdout);
  for (int waited = 0; ::access(hold.c_str(), F_OK) != 0; waited += 10) {
    if (waited > 120000) die("no " + hold + " within 120 s");
    ::usleep(10000);
  }
  // The rest goes out on every connection at once, and Acks are read as they come: a server with
  // fewer request slots than uploads serves the waiting ones only as others finish, so finishing
  // them one by one could wait on a request the server has not started yet.
  size_t errors = 0;
  std::vector<size_t> sent(count, frag / 2);
  std::vector<std::string> in(count);
  std::vector<bool> acked(count, false);
  for (int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  size_t pending = count;
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (pending > 0) {
    if (Clock::now() > deadline) die("Acks missing after 120 s");
    std::vector<pollfd> pfds(count);
    for (size_t i = 0; i < count; ++i) {
      pfds[i].fd = acked[i] ? -1 : fds[i];
      pfds[i].events = static_cast<short>(POLLIN | (sent[i] < frag ? POLLOUT : 0));
    }
    if (::poll(pfds.data(), pfds.size(), 1000) < 0) die("poll failed");
    for (size_t i = 0; i < count; ++i) {
      if (acked[i]) continue;
      if ((pfds[i].revents & POLLOUT) != 0 && sent[i] < frag) {
        ssize_t w = ::send(fds[i], body.data() + sent[i], frag - sent[i], MSG_NOSIGNAL);
        if (w > 0) sent[i] += static_cast<size_t>(w);
      }
      if ((pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        char buf[4096];
        ssize_t r = ::recv(fds[i], buf, sizeof buf, 0);
        if (r > 0) in[i].append(buf, static_cast<size_t>(r));
        if (r == 0 || in[i].find("\r\n\r\n") != std::string::npos) {
          if (r == 0 || std::atoi(in[i].c_str() + 9) != 200) ++errors;
          acked[i] = true;
          --pending;
        }
      }
    }
  }
  for (size_t i = 0; i < count; ++i) {
    ::fcntl(fds[i], F_SETFL, ::fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
    std::string cl = head(path(i), "Close-Session", "BITS-Session-Id: " + ids[i] + "\r\n", 0);
    sendAll(fds[i], cl.data(), cl.size());
    if (readAck(fds[i], nullptr) != 200) ++errors;
    ::close(fds[i]);
  }
  std::printf("uploads=%zu errors=%zu\n", count, errors);
  return errors == 0 ? 0 : 1;
}

int raw(const std::map<std::string, std::string>& a) {
  uint64_t size = num(a, "size");
  size_t bufferBytes = a.count("buffer") ? static_cast<size_t>(num(a, "buffer")) : 256 * 1024;
  if (!a.count("out")) die("missing --out");
  std::string out = a.at("out");
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(lfd, 1);
  socklen_t len = sizeof addr;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  uint64_t received = 0;
  std::thread receiver([&] {
    int c = ::accept(lfd, nullptr, nullptr);
    int f = ::open(out.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    std::vector<char> buf(bufferBytes);
    ssize_t n;
    while ((n = ::recv(c, buf.data(), buf.size(), 0)) > 0) {
      if (::write(f, buf.data(), static_cast<size_t>(n)) != n) die("baseline write failed");
      received += static_cast<uint64_t>(n);
    }
    ::close(f);
    ::close(c);
  });
  std::vector<char> body = pattern(8 * 1024 * 1024);
  int fd = connectTo(ntohs(addr.sin_port));
  auto t0 = Clock::now();
  for (uint64_t off = 0; off < size; off += body.size()) {
    sendAll(fd, body.data(), std::min<uint64_t>(body.size(), size - off));
  }
  ::shutdown(fd, SHUT_WR);
  receiver.join();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  ::close(lfd);
  if (received != size) die("baseline lost bytes");
  std::printf("bytes=%llu seconds=%.3f MiBps=%.1f\n", static_cast<unsigned long long>(size), s, size / s / 1048576.0);
  return 0;
}

long rssKiB(int pid, const char* field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field));
  }
  die("cannot read /proc status");
}

int idle(const std::map<std::string, std::string>& a) {
  int port = static_cast<int>(num(a, "port"));
  int count = static_cast<int>(num(a, "count"));
  int pid = static_cast<int>(num(a, "pid"));
  // Warm up: one connection does a request first, so pools touched by any request are counted in the
  // "before" figure and the difference is what idle connections themselves cost.
  int warm = connectTo(port);
  std::string ping = head("/x", "Ping", "", 0);
  sendAll(warm, ping.data(), ping.size());
  readAck(warm, nullptr);
  long before = rssKiB(pid, "VmRSS:");
  std::vector<int> fds;
  for (int i = 0; i < count; ++i) {
    int fd = connectTo(port);
    sendAll(fd, ping.data(), ping.size());
    if (readAck(fd, nullptr) != 200) die("ping failed");
    fds.push_back(fd);
  }
  long after = rssKiB(pid, "VmRSS:");
  std::printf("connections=%d rss_before_kib=%ld rss_after_kib=%ld bytes_per_connection=%.0f\n", count, before, after,
              (after - before) * 1024.0 / count);
  for (int fd : fds) ::close(fd);
  ::close(warm);
  return 0;
}

// A blocking TLS client connection for the TLS modes (no verification: the server is what is measured).
struct TlsConn {
  int fd = -1;
  mbedtls_ssl_context ssl;
  TlsConn() { mbedtls_ssl_init(&ssl); }
  ~TlsConn() {
    mbedtls_ssl_free(&ssl);
    if (fd >= 0) ::close(fd);
  }
};

struct TlsClientConf {
  mbedtls_ssl_config conf;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_entropy_context entropy;
  TlsClientConf() {
    mbedtls_ssl_config_init(&conf);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0);
    mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);
  }
  ~TlsClientConf() {
    mbedtls_ssl_config_free(&conf);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
  }
};

int tlsSendCb(void* ctx, const unsigned char* b, size_t len) {
  ssize_t n = ::send(*static_cast<int*>(ctx), b, len, MSG_NOSIGNAL);
  return n < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : static_cast<int>(n);
}
int tlsRecvCb(void* ctx, unsigned char* b, size_t len) {
  ssize_t n = ::recv(*static_cast<int*>(ctx), b, len, 0);
  if (n == 0) return MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY;
  return n < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : static_cast<int>(n);
}

// Connects, handshakes, sends one Ping and reads its Ack.
void tlsPing(TlsClientConf& cc, int port, TlsConn* c) {
  c->fd = connectTo(port);
  if (mbedtls_ssl_setup(&c->ssl, &cc.conf) != 0) die("TLS setup failed");
  mbedtls_ssl_set_bio(&c->ssl, &c->fd, tlsSendCb, tlsRecvCb, nullptr);
  int rc;
  while ((rc = mbedtls_ssl_handshake(&c->ssl)) == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
  }
  if (rc != 0) die("TLS handshake failed");
  std::string ping = head("/x", "Ping", "", 0);
  if (mbedtls_ssl_write(&c->ssl, reinterpret_cast<const unsigned char*>(ping.data()), ping.size()) <= 0) die("TLS write failed");
  std::string in;
  unsigned char buf[4096];
  while (in.find("\r\n\r\n") == std::string::npos) {
    int n = mbedtls_ssl_read(&c->ssl, buf, sizeof buf);
    if (n <= 0) die("TLS read failed");
    in.append(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
  }
  if (in.rfind("HTTP/1.1 200", 0) != 0) die("ping failed over TLS");
}

int tlsIdle(const std::map<std::string, std::string>& a) {
  int port = static_cast<int>(num(a, "port"));
  int count = static_cast<int>(num(a, "count"));
  int pid = static_cast<int>(num(a, "pid"));
  TlsClientConf cc;
  auto warm = std::make_unique<TlsConn>();
  tlsPing(cc, port, warm.get());
  long before = rssKiB(pid, "VmRSS:");
  std::vector<std::unique_ptr<TlsConn>> conns;
  for (int i = 0; i < count; ++i) {
    conns.push_back(std::make_unique<TlsConn>());
    tlsPing(cc, port, conns.back().get());
  }
  long after = rssKiB(pid, "VmRSS:");
  std::printf("tls_connections=%d rss_before_kib=%ld rss_after_kib=%ld bytes_per_connection=%.0f\n", count, before,
              after, (after - before) * 1024.0 / count);
  return 0;
}

int tlsHandshakes(const std::map<std::string, std::string>& a) {
  int port = static_cast<int>(num(a, "port"));
  int plainPort = static_cast<int>(num(a, "plain-port"));
  int count = static_cast<int>(num(a, "count"));
  TlsClientConf cc;
  auto t0 = Clock::now();
  for (int i = 0; i < count; ++i) {
    TlsConn c;
    tlsPing(cc, port, &c);
  }
  double tls = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string ping = head("/x", "Ping", "", 0);
  t0 = Clock::now();
  for (int i = 0; i < count; ++i) {
    int fd = connectTo(plainPort);  // a plain-http bitsd, as the baseline
    sendAll(fd, ping.data(), ping.size());
    if (readAck(fd, nullptr) != 200) die("plain ping failed");
    ::close(fd);
  }
  double plain = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("handshakes=%d tls_per_second=%.1f plain_connects_per_second=%.1f\n", count, count / tls, count / plain);
  return 0;
}

int cipher(const std::map<std::string, std::string>& a) {
  uint64_t size = num(a, "size");
  std::vector<unsigned char> in(16384), out(16384);
  unsigned char key[32] = {1}, iv[12] = {0}, tag[16];
  mbedtls_chachapoly_context c;
  mbedtls_chachapoly_init(&c);
  mbedtls_chachapoly_setkey(&c, key);
  auto t0 = Clock::now();
  for (uint64_t d = 0; d < size; d += in.size()) {
    mbedtls_chachapoly_encrypt_and_tag(&c, in.size(), iv, nullptr, 0, in.data(), out.data(), tag);
  }
  double chacha = std::chrono::duration<double>(Clock::now() - t0).count();
  mbedtls_chachapoly_free(&c);
  mbedtls_gcm_context g;
  mbedtls_gcm_init(&g);
  mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, 128);
  t0 = Clock::now();
  for (uint64_t d = 0; d < size; d += in.size()) {
    mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, in.size(), iv, 12, nullptr, 0, in.data(), out.data(), 16, tag);
  }
  double gcm = std::chrono::duration<double>(Clock::now() - t0).count();
  mbedtls_gcm_free(&g);
  double mib = static_cast<double>(size) / (1024.0 * 1024.0);
  std::printf("chacha20_poly1305_MiBps=%.1f aes_128_gcm_MiBps=%.1f\n", mib / chacha, mib / gcm);
  return 0;
}

int genJournal(const std::map<std::string, std::string>& a) {
  std::string state = a.at("state");
  uint64_t n = num(a, "sessions");
  bool open = num(a, "open") != 0;
  ::mkdir(state.c_str(), 0755);
  const std::string partialDir = bitsd::partialDirOf(state);
  ::mkdir(partialDir.c_str(), 0755);
  std::vector<uint8_t> out(bitsd::kJournalBlockBytes, 0);
  bitsd::JournalHeader h;
  h.salt = 0xB175;
  bitsd::encodeJournalHeader(h, out.data());
  uint64_t seq = 1;
  uint8_t buf[512];
  auto emit = [&](const bitsd::JournalRecord& r) {
    size_t k = bitsd::encodeRecord(r, h.salt, seq++, buf, sizeof buf);
    out.insert(out.end(), buf, buf + k);
  };
  uint64_t wall = static_cast<uint64_t>(::time(nullptr));
  // What bitsd journals with each Progress: the SHA-256 running state over the acked bytes (here the
  // 1 MiB of zeros each sparse in-progress file holds).
  bitsd::platform::MbedSha256 sha;
  bitsd::Sha256State st;
  sha.start(st);
  std::vector<char> zeros(1u << 20, 0);
  sha.update(st, std::span<const char>(zeros.data(), zeros.size()));
  uint8_t midstate[bitsd::Sha256::kMaxExportBytes];
  size_t midLen = sha.exportState(st, midstate);
  for (uint64_t i = 0; i < n; ++i) {
    bitsd::JournalRecord r;
    uint8_t rnd[16];
    for (int k = 0; k < 16; ++k) rnd[k] = static_cast<uint8_t>((i * 2654435761u) >> (k % 4 * 8) ^ k * 37 ^ i >> 16);
    std::memcpy(rnd, &i, sizeof i);
    r.id = bitsd::sessionIdFromRandom(std::span<const uint8_t, 16>(rnd, 16));
    std::string path = "uploads/file-" + std::to_string(i) + ".bin";
    r.type = bitsd::RecordType::SessionCreated;
    r.path = path;
    r.wallSeconds = wall;
    emit(r);
    r.totalBytes = 4u << 20;
    if (open) {
      r.type = bitsd::RecordType::Progress;
      r.haveBytes = 1u << 20;
      r.shaStateLen = static_cast<uint8_t>(midLen);
      std::memcpy(r.shaState, midstate, midLen);
      emit(r);
      std::string part(partialDir.size() + 2 + bitsd::kPartialNameBytes, '\0');
      part.resize(bitsd::formatPartialPath(partialDir, r.id, part.data()));
      int fd = ::open(part.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
      if (fd < 0 || ::ftruncate(fd, 1 << 20) != 0) die("cannot create " + part);
      ::close(fd);
    } else {
      r.type = bitsd::RecordType::Committed;
      emit(r);
      r.type = bitsd::RecordType::Closed;
      emit(r);
    }
  }
  uint64_t off = out.size();
  size_t k = bitsd::encodePad(off, h.salt, seq, buf, sizeof buf);
  out.insert(out.end(), buf, buf + k);
  std::string jpath = state + "/journal";
  int fd = ::open(jpath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0 || ::write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size())) die("cannot write " + jpath);
  ::fsync(fd);
  ::close(fd);
  std::printf("sessions=%llu journal_bytes=%zu\n", static_cast<unsigned long long>(n), out.size());
  return 0;
}

int readFileMode(const std::map<std::string, std::string>& a) {
  std::string f = a.at("file");
  auto t0 = Clock::now();
  int fd = ::open(f.c_str(), O_RDONLY);
  if (fd < 0) die("cannot open " + f);
  std::vector<char> buf(1 << 20);
  size_t total = 0;
  ssize_t n;
  while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += static_cast<size_t>(n);
  ::close(fd);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("bytes=%zu ms=%.1f\n", total, ms);
  return 0;
}

int scanMode(const std::map<std::string, std::string>& a) {
  std::string dir = a.at("dir");
  auto t0 = Clock::now();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) die("cannot open " + dir);
  int fd = ::dirfd(d);
  size_t files = 0;
  struct stat st;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) ++files;
  }
  ::closedir(d);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("files=%zu ms=%.1f\n", files, ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: bitsbench upload|raw|idle --key value ... (see the top of tools/bench/bitsbench.cc)");
  std::string mode = argv[1];
  auto a = parseArgs(argc, argv);
  if (mode == "upload") return upload(a);
  if (mode == "raw") return raw(a);
  if (mode == "active") return active(a);
  if (mode == "idle") return idle(a);
  if (mode == "tls-idle") return tlsIdle(a);
  if (mode == "cipher") return cipher(a);
  if (mode == "trickle") return trickle(a);
  if (mode == "tls-handshakes") return tlsHandshakes(a);
  if (mode == "gen-journal") return genJournal(a);
  if (mode == "read") return readFileMode(a);
  if (mode == "scan") return scanMode(a);
  die("unknown mode " + mode);
}
