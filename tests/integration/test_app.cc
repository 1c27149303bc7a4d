#include "tests/integration/test_app.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <fstream>
#include <sstream>

namespace bitsd::testing {

namespace {
using SteadyClock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void writeAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}
}  // namespace

TestApp::TestApp() {
  listenFd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(listenFd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::listen(listenFd_, 64);
  socklen_t len = sizeof a;
  ::getsockname(listenFd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { run(); });
}

TestApp::~TestApp() {
  stop_ = true;
  release();
  if (thread_.joinable()) thread_.join();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  ::close(listenFd_);
}

std::string TestApp::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

void TestApp::set(const Behaviour& b) {
  std::lock_guard<std::mutex> g(mu_);
  behaviour_ = b;
  released_ = false;
}

std::vector<TestApp::Seen> TestApp::seen() const {
  std::lock_guard<std::mutex> g(mu_);
  return seen_;
}

size_t TestApp::count() const {
  std::lock_guard<std::mutex> g(mu_);
  return seen_.size();
}

size_t TestApp::countFor(const std::string& txid) const {
  std::lock_guard<std::mutex> g(mu_);
  size_t n = 0;
  for (const Seen& s : seen_) n += s.header("bits-transaction-id") == txid;
  return n;
}

bool TestApp::waitForPosts(size_t n, int timeoutMs) const {
  std::unique_lock<std::mutex> g(mu_);
  return cv_.wait_for(g, std::chrono::milliseconds(timeoutMs), [&] { return seen_.size() >= n; });
}

void TestApp::release() {
  std::lock_guard<std::mutex> g(mu_);
  released_ = true;
  cv_.notify_all();
}

void TestApp::run() {
  while (!stop_) {
    pollfd p{listenFd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    workers_.emplace_back([this, fd] {
      serve(fd);
      ::close(fd);
    });
  }
}

void TestApp::serve(int fd) {
  // Read the head, then Content-Length bytes of body; every read is bounded by 10 s.
  std::string in;
  auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  auto fill = [&]() {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count());
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) <= 0) return false;
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in.append(buf, static_cast<size_t>(n));
    return true;
  };
  size_t end;
  while ((end = in.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return;
  }
  Seen s;
  std::istringstream head(in.substr(0, end));
  std::string line;
  std::getline(head, line);
  size_t sp = line.find(' ');
  s.target = line.substr(sp + 1, line.rfind(' ') - sp - 1);
  size_t contentLength = 0;
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    s.headers[lower(line.substr(0, colon))] = v;
  }
  contentLength = std::stoul(s.header("content-length").empty() ? "0" : s.header("content-length"));
  while (in.size() < end + 4 + contentLength) {
    if (!fill()) return;
  }
  s.content = in.substr(end + 4, contentLength);
  std::string refFile = s.header("bits-request-datafile-name");
  if (!refFile.empty()) {
    std::ifstream f(refFile, std::ios::binary);
    s.content.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  Behaviour b;
  {
    std::unique_lock<std::mutex> g(mu_);
    seen_.push_back(s);
    cv_.notify_all();
    b = behaviour_;
    if (b.mode == Mode::Hold) {
      cv_.wait_for(g, std::chrono::seconds(30), [&] { return released_ || stop_.load(); });
      b = behaviour_;
      if (b.mode == Mode::Hold) b.mode = Mode::Answer;
    }
  }
  std::string replyFile = s.header("bits-response-datafile-name");
  switch (b.mode) {
    case Mode::CloseAtOnce: return;
    case Mode::Garbage: writeAll(fd, "this is not HTTP\r\n\r\n"); return;
    case Mode::NoLength:
      writeAll(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b.reply);
      return;
    case Mode::Answer:
    case Mode::Hold: break;
  }
  bool byReference = !replyFile.empty();
  if (byReference && b.writeReplyFile && b.status == 200 && b.staticUrl.empty()) {
    std::ofstream f(replyFile, std::ios::binary | std::ios::trunc);
    f << b.reply;
  }
  std::string body = byReference || b.status != 200 || !b.staticUrl.empty() ? "" : b.reply;
  std::string out = "HTTP/1.1 " + std::to_string(b.status) + " X\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n";
  if (b.copyToDestination) out += "BITS-Copy-File-To-Destination: yes\r\n";
  if (!b.staticUrl.empty()) out += "BITS-Static-Response-URL: " + b.staticUrl + "\r\n";
  writeAll(fd, out + "\r\n" + body);
}

}  // namespace bitsd::testing
