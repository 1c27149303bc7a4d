// bitsclient against the real bitsd over loopback (issue 6): a plain upload, resume after the client
// itself is SIGKILLed, resync after 416, a new session after the server lost ours, fragment shrinking
// on 413, retries until the server comes up, fatal answers, upload-reply with a custom transaction
// header, cancel, and BITS-Host-Id fallback. Every process wait is bounded.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>

#include "tests/integration/bitsd_process.h"
#include "tests/integration/test_app.h"

namespace bitsd::testing {
namespace {

using Clock = std::chrono::steady_clock;

// One bitsclient process: stdout (JSON lines, since it is a pipe) read as it comes.
class ClientRun {
 public:
  explicit ClientRun(const std::vector<std::string>& args) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;  // no other process may hold the write end open
    errPath_ = dir_.path() + "/stderr";
    int errFd = ::open(errPath_.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    pid_ = spawnProgram(BITSCLIENT_BINARY, args, p[1], errFd);
    ::close(p[1]);
    ::close(errFd);
    outFd_ = p[0];
  }
  ~ClientRun() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitProcess(pid_, 5000);
    }
    if (outFd_ >= 0) ::close(outFd_);
  }
  // Reads stdout until `pred(out)` holds or `timeoutMs` passes.
  bool waitFor(const std::function<bool(const std::string&)>& pred, int timeoutMs = 20000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
    while (!pred(out_)) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0 || outFd_ < 0) return false;
      pollfd pf{outFd_, POLLIN, 0};
      if (::poll(&pf, 1, left) <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(outFd_, buf, sizeof buf);
      if (n <= 0) {
        ::close(outFd_);
        outFd_ = -1;
        return pred(out_);
      }
      out_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Waits for the exit (bounded) and returns its code; stdout is read to the end.
  int wait(int timeoutMs = 60000) {
    waitFor([](const std::string&) { return false; }, timeoutMs);
    int code = waitProcess(pid_, 5000);
    pid_ = -1;
    return code;
  }
  int kill9() {
    ::kill(pid_, SIGKILL);
    int code = waitProcess(pid_, 5000);
    pid_ = -1;
    return code;
  }
  const std::string& out() const { return out_; }
  std::string err() const {
    std::string s;
    readFile(errPath_, &s);
    return s;
  }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int outFd_ = -1;
  std::string out_, errPath_;
};

size_t countEvents(const std::string& out, const std::string& name) {
  size_t n = 0, pos = 0;
  std::string needle = "{\"event\":\"" + name + "\"";
  while ((pos = out.find(needle, pos)) != std::string::npos) {
    ++n;
    pos += needle.size();
  }
  return n;
}

std::string stateValue(const std::string& stateFile, const std::string& key) {
  std::ifstream in(stateFile);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

void setStateValue(const std::string& stateFile, const std::string& key, const std::string& value) {
  std::ifstream in(stateFile);
  std::stringstream out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) line = key + "=" + value;
    out << line << "\n";
  }
  in.close();
  std::ofstream(stateFile, std::ios::trunc) << out.str();
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class BitsClient : public ::testing::Test {
 protected:
  void SetUp() override {
    bitsd = std::make_unique<BitsdProcess>(std::vector<std::string>{});
    ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(bitsd->port()) + path; }
  std::string file(const std::string& name, const std::string& bytes) {
    std::string p = dir.path() + "/" + name;
    writeFile(p, bytes);
    return p;
  }
  bool arrived(const std::string& name, const std::string& bytes) {
    std::string got;
    return readFile(bitsd->root() + "/" + name, &got) && got == bytes;
  }
  // Starts an upload of 64 KiB fragments and SIGKILLs the client after `acks` acked fragments.
  std::string killAfter(const std::string& src, const std::string& dest, size_t acks) {
    ClientRun c({"upload", src, url(dest), "--fragment-size", "64K"});
    EXPECT_TRUE(c.waitFor([&](const std::string& o) { return countEvents(o, "acked") >= acks; })) << c.out() << c.err();
    EXPECT_EQ(c.kill9(), 128 + SIGKILL);
    return c.out();
  }
  TempDir dir;
  std::unique_ptr<BitsdProcess> bitsd;
};

// bitsclient on a pseudo-terminal of `columns` (stdout and stderr both on it, as in a shell), its
// output read from the master side as it comes. The window size is set with TIOCSWINSZ; a resize
// is TIOCSWINSZ then SIGWINCH, which is what the kernel sends to a terminal's foreground group.
class TerminalRun {
 public:
  TerminalRun(const std::vector<std::string>& args, int columns) {
    winsize ws{};
    ws.ws_row = 24;
    ws.ws_col = static_cast<unsigned short>(columns);
    int slave = -1;
    if (::openpty(&master_, &slave, nullptr, nullptr, &ws) != 0) return;
    ::fcntl(master_, F_SETFD, FD_CLOEXEC);
    pid_ = spawnProgram(BITSCLIENT_BINARY, args, slave, slave);
    ::close(slave);
  }
  ~TerminalRun() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitProcess(pid_, 5000);
    }
    if (master_ >= 0) ::close(master_);
  }
  void resize(int columns) {
    winsize ws{};
    ws.ws_row = 24;
    ws.ws_col = static_cast<unsigned short>(columns);
    ::ioctl(master_, TIOCSWINSZ, &ws);
    ::kill(pid_, SIGWINCH);
  }
  // Reads until `pred(out)` holds or `timeoutMs` passes (or the terminal closes).
  bool waitFor(const std::function<bool(const std::string&)>& pred, int timeoutMs = 20000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
    while (!pred(out_)) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0 || master_ < 0) return false;
      pollfd pf{master_, POLLIN, 0};
      if (::poll(&pf, 1, left) <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(master_, buf, sizeof buf);
      if (n <= 0) {  // EIO once the client (the last holder of the slave) is gone
        ::close(master_);
        master_ = -1;
        return pred(out_);
      }
      out_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  int wait(int timeoutMs = 60000) {
    waitFor([](const std::string&) { return false; }, timeoutMs);
    int code = waitProcess(pid_, 5000);
    pid_ = -1;
    return code;
  }
  const std::string& out() const { return out_; }

 private:
  int master_ = -1;
  pid_t pid_ = -1;
  std::string out_;
};

