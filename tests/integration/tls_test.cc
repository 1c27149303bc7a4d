// bitsd over TLS (issue 7) with a real mbedTLS client on 127.0.0.1: a whole upload over https with
// the certificate verified, only ECDHE + AEAD suites, one-line start-up errors for bad certificate
// or key files, garbage and truncated handshakes, the handshake timeout, and SIGHUP reloading the
// certificate while a session goes on. The certificates come from `bitsctl gen-cert`.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "tests/integration/bitsd_process.h"
#include "tests/integration/test_app.h"

namespace bitsd::testing {
namespace {

// Runs `bitsctl gen-cert`; true when it wrote both files.
bool genCert(const std::string& dir, const std::string& name, const std::string& cn) {
  std::vector<std::string> args = {"gen-cert", "--cn", cn, "--cert", dir + "/" + name + ".crt", "--key",
                                   dir + "/" + name + ".key"};
  int out = ::open("/dev/null", O_WRONLY);
  pid_t pid = spawnProgram(BITSCTL_BINARY, args, out, out);
  ::close(out);
  return pid > 0 && waitProcess(pid, 60000) == 0;
}

int connectTo(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A blocking TLS 1.2 client (socket timeouts bound every wait).
class TlsClient {
 public:
  explicit TlsClient(const std::string& caFile, const int* suites = nullptr) {
    mbedtls_ssl_init(&ssl_);
    mbedtls_ssl_config_init(&conf_);
    mbedtls_x509_crt_init(&ca_);
    mbedtls_ctr_drbg_init(&drbg_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, nullptr, 0);
    mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
    if (mbedtls_x509_crt_parse_file(&ca_, caFile.c_str()) == 0) {
      mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
    }
    if (suites != nullptr) mbedtls_ssl_conf_ciphersuites(&conf_, suites);
    mbedtls_ssl_setup(&ssl_, &conf_);
    mbedtls_ssl_set_hostname(&ssl_, "127.0.0.1");
  }
  ~TlsClient() {
    if (fd_ >= 0) ::close(fd_);
    mbedtls_ssl_free(&ssl_);
    mbedtls_ssl_config_free(&conf_);
    mbedtls_x509_crt_free(&ca_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }
  // Connects and completes the handshake; 0 or the mbedTLS error.
  int connect(int port) {
    fd_ = connectTo(port);
    if (fd_ < 0) return -1;
    mbedtls_ssl_set_bio(&ssl_, this, send, recv, nullptr);
    int rc;
    while ((rc = mbedtls_ssl_handshake(&ssl_)) == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
    }
    return rc;
  }
  std::string suite() const { return mbedtls_ssl_get_ciphersuite(&ssl_); }
  // Sends `bytes` in one record, without waiting for an answer.
  bool write(const std::string& bytes) {
    return mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()) ==
           static_cast<int>(bytes.size());
  }
  // Bounds every later send and receive (connect() sets 10 s).
  void setTimeoutMs(int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  Reply roundTrip(const std::string& request) {
    size_t done = 0;
    while (done < request.size()) {
      int rc = mbedtls_ssl_write(&ssl_, reinterpret_cast<const unsigned char*>(request.data() + done),
                                 request.size() - done);
      if (rc <= 0) return Reply();
      done += static_cast<size_t>(rc);
    }
    std::string in;
    size_t end;
    while ((end = in.find("\r\n\r\n")) == std::string::npos) {
      if (!readMore(&in)) return Reply();
    }
    Reply head = parseReply(in.substr(0, end + 4));
    size_t length = std::strtoul(head.get("Content-Length").c_str(), nullptr, 10);
    while (in.size() < end + 4 + length) {
      if (!readMore(&in)) return Reply();
    }
    Reply r = parseReply(in.substr(0, end + 4));
    r.body = in.substr(end + 4, length);
    return r;
  }

 private:
  bool readMore(std::string* in) {
    unsigned char buf[16384];
    int rc = mbedtls_ssl_read(&ssl_, buf, sizeof buf);
    if (rc <= 0) return false;
    in->append(reinterpret_cast<char*>(buf), static_cast<size_t>(rc));
    return true;
  }
  static int send(void* ctx, const unsigned char* buf, size_t len) {
    ssize_t n = ::send(static_cast<TlsClient*>(ctx)->fd_, buf, len, MSG_NOSIGNAL);
    return n < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : static_cast<int>(n);
  }
  static int recv(void* ctx, unsigned char* buf, size_t len) {
    TlsClient* self = static_cast<TlsClient*>(ctx);
    ssize_t n = ::recv(self->fd_, buf, len, 0);
    if (n == 0) return MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY;
    if (n < 0) return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    self->watchRecords(buf, static_cast<size_t>(n));
    return static_cast<int>(n);
  }
  // Follows the TLS record headers in what the server sends (5 bytes: type, version, length).
  void watchRecords(const unsigned char* p, size_t n) {
    for (size_t i = 0; i < n;) {
      if (recLeft_ > 0) {
        size_t take = std::min(recLeft_, n - i);
        recLeft_ -= take;
        i += take;
        continue;
      }
      recHead_[recHeadLen_++] = p[i++];
      if (recHeadLen_ < 5) continue;
      recHeadLen_ = 0;
      recLeft_ = (size_t{recHead_[3]} << 8) | recHead_[4];
      if (recHead_[0] == 23) {  // application data
        ++appRecords;
        maxAppRecord = std::max(maxAppRecord, recLeft_);
      }
    }
  }

 public:
  size_t appRecords = 0;    // application-data records received
  size_t maxAppRecord = 0;  // the largest one, ciphertext bytes (payload + AEAD expansion)

 private:
  unsigned char recHead_[5] = {};
  size_t recHeadLen_ = 0;
  size_t recLeft_ = 0;
  int fd_ = -1;
  mbedtls_ssl_context ssl_;
  mbedtls_ssl_config conf_;
  mbedtls_x509_crt ca_;
  mbedtls_ctr_drbg_context drbg_;
  mbedtls_entropy_context entropy_;
};

class Tls : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(genCert(dir.path(), "a", "127.0.0.1")); }
  std::string crt(const char* n = "a") const { return dir.path() + "/" + n + ".crt"; }
  std::string key(const char* n = "a") const { return dir.path() + "/" + n + ".key"; }
  std::unique_ptr<BitsdProcess> start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--tls-cert", crt(), "--tls-key", key()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = std::make_unique<BitsdProcess>(args);
    EXPECT_TRUE(p->start()) << p->stderrText();
    return p;
  }
  std::string createOver(TlsClient& c, const std::string& path) {
    Reply r = c.roundTrip(bitsRequest(path, "Create-Session", {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)}}));
    return r.status == 200 ? r.get("BITS-Session-Id") : std::string();
  }
  TempDir dir;
};

