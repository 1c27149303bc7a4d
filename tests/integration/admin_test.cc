// The admin listener (--admin-listen, issue 19): /metrics, /status.json, the status page in a real
// headless browser, Basic authentication, and bitsctl status. Real bitsd, real sockets. Also the
// read-ahead of upload bodies (issue 18), which its counter in /metrics makes visible.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <mbedtls/sha256.h>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

using Steady = std::chrono::steady_clock;

// The admin port from bitsd's log line "admin listener on http://127.0.0.1:PORT".
int adminPort(const BitsdProcess& p) {
  std::string err = p.stderrText();
  size_t at = err.find("admin listener on http://");
  if (at == std::string::npos) return 0;
  size_t colon = err.find(':', at + std::strlen("admin listener on http://"));
  return colon == std::string::npos ? 0 : std::atoi(err.c_str() + colon + 1);
}

struct HttpAnswer {
  int status = 0;
  std::string head, body;
};

// One request on a fresh connection, read until the server closes (at most 10 s).
HttpAnswer httpRequest(int port, const std::string& request) {
  HttpAnswer a;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return a;
  }
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string all;
  auto deadline = Steady::now() + std::chrono::seconds(10);
  char buf[65536];
  while (Steady::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return a;
  a.status = std::atoi(all.c_str() + 9);
  a.head = all.substr(0, end + 2);
  a.body = all.substr(end + 4);
  return a;
}

HttpAnswer get(int port, const std::string& path, const std::string& extra = "") {
  return httpRequest(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + extra + "\r\n");
}

// The value of bitsd_requests_total{packet="P",status="S"} (0 when absent).
uint64_t requestsTotal(const std::string& metrics, const std::string& packet, const std::string& status) {
  std::string key = "bitsd_requests_total{packet=\"" + packet + "\",status=\"" + status + "\"} ";
  size_t at = metrics.find(key);
  return at == std::string::npos ? 0 : std::strtoull(metrics.c_str() + at + key.size(), nullptr, 10);
}

uint64_t metricValue(const std::string& metrics, const std::string& name) {
  size_t at = metrics.find("\n" + name + " ");
  return at == std::string::npos ? UINT64_MAX : std::strtoull(metrics.c_str() + at + name.size() + 2, nullptr, 10);
}

// Listening TCP sockets that belong to `pid` (its descriptors matched against /proc/net/tcp*).
int listeningSockets(pid_t pid) {
  std::set<std::string> inodes;
  std::string fdDir = "/proc/" + std::to_string(pid) + "/fd";
  for (const std::string& name : listDir(fdDir)) {
    char target[128] = {0};
    ssize_t n = ::readlink((fdDir + "/" + name).c_str(), target, sizeof target - 1);
    if (n > 0 && std::strncmp(target, "socket:[", 8) == 0) inodes.insert(std::string(target + 8, std::strchr(target, ']')));
  }
  int count = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st, q, tr, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> st >> q >> tr >> retr >> uid >> timeout >> inode;
      if (st == "0A" && inodes.count(inode) != 0) ++count;
    }
  }
  return count;
}

// An upload left open: Create-Session plus fragments for the first `acked` of `total` bytes.
struct OpenUpload {
  Client c;
  std::string id;
  bool start(int port, const std::string& path, uint64_t acked, uint64_t total, uint32_t seed) {
    if (!c.connect(port)) return false;
    id = createSession(c, path);
    if (id.empty()) return false;
    std::string body = randomBytes(static_cast<size_t>(acked), seed);
    for (uint64_t off = 0; off < acked; off += 8192) {
      uint64_t n = std::min<uint64_t>(8192, acked - off);
      Reply r = c.roundTrip(fragmentRequest(path, id, off, body.substr(off, n), total));
      if (r.status != 200) return false;
    }
    return true;
  }
};

TEST(AdminListener, OffByDefault) {
  BitsdProcess server;
  ASSERT_TRUE(server.start()) << server.stderrText();
  EXPECT_EQ(server.stderrText().find("admin listener"), std::string::npos);
  EXPECT_EQ(listeningSockets(server.pid()), 1);  // the upload listener only
  BitsdProcess withAdmin({"--admin-listen", "127.0.0.1:0"});
  ASSERT_TRUE(withAdmin.start()) << withAdmin.stderrText();
  EXPECT_GT(adminPort(withAdmin), 0);
  EXPECT_EQ(listeningSockets(withAdmin.pid()), 2);
}