// What a terminal shows, split on \r and \n (the progress line is redrawn with "\r\033[K"), the
// erase sequence dropped. Progress lines are the ones with a percentage; other lines are messages,
// printed once (a terminal may wrap those, as it wraps any message).
std::vector<std::string> progressSegments(const std::string& out, size_t from = 0) {
  std::vector<std::string> segs;
  std::string cur;
  for (size_t i = from; i < out.size(); ++i) {
    char ch = out[i];
    if (ch == '\r' || ch == '\n') {
      if (cur.find('%') != std::string::npos) segs.push_back(cur);
      cur.clear();
    } else if (ch == '\033' && out.compare(i, 3, "\033[K") == 0) {
      i += 2;
    } else {
      cur += ch;
    }
  }
  if (cur.find('%') != std::string::npos) segs.push_back(cur);
  return segs;
}

bool isCountdown(const std::string& seg) {
  size_t at = seg.find("retrying in ");
  return at != std::string::npos && seg.size() > at + 12 && std::isdigit(static_cast<unsigned char>(seg[at + 12])) &&
         seg.compare(seg.size() - 2, 2, " s") == 0;
}

TEST_F(BitsClient, TheProgressLineNeverWrapsOnA40Or80ColumnTerminal) {
  std::string data = randomBytes(8 * 1024 * 1024, 11);
  for (int columns : {40, 80}) {
    SCOPED_TRACE(columns);
    std::string name = "w" + std::to_string(columns) + ".bin";
    std::string src = file(name, data);
    TerminalRun t({"upload", src, url("/" + name), "--fragment-size", "64K"}, columns);
    ASSERT_EQ(t.wait(), 0) << t.out();
    EXPECT_TRUE(arrived(name, data));
    std::vector<std::string> segs = progressSegments(t.out());
    ASSERT_FALSE(segs.empty()) << "no progress line on a terminal: " << t.out();
    for (const std::string& seg : segs) {
      EXPECT_LE(seg.size(), static_cast<size_t>(columns - 1)) << "'" << seg << "'";
    }
    EXPECT_NE(segs.back().find("100%"), std::string::npos) << segs.back();
    EXPECT_EQ(t.out().find("{\"event\""), std::string::npos) << "JSON on a terminal";
  }
}

