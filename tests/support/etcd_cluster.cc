// Owns the test etcd cluster's processes, ports and data (tests/support/etcd_cluster.h).
#include "tests/support/etcd_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

extern char** environ;

namespace bitsd::testing {

namespace {

using Clock = std::chrono::steady_clock;

int64_t msSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// A port free on `ip` right now (bound to port 0, then released).
uint16_t freePort(const std::string& ip) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  a.sin_port = 0;
  uint16_t port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

int removeEntry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); }

// The string value of "name" in a flat JSON text (enough for etcd's status answers).
std::string jsonField(const std::string& text, const char* name) {
  std::string pat = std::string("\"") + name + "\":";
  size_t p = text.find(pat);
  if (p == std::string::npos) return "";
  p += pat.size();
  if (p < text.size() && text[p] == '"') ++p;
  size_t e = p;
  while (e < text.size() && text[e] != '"' && text[e] != ',' && text[e] != '}') ++e;
  return text.substr(p, e - p);
}

}  // namespace

bool EtcdCluster::installed() { return ::access(kBinary, X_OK) == 0; }

EtcdCluster::EtcdCluster(int members) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/bitsd-etcd-XXXXXX";
  if (char* p = ::mkdtemp(tmpl.data())) dir_ = p;
  for (int i = 0; i < members; ++i) {
    Member m;
    m.ip = "127.0.0." + std::to_string(i + 1);
    m.clientPort = freePort(m.ip);
    m.peerPort = freePort(m.ip);
    members_.push_back(m);
  }
}

EtcdCluster::~EtcdCluster() {
  // SIGKILL: the data goes anyway, and a member told to stop spends seconds handing its leadership
  // to peers that are stopping too.
  for (int i = 0; i < size(); ++i) {
    if (running(i)) ::kill(members_[static_cast<size_t>(i)].pid, SIGKILL);
  }
  for (int i = 0; i < size(); ++i) {
    if (running(i)) signalAndWait(i, 0);
  }
  if (!dir_.empty()) ::nftw(dir_.c_str(), removeEntry, 16, FTW_DEPTH | FTW_PHYS);
}

std::string EtcdCluster::clientUrl(int i) const {
  const Member& m = members_[static_cast<size_t>(i)];
  return (certFiles_.empty() ? "http://" : "https://") + m.ip + ":" + std::to_string(m.clientPort);
}

void EtcdCluster::useTls(std::vector<std::string> certFiles, std::vector<std::string> keyFiles) {
  certFiles_ = std::move(certFiles);
  keyFiles_ = std::move(keyFiles);
}

std::vector<std::string> EtcdCluster::clientUrls() const {
  std::vector<std::string> v;
  for (int i = 0; i < size(); ++i) v.push_back(clientUrl(i));
  return v;
}