TEST_F(Tls, AWholeUploadOverHttpsWithTheCertificateVerified) {
  auto bitsd = start();
  EXPECT_EQ(bitsd->readyLine().rfind("bitsd listening on https://127.0.0.1:", 0), 0u) << bitsd->readyLine();
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  std::string suite = c.suite();
  EXPECT_TRUE(suite.find("ECDHE") != std::string::npos &&
              (suite.find("CHACHA20-POLY1305") != std::string::npos || suite.find("GCM") != std::string::npos))
      << suite;
  std::string data = randomBytes(700000, 31);  // several TLS records per fragment, several fragments
  std::string id = createOver(c, "/secure.bin");
  ASSERT_FALSE(id.empty());
  for (size_t off = 0; off < data.size(); off += 300000) {
    std::string part = data.substr(off, 300000);
    Reply r = c.roundTrip(fragmentRequest("/secure.bin", id, off, part, data.size()));
    ASSERT_EQ(r.status, 200) << r.raw;
  }
  EXPECT_EQ(c.roundTrip(bitsRequest("/secure.bin", "Close-Session", {{"BITS-Session-Id", id}})).status, 200);
  std::string got;
  ASSERT_TRUE(readFile(bitsd->root() + "/secure.bin", &got));
  EXPECT_TRUE(got == data);
}

// Read-ahead over TLS (issue 18): records decrypted while a write runs land in the second read
// buffer; with 16 KiB buffers every fragment is many writes, and the counter shows the second
// buffer was used. The file must still be exactly what was sent.
TEST_F(Tls, BodyBytesReadAheadOverHttpsAreStoredWholeAndInOrder) {
  auto bitsd = start({"--read-buffer-bytes", "16K", "--admin-listen", "127.0.0.1:0"});
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  std::string data = randomBytes(3 * 1024 * 1024 + 7, 32);
  std::string id = createOver(c, "/ahead.bin");
  ASSERT_FALSE(id.empty());
  for (size_t off = 0; off < data.size(); off += 1 << 20) {
    Reply r = c.roundTrip(fragmentRequest("/ahead.bin", id, off, data.substr(off, 1 << 20), data.size()));
    ASSERT_EQ(r.status, 200) << r.raw;
  }
  std::string got;
  ASSERT_TRUE(readFile(bitsd->root() + "/ahead.bin", &got));
  EXPECT_TRUE(got == data) << "the stored file differs from what was sent (" << got.size() << " bytes)";
  std::string ahead = bitsd->metric("bitsd_read_ahead_bytes_total");
  ASSERT_FALSE(ahead.empty()) << "no bitsd_read_ahead_bytes_total in /metrics";
  EXPECT_GT(std::stoull(ahead), 0u);
  EXPECT_EQ(bitsd->metric("bitsd_read_buffers_used"), "0");
}

TEST_F(Tls, OnlyEcdheWithAeadIsOffered) {
  auto bitsd = start();
  const int cbcOnly[] = {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
                         MBEDTLS_TLS_RSA_WITH_AES_128_GCM_SHA256, 0};
  TlsClient weak(crt(), cbcOnly);
  EXPECT_NE(weak.connect(bitsd->port()), 0);
  for (int suite : {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}) {
    const int one[] = {suite, 0};
    TlsClient c(crt(), one);
    ASSERT_EQ(c.connect(bitsd->port()), 0) << suite;
    EXPECT_EQ(c.roundTrip(bitsRequest("/x", "Ping")).status, 200);
  }
}