TEST(AdminListener, MetricsParseAndCountFragments) {
  BitsdProcess server({"--admin-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int port = adminPort(server);
  ASSERT_GT(port, 0) << server.stderrText();
  HttpAnswer before = get(port, "/metrics");
  ASSERT_EQ(before.status, 200) << before.head;
  EXPECT_NE(before.head.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  // Every line is a comment or `name{labels} value` (Prometheus text format 0.0.4).
  std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? [0-9]+(\.[0-9]+)?$)");
  std::istringstream lines(before.body);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << "bad line: " << line;
    ++samples;
  }
  EXPECT_GT(samples, 30);
  for (const char* name : {"bitsd_received_bytes_total", "bitsd_sessions_open", "bitsd_uploads_committed_total",
                           "bitsd_journal_bytes", "bitsd_fsync_seconds_count", "bitsd_connections_active",
                           "bitsd_request_slots", "bitsd_read_buffers_used", "bitsd_tls_handshakes_total"}) {
    EXPECT_NE(metricValue(before.body, name), UINT64_MAX) << name;
  }
  EXPECT_NE(before.body.find("bitsd_fsync_seconds_bucket{le=\"+Inf\"}"), std::string::npos);

  const int kFragments = 5;
  std::string body = randomBytes(kFragments * 8192, 7);
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port()));
    std::string id = createSession(c, "/m.bin");
    ASSERT_FALSE(id.empty());
    for (int i = 0; i < kFragments; ++i) {
      Reply r = c.roundTrip(fragmentRequest("/m.bin", id, i * 8192, body.substr(i * 8192, 8192), body.size()));
      ASSERT_EQ(r.status, 200) << r.raw;
    }
  }
  HttpAnswer after = get(port, "/metrics");
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(requestsTotal(after.body, "Fragment", "200") - requestsTotal(before.body, "Fragment", "200"),
            static_cast<uint64_t>(kFragments));
  EXPECT_EQ(requestsTotal(after.body, "Create-Session", "200"), 1u);
  EXPECT_EQ(metricValue(after.body, "bitsd_received_bytes_total"), body.size());
  EXPECT_EQ(metricValue(after.body, "bitsd_uploads_committed_total"), 1u);
  // fdatasync is on: each fragment's data sync and the journal's are in the histogram.
  EXPECT_GE(metricValue(after.body, "bitsd_fsync_seconds_count"),
            metricValue(before.body, "bitsd_fsync_seconds_count") + kFragments);
  EXPECT_GT(metricValue(after.body, "bitsd_journal_bytes"), 0u);
}

