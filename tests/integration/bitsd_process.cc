#include "tests/integration/bitsd_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace bitsd::testing {

namespace {
using Clock = std::chrono::steady_clock;

int msLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

int removeEntry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

// Waits for `pid` up to `timeoutMs`; returns the decoded status or -1.
int waitExit(pid_t pid, int timeoutMs) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0 || msLeft(deadline) == 0) return -1;
    ::poll(nullptr, 0, 5);
  }
}

pid_t spawn(const std::vector<std::string>& args, int outFd, int errFd,
            const std::vector<std::string>& launcher = {}) {
  return spawnProgram(BITSD_BINARY, args, outFd, errFd, launcher);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

int waitProcess(pid_t pid, int timeoutMs) { return waitExit(pid, timeoutMs); }

pid_t spawnProgram(const std::string& program, const std::vector<std::string>& args, int outFd, int errFd,
                   const std::vector<std::string>& launcher, int inFd, bool emulate) {
  std::vector<char*> argv;
  std::vector<std::string> emu = launcher;
  if (emulate) {
    for (const std::string& w : emulatorWords()) emu.push_back(w);
  }
  std::string bin = program;
  for (std::string& w : emu) argv.push_back(w.data());
  argv.push_back(bin.data());
  std::string exe = emu.empty() ? bin : emu.front();
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  // posix_spawn rather than fork+exec: under qemu-user a forked child of this multi-threaded
  // process can spin forever before reaching exec.
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  if (inFd >= 0) ::posix_spawn_file_actions_adddup2(&fa, inFd, 0);
  ::posix_spawn_file_actions_adddup2(&fa, outFd, 1);
  ::posix_spawn_file_actions_adddup2(&fa, errFd, 2);
  pid_t pid = -1;
  if (::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  ::posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// The emulator words in a cross build ("/usr/bin/qemu-aarch64|-L|/usr/aarch64-linux-gnu"), empty
// natively.
std::vector<std::string> emulatorWords() {
  std::vector<std::string> w;
  std::string e = BITSD_EMULATOR;
  size_t pos = 0;
  while (pos < e.size()) {
    size_t sp = e.find('|', pos);
    if (sp == std::string::npos) sp = e.size();
    if (sp > pos) w.push_back(e.substr(pos, sp - pos));
    pos = sp + 1;
  }
  return w;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/bitsd-test-XXXXXX";
  char* p = ::mkdtemp(tmpl.data());
  path_ = p != nullptr ? p : "";
}

TempDir::~TempDir() {
  if (!path_.empty()) ::nftw(path_.c_str(), removeEntry, 16, FTW_DEPTH | FTW_PHYS);
}

RunResult runBitsd(const std::vector<std::string>& args, int timeoutMs) {
  TempDir d;
  std::string outPath = d.path() + "/out", errPath = d.path() + "/err";
  int outFd = ::open(outPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  int errFd = ::open(errPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawn(args, outFd, errFd);
  ::close(outFd);
  ::close(errFd);
  RunResult r;
  r.exitCode = waitExit(pid, timeoutMs);
  if (r.exitCode == -1) {
    ::kill(pid, SIGKILL);
    waitExit(pid, 5000);
  }
  r.out = slurp(outPath);
  r.err = slurp(errPath);
  return r;
}

BitsdProcess::BitsdProcess(std::vector<std::string> extraArgs) {
  root_ = dir_.path() + "/root";
  state_ = dir_.path() + "/state";
  errPath_ = dir_.path() + "/stderr.log";
  args_ = {"--listen", "127.0.0.1:0", "--root", root_, "--state", state_};
  for (auto& a : extraArgs) args_.push_back(a);
}

BitsdProcess::~BitsdProcess() {
  if (pid_ > 0) stop(SIGKILL, 5000);
}

bool BitsdProcess::start() {
  int pipeFds[2];
  if (::pipe(pipeFds) != 0) return false;
  int errFd = ::open(errPath_.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
  pid_ = spawn(args_, pipeFds[1], errFd, launcher_);
  ::close(pipeFds[1]);
  ::close(errFd);
  // The ready line: "bitsd listening on http://127.0.0.1:PORT".
  std::string line;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (line.find('\n') == std::string::npos && msLeft(deadline) > 0) {
    pollfd p{pipeFds[0], POLLIN, 0};
    if (::poll(&p, 1, msLeft(deadline)) <= 0) break;
    char buf[256];
    ssize_t n = ::read(pipeFds[0], buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  ::close(pipeFds[0]);
  readyLine_ = line;
  size_t colon = line.rfind(':');
  if ((line.rfind("bitsd listening on http://", 0) != 0 && line.rfind("bitsd listening on https://", 0) != 0) ||
      colon == std::string::npos) {
    return false;
  }
  port_ = std::atoi(line.c_str() + colon + 1);
  return port_ > 0;
}

int BitsdProcess::stop(int sig, int timeoutMs) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int code = waitExit(pid_, timeoutMs);
  if (code == -1) {
    ::kill(pid_, SIGKILL);
    waitExit(pid_, 5000);
  }
  pid_ = -1;
  return code;
}

std::string BitsdProcess::stderrText() const { return slurp(errPath_); }

std::string BitsdProcess::metric(const std::string& name) const {
  static const char kLogged[] = "admin listener on http://";
  std::string err = stderrText();
  size_t at = err.find(kLogged);
  if (at == std::string::npos) return "";
  size_t colon = err.find(':', at + sizeof kLogged - 1);
  if (colon == std::string::npos) return "";
  Client c;
  if (!c.connect(std::atoi(err.c_str() + colon + 1))) return "";
  Reply r = c.roundTrip(EngineDriver::httpRequest("GET", "/metrics", {}));
  size_t m = r.body.find("\n" + name + " ");
  if (m == std::string::npos) return "";
  size_t from = m + name.size() + 2;
  return r.body.substr(from, r.body.find('\n', from) - from);
}

Client::~Client() { close(); }

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffered_.clear();
}

bool Client::connect(int port) { return connect(port, nullptr); }

bool Client::connect(int port, const char* fromAddress) {
  close();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fromAddress != nullptr) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, fromAddress, &local.sin_addr) != 1 ||
        ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      return false;
    }
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{10, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

bool Client::connectTo(const char* address, int port) {
  close();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address, &a.sin_addr) != 1) return false;
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{10, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

bool Client::sendAll(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool Client::readResponse(Reply* out, int timeoutMs, bool headRequest) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  auto fill = [&]() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, msLeft(deadline)) <= 0) return false;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buffered_.append(buf, static_cast<size_t>(n));
    return true;
  };
  size_t end;
  while ((end = buffered_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return false;
  }
  std::string head = buffered_.substr(0, end + 4);
  *out = parseReply(head);
  size_t bodyLen = 0;
  for (auto& [k, v] : out->headers) {
    if (equalsIgnoreCase(k, "Content-Length") && !headRequest) bodyLen = std::stoul(v);
  }
  while (buffered_.size() < end + 4 + bodyLen) {
    if (!fill()) return false;
  }
  out->body = buffered_.substr(end + 4, bodyLen);
  buffered_.erase(0, end + 4 + bodyLen);
  return true;
}

Reply Client::roundTrip(const std::string& request, int timeoutMs) {
  Reply r;
  if (!sendAll(request) || !readResponse(&r, timeoutMs, request.rfind("HEAD ", 0) == 0)) return Reply();
  return r;
}

bool Client::waitClosed(int timeoutMs) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (true) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, msLeft(deadline)) <= 0) return false;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0) return false;
  }
}

std::string createSession(Client& c, const std::string& path) {
  Reply r = c.roundTrip(bitsRequest(path, "Create-Session",
                                    {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  return r.status == 200 ? r.get("BITS-Session-Id") : std::string();
}

std::string fragmentRequest(const std::string& path, const std::string& id, uint64_t first, const std::string& bytes,
                            uint64_t total, const std::string& txid) {
  std::string range = "bytes " + std::to_string(first) + "-" + std::to_string(first + bytes.size() - 1) + "/" +
                      std::to_string(total);
  std::map<std::string, std::string> h = {{"BITS-Session-Id", id}, {"Content-Range", range}};
  if (!txid.empty()) h["BITS-Transaction-Id"] = txid;
  return bitsRequest(path, "Fragment", h, bytes);
}

std::string randomBytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x);
  }
  return s;
}

bool readFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

bool fileExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

long long fileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_size) : -1;
}

bool waitUntil(const std::function<bool()>& cond, int timeoutMs, int pollMs) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    ::usleep(static_cast<useconds_t>(pollMs) * 1000);
  }
  return cond();
}

std::vector<std::string> listDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

}  // namespace bitsd::testing