TEST_F(BitsClient, DuringAnOutageTheLineCountsTheRetryDownAndFollowsAResize) {
  // A job halfway through, on a server that then dies: the resumed client waits for it.
  BitsdProcess server;
  int port = freePort();
  server.args()[1] = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(server.start()) << server.stderrText();
  std::string data = randomBytes(4 * 1024 * 1024, 12);
  std::string src = file("o.bin", data);
  std::string dest = "http://127.0.0.1:" + std::to_string(port) + "/o.bin";
  {
    ClientRun c({"upload", src, dest, "--fragment-size", "64K"});
    ASSERT_TRUE(c.waitFor([&](const std::string& o) { return countEvents(o, "acked") >= 5; })) << c.out() << c.err();
    c.kill9();
  }
  ASSERT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  TerminalRun t({"resume", src + ".bitsjob", "--retries", "100", "--retry-delay-ms", "3000", "--retry-max-delay-ms",
                 "3000"},
                80);
  // The countdown, with a bar at 80 columns, and no stale rate or ETA while it counts.
  ASSERT_TRUE(t.waitFor([](const std::string& o) {
    for (const std::string& seg : progressSegments(o)) {
      if (isCountdown(seg) && seg.find('[') != std::string::npos) return true;
    }
    return false;
  })) << t.out();
  size_t mark = t.out().size();
  t.resize(40);
  ASSERT_TRUE(t.waitFor([&](const std::string& o) {
    for (const std::string& seg : progressSegments(o, mark)) {
      if (isCountdown(seg) && seg.find('[') == std::string::npos) return true;
    }
    return false;
  })) << t.out().substr(mark);
  ASSERT_TRUE(server.start()) << server.stderrText();
  ASSERT_EQ(t.wait(), 0) << t.out();
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/o.bin", &got));
  EXPECT_TRUE(got == data);
  std::vector<std::string> before = progressSegments(t.out().substr(0, mark));
  std::vector<std::string> after = progressSegments(t.out(), mark);
  for (const std::string& seg : before) EXPECT_LE(seg.size(), 79u) << "'" << seg << "'";
  for (const std::string& seg : after) EXPECT_LE(seg.size(), 39u) << "'" << seg << "'";
  for (const std::string& seg : progressSegments(t.out())) {
    if (seg.find("retrying") != std::string::npos) {
      EXPECT_EQ(seg.find("/s"), std::string::npos) << "a stale rate during the retry: '" << seg << "'";
      EXPECT_EQ(seg.find("ETA"), std::string::npos) << "a stale ETA during the retry: '" << seg << "'";
    }
  }
}

TEST_F(BitsClient, UploadIsByteIdenticalWithOneJsonLinePerEvent) {
  std::string data = randomBytes(3 * 1024 * 1024 + 17, 1);
  std::string src = file("a.bin", data);
  ClientRun c({"upload", src, url("/a.bin")});
  ASSERT_EQ(c.wait(), 0) << c.out() << c.err();
  EXPECT_TRUE(arrived("a.bin", data));
  EXPECT_EQ(countEvents(c.out(), "session"), 1u);
  EXPECT_EQ(countEvents(c.out(), "acked"), 4u) << c.out();
  EXPECT_EQ(countEvents(c.out(), "done"), 1u);
  EXPECT_FALSE(fileExists(src + ".bitsjob")) << "the state file outlived a finished job";
  EXPECT_TRUE(listDir(bitsd->state() + "/partial").empty());
}

TEST_F(BitsClient, AClientKilledMidUploadResumesTheSameSession) {
  std::string data = randomBytes(8 * 1024 * 1024, 2);
  std::string src = file("r.bin", data);
  std::string first = killAfter(src, "/r.bin", 5);
  std::string job = src + ".bitsjob";
  ASSERT_TRUE(fileExists(job));
  std::string session = stateValue(job, "session");
  ASSERT_FALSE(session.empty());
  EXPECT_NE(first.find(session), std::string::npos);
  ClientRun r({"resume", job});
  ASSERT_EQ(r.wait(), 0) << r.out() << r.err();
  EXPECT_TRUE(arrived("r.bin", data));
  EXPECT_EQ(countEvents(r.out(), "restart"), 0u) << r.out();
  EXPECT_NE(r.out().find("\"session\":\"" + session + "\""), std::string::npos) << "not the same session: " << r.out();
  EXPECT_FALSE(fileExists(job));
}

