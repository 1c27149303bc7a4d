// Integration-test harness: runs the real bitsd binary on 127.0.0.1 port 0 with its own temporary
// root and state, and talks to it over real sockets. Every wait is bounded; nothing sleeps to
// synchronise except where a test measures time itself.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "tests/support/engine_driver.h"

namespace bitsd::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct RunResult {
  int exitCode = -1;  // -1: did not exit in time (it was killed)
  std::string out;
  std::string err;
};

// The emulator that runs target binaries in a cross build (e.g. {"/usr/bin/qemu-aarch64", "-L",
// "/usr/aarch64-linux-gnu"}); empty in a native build.
std::vector<std::string> emulatorWords();

// Starts `program` with `args` (through the emulator in a cross build, after `launcher`), stdout and
// stderr (and stdin, when inFd >= 0) on the given descriptors. Returns the pid, or -1.
// `emulate` false: a program of this machine (e.g. chromium), never run through the cross build's emulator.
pid_t spawnProgram(const std::string& program, const std::vector<std::string>& args, int outFd, int errFd,
                   const std::vector<std::string>& launcher = {}, int inFd = -1, bool emulate = true);
// Waits for `pid` up to `timeoutMs`: its exit code, 128+signal, or -1 if it is still running.
int waitProcess(pid_t pid, int timeoutMs);

// Runs bitsd with `args` until it exits (at most `timeoutMs`).
RunResult runBitsd(const std::vector<std::string>& args, int timeoutMs = 10000);

class BitsdProcess {
 public:
  // Starts bitsd with --listen 127.0.0.1:0 and a temporary root and state, plus `extraArgs`.
  explicit BitsdProcess(std::vector<std::string> extraArgs = {});
  ~BitsdProcess();

  // Starts (or restarts on the same directories). False if no ready line came within 10 s.
  bool start();
  // Sends `sig` and waits up to `timeoutMs`; returns the exit code, 128+signal if killed by one,
  // or -1 if it did not exit in time (it is then SIGKILLed).
  int stop(int sig = 15, int timeoutMs = 5000);
  // Everything bitsd wrote to stderr so far.
  std::string stderrText() const;
  // With --admin-listen: the value of a /metrics line (`name` with its labels, if any, as printed),
  // fetched from the admin port bitsd logged; "" when there is no admin port or no such line.
  std::string metric(const std::string& name) const;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& root() const { return root_; }
  const std::string& state() const { return state_; }
  std::string readyLine() const { return readyLine_; }
  std::vector<std::string>& args() { return args_; }
  // Words run before bitsd (and the emulator), e.g. {"/usr/bin/prlimit", "--nofile=300:300"}; the
  // launcher must exec bitsd so that pid() stays bitsd's.
  std::vector<std::string>& launcher() { return launcher_; }

 private:
  TempDir dir_;
  std::string root_, state_, errPath_;
  std::vector<std::string> args_;
  std::vector<std::string> launcher_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string readyLine_;
};

// A blocking client connection with bounded waits.
class Client {
 public:
  Client() = default;
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connect(int port);
  // The same from a given local IPv4 address (e.g. "127.0.0.2": Linux loopback answers all of 127/8).
  bool connect(int port, const char* fromAddress);
  // To another loopback address (farm nodes listen on 127.0.0.2, 127.0.0.3).
  bool connectTo(const char* address, int port);
  bool sendAll(const std::string& bytes);
  // Reads one response (head, plus a body if it has a Content-Length). False on EOF or timeout.
  // The body goes to out->body; `headRequest`: the answer to a HEAD has no body.
  bool readResponse(Reply* out, int timeoutMs = 10000, bool headRequest = false);
  // Sends a request and reads its response; status 0 if none came.
  Reply roundTrip(const std::string& request, int timeoutMs = 10000);
  // True if the peer closes the connection within `timeoutMs` (buffered responses are skipped).
  bool waitClosed(int timeoutMs);
  void close();
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buffered_;
};

// Create-Session over `c`; returns the session id or "".
std::string createSession(Client& c, const std::string& path);
// With `txid`: a BITS-Transaction-Id header too (hand-offs).
std::string fragmentRequest(const std::string& path, const std::string& id, uint64_t first, const std::string& bytes,
                            uint64_t total, const std::string& txid = "");
std::string randomBytes(size_t n, uint32_t seed);
bool readFile(const std::string& path, std::string* out);
bool fileExists(const std::string& path);
// Size of a file in bytes, or -1 when it cannot be stat'ed.
long long fileSize(const std::string& path);
// Names of the entries in a directory (without . and ..).
std::vector<std::string> listDir(const std::string& path);

// Polls `cond` every `pollMs` until it holds or `timeoutMs` has passed; returns its last value. The
// way a test waits for something the server does (a file appearing, a log line), instead of a sleep.
bool waitUntil(const std::function<bool()>& cond, int timeoutMs = 5000, int pollMs = 10);

}  // namespace bitsd::testing