TEST_F(Tls, BadCertificateOrKeyFilesAreOneLineStartupErrors) {
  ASSERT_TRUE(genCert(dir.path(), "b", "other.example"));
  std::string junk = dir.path() + "/junk.pem";
  {
    std::FILE* f = std::fopen(junk.c_str(), "w");
    std::fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    std::fclose(f);
  }
  struct Case {
    std::vector<std::string> args;
    const char* needle;
  } cases[] = {
      {{"--tls-cert", dir.path() + "/missing.crt", "--tls-key", key()}, "tls-cert"},
      {{"--tls-cert", junk, "--tls-key", key()}, "not a readable PEM certificate"},
      {{"--tls-cert", crt(), "--tls-key", junk}, "tls-key"},
      {{"--tls-cert", crt(), "--tls-key", key("b")}, "does not belong to the certificate"},
      {{"--tls-cert", crt()}, "tls-cert and tls-key go together"},
  };
  for (const Case& k : cases) {
    // On a port of its own: what is listening on the default one must not decide the answer.
    std::vector<std::string> args = k.args;
    args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    RunResult r = runBitsd(args);
    EXPECT_EQ(r.exitCode, 2) << r.err;
    EXPECT_NE(r.err.find(k.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST_F(Tls, GarbageTruncatedAndPlainHttpHandshakesAreDroppedAndOthersGoOn) {
  auto bitsd = start();
  std::string garbage = randomBytes(5000, 5);
  std::string plain = bitsRequest("/x", "Ping");
  for (const std::string* bytes : {&garbage, &plain}) {
    int fd = connectTo(bitsd->port());
    ASSERT_GE(fd, 0);
    ::send(fd, bytes->data(), bytes->size(), MSG_NOSIGNAL);
    char buf[256];
    // The server gives up on this connection: an alert at most, then EOF (bounded by SO_RCVTIMEO).
    ssize_t n;
    size_t total = 0;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) total += static_cast<size_t>(n);
    // Closed: EOF, or a reset when unread garbage was still queued at the server. Not a timeout.
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << "not closed: " << std::strerror(errno);
    EXPECT_LT(total, 64u);
    EXPECT_EQ(std::string(buf, std::min<size_t>(total, 4)).find("HTTP"), std::string::npos);
    ::close(fd);
  }
  // Half a handshake: the record header promises more than ever comes; the client leaves.
  {
    int fd = connectTo(bitsd->port());
    const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    ::send(fd, hello, sizeof hello, MSG_NOSIGNAL);
    ::close(fd);
  }
  TlsClient good(crt());
  ASSERT_EQ(good.connect(bitsd->port()), 0);
  EXPECT_EQ(good.roundTrip(bitsRequest("/x", "Ping")).status, 200);
  std::string err = bitsd->stderrText();
  EXPECT_NE(err.find("TLS handshake failed"), std::string::npos) << err;
}

TEST_F(Tls, ASlowHandshakeIsClosedAtTheTimeout) {
  auto bitsd = start({"--tls-handshake-timeout-ms", "300"});
  int fd = connectTo(bitsd->port());
  ASSERT_GE(fd, 0);
  const unsigned char start[] = {0x16, 0x03, 0x01};  // a record header, and then nothing
  ::send(fd, start, sizeof start, MSG_NOSIGNAL);
  auto t0 = std::chrono::steady_clock::now();
  char buf[64];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);  // SO_RCVTIMEO bounds it at 10 s
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(n, 0) << "not closed by the handshake timeout";
  EXPECT_LT(ms, 5000);
  ::close(fd);
  EXPECT_NE(bitsd->stderrText().find("TLS handshake not finished within 300 ms"), std::string::npos)
      << bitsd->stderrText();
}

bool copyFile(const std::string& from, const std::string& to) {
  std::string bytes;
  if (!readFile(from, &bytes)) return false;
  std::FILE* f = std::fopen(to.c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

bool waitForLog(BitsdProcess& p, const std::string& needle) {
  return waitUntil([&] { return p.stderrText().find(needle) != std::string::npos; });
}

TEST_F(Tls, SighupReloadsTheCertificateAndALiveSessionGoesOn) {
  auto bitsd = start();
  ASSERT_TRUE(copyFile(crt(), dir.path() + "/old.crt"));
  TlsClient first(crt());
  ASSERT_EQ(first.connect(bitsd->port()), 0);
  std::string id = createOver(first, "/r.bin");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(first.roundTrip(fragmentRequest("/r.bin", id, 0, "hello ", 11)).status, 200);
  // New files in place, then SIGHUP.
  ASSERT_TRUE(genCert(dir.path(), "c", "127.0.0.1"));
  ASSERT_TRUE(copyFile(crt("c"), dir.path() + "/new.crt"));
  ASSERT_EQ(::rename(crt("c").c_str(), crt().c_str()), 0);
  ASSERT_EQ(::rename(key("c").c_str(), key().c_str()), 0);
  ::kill(bitsd->pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(*bitsd, "SIGHUP: TLS certificate reloaded")) << bitsd->stderrText();
  // The live connection goes on with the old certificate; new ones get the new one.
  EXPECT_EQ(first.roundTrip(bitsRequest("/x", "Ping")).status, 200);
  TlsClient trustsOld(dir.path() + "/old.crt");
  EXPECT_NE(trustsOld.connect(bitsd->port()), 0) << "a new connection still got the old certificate";
  TlsClient renewed(dir.path() + "/new.crt");
  ASSERT_EQ(renewed.connect(bitsd->port()), 0);
  // The session started before the reload finishes on a connection made after it.
  ASSERT_EQ(renewed.roundTrip(fragmentRequest("/r.bin", id, 6, "world", 11)).status, 200);
  std::string got;
  ASSERT_TRUE(readFile(bitsd->root() + "/r.bin", &got));
  EXPECT_EQ(got, "hello world");
  // A broken file at reload keeps the current certificate.
  {
    std::FILE* f = std::fopen(crt().c_str(), "w");
    std::fputs("garbage\n", f);
    std::fclose(f);
  }
  ::kill(bitsd->pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(*bitsd, "SIGHUP: TLS certificate not reloaded")) << bitsd->stderrText();
  TlsClient still(dir.path() + "/new.crt");
  EXPECT_EQ(still.connect(bitsd->port()), 0);
}

// --- Basic authentication (over TLS unless the test says otherwise) ---------------------------------

std::string basicHeader(const std::string& userPass) {
  unsigned char out[256];
  size_t n = 0;
  mbedtls_base64_encode(out, sizeof out, &n, reinterpret_cast<const unsigned char*>(userPass.data()), userPass.size());
  return "Basic " + std::string(reinterpret_cast<char*>(out), n);
}

// `bitsctl user add NAME --password-stdin` with the password on its stdin, as a script would.
RunResult addUser(const std::string& usersFile, const std::string& name, const std::string& password,
                  const std::string& dir) {
  std::string pwPath = dir + "/pw-" + name;
  {
    std::FILE* f = std::fopen(pwPath.c_str(), "w");
    std::fprintf(f, "%s\n", password.c_str());
    std::fclose(f);
  }
  int in = ::open(pwPath.c_str(), O_RDONLY);
  std::string outPath = dir + "/bitsctl.out";
  int out = ::open(outPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  pid_t pid = spawnProgram(BITSCTL_BINARY,
                           {"user", "add", name, "--users-file", usersFile, "--iterations", "2000", "--password-stdin"},
                           out, out, {}, in);
  ::close(in);
  ::close(out);
  RunResult r;
  r.exitCode = waitProcess(pid, 60000);
  readFile(outPath, &r.out);
  return r;
}

class Auth : public Tls {
 protected:
  void SetUp() override {
    Tls::SetUp();
    users = dir.path() + "/users";
    ASSERT_EQ(addUser(users, "alice", "wonder land", dir.path()).exitCode, 0);
    ASSERT_EQ(addUser(users, "bob", "builder", dir.path()).exitCode, 0);
  }
  std::string users;
};

TEST_F(Auth, AnUploadOverHttpsWithAPassword) {
  auto bitsd = start({"--users-file", users, "--locations", "/alice/ alice; /shared/ *"});
  ::mkdir((bitsd->root() + "/alice").c_str(), 0755);
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  // The Windows client's way: the first request without credentials gets the challenge, and the
  // same connection carries on with them.
  Reply challenge = c.roundTrip(bitsRequest("/alice/a.bin", "Ping"));
  EXPECT_EQ(challenge.status, 401);
  EXPECT_EQ(challenge.get("WWW-Authenticate"), "Basic realm=\"bitsd\", charset=\"UTF-8\"");
  std::string auth = basicHeader("alice:wonder land");
  Reply created = c.roundTrip(bitsRequest("/alice/a.bin", "Create-Session",
                                          {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)},
                                           {"Authorization", auth}}));
  ASSERT_EQ(created.status, 200) << created.raw;
  std::string id = created.get("BITS-Session-Id");
  std::string data = randomBytes(200000, 41);
  Reply frag = c.roundTrip(bitsRequest("/alice/a.bin", "Fragment",
                                       {{"BITS-Session-Id", id},
                                        {"Content-Range", "bytes 0-199999/200000"},
                                        {"Authorization", auth}},
                                       data));
  ASSERT_EQ(frag.status, 200) << frag.raw;
  std::string got;
  ASSERT_TRUE(readFile(bitsd->root() + "/alice/a.bin", &got));
  EXPECT_TRUE(got == data);
  EXPECT_NE(bitsd->stderrText().find("https with CN=127.0.0.1"), std::string::npos);
}

TEST_F(Auth, WrongPasswordWrongUserAndAnotherUsersSessionAreRefused) {
  auto bitsd = start({"--users-file", users, "--locations", "/alice/ alice; /shared/ *"});
  ::mkdir((bitsd->root() + "/alice").c_str(), 0755);
  ::mkdir((bitsd->root() + "/shared").c_str(), 0755);
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  Reply wrong = c.roundTrip(bitsRequest("/shared/x", "Ping", {{"Authorization", basicHeader("alice:wonderland")}}));
  EXPECT_EQ(wrong.status, 401);
  Reply nobody = c.roundTrip(bitsRequest("/shared/x", "Ping", {{"Authorization", basicHeader("mallory:builder")}}));
  EXPECT_EQ(nobody.status, 401);
  // Bob may not upload to /alice/.
  Reply forbidden = c.roundTrip(bitsRequest("/alice/b.bin", "Create-Session",
                                            {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)},
                                             {"Authorization", basicHeader("bob:builder")}}));
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_EQ(forbidden.get("BITS-Error-Code"), "0x80070005");
  // Alice's session in /shared/, replayed by Bob: the answer for an unknown session.
  std::string alice = basicHeader("alice:wonder land");
  Reply created = c.roundTrip(bitsRequest("/shared/s.bin", "Create-Session",
                                          {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)},
                                           {"Authorization", alice}}));
  ASSERT_EQ(created.status, 200) << created.raw;
  std::string id = created.get("BITS-Session-Id");
  TlsClient b(crt());
  ASSERT_EQ(b.connect(bitsd->port()), 0);
  Reply replay = b.roundTrip(bitsRequest("/shared/s.bin", "Fragment",
                                         {{"BITS-Session-Id", id},
                                          {"Content-Range", "bytes 0-4/5"},
                                          {"Authorization", basicHeader("bob:builder")}},
                                         "bob!!"));
  EXPECT_EQ(replay.status, 500) << replay.raw;
  EXPECT_EQ(replay.get("BITS-Error-Code"), "0x8020001F");
  Reply mine = c.roundTrip(bitsRequest("/shared/s.bin", "Fragment",
                                       {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-4/5"}, {"Authorization", alice}},
                                       "alice"));
  EXPECT_EQ(mine.status, 200) << mine.raw;
}

