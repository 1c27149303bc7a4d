// bitsload: the small-upload load generator of docs/BENCHMARKS.md (issue 18 item 4). Like wrk:
// T threads (default 2, as `wrk -t2`), each with its own epoll over its share of N keep-alive
// connections on 127.0.0.1, each connection doing whole requests back to back for a fixed time; but
// it can follow a BITS upload's three requests, which wrk's scripts cannot (wrk gives a script no
// handle on which connection a response came from). The same generator drives both sides of the
// comparison, so both pay the same client cost per request.
//
//   bitsload bits --port P [--clients 50] [--threads 2] [--seconds 10] [--size 65536] [--path /small]
//       Each client repeats whole BITS uploads of --size bytes: Create-Session (a new file name
//       each time: PATH/c<client>-<n>.bin), one Fragment with the whole body, Close-Session.
//       An upload counts when its Close-Session is answered 200.
//   bitsload bits ... --hosts 127.0.0.1,127.0.0.2,127.0.0.3
//       Client i connects to the (i mod n)-th address instead of 127.0.0.1 (every request of its
//       uploads goes there): load spread over the nodes of a farm on one machine (tools/bench-farm.sh).
//   bitsload put --port P [--clients 50] [--threads 2] [--seconds 10] [--size 65536] [--path /dav]
//       Each client repeats HTTP PUTs of --size bytes, a new file each time (PATH/c<client>-<n>.bin),
//       e.g. against nginx's WebDAV module. A PUT counts when it is answered 201 or 204.
//
// Prints key=value figures: clients, seconds, uploads (completed), uploads_per_s, requests_per_s,
// errors (answers with another status: the run stops at the first one, printing it).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "bitsload: %s\n", why.c_str());
  std::exit(1);
}

constexpr const char* kUploadProtocol = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

enum class Mode { Bits, Put };
enum class Step { Create, Fragment, Close, Put };

struct Client {
  int fd = -1;
  int id = 0;
  uint64_t n = 0;  // uploads started by this client
  Step step = Step::Create;
  std::string head;      // the request head being sent
  size_t bodyLen = 0;    // body bytes after the head
  size_t sent = 0;       // of head + body
  std::string in;        // response bytes read so far
  std::string sessionId;
  std::string path;
};

struct Options {
  Mode mode = Mode::Bits;
  int port = 0;
  int clients = 50;
  int threads = 2;
  double seconds = 10;
  size_t size = 64 * 1024;
  std::string path;
  std::vector<std::string> hosts{"127.0.0.1"};  // IPv4 addresses; client i uses hosts[i % n]
};

std::vector<char> gBody;
Options gOpt;
std::atomic<uint64_t> gUploads{0}, gRequests{0};

int connectTo(int port, const std::string& host) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) die("not an IPv4 address: " + host);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    die("connect: " + std::string(std::strerror(errno)));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

std::string bitsHead(const Client& c, const char* type, const std::string& extra, size_t len) {
  return "BITS_POST " + c.path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bitsload\r\nBITS-Packet-Type: " + type +
         "\r\n" + extra + "Content-Length: " + std::to_string(len) + "\r\n\r\n";
}

// Prepares the client's next request (head and body length) for its current step.
void prepare(Client& c) {
  c.sent = 0;
  c.bodyLen = 0;
  switch (c.step) {
    case Step::Create:
      c.path = gOpt.path + "/c" + std::to_string(c.id) + "-" + std::to_string(c.n++) + ".bin";
      c.head = bitsHead(c, "Create-Session", "BITS-Supported-Protocols: " + std::string(kUploadProtocol) + "\r\n", 0);
      break;
    case Step::Fragment:
      c.head = bitsHead(c, "Fragment",
                        "BITS-Session-Id: " + c.sessionId + "\r\nContent-Range: bytes 0-" +
                            std::to_string(gOpt.size - 1) + "/" + std::to_string(gOpt.size) + "\r\n",
                        gOpt.size);
      c.bodyLen = gOpt.size;
      break;
    case Step::Close:
      c.head = bitsHead(c, "Close-Session", "BITS-Session-Id: " + c.sessionId + "\r\n", 0);
      break;
    case Step::Put:
      c.path = gOpt.path + "/c" + std::to_string(c.id) + "-" + std::to_string(c.n++) + ".bin";
      c.head = "PUT " + c.path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bitsload\r\nContent-Length: " +
               std::to_string(gOpt.size) + "\r\n\r\n";
      c.bodyLen = gOpt.size;
      break;
  }
}