bool EtcdCluster::spawn(int i) {
  Member& m = members_[static_cast<size_t>(i)];
  std::string name = "m" + std::to_string(i);
  std::string peer = "http://" + m.ip + ":" + std::to_string(m.peerPort);
  std::string cluster;
  for (int j = 0; j < size(); ++j) {
    const Member& o = members_[static_cast<size_t>(j)];
    if (!cluster.empty()) cluster += ",";
    cluster += "m" + std::to_string(j) + "=http://" + o.ip + ":" + std::to_string(o.peerPort);
  }
  std::vector<std::string> args = {kBinary,
                                   "--name", name,
                                   "--data-dir", dir_ + "/" + name,
                                   "--listen-client-urls", clientUrl(i),
                                   "--advertise-client-urls", clientUrl(i),
                                   "--listen-peer-urls", peer,
                                   "--initial-advertise-peer-urls", peer,
                                   "--initial-cluster", cluster,
                                   "--initial-cluster-state", "new",
                                   "--initial-cluster-token", "bitsd-test",
                                   "--heartbeat-interval", "50",
                                   "--election-timeout", "500",
                                   "--logger=zap",
                                   "--log-outputs=" + dir_ + "/" + name + ".log"};
  if (!certFiles_.empty()) {
    args.push_back("--cert-file=" + certFiles_[static_cast<size_t>(i)]);
    args.push_back("--key-file=" + keyFiles_[static_cast<size_t>(i)]);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string out = dir_ + "/" + name + ".out";
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  ::posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  if (::posix_spawn(&pid, kBinary, &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  ::posix_spawn_file_actions_destroy(&fa);
  m.pid = pid;
  if (pid < 0) error_ = "cannot start " + std::string(kBinary);
  return pid > 0;
}

bool EtcdCluster::start(int waitMs) {
  if (dir_.empty()) {
    error_ = "cannot make a temp dir";
    return false;
  }
  for (const Member& m : members_) {
    if (m.clientPort == 0 || m.peerPort == 0) {
      error_ = "cannot find free ports on " + m.ip + " (is 127.0.0.0/8 on lo?)";
      return false;
    }
  }
  for (int i = 0; i < size(); ++i) {
    if (!spawn(i)) return false;
  }
  auto t0 = Clock::now();
  for (int i = 0; i < size(); ++i) {
    int left = waitMs - static_cast<int>(msSince(t0));
    if (!waitHealthy(i, left > 0 ? left : 0)) {
      error_ = "etcd member " + std::to_string(i) + " at " + clientUrl(i) + " not healthy within " +
               std::to_string(waitMs) + " ms (see " + dir_ + "/m" + std::to_string(i) + ".log)";
      return false;
    }
  }
  return true;
}

void EtcdCluster::signalAndWait(int i, int sig) {
  Member& m = members_[static_cast<size_t>(i)];
  if (m.pid <= 0) return;
  if (sig != 0) ::kill(m.pid, sig);
  auto t0 = Clock::now();
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(m.pid, &st, WNOHANG);
    if (r == m.pid || r < 0) break;
    if (msSince(t0) > 10000) {
      ::kill(m.pid, SIGKILL);
      ::waitpid(m.pid, &st, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  m.pid = -1;
}

void EtcdCluster::stop(int i) { signalAndWait(i, SIGTERM); }
void EtcdCluster::kill(int i) { signalAndWait(i, SIGKILL); }

bool EtcdCluster::startMember(int i) {
  if (running(i)) return true;
  return spawn(i);
}

std::string EtcdCluster::request(int i, const char* path, const char* body, int timeoutMs) const {
  const Member& m = members_[static_cast<size_t>(i)];
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, m.ip.c_str(), &a.sin_addr);
  a.sin_port = htons(m.clientPort);
  auto t0 = Clock::now();
  auto waitFor = [&](short events) {
    int left = timeoutMs - static_cast<int>(msSince(t0));
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, left) == 1;
  };
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return "";
  }
  if (!waitFor(POLLOUT)) {
    ::close(fd);
    return "";
  }
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
  if (soerr != 0) {
    ::close(fd);
    return "";
  }
  std::string req = std::string(body != nullptr ? "POST " : "GET ") + path + " HTTP/1.1\r\nHost: " + m.ip +
                    "\r\nConnection: close\r\n";
  if (body != nullptr) {
    req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(std::strlen(body)) + "\r\n\r\n" + body;
  } else {
    req += "\r\n";
  }
  size_t sent = 0;
  while (sent < req.size()) {
    if (!waitFor(POLLOUT)) break;
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  char buf[4096];
  while (sent == req.size() && waitFor(POLLIN)) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t headEnd = answer.find("\r\n\r\n");
  if (answer.compare(0, 12, "HTTP/1.1 200") != 0 || headEnd == std::string::npos) return "";
  return answer.substr(headEnd + 4);  // (chunked bodies keep their chunk lines: the fields are still found)
}

bool EtcdCluster::waitHealthy(int i, int waitMs) const {
  auto t0 = Clock::now();
  do {
    if (!certFiles_.empty()) {
      // https: etcdctl checks it (the members' certificates are self-signed).
      std::string cmd = "ETCDCTL_API=3 /usr/bin/etcdctl --command-timeout=1s --insecure-transport=false --insecure-skip-tls-verify --endpoints=" +
                        clientUrl(i) + " endpoint health >/dev/null 2>&1";
      if (std::system(cmd.c_str()) == 0) return true;
    } else if (request(i, "/health", nullptr, 500).find("\"health\":\"true\"") != std::string::npos) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (msSince(t0) < waitMs);
  return false;
}

int EtcdCluster::leader() const {
  std::vector<std::string> ids(members_.size());
  std::string leaderId;
  for (int i = 0; i < size(); ++i) {
    if (!running(i)) continue;
    std::string s = request(i, "/v3/maintenance/status", "{}", 500);
    ids[static_cast<size_t>(i)] = jsonField(s, "member_id");
    std::string l = jsonField(s, "leader");
    if (l.empty() || l == "0") continue;
    if (!leaderId.empty() && leaderId != l) return -1;
    leaderId = l;
  }
  for (int i = 0; i < size(); ++i) {
    if (!leaderId.empty() && ids[static_cast<size_t>(i)] == leaderId) return i;
  }
  return -1;
}

int EtcdCluster::waitLeader(int waitMs) const {
  auto t0 = Clock::now();
  do {
    int l = leader();
    if (l >= 0) return l;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (msSince(t0) < waitMs);
  return -1;
}

}  // namespace bitsd::testing