TEST_F(BitsClient, A416MovesTheClientToTheServersOffset) {
  std::string data = randomBytes(8 * 1024 * 1024, 3);
  std::string src = file("s.bin", data);
  killAfter(src, "/s.bin", 5);
  std::string job = src + ".bitsjob";
  uint64_t offset = std::stoull(stateValue(job, "offset"));
  // The client believes it is well ahead of what the server holds.
  setStateValue(job, "offset", std::to_string(offset + 3 * 1024 * 1024));
  ClientRun r({"resume", job});
  ASSERT_EQ(r.wait(), 0) << r.out() << r.err();
  EXPECT_GE(countEvents(r.out(), "resync"), 1u) << r.out();
  EXPECT_TRUE(arrived("s.bin", data));
}

TEST_F(BitsClient, ASessionTheServerLostIsStartedOverWithANewOne) {
  std::string data = randomBytes(4 * 1024 * 1024, 4);
  std::string src = file("l.bin", data);
  killAfter(src, "/l.bin", 3);
  std::string job = src + ".bitsjob";
  std::string session = stateValue(job, "session");
  Client raw;
  ASSERT_TRUE(raw.connect(bitsd->port()));
  ASSERT_EQ(raw.roundTrip(bitsRequest("/l.bin", "Cancel-Session", {{"BITS-Session-Id", session}})).status, 200);
  ClientRun r({"resume", job});
  ASSERT_EQ(r.wait(), 0) << r.out() << r.err();
  EXPECT_EQ(countEvents(r.out(), "restart"), 1u) << r.out();
  EXPECT_EQ(r.out().find("\"session\":\"" + session + "\"", r.out().find("restart")), std::string::npos);
  EXPECT_TRUE(arrived("l.bin", data));
}

TEST_F(BitsClient, A413ShrinksTheFragmentUntilTheServerTakesIt) {
  bitsd = std::make_unique<BitsdProcess>(std::vector<std::string>{"--max-fragment-bytes", "100K"});
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  std::string data = randomBytes(1024 * 1024, 5);
  std::string src = file("f.bin", data);
  ClientRun c({"upload", src, url("/f.bin"), "--fragment-size", "1M"});
  ASSERT_EQ(c.wait(), 0) << c.out() << c.err();
  EXPECT_EQ(countEvents(c.out(), "shrink"), 4u) << c.out();  // 1M -> 512K -> 256K -> 128K -> 64K
  EXPECT_EQ(countEvents(c.out(), "acked"), 16u);
  EXPECT_TRUE(arrived("f.bin", data));
}

TEST_F(BitsClient, RetriesUntilTheServerComesUp) {
  int port = freePort();
  std::string data = randomBytes(200000, 6);
  std::string src = file("u.bin", data);
  ClientRun c({"upload", src, "http://127.0.0.1:" + std::to_string(port) + "/u.bin", "--retries", "200",
               "--retry-delay-ms", "20", "--retry-max-delay-ms", "100"});
  ASSERT_TRUE(c.waitFor([](const std::string& o) { return countEvents(o, "retry") >= 2; })) << c.out() << c.err();
  BitsdProcess late;
  late.args()[1] = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(late.start()) << late.stderrText();
  ASSERT_EQ(c.wait(), 0) << c.out() << c.err();
  std::string got;
  ASSERT_TRUE(readFile(late.root() + "/u.bin", &got));
  EXPECT_TRUE(got == data);
}