// A location with its own directory: uploads under /reports/ land in DIR (through a SIGKILL and a
// resume, so recovery looks there too), a symlink inside DIR cannot lead out of it, and a DIR that
// would hold the state is a one-line start-up error.
TEST_F(Auth, ALocationsDirectoryTakesItsUploadsAndSymlinksCannotLeaveIt) {
  std::string reports = dir.path() + "/reports";
  auto bitsd = start({"--users-file", users, "--locations", "/reports=" + reports + "/ alice; /shared/ *"});
  ASSERT_TRUE(fileExists(reports)) << "bitsd creates a location's directory as it does the root";
  ASSERT_EQ(::mkdir((reports + "/2026").c_str(), 0755), 0);
  std::string alice = basicHeader("alice:wonder land");
  std::string data = randomBytes(150000, 77);
  std::string id;
  {
    TlsClient c(crt());
    ASSERT_EQ(c.connect(bitsd->port()), 0);
    Reply created = c.roundTrip(bitsRequest("/reports/2026/q4.csv", "Create-Session",
                                            {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)},
                                             {"Authorization", alice}}));
    ASSERT_EQ(created.status, 200) << created.raw;
    id = created.get("BITS-Session-Id");
    Reply half = c.roundTrip(bitsRequest("/reports/2026/q4.csv", "Fragment",
                                         {{"BITS-Session-Id", id},
                                          {"Content-Range", "bytes 0-99999/150000"},
                                          {"Authorization", alice}},
                                         data.substr(0, 100000)));
    ASSERT_EQ(half.status, 200) << half.raw;
  }
  EXPECT_EQ(bitsd->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  Reply rest = c.roundTrip(bitsRequest("/reports/2026/q4.csv", "Fragment",
                                       {{"BITS-Session-Id", id},
                                        {"Content-Range", "bytes 100000-149999/150000"},
                                        {"Authorization", alice}},
                                       data.substr(100000)));
  ASSERT_EQ(rest.status, 200) << rest.raw << bitsd->stderrText();
  std::string got;
  ASSERT_TRUE(readFile(reports + "/2026/q4.csv", &got));
  EXPECT_TRUE(got == data);
  EXPECT_FALSE(fileExists(bitsd->root() + "/reports/2026/q4.csv"));
  // A symlink in the location's directory pointing at the upload root: refused, nothing written.
  ASSERT_EQ(::symlink(bitsd->root().c_str(), (reports + "/escape").c_str()), 0);
  Reply out = c.roundTrip(bitsRequest("/reports/escape/x.bin", "Create-Session",
                                      {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)},
                                       {"Authorization", alice}}));
  EXPECT_EQ(out.status, 403) << out.raw;
  EXPECT_EQ(out.get("BITS-Error-Code"), "0x80070005");
  EXPECT_FALSE(fileExists(bitsd->root() + "/x.bin"));
  // Start-up errors, one line each.
  struct Case {
    std::vector<std::string> args;
    const char* needle;
  } cases[] = {
      {{"--users-file", users, "--allow-basic-over-http", "--locations", "/r=relative alice"},
       "must be an absolute path other than /"},
      {{"--users-file", users, "--allow-basic-over-http", "--state", dir.path() + "/st", "--locations",
        "/r=" + dir.path() + "/st/inner alice"},
       "must not contain the state directory"},
      {{"--users-file", users, "--allow-basic-over-http", "--locations", "/r=" + crt() + " alice"}, "not a directory"},
  };
  for (const Case& k : cases) {
    // On a port of its own: what is listening on the default one must not decide the answer.
    std::vector<std::string> args = k.args;
    args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    RunResult r = runBitsd(args);
    EXPECT_EQ(r.exitCode, 2) << r.err;
    EXPECT_NE(r.err.find(k.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(fileExists(dir.path() + "/st/inner")) << "a refused directory was created anyway";
}

// Six connections of one client presenting the same credentials at once cost one PBKDF2: the
// checks that arrive while it runs follow it and take its answer. (Each PBKDF2 here is 300,000
// iterations, ~150 ms or more; sending the six requests takes a few ms. Without the coalescing the
// count would be 6; 2 for the six allows for a machine slow enough to let the first finish first.)
TEST_F(Auth, ConcurrentChecksOfTheSameCredentialsRunOnePbkdf2) {
  std::string slow = dir.path() + "/slow-users";
  std::string pwPath = dir.path() + "/pw";
  {
    std::FILE* f = std::fopen(pwPath.c_str(), "w");
    std::fputs("same secret\n", f);
    std::fclose(f);
  }
  int in = ::open(pwPath.c_str(), O_RDONLY);
  int devnull = ::open("/dev/null", O_WRONLY);
  pid_t pid = spawnProgram(BITSCTL_BINARY,
                           {"user", "add", "carol", "--users-file", slow, "--iterations", "300000", "--password-stdin"},
                           devnull, devnull, {}, in);
  ::close(in);
  ::close(devnull);
  ASSERT_EQ(waitProcess(pid, 60000), 0);
  BitsdProcess bitsd({"--users-file", slow, "--allow-basic-over-http"});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  constexpr int kN = 6;
  Client cs[kN];
  std::string ping = bitsRequest("/x", "Ping", {{"Authorization", basicHeader("carol:same secret")}});
  for (Client& c : cs) ASSERT_TRUE(c.connect(bitsd.port()));
  for (Client& c : cs) ASSERT_TRUE(c.sendAll(ping));
  for (Client& c : cs) {
    Reply r;
    ASSERT_TRUE(c.readResponse(&r, 60000));
    EXPECT_EQ(r.status, 200) << r.raw;
  }
  EXPECT_EQ(cs[0].roundTrip(ping).status, 200);  // remembered now
  Reply wrong = cs[1].roundTrip(bitsRequest("/x", "Ping", {{"Authorization", basicHeader("carol:other")}}), 60000);
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(bitsd.stop(SIGTERM), 0);
  std::string err = bitsd.stderrText();
  size_t at = err.find("password checks run (PBKDF2): ");
  ASSERT_NE(at, std::string::npos) << err;
  int runs = std::atoi(err.c_str() + at + std::strlen("password checks run (PBKDF2): "));
  EXPECT_GE(runs, 2);  // the shared one and the wrong password
  EXPECT_LE(runs, 3) << err;
}

// Issue 20: 200 TLS connections send Pings with wrong passwords (each a real PBKDF2 of 100,000
// iterations, bitsctl's default), reconnecting when they give up, while a client that signed in
// before uploads 24 MiB and pings on its keep-alive connection. Before the fix every waiting check
// held a read buffer and the checks ran one after the other, so the upload stalled for as long as
// the flood lasted (its requests timed out after 10 s). Now: the upload takes a bounded multiple of
// its time alone, its Pings stay quick, and the flood's failures are throttled: far fewer PBKDF2s
// run than wrong passwords arrive, and the rest are refused with 503 and Retry-After.
TEST_F(Auth, AWrongPasswordFloodDoesNotStallAnAuthenticatedUpload) {
  std::string floodUsers = dir.path() + "/flood-users";
  std::string pwPath = dir.path() + "/pw-erin";
  {
    std::FILE* f = std::fopen(pwPath.c_str(), "w");
    std::fputs("right one\n", f);
    std::fclose(f);
  }
  int in = ::open(pwPath.c_str(), O_RDONLY);
  int devnull = ::open("/dev/null", O_WRONLY);
  pid_t pid = spawnProgram(BITSCTL_BINARY,
                           {"user", "add", "erin", "--users-file", floodUsers, "--iterations", "100000", "--password-stdin"},
                           devnull, devnull, {}, in);
  ::close(in);
  ::close(devnull);
  ASSERT_EQ(waitProcess(pid, 60000), 0);
  BitsdProcess bitsd({"--tls-cert", crt(), "--tls-key", key(), "--users-file", floodUsers});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  const std::string auth = basicHeader("erin:right one");
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd.port()), 0);
  ASSERT_EQ(c.roundTrip(bitsRequest("/x", "Ping", {{"Authorization", auth}})).status, 200);  // signed in

  const std::string data = randomBytes(24 << 20, 20);
  using Clock = std::chrono::steady_clock;
  auto secondsSince = [](Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // One upload in 4 MiB fragments with a Ping after each; its time in seconds, or -1 if a request failed.
  auto upload = [&](const std::string& path, double* slowestPing) -> double {
    auto t0 = Clock::now();
    Reply created = c.roundTrip(bitsRequest(path, "Create-Session",
                                            {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)},
                                             {"Authorization", auth}}));
    if (created.status != 200) return -1;
    std::string id = created.get("BITS-Session-Id");
    const size_t kPart = 4 << 20;
    for (size_t off = 0; off < data.size(); off += kPart) {
      std::string part = data.substr(off, kPart);
      std::string range = "bytes " + std::to_string(off) + "-" + std::to_string(off + part.size() - 1) + "/" +
                          std::to_string(data.size());
      Reply r = c.roundTrip(bitsRequest(path, "Fragment",
                                        {{"BITS-Session-Id", id}, {"Content-Range", range}, {"Authorization", auth}},
                                        part));
      if (r.status != 200) return -1;
      auto p0 = Clock::now();
      if (c.roundTrip(bitsRequest("/x", "Ping", {{"Authorization", auth}})).status != 200) return -1;
      *slowestPing = std::max(*slowestPing, secondsSince(p0));
    }
    if (c.roundTrip(bitsRequest(path, "Close-Session", {{"BITS-Session-Id", id}, {"Authorization", auth}})).status != 200) {
      return -1;
    }
    return secondsSince(t0);
  };
  double pingAlone = 0;
  double alone = upload("/alone.bin", &pingAlone);
  ASSERT_GT(alone, 0) << bitsd.stderrText();

  // Under AddressSanitizer or qemu-user every handshake and request costs several times as much CPU
  // on both sides, and 200 reconnecting TLS clients become a handshake flood that tests the CPU,
  // not the password checks. There the flood is 50 connections and the upload's requests may take
  // up to 60 s; the normal build runs the full 200 with 10 s.
  bool slowBuild = !emulatorWords().empty();