// Sends what the socket takes; true when the whole request is out.
bool flush(Client& c) {
  size_t total = c.head.size() + c.bodyLen;
  while (c.sent < total) {
    iovec iov[2];
    int n = 0;
    if (c.sent < c.head.size()) iov[n++] = {c.head.data() + c.sent, c.head.size() - c.sent};
    size_t bodyOff = c.sent > c.head.size() ? c.sent - c.head.size() : 0;
    if (c.bodyLen > bodyOff) iov[n++] = {gBody.data() + bodyOff, c.bodyLen - bodyOff};
    ssize_t w = ::writev(c.fd, iov, n);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) return false;
    if (w <= 0) die("send: " + std::string(std::strerror(errno)));
    c.sent += static_cast<size_t>(w);
  }
  return true;
}

// Parses one whole response from c.in if it is there: status, the session id header; erases it.
bool takeResponse(Client& c, int* status) {
  size_t end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  size_t length = 0;
  size_t pos = c.in.find("\r\n") + 2;
  while (pos < end) {
    size_t e = c.in.find("\r\n", pos);
    std::string line = c.in.substr(pos, e - pos);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      size_t v = colon + 1;
      while (v < line.size() && line[v] == ' ') ++v;
      if (name == "content-length") length = std::strtoull(line.c_str() + v, nullptr, 10);
      if (name == "bits-session-id") c.sessionId = line.substr(v);
    }
    pos = e + 2;
  }
  if (c.in.size() < end + 4 + length) return false;
  *status = std::atoi(c.in.c_str() + 9);
  c.in.erase(0, end + 4 + length);
  return true;
}

// A whole answer arrived: checks it and moves the client to its next request.
void advance(Client& c, int status) {
  ++gRequests;
  bool ok = c.step == Step::Put ? (status == 201 || status == 204) : status == 200;
  if (!ok) {
    std::fprintf(stderr, "bitsload: client %d: %s answered %d\n", c.id, c.path.c_str(), status);
    std::printf("errors=1\n");
    std::fflush(nullptr);
    std::_Exit(1);  // not exit(): the other client threads are still running (and may fail at once too)
  }
  switch (c.step) {
    case Step::Create: c.step = Step::Fragment; break;
    case Step::Fragment: c.step = Step::Close; break;
    case Step::Close: c.step = Step::Create; ++gUploads; break;
    case Step::Put: ++gUploads; break;
  }
  prepare(c);
}

