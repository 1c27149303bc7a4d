// SIGHUP re-reads the settings (board defaults, --config FILE, flags) and applies the live ones;
// the service manager hears READY=1, RELOADING=1 and STOPPING=1 over $NOTIFY_SOCKET; --version;
// and the command line's rough edges (a --config directory, a bad on/off value, a busy --listen).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

bool waitForLog(BitsdProcess& p, const std::string& needle, int timeoutMs = 5000) {
  return waitUntil([&] { return p.stderrText().find(needle) != std::string::npos; }, timeoutMs);
}

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

void writeFile(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::trunc) << text; }

// Creates a session for `path` and sends one 10-byte fragment of an upload of `total` bytes.
int uploadStatus(int port, const std::string& path, uint64_t total) {
  Client c;
  if (!c.connect(port)) return -1;
  std::string id = createSession(c, path);
  if (id.empty()) return -2;
  return c.roundTrip(fragmentRequest(path, id, 0, "0123456789", total)).status;
}

struct Reload : ::testing::Test {
  TempDir dir;
  std::string conf = dir.path() + "/bitsd.conf";
};

// A larger max-upload-size in the file is refused after SIGHUP, and the line names it.
TEST_F(Reload, SighupAppliesANewMaxUploadSize) {
  writeFile(conf, "max-upload-size = 1M\n");
  BitsdProcess bitsd({"--config", conf});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  EXPECT_EQ(uploadStatus(bitsd.port(), "/before.bin", 4096), 200);
  writeFile(conf, "# smaller now\nmax-upload-size = 1000\n");
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: applied max-upload-size\n")) << bitsd.stderrText();
  EXPECT_EQ(uploadStatus(bitsd.port(), "/after.bin", 4096), 500) << "the new limit was not applied";
  EXPECT_EQ(uploadStatus(bitsd.port(), "/small.bin", 1000), 200);
  // The same file again: nothing to do.
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: no change")) << bitsd.stderrText();
  EXPECT_EQ(bitsd.stop(), 0);
}

// Flags keep their precedence over the file at reload, as at start-up.
TEST_F(Reload, FlagsStillWinOverTheFile) {
  writeFile(conf, "max-upload-size = 1M\n");
  BitsdProcess bitsd({"--config", conf, "--max-upload-size", "1000"});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  writeFile(conf, "max-upload-size = 2M\n");
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: no change")) << bitsd.stderrText();
  EXPECT_EQ(uploadStatus(bitsd.port(), "/a.bin", 4096), 500);
}

// A new listen address needs a restart: the line says so, and bitsd keeps listening where it was.
TEST_F(Reload, ListenNeedsARestartAndTheServerStaysWhereItWas) {
  writeFile(conf, "listen = 127.0.0.1:0\nmax-upload-size = 1M\n");
  BitsdProcess bitsd({"--config", conf});
  bitsd.args().erase(bitsd.args().begin(), bitsd.args().begin() + 2);  // no --listen flag: the file's
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  writeFile(conf, "listen = 127.0.0.2:1\nmax-upload-size = 1000\n");
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: applied max-upload-size; needs a restart: listen\n")) << bitsd.stderrText();
  EXPECT_EQ(uploadStatus(bitsd.port(), "/a.bin", 4096), 500);
  EXPECT_EQ(uploadStatus(bitsd.port(), "/b.bin", 100), 200) << "no longer serving on the old address";
}