#if defined(__SANITIZE_ADDRESS__)
  slowBuild = true;
#endif
  const int kFlooders = slowBuild ? 50 : 200;
  if (slowBuild) c.setTimeoutMs(60000);
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, wrong{0}, refused{0}, other{0};
  std::vector<std::thread> flood;
  const int port = bitsd.port();
  for (int i = 0; i < kFlooders; ++i) {
    flood.emplace_back([&, i] {
      int n = 0;
      while (!stop) {
        TlsClient f(crt());
        if (f.connect(port) != 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));  // deliberate: a refused attacker's back-off
          continue;
        }
        f.setTimeoutMs(4000);  // an impatient attacker: gives up and reconnects
        while (!stop) {
          ++sent;
          std::string guess = "erin:guess " + std::to_string(i) + "-" + std::to_string(n++);
          Reply r = f.roundTrip(bitsRequest("/x", "Ping", {{"Authorization", basicHeader(guess)}}));
          if (r.status == 401) {
            ++wrong;
          } else if (r.status == 503) {
            ++refused;
            if (r.get("Retry-After").empty()) ++other;
          } else {
            if (r.status != 0) ++other;
            break;  // timed out or closed: reconnect
          }
        }
      }
    });
  }
  auto joinFlood = [&] {
    stop = true;
    for (std::thread& t : flood) t.join();
  };
  auto floodStart = Clock::now();
  waitUntil([&] { return sent >= kFlooders; }, 60000);
  if (sent < kFlooders) {
    joinFlood();
    FAIL() << "the flood did not get going: " << sent << " requests sent";
  }
  double pingFlooded = 0;
  double flooded = upload("/flooded.bin", &pingFlooded);
  double floodSeconds = secondsSince(floodStart);
  joinFlood();
  std::printf("upload alone %.2f s (slowest ping %.3f s); under the flood %.2f s (slowest ping %.3f s); "
              "flood %.1f s: %d sent, %d answered 401, %d refused 503\n",
              alone, pingAlone, flooded, pingFlooded, floodSeconds, sent.load(), wrong.load(), refused.load());
  ASSERT_GT(flooded, 0) << "a request of the upload failed under the flood";
  EXPECT_LE(flooded, std::max(10 * alone, alone + 15));
  EXPECT_LE(pingFlooded, slowBuild ? 20.0 : 5.0);
  EXPECT_EQ(other.load(), 0) << "every wrong password gets 401, or 503 with Retry-After";
  EXPECT_GT(refused.load(), 0) << "throttling refused nothing";
  std::string got;
  ASSERT_TRUE(readFile(bitsd.root() + "/flooded.bin", &got));
  EXPECT_TRUE(got == data);
  EXPECT_EQ(bitsd.stop(SIGTERM), 0);
  std::string err = bitsd.stderrText();
  size_t at = err.find("password checks run (PBKDF2): ");
  ASSERT_NE(at, std::string::npos) << err;
  int runs = std::atoi(err.c_str() + at + std::strlen("password checks run (PBKDF2): "));
  int attempts = wrong + refused;
  std::printf("PBKDF2 run: %d for %d wrong passwords answered\n", runs, attempts);
  EXPECT_GE(attempts, kFlooders);
  EXPECT_LE(runs * 4, attempts) << "the flood's failures were not throttled";
}