Options parse(int argc, char** argv) {
  if (argc < 2) die("usage: bitsload bits|put --port P [--clients N] [--seconds S] [--size BYTES] [--path P] [--hosts A,B]");
  Options o;
  std::string mode = argv[1];
  if (mode == "bits") {
    o.mode = Mode::Bits;
    o.path = "/small";
  } else if (mode == "put") {
    o.mode = Mode::Put;
    o.path = "/dav";
  } else {
    die("unknown mode " + mode);
  }
  std::map<std::string, std::string> a;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strncmp(argv[i], "--", 2) != 0) die(std::string("bad argument ") + argv[i]);
    a[argv[i] + 2] = argv[i + 1];
  }
  if (!a.count("port")) die("missing --port");
  o.port = std::atoi(a["port"].c_str());
  if (a.count("clients")) o.clients = std::atoi(a["clients"].c_str());
  if (a.count("threads")) o.threads = std::atoi(a["threads"].c_str());
  if (a.count("seconds")) o.seconds = std::atof(a["seconds"].c_str());
  if (a.count("size")) o.size = std::strtoull(a["size"].c_str(), nullptr, 10);
  if (a.count("path")) o.path = a["path"];
  if (a.count("hosts")) {
    o.hosts.clear();
    std::string list = a["hosts"];
    for (size_t at = 0; at <= list.size();) {
      size_t comma = list.find(',', at);
      if (comma == std::string::npos) comma = list.size();
      if (comma > at) o.hosts.push_back(list.substr(at, comma - at));
      at = comma + 1;
    }
    if (o.hosts.empty()) die("--hosts needs at least one address");
  }
  if (o.clients <= 0 || o.threads <= 0 || o.seconds <= 0 || o.size == 0) {
    die("--clients, --threads, --seconds and --size must be positive");
  }
  if (o.threads > o.clients) o.threads = o.clients;
  return o;
}

// One thread's share of the clients until the deadline.
void runClients(Client* first, size_t count, Clock::time_point deadline) {
  int ep = ::epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  for (size_t i = 0; i < count; ++i) {
    Client& c = first[i];
    c.fd = connectTo(gOpt.port, gOpt.hosts[static_cast<size_t>(c.id) % gOpt.hosts.size()]);
    c.step = gOpt.mode == Mode::Put ? Step::Put : Step::Create;
    prepare(c);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = &c;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev) != 0) die("epoll_ctl");
  }
  std::vector<epoll_event> events(count);
  std::vector<char> buf(65536);
  while (Clock::now() < deadline) {
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      Client& c = *static_cast<Client*>(events[static_cast<size_t>(i)].data.ptr);
      // Edge-triggered: drain reads, answer every whole response, then send what is due.
      for (;;) {
        ssize_t r = ::recv(c.fd, buf.data(), buf.size(), 0);
        if (r > 0) {
          c.in.append(buf.data(), static_cast<size_t>(r));
          continue;
        }
        if (r == 0) die("client " + std::to_string(c.id) + ": the server closed the connection");
        if (errno == EAGAIN || errno == EINTR) break;
        die("recv: " + std::string(std::strerror(errno)));
      }
      int status = 0;
      while (takeResponse(c, &status)) advance(c, status);
      if (c.sent < c.head.size() + c.bodyLen) flush(c);
    }
  }
  for (size_t i = 0; i < count; ++i) ::close(first[i].fd);
  ::close(ep);
}

}  // namespace

int main(int argc, char** argv) {
  gOpt = parse(argc, argv);
  gBody.resize(gOpt.size);
  for (size_t i = 0; i < gBody.size(); ++i) gBody[i] = static_cast<char>(i * 131 + 7);
  std::vector<Client> clients(static_cast<size_t>(gOpt.clients));
  for (int i = 0; i < gOpt.clients; ++i) clients[static_cast<size_t>(i)].id = i;
  auto t0 = Clock::now();
  auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gOpt.seconds));
  std::vector<std::thread> threads;
  size_t per = clients.size() / static_cast<size_t>(gOpt.threads), extra = clients.size() % static_cast<size_t>(gOpt.threads);
  size_t at = 0;
  for (int t = 0; t < gOpt.threads; ++t) {
    size_t n = per + (static_cast<size_t>(t) < extra ? 1 : 0);
    threads.emplace_back(runClients, clients.data() + at, n, deadline);
    at += n;
  }
  for (std::thread& t : threads) t.join();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("clients=%d threads=%d seconds=%.3f uploads=%llu uploads_per_s=%.1f requests_per_s=%.1f errors=0\n",
              gOpt.clients, gOpt.threads, s, static_cast<unsigned long long>(gUploads.load()), gUploads / s,
              gRequests / s);
  return 0;
}