TEST_F(BitsClient, FatalAnswersAndBadFlagsExitWithTheirClassAndOneLine) {
  std::string src = file("x.bin", "x");
  writeFile(bitsd->root() + "/exists.bin", "old");
  {
    ClientRun c({"upload", src, url("/exists.bin")});
    EXPECT_EQ(c.wait(), 1);
    std::string e = c.err();
    // Issue 19: a sentence a person understands, plus the codes.
    EXPECT_NE(e.find("the file exists and the server does not allow overwrites (403, 0x80070005)"), std::string::npos)
        << e;
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << e;
    EXPECT_FALSE(fileExists(src + ".bitsjob")) << "a job refused before its session was kept";
  }
  {
    ClientRun c({"upload", src, url("/no/such/dir.bin")});
    EXPECT_EQ(c.wait(), 1);
    EXPECT_NE(c.err().find("the destination directory does not exist on the server (404, 0x80070003)"),
              std::string::npos)
        << c.err();
  }
  struct Case {
    std::vector<std::string> args;
    const char* needle;
  } cases[] = {
      {{"upload", src, url("/y"), "--fragment-size", "1K"}, "--fragment-size must be 5K..13M"},
      {{"upload", src, url("/y"), "--bogus"}, "unknown option '--bogus'"},
      {{"upload", src, "ftp://127.0.0.1/y"}, "only http(s)://"},
      {{"upload", dir.path() + "/missing", url("/y")}, "cannot read"},
      {{"upload", src, url("/y"), "-H", "no colon"}, "invalid header"},
      {{"resume", dir.path() + "/missing.bitsjob"}, "cannot read state file"},
  };
  for (const Case& k : cases) {
    ClientRun c(k.args);
    EXPECT_EQ(c.wait(), 2) << k.needle;
    std::string e = c.err();
    EXPECT_NE(e.find(k.needle), std::string::npos) << e;
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << e;
  }
}

TEST_F(BitsClient, AnUnfinishedJobIsNotStartedTwiceAndCancelDropsIt) {
  std::string data = randomBytes(8 * 1024 * 1024, 7);
  std::string src = file("c.bin", data);
  killAfter(src, "/c.bin", 3);
  std::string job = src + ".bitsjob";
  {
    ClientRun again({"upload", src, url("/c.bin")});
    EXPECT_EQ(again.wait(), 2);
    EXPECT_NE(again.err().find("bitsclient resume " + job), std::string::npos) << again.err();
  }
  ASSERT_FALSE(listDir(bitsd->state() + "/partial").empty());
  ClientRun cancel({"cancel", job});
  ASSERT_EQ(cancel.wait(), 0) << cancel.out() << cancel.err();
  EXPECT_FALSE(fileExists(job));
  EXPECT_TRUE(listDir(bitsd->state() + "/partial").empty());
  EXPECT_FALSE(fileExists(bitsd->root() + "/c.bin"));
}

TEST_F(BitsClient, UploadReplyWithATransactionHeaderDownloadsTheReply) {
  TestApp app;
  TestApp::Behaviour b;
  b.reply = randomBytes(1024 * 1024 + 4321, 8);  // two ranged GETs
  app.set(b);
  bitsd = std::make_unique<BitsdProcess>(
      std::vector<std::string>{"--notify-type", "value", "--notify-url", app.url("/app")});
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  std::string data = randomBytes(300000, 9);
  std::string src = file("order.xml", data);
  std::string replyOut = dir.path() + "/reply.bin";
  ClientRun c({"upload", src, url("/order.xml"), "-H", "BITS-Transaction-Id: order-77", "--reply-out", replyOut});
  ASSERT_EQ(c.wait(), 0) << c.out() << c.err();
  std::string reply;
  ASSERT_TRUE(readFile(replyOut, &reply));
  EXPECT_TRUE(reply == b.reply) << "reply differs (" << reply.size() << " bytes)";
  EXPECT_EQ(app.countFor("order-77"), 1u);
  ASSERT_EQ(app.count(), 1u);
  EXPECT_TRUE(app.seen()[0].content == data);
  EXPECT_NE(c.out().find("\"reply_url\":"), std::string::npos) << c.out();
  // Closed after the download: its reply URL is gone, and the file stays only as the delivery's
  // reply of record (for a later session of the same transaction, until delivered-retention).
  EXPECT_EQ(listDir(bitsd->state() + "/replies").size(), 1u);
}

TEST_F(BitsClient, AnUnreachableHostIdFallsBackToTheUrlAfterItsTimeout) {
  int dead = freePort();
  bitsd = std::make_unique<BitsdProcess>(std::vector<std::string>{
      "--host-id", "127.0.0.1:" + std::to_string(dead), "--host-id-fallback-timeout", "1"});
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  std::string data = randomBytes(100000, 10);
  std::string src = file("h.bin", data);
  ClientRun c({"upload", src, url("/h.bin"), "--retry-delay-ms", "100", "--retry-max-delay-ms", "200",
               "--retries", "50"});
  ASSERT_EQ(c.wait(), 0) << c.out() << c.err();
  EXPECT_EQ(countEvents(c.out(), "host-id"), 1u) << c.out();
  EXPECT_EQ(countEvents(c.out(), "fallback"), 1u) << c.out();
  EXPECT_GE(countEvents(c.out(), "retry"), 2u);
  EXPECT_TRUE(arrived("h.bin", data));
}