TEST_F(Auth, PasswordsOverPlainHttpNeedAnExplicitFlag) {
  RunResult refused = runBitsd({"--users-file", users});
  EXPECT_EQ(refused.exitCode, 2);
  EXPECT_NE(refused.err.find("users-file over plain http would send passwords in clear"), std::string::npos)
      << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
  BitsdProcess plain({"--users-file", users, "--allow-basic-over-http"});
  ASSERT_TRUE(plain.start()) << plain.stderrText();
  Client c;
  ASSERT_TRUE(c.connect(plain.port()));
  EXPECT_EQ(c.roundTrip(bitsRequest("/x", "Ping")).status, 401);
  EXPECT_EQ(c.roundTrip(bitsRequest("/x", "Ping", {{"Authorization", basicHeader("bob:builder")}})).status, 200);
}

TEST_F(Auth, BadUsersFilesAreOneLineStartupErrors) {
  std::string broken = dir.path() + "/broken";
  {
    std::FILE* f = std::fopen(broken.c_str(), "w");
    std::fputs("# users\nalice:md5:1:abc:def\n", f);
    std::fclose(f);
  }
  struct Case {
    std::vector<std::string> args;
    const char* needle;
  } cases[] = {
      {{"--users-file", dir.path() + "/missing", "--allow-basic-over-http"}, "cannot read it"},
      {{"--users-file", broken, "--allow-basic-over-http"}, ":2: unknown scheme 'md5'"},
      {{"--users-file", users, "--allow-basic-over-http", "--locations", "/a"}, "lists no users"},
      {{"--locations", "/a alice"}, "locations needs users-file"},
  };
  for (const Case& k : cases) {
    // On a port of its own: what is listening on the default one must not decide the answer.
    std::vector<std::string> args = k.args;
    args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    RunResult r = runBitsd(args);
    EXPECT_EQ(r.exitCode, 2) << r.err;
    EXPECT_NE(r.err.find(k.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// SIGHUP reads the users file again: a user added since can sign in, a removed one (even with an
// answer remembered from before) cannot, and a changed file with a broken line changes nothing.
TEST_F(Auth, SighupReloadsTheUsersFile) {
  auto bitsd = start({"--users-file", users});
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  auto ping = [&](const std::string& who) {
    return c.roundTrip(bitsRequest("/x", "Ping", {{"Authorization", basicHeader(who)}})).status;
  };
  EXPECT_EQ(ping("alice:wonder land"), 200);
  EXPECT_EQ(ping("carol:sea"), 401);
  ASSERT_EQ(addUser(users, "carol", "sea", dir.path()).exitCode, 0);
  {
    std::string outPath = dir.path() + "/del.out";
    int out = ::open(outPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    pid_t pid = spawnProgram(BITSCTL_BINARY, {"user", "del", "alice", "--users-file", users}, out, out);
    ::close(out);
    ASSERT_EQ(waitProcess(pid, 60000), 0);
  }
  ::kill(bitsd->pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(*bitsd, "users file reloaded;")) << bitsd->stderrText();
  EXPECT_EQ(ping("carol:sea"), 200);
  EXPECT_EQ(ping("alice:wonder land"), 401) << "a removed user still signs in";
  EXPECT_EQ(ping("bob:builder"), 200);
  {
    std::FILE* f = std::fopen(users.c_str(), "a");
    std::fputs("not a user line\n", f);
    std::fclose(f);
  }
  ::kill(bitsd->pid(), SIGHUP);
  ASSERT_TRUE(waitForLog(*bitsd, "SIGHUP: users file not reloaded")) << bitsd->stderrText();
  EXPECT_EQ(ping("carol:sea"), 200);
}

// bitsclient over https with a password: the upload arrives; a wrong password, a missing one and
// an untrusted certificate each end with exit code 1 and one line naming the reason.
TEST_F(Auth, BitsclientUploadsOverHttpsWithAPassword) {
  auto bitsd = start({"--users-file", users});
  std::string data = randomBytes(2 * 1024 * 1024 + 5, 51);
  std::string src = dir.path() + "/up.bin";
  {
    std::FILE* f = std::fopen(src.c_str(), "wb");
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
  std::string url = "https://127.0.0.1:" + std::to_string(bitsd->port()) + "/up.bin";
  auto run = [&](std::vector<std::string> args) {
    std::string outPath = dir.path() + "/client.out";
    int out = ::open(outPath.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    pid_t pid = spawnProgram(BITSCLIENT_BINARY, args, out, out);
    ::close(out);
    RunResult r;
    r.exitCode = waitProcess(pid, 60000);
    readFile(outPath, &r.out);
    ::unlink((src + ".bitsjob").c_str());
    return r;
  };
  RunResult ok = run({"upload", src, url, "--cacert", crt(), "-u", "alice:wonder land", "--quiet"});
  EXPECT_EQ(ok.exitCode, 0) << ok.out;
  std::string got;
  ASSERT_TRUE(readFile(bitsd->root() + "/up.bin", &got));
  EXPECT_TRUE(got == data);
  RunResult wrong = run({"upload", src, url + "2", "--cacert", crt(), "-u", "alice:nope", "--quiet"});
  EXPECT_EQ(wrong.exitCode, 1);
  EXPECT_NE(wrong.out.find("the server refused the user name and password given (401"), std::string::npos) << wrong.out;
  RunResult none = run({"upload", src, url + "3", "--cacert", crt(), "--quiet"});
  EXPECT_EQ(none.exitCode, 1);
  EXPECT_NE(none.out.find("-u NAME:PASSWORD"), std::string::npos) << none.out;
  ASSERT_TRUE(genCert(dir.path(), "other", "127.0.0.1"));
  RunResult untrusted = run({"upload", src, url + "4", "--cacert", crt("other"), "-u", "bob:builder", "--quiet"});
  EXPECT_EQ(untrusted.exitCode, 1);
  EXPECT_NE(untrusted.out.find("certificate is not trusted"), std::string::npos) << untrusted.out;
  RunResult insecure = run({"upload", src, url + "5", "--insecure", "-u", "bob:builder", "--quiet"});
  EXPECT_EQ(insecure.exitCode, 0) << insecure.out;
}


// A small board's sizes: a 1 KiB ciphertext buffer (each 16 KiB record the client sends arrives in
// many reads) and 512-byte records out. The upload and a 20 KB reply both arrive intact, and no
// record bitsd sends carries more than 512 bytes of payload.
TEST_F(Tls, SmallBoardBuffersCarryAWholeUploadAndItsReply) {
  TestApp app;
  TestApp::Behaviour b;
  b.reply = randomBytes(20000, 9);
  app.set(b);
  auto bitsd = start({"--tls-buffer-bytes", "1K", "--tls-record-bytes", "512", "--notify-type", "value",
                      "--notify-url", app.url("/app")});
  TlsClient c(crt());
  ASSERT_EQ(c.connect(bitsd->port()), 0);
  std::string data = randomBytes(200000, 41);
  std::string id = createOver(c, "/small.bin");
  ASSERT_FALSE(id.empty());
  Reply ack;
  for (size_t off = 0; off < data.size(); off += 64000) {
    ack = c.roundTrip(fragmentRequest("/small.bin", id, off, data.substr(off, 64000), data.size()));
    ASSERT_EQ(ack.status, 200) << ack.raw << bitsd->stderrText();
  }
  ASSERT_EQ(app.count(), 1u);
  EXPECT_TRUE(app.seen()[0].content == data) << "the upload differs";
  std::string url = ack.get("BITS-Reply-URL");
  size_t slash = url.find('/', std::string("http://").size());
  ASSERT_NE(slash, std::string::npos) << ack.raw;
  Reply reply = c.roundTrip("GET " + url.substr(slash) + " HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(reply.status, 200) << reply.raw;
  EXPECT_TRUE(reply.body == b.reply) << "the reply differs";
  EXPECT_GT(c.appRecords, 40u);                   // 20 KB in 512-byte records, at the least
  EXPECT_LE(c.maxAppRecord, 512u + 8u + 16u);     // payload + GCM nonce and tag (ChaCha20: tag only)
}

// Slowloris over TLS (issue 20): two connections finish their handshakes and hold both request slots
// with heads that stop after a few bytes; a Ping that comes after their budget is answered at once,
// not after header-timeout-ms, and the older slow head gets a 408 over its TLS connection.
TEST_F(Tls, SlowHeadsPastTheirBudgetGiveTheirSlotsToAReadyRequest) {
  auto bitsd = start({"--request-slots", "2", "--header-budget-ms", "200", "--header-timeout-ms", "30000"});
  TlsClient slow1(crt()), slow2(crt()), ready(crt());
  ASSERT_EQ(slow1.connect(bitsd->port()), 0);
  ASSERT_EQ(slow2.connect(bitsd->port()), 0);
  ASSERT_EQ(ready.connect(bitsd->port()), 0);
  ASSERT_TRUE(slow1.write("BITS_POST /x HTTP/1.1\r\nBITS-Pa"));
  usleep(50000);  // deliberate: slow1 is the older head (the server orders heads by arrival time)
  ASSERT_TRUE(slow2.write("BITS_POST /y HTTP/1.1\r\nBITS-Pa"));
  usleep(300000);  // deliberate, the scenario: both heads are past their budget when the Ping comes
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ready.roundTrip(bitsRequest("/x", "Ping")).status, 200) << bitsd->stderrText();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  Reply evicted = slow1.roundTrip("");
  EXPECT_EQ(evicted.status, 408);
  EXPECT_EQ(ready.roundTrip(bitsRequest("/x", "Ping")).status, 200);
}

}  // namespace
}  // namespace bitsd::testing