// A broken file changes nothing: one error line, and the old limits still apply.
TEST_F(Reload, ABrokenFileChangesNothing) {
  writeFile(conf, "max-upload-size = 1000\n");
  BitsdProcess bitsd({"--config", conf});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  writeFile(conf, "max-upload-size = 1M\nsession-timeout = soon\n");
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: settings not reloaded, nothing changed: config file " + conf +
                                    ":2: invalid value 'soon' for session-timeout"))
      << bitsd.stderrText();
  EXPECT_EQ(uploadStatus(bitsd.port(), "/a.bin", 4096), 500) << "part of a broken file was applied";
  // A value that parses but breaks a rule, and a file that went away: the same.
  writeFile(conf, "max-upload-size = 1M\nmax-fragment-bytes = 10\n");
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "nothing changed: max-fragment-bytes must be at least 5120")) << bitsd.stderrText();
  ASSERT_EQ(::unlink(conf.c_str()), 0);
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "nothing changed: cannot read config file")) << bitsd.stderrText();
  EXPECT_EQ(uploadStatus(bitsd.port(), "/b.bin", 4096), 500);
  std::string err = bitsd.stderrText();
  EXPECT_EQ(countOf(err, "SIGHUP"), 3u) << err;
  EXPECT_EQ(countOf(err, "applied"), 0u) << err;
  EXPECT_EQ(bitsd.stop(), 0);
}

// log-level changes live: at warn, the info lines of the shutdown no longer appear.
TEST_F(Reload, LogLevelTakesEffect) {
  writeFile(conf, "log-level = info\n");
  BitsdProcess bitsd({"--config", conf});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  writeFile(conf, "log-level = warn\n");
  ::kill(bitsd.pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: applied log-level")) << bitsd.stderrText();
  size_t before = bitsd.stderrText().size();
  EXPECT_EQ(bitsd.stop(SIGTERM), 0);
  std::string err = bitsd.stderrText();
  EXPECT_EQ(err.find("shutting down", before), std::string::npos) << "log-level warn not applied: " << err;
  EXPECT_EQ(err.find("info:", before), std::string::npos) << err;
}

// --- sd_notify -------------------------------------------------------------------------------------

// A datagram socket standing in for the service manager.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a = {};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool ok() const { return ok_; }
  // The next datagram, or "" after `timeoutMs`.
  std::string next(int timeoutMs = 5000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeoutMs) <= 0) return "";
    char buf[512];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
};