// What the client sends, seen by a plain HTTP server (TestApp records every request): the Windows
// client's User-Agent and headers, the protocol GUID, and the custom header on every request.
TEST_F(BitsClient, RequestsCarryTheWindowsClientsHeaders) {
  TestApp app;  // answers 200 without a session id, so the job stops after Create-Session
  std::string src = file("w.bin", "data");
  ClientRun c({"upload", src, app.url("/up/w.bin"), "-H", "BITS-Transaction-Id: tx-w"});
  EXPECT_EQ(c.wait(), 1) << c.err();
  EXPECT_NE(c.err().find("without BITS-Session-Id"), std::string::npos) << c.err();
  std::vector<TestApp::Seen> seen = app.seen();
  ASSERT_EQ(seen.size(), 2u);
  const char* types[] = {"Ping", "Create-Session"};
  for (size_t i = 0; i < 2; ++i) {
    const TestApp::Seen& r = seen[i];
    EXPECT_EQ(r.target, "/up/w.bin");
    EXPECT_EQ(r.header("bits-packet-type"), types[i]);
    EXPECT_EQ(r.header("user-agent"), "Microsoft BITS/7.8");
    EXPECT_EQ(r.header("accept"), "*/*");
    EXPECT_EQ(r.header("connection"), "Keep-Alive");
    EXPECT_EQ(r.header("content-length"), "0");
    EXPECT_EQ(r.header("host"), "127.0.0.1:" + std::to_string(app.port()));
    EXPECT_EQ(r.header("bits-transaction-id"), "tx-w");
  }
  EXPECT_EQ(seen[1].header("bits-supported-protocols"), "{7df0354d-249b-430f-820d-3d2a9bef4931}");
}

std::string benchValue(const std::string& out, const std::string& key) {
  size_t at = out.find(key + "=");
  if (at == std::string::npos) return "";
  size_t end = out.find('\n', at);
  return out.substr(at + key.size() + 1, end - at - key.size() - 1);
}

// The chaos bench the README shows: concurrent uploads while connections are cut mid-fragment,
// requests stall, and the server is SIGKILLed and restarted; every upload must arrive intact.
TEST_F(BitsClient, BenchUnderChaosAndServerKillsDeliversEveryUploadIntact) {
  bitsd->args()[1] = "127.0.0.1:" + std::to_string(bitsd->port());
  std::string restart;
  for (const std::string& w : emulatorWords()) restart += w + " ";
  restart += BITSD_BINARY;
  for (const std::string& a : bitsd->args()) restart += " " + a;
  ClientRun c({"bench", url("/"), "--sessions", "4", "--size", "4M", "--fragment-size", "64K", "--chaos",
               "--kill-pid", std::to_string(bitsd->pid()), "--restart-cmd", restart, "--kills", "2",
               "--kill-every-ms", "150:500", "--verify-root", bitsd->root(), "--timeout-s", "90"});
  int code = c.wait(100000);
  std::string out = c.out();
  pid_t server = static_cast<pid_t>(std::atoi(benchValue(out, "server_pid").c_str()));
  EXPECT_EQ(code, 0) << out << c.err();
  EXPECT_EQ(benchValue(out, "verified"), "4") << out;
  EXPECT_EQ(benchValue(out, "mismatched"), "0") << out;
  EXPECT_EQ(benchValue(out, "failed"), "0") << out;
  EXPECT_GE(std::atoi(benchValue(out, "kills").c_str()), 1) << out;
  EXPECT_GE(std::atoi(benchValue(out, "cuts").c_str()) + std::atoi(benchValue(out, "pauses").c_str()), 1) << out;
  // Stop the server the bench restarted (it is not our child): SIGTERM, then wait until it is gone.
  if (server > 0 && server != bitsd->pid()) {
    ::kill(server, SIGTERM);
    for (int i = 0; i < 500 && ::kill(server, 0) == 0; ++i) ::poll(nullptr, 0, 10);
    ::kill(server, SIGKILL);
  }
}

}  // namespace
}  // namespace bitsd::testing