TEST(AdminListener, StatusJsonShowsTheOpenUpload) {
  BitsdProcess server({"--admin-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int port = adminPort(server);
  ASSERT_GT(port, 0);
  OpenUpload up;
  ASSERT_EQ(::mkdir((server.root() + "/incoming").c_str(), 0755), 0);
  ASSERT_TRUE(up.start(server.port(), "/incoming/report.bin", 37000, 100000, 3));
  HttpAnswer a = get(port, "/status.json");
  ASSERT_EQ(a.status, 200) << a.head;
  EXPECT_NE(a.head.find("Content-Type: application/json"), std::string::npos);
  EXPECT_NE(a.body.find("\"path\":\"incoming/report.bin\""), std::string::npos) << a.body;
  EXPECT_NE(a.body.find("\"bytes_acked\":37000,\"total_bytes\":100000"), std::string::npos) << a.body;
  EXPECT_NE(a.body.find("\"client\":\"127.0.0.1\""), std::string::npos) << a.body;
  EXPECT_NE(a.body.find("\"sessions_open\":1"), std::string::npos) << a.body;
  EXPECT_EQ(a.body.substr(a.body.size() - 3), "]}\n");
  // bitsctl status prints the same session as a table.
  TempDir d;
  int out = ::open((d.path() + "/out").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawnProgram(BITSCTL_BINARY, {"status", "--admin", "http://127.0.0.1:" + std::to_string(port)}, out, out);
  ::close(out);
  ASSERT_EQ(waitProcess(pid, 20000), 0);
  std::string text;
  ASSERT_TRUE(readFile(d.path() + "/out", &text));
  EXPECT_NE(text.find("incoming/report.bin"), std::string::npos) << text;
  EXPECT_NE(text.find("37%"), std::string::npos) << text;
  EXPECT_NE(text.find("127.0.0.1"), std::string::npos) << text;
}

TEST(AdminListener, ManySessionsComeInChunks) {
  // More rows than one output buffer holds (32 KiB): the list is sent in several chunks and stays
  // valid JSON with every session in it.
  BitsdProcess server({"--admin-listen", "127.0.0.1:0", "--max-sessions-per-user", "0"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int port = adminPort(server);
  ASSERT_GT(port, 0);
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  const int kSessions = 300;
  std::string longName(200, 'n');
  for (int i = 0; i < kSessions; ++i) ASSERT_FALSE(createSession(c, "/" + longName + std::to_string(i)).empty());
  HttpAnswer a = get(port, "/status.json");
  ASSERT_EQ(a.status, 200);
  EXPECT_GT(a.body.size(), 65536u);
  size_t rows = 0;
  for (size_t at = a.body.find("\"path\":"); at != std::string::npos; at = a.body.find("\"path\":", at + 1)) ++rows;
  EXPECT_EQ(rows, static_cast<size_t>(kSessions));
  EXPECT_EQ(a.body.find("}{"), std::string::npos);
  EXPECT_EQ(a.body.substr(a.body.size() - 3), "]}\n");
}

TEST(AdminListener, NotFoundAndMethodNotAllowed) {
  BitsdProcess server({"--admin-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int port = adminPort(server);
  ASSERT_GT(port, 0);
  EXPECT_EQ(get(port, "/nope").status, 404);
  HttpAnswer post = httpRequest(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status, 405);
  EXPECT_NE(post.head.find("Allow: GET, HEAD"), std::string::npos);
  EXPECT_EQ(httpRequest(port, "BITS_POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").status, 405);
  HttpAnswer head = httpRequest(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  EXPECT_EQ(httpRequest(port, "garbage\r\n\r\n").status, 400);
  HttpAnswer page = get(port, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("fetch(\"/status.json\""), std::string::npos);
  EXPECT_LT(page.body.size(), 8192u);  // a few KiB
  // A bare port means the loopback address.
  BitsdProcess bare({"--admin-listen", "0"});
  ASSERT_TRUE(bare.start()) << bare.stderrText();
  EXPECT_NE(bare.stderrText().find("admin listener on http://127.0.0.1:"), std::string::npos);
}

void addUser(const std::string& dir, const std::string& users, const std::string& name, const std::string& password) {
  std::string pw = dir + "/pw";
  std::FILE* f = std::fopen(pw.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fprintf(f, "%s\n", password.c_str());
  std::fclose(f);
  int in = ::open(pw.c_str(), O_RDONLY);
  int out = ::open((dir + "/bitsctl.out").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawnProgram(BITSCTL_BINARY,
                           {"user", "add", name, "--users-file", users, "--iterations", "2000", "--password-stdin"},
                           out, out, {}, in);
  ::close(in);
  ::close(out);
  ASSERT_EQ(waitProcess(pid, 60000), 0);
}

TEST(AdminListener, BasicAuthFromTheUsersFile) {
  TempDir dir;
  std::string users = dir.path() + "/users";
  addUser(dir.path(), users, "alice", "wonderland");
  addUser(dir.path(), users, "bob", "builder");
  BitsdProcess server({"--users-file", users, "--allow-basic-over-http", "--admin-listen", "127.0.0.1:0",
                       "--admin-users", "alice"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int port = adminPort(server);
  ASSERT_GT(port, 0);
  for (const char* path : {"/", "/metrics", "/status.json"}) {
    HttpAnswer a = get(port, path);
    EXPECT_EQ(a.status, 401) << path;
    EXPECT_NE(a.head.find("WWW-Authenticate: Basic realm=\"bitsd admin\""), std::string::npos);
  }
  // alice:wonderland, alice:wrong, bob:builder (a user, but not in admin-users)
  EXPECT_EQ(get(port, "/metrics", "Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n").status, 200);
  EXPECT_EQ(get(port, "/metrics", "Authorization: Basic YWxpY2U6d3Jvbmc=\r\n").status, 401);
  EXPECT_EQ(get(port, "/metrics", "Authorization: Basic Ym9iOmJ1aWxkZXI=\r\n").status, 401);
  EXPECT_EQ(get(port, "/status.json", "Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n").status, 200);
}

std::string chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

// Runs chromium headless with `extra` arguments; its stdout. Killed after 30 s.
std::string runChromium(const std::string& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                   "--no-first-run", "--disable-background-networking",
                                   "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                                   "--user-data-dir=" + dir + "/profile"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string outPath = dir + "/dom.html";
  int out = ::open(outPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  int err = ::open((dir + "/chromium.err").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawnProgram(chromium(), args, out, err, {}, -1, /*emulate=*/false);  // chromium is this machine's
  ::close(out);
  ::close(err);
  if (waitProcess(pid, 30000) == -1) {
    ::kill(pid, SIGKILL);
    waitProcess(pid, 5000);
  }
  std::string dom;
  readFile(outPath, &dom);
  return dom;
}

TEST(AdminListener, StatusPageRendersInAHeadlessBrowser) {
  if (chromium().empty()) GTEST_SKIP() << "chromium is not installed (tools/install-deps installs it)";
  BitsdProcess server({"--admin-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int port = adminPort(server);
  ASSERT_GT(port, 0);
  OpenUpload a, b;
  ASSERT_EQ(::mkdir((server.root() + "/backups").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((server.root() + "/logs").c_str(), 0755), 0);
  ASSERT_TRUE(a.start(server.port(), "/backups/router-config.tar", 37000, 100000, 1));
  ASSERT_TRUE(b.start(server.port(), "/logs/syslog-2024.gz", 90000, 120000, 2));
  TempDir dir;
  std::string dom = runChromium(dir.path(), {"--virtual-time-budget=5000", "--dump-dom",
                                             "http://127.0.0.1:" + std::to_string(port) + "/"});
  // The rows exist only if the page's script fetched /status.json and drew them.
  EXPECT_NE(dom.find("backups/router-config.tar"), std::string::npos) << dom;
  EXPECT_NE(dom.find("37% of"), std::string::npos) << dom;
  EXPECT_NE(dom.find("logs/syslog-2024.gz"), std::string::npos) << dom;
  EXPECT_NE(dom.find("75% of"), std::string::npos) << dom;
  EXPECT_NE(dom.find("<progress max=\"100\" value=\"37\""), std::string::npos) << dom;
  // BITSD_STATUS_SCREENSHOT=FILE: also keep a screenshot of the page (docs/status-page.png).
  if (const char* shot = std::getenv("BITSD_STATUS_SCREENSHOT")) {
    runChromium(dir.path(), {"--virtual-time-budget=5000", "--hide-scrollbars", "--window-size=900,500",
                             std::string("--screenshot=") + shot, "http://127.0.0.1:" + std::to_string(port) + "/"});
  }
}

// Read-ahead (issue 18): while a part of a fragment's body is written (and hashed) from one read
// buffer, the next part is read into a second one. Small read buffers make every fragment many
// writes, each with body bytes already waiting in the socket, so the second buffer is used; its
// counter in /metrics shows that it was.

// `bitsctl journal dump` of `state` (the journal may be in use).
std::string journalDump(const std::string& state) {
  TempDir d;
  int out = ::open((d.path() + "/out").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawnProgram(BITSCTL_BINARY, {"journal", "dump", "--state", state}, out, out);
  ::close(out);
  if (waitProcess(pid, 20000) != 0) return "";
  std::string text;
  readFile(d.path() + "/out", &text);
  return text;
}

// bitsd_read_ahead_bytes_total, or 0 when /metrics lacks it.
uint64_t readAheadBytes(int admin) {
  uint64_t v = metricValue(get(admin, "/metrics").body, "bitsd_read_ahead_bytes_total");
  return v == UINT64_MAX ? 0 : v;
}

std::string sha256Hex(const std::string& bytes) {
  uint8_t sum[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), sum, 0);
  char hex[65];
  for (int i = 0; i < 32; ++i) std::snprintf(hex + 2 * i, 3, "%02x", sum[i]);
  return std::string(hex, 64);
}

TEST(ReadAhead, AFragmentReadAheadIsStoredWholeInOrderAndItsDigestIsRight) {
  BitsdProcess server({"--admin-listen", "127.0.0.1:0", "--read-buffer-bytes", "16K"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int admin = adminPort(server);
  ASSERT_GT(admin, 0);
  std::string body = randomBytes(3 * 1024 * 1024 + 5, 181);
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string id = createSession(c, "/ahead.bin");
  ASSERT_FALSE(id.empty());
  for (size_t off = 0; off < body.size(); off += 1 << 20) {
    Reply r = c.roundTrip(fragmentRequest("/ahead.bin", id, off, body.substr(off, 1 << 20), body.size()));
    ASSERT_EQ(r.status, 200) << r.raw;
  }
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/ahead.bin", &got));
  EXPECT_TRUE(got == body) << "the stored file differs from what was sent (" << got.size() << " bytes)";
  std::string dump = journalDump(server.state());
  EXPECT_NE(dump.find("sha256=" + sha256Hex(body)), std::string::npos) << dump;
  HttpAnswer m = get(admin, "/metrics");
  ASSERT_EQ(m.status, 200);
  uint64_t ahead = metricValue(m.body, "bitsd_read_ahead_bytes_total");
  EXPECT_GT(ahead, 0u) << "no body byte was read ahead";
  EXPECT_LE(ahead, body.size());
  EXPECT_EQ(metricValue(m.body, "bitsd_read_buffers_used"), 0u);
}

TEST(ReadAhead, AClientThatLeavesMidBodyGivesBothBuffersBackAndTheSessionResumes) {
  BitsdProcess server({"--admin-listen", "127.0.0.1:0", "--read-buffer-bytes", "16K", "--read-buffers", "8"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int admin = adminPort(server);
  ASSERT_GT(admin, 0);
  std::string body = randomBytes(2 * 1024 * 1024, 182);
  std::string id;
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port()));
    id = createSession(c, "/left.bin");
    ASSERT_FALSE(id.empty());
    std::string req = fragmentRequest("/left.bin", id, 0, body, body.size());
    // All but the last 100 KiB of the body, then a reset (SO_LINGER 0): the server is reading
    // ahead or writing when the connection goes.
    ASSERT_TRUE(c.sendAll(req.substr(0, req.size() - 100 * 1024)));
    ASSERT_TRUE(waitUntil([&] { return readAheadBytes(admin) > 0; })) << "no read-ahead while the body came";
    linger l{1, 0};
    ASSERT_EQ(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
  }
  EXPECT_TRUE(waitUntil([&] {
    std::string m = get(admin, "/metrics").body;
    return metricValue(m, "bitsd_read_buffers_used") == 0 && metricValue(m, "bitsd_connections_active") == 0;
  })) << get(admin, "/metrics").body;
  // Nothing of the cut-off fragment was acked; the client's retry from 0 completes the upload.
  Client again;
  ASSERT_TRUE(again.connect(server.port()));
  Reply r = again.roundTrip(fragmentRequest("/left.bin", id, 0, body, body.size()));
  ASSERT_EQ(r.status, 200) << r.raw;
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/left.bin", &got));
  EXPECT_TRUE(got == body);
  EXPECT_NE(journalDump(server.state()).find("sha256=" + sha256Hex(body)), std::string::npos);
}

TEST(ReadAhead, ARequestPipelinedBehindAReadAheadBodyIsAnsweredInTurn) {
  // Read-ahead takes only bytes of the body it belongs to: the Ping sent right behind the
  // fragment, in the same write, is parsed as the next request and answered after the Ack.
  BitsdProcess server({"--admin-listen", "127.0.0.1:0", "--read-buffer-bytes", "16K"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  int admin = adminPort(server);
  ASSERT_GT(admin, 0);
  std::string body = randomBytes(512 * 1024 + 3, 183);
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string id = createSession(c, "/piped.bin");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(c.sendAll(fragmentRequest("/piped.bin", id, 0, body, body.size()) + bitsRequest("/piped.bin", "Ping")));
  Reply ack, pong;
  ASSERT_TRUE(c.readResponse(&ack));
  ASSERT_TRUE(c.readResponse(&pong));
  EXPECT_EQ(ack.status, 200) << ack.raw;
  EXPECT_EQ(ack.get("BITS-Packet-Type"), "Ack");
  EXPECT_EQ(ack.get("BITS-Received-Content-Range"), std::to_string(body.size()));
  EXPECT_EQ(pong.status, 200) << pong.raw;
  EXPECT_EQ(pong.get("BITS-Received-Content-Range"), "") << "the Ping got a fragment's answer";
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/piped.bin", &got));
  EXPECT_TRUE(got == body);
  EXPECT_GT(readAheadBytes(admin), 0u);
}

}  // namespace
}  // namespace bitsd::testing