TEST_F(Reload, ServiceManagerHearsReadyReloadingAndStopping) {
  NotifySocket sm(dir.path() + "/notify");
  ASSERT_TRUE(sm.ok());
  writeFile(conf, "max-upload-size = 1M\n");
  BitsdProcess bitsd({"--config", conf});
  ::setenv("NOTIFY_SOCKET", (dir.path() + "/notify").c_str(), 1);
  bool started = bitsd.start();
  ::unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(started) << bitsd.stderrText();
  EXPECT_EQ(sm.next(), "READY=1");
  writeFile(conf, "max-upload-size = 2M\n");
  ::kill(bitsd.pid(), SIGHUP);
  std::string reloading = sm.next();
  EXPECT_EQ(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << reloading;
  uint64_t usec = std::strtoull(reloading.c_str() + reloading.find('=', 12) + 1, nullptr, 10);
  timespec now = {};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  uint64_t nowUsec = static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
  EXPECT_GT(usec, 0u);
  EXPECT_LE(usec, nowUsec) << "MONOTONIC_USEC is not CLOCK_MONOTONIC";
  EXPECT_EQ(sm.next(), "READY=1");
  ASSERT_TRUE(waitForLog(bitsd, "SIGHUP: applied max-upload-size")) << bitsd.stderrText();
  EXPECT_EQ(bitsd.stop(SIGTERM), 0);
  EXPECT_EQ(sm.next(), "STOPPING=1");
}

// --- --version and the command line's rough edges -----------------------------------------------

void expectVersion(const RunResult& r, const std::string& program) {
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(r.out.rfind(program + " ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\ntls: o"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nsha256: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nboard: "), std::string::npos) << r.out;
}

TEST(BitsdVersion, BitsdAndBitsctlPrintTheVersionAndTheBuild) {
  expectVersion(runBitsd({"--version"}), "bitsd");
  TempDir d;
  std::string outPath = d.path() + "/out", errPath = d.path() + "/err";
  int out = ::open(outPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  int err = ::open(errPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawnProgram(BITSCTL_BINARY, {"--version"}, out, err);
  ::close(out);
  ::close(err);
  RunResult r;
  r.exitCode = waitProcess(pid, 10000);
  ASSERT_TRUE(readFile(outPath, &r.out));
  ASSERT_TRUE(readFile(errPath, &r.err));
  expectVersion(r, "bitsctl");
  std::string bitsd = runBitsd({"--version"}).out;
  EXPECT_EQ(r.out.substr(std::string("bitsctl").size()), bitsd.substr(std::string("bitsd").size()))
      << "bitsd and bitsctl disagree on the version or the build";
}

void expectOneLineError(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.exitCode, 2) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(BitsdCommandLineEdges, ConfigDirectoryAndBadOnOffAndEnumValuesGiveOneLine) {
  TempDir d;
  std::vector<std::string> base = {"--listen", "127.0.0.1:0", "--root", d.path() + "/r", "--state", d.path() + "/s"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return runBitsd(a);
  };
  expectOneLineError(with({"--config", d.path()}), "is a directory");
  expectOneLineError(with({"--fdatasync", "maybe"}), "--fdatasync: expected on or off, got 'maybe'");
  expectOneLineError(with({"--allow-overwrites", "perhaps"}), "--allow-overwrites: expected on or off, got 'perhaps'");
  expectOneLineError(with({"--digest=sometimes"}), "--digest: expected on or off, got 'sometimes'");
  expectOneLineError(with({"--log-level", "loud"}), "--log-level: expected debug, info, warn or error, got 'loud'");
  expectOneLineError(with({"--notify-type", "email"}), "--notify-type: expected none, reference or value, got 'email'");
  // A bare on/off flag still means on, before another flag or at the end.
  std::ofstream(d.path() + "/c.conf") << "max-connections = 0\n";
  expectOneLineError(with({"--allow-overwrites", "--config", d.path() + "/c.conf"}), "max-connections must be at least 1");
  // A key twice in one file, and two --config files, are mistakes too.
  std::ofstream(d.path() + "/twice.conf") << "max-sessions = 10\nmax-sessions = 20\n";
  expectOneLineError(with({"--config", d.path() + "/twice.conf"}), "twice.conf:2: max-sessions is set twice (first on line 1)");
  std::ofstream(d.path() + "/ok.conf") << "max-sessions = 10\n";
  expectOneLineError(with({"--config", d.path() + "/ok.conf", "--config", d.path() + "/ok.conf"}), "--config given twice");
  EXPECT_FALSE(fileExists(d.path() + "/r")) << "a refused start left its root behind";
}

// Directories bitsd creates for root and state (with their parents) are named at start-up, so that a
// mistyped path that made a new tree is seen. Existing ones are not.
TEST(BitsdCommandLineEdges, CreatedDirectoriesAreLogged) {
  TempDir d;
  const std::string root = d.path() + "/made/up/root", state = d.path() + "/made/state";
  BitsdProcess bitsd({"--root", root, "--state", state});  // the later flags win
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  const std::string err = bitsd.stderrText();
  for (const std::string& dir : {d.path() + "/made", d.path() + "/made/up", root, state}) {
    EXPECT_NE(err.find("created directory " + dir + "\n"), std::string::npos) << dir << "\n" << err;
  }
  EXPECT_EQ(err.find("created directory " + d.path() + "\n"), std::string::npos) << err;
  EXPECT_EQ(bitsd.stop(), 0);
}

// A --listen that cannot be used leaves no freshly created root or state behind.
TEST(BitsdCommandLineEdges, AFailedListenLeavesNoDirectoriesBehind) {
  TempDir d;
  int busy = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(busy, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(busy, reinterpret_cast<sockaddr*>(&a), &len);
  std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  std::string root = d.path() + "/new/root", state = d.path() + "/new/state";
  expectOneLineError(runBitsd({"--listen", addr, "--root", root, "--state", state}), "cannot listen on " + addr);
  expectOneLineError(runBitsd({"--listen", "nowhere:80", "--root", root, "--state", state}), "not an IP address");
  ::close(busy);
  EXPECT_FALSE(fileExists(d.path() + "/new")) << "a failed --listen left directories behind";
}

}  // namespace
}  // namespace bitsd::testing
