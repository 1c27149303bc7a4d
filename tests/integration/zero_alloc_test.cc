// Zero allocations per fragment (STYLE.md §5, §8): the real server (UvServer, UploadEngine, Journal,
// UvStorage with the thread-pool digest) runs in this process on its own loop thread; the test
// thread is the client. malloc, calloc and realloc are interposed for the whole process (forwarding
// to glibc's __libc_* functions), and every allocation made by any thread other than the client's
// is counted while steady-state fragments are uploaded. The count must be 0, over plain TCP and over
// TLS (the client is then a blocking mbedTLS client on the test thread).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include "core/journal.h"
#include "core/upload_engine.h"
#include "platform/access_log_writer.h"
#include "platform/recovery.h"
#include "platform/sha256.h"
#include "platform/system.h"
#include "platform/tls.h"
#include "platform/users.h"
#include "platform/uv_server.h"
#include "platform/uv_storage.h"
#include "tests/integration/bitsd_process.h"

extern "C" void* __libc_malloc(size_t);
extern "C" void* __libc_calloc(size_t, size_t);
extern "C" void* __libc_realloc(void*, size_t);

namespace {
std::atomic<bool> gCounting{false};
std::atomic<long> gAllocations{0};
thread_local bool tIsClient = false;

void note() {
  if (gCounting.load(std::memory_order_relaxed) && !tIsClient) gAllocations.fetch_add(1);
}
}  // namespace

extern "C" void* malloc(size_t n) {
  note();
  return __libc_malloc(n);
}
extern "C" void* calloc(size_t n, size_t m) {
  note();
  return __libc_calloc(n, m);
}
extern "C" void* realloc(void* p, size_t n) {
  note();
  return __libc_realloc(p, n);
}

namespace bitsd::testing {
namespace {

// A blocking TLS 1.2 client that verifies nothing (the certificate is the test's own), with the
// socket timeouts of Client bounding every wait.
class TlsTestClient {
 public:
  TlsTestClient() {
    mbedtls_ssl_init(&ssl_);
    mbedtls_ssl_config_init(&conf_);
    mbedtls_ctr_drbg_init(&drbg_);
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, nullptr, 0);
    mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, &drbg_);
    mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_setup(&ssl_, &conf_);
  }
  ~TlsTestClient() {
    if (fd_ >= 0) ::close(fd_);
    mbedtls_ssl_free(&ssl_);
    mbedtls_ssl_config_free(&conf_);
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }
  bool connect(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;
    mbedtls_ssl_set_bio(&ssl_, this, send, recv, nullptr);
    int rc;
    while ((rc = mbedtls_ssl_handshake(&ssl_)) == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
    }
    return rc == 0;
  }
  Reply roundTrip(const std::string& request) {
    for (size_t done = 0; done < request.size();) {
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
    return head;
  }

 private:
  bool readMore(std::string* in) {
    unsigned char buf[4096];
    int rc = mbedtls_ssl_read(&ssl_, buf, sizeof buf);
    if (rc <= 0) return false;
    in->append(reinterpret_cast<char*>(buf), static_cast<size_t>(rc));
    return true;
  }
  static int send(void* ctx, const unsigned char* buf, size_t len) {
    ssize_t n = ::send(static_cast<TlsTestClient*>(ctx)->fd_, buf, len, MSG_NOSIGNAL);
    return n < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : static_cast<int>(n);
  }
  static int recv(void* ctx, unsigned char* buf, size_t len) {
    ssize_t n = ::recv(static_cast<TlsTestClient*>(ctx)->fd_, buf, len, 0);
    if (n == 0) return MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY;
    return n < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : static_cast<int>(n);
  }
  int fd_ = -1;
  mbedtls_ssl_context ssl_;
  mbedtls_ssl_config conf_;
  mbedtls_ctr_drbg_context drbg_;
  mbedtls_entropy_context entropy_;
};

// The client side of one connection, plain or TLS.
struct TestConnection {
  bool tls = false;
  Client plain;
  TlsTestClient secure;
  bool connect(int port) { return tls ? secure.connect(port) : plain.connect(port); }
  Reply roundTrip(const std::string& request) { return tls ? secure.roundTrip(request) : plain.roundTrip(request); }
};

// `bitsctl gen-cert` into `dir`: true when it wrote both files.
bool genCert(const std::string& dir) {
  std::vector<std::string> args = {"gen-cert", "--cn", "127.0.0.1", "--cert", dir + "/z.crt", "--key", dir + "/z.key"};
  int out = ::open("/dev/null", O_WRONLY);
  pid_t pid = spawnProgram(BITSCTL_BINARY, args, out, out);
  ::close(out);
  return pid > 0 && waitProcess(pid, 60000) == 0;
}

// Uploads 24 fragments of 1 MiB and counts the server threads' allocations during 19 of them.
// `withAuth`: Basic authentication on (every request carries the header; the first one runs
// PBKDF2, the rest are answered from the authenticator's memory).
long steadyUploadAllocations(bool withAuth, bool withAccessLog = false, bool withTls = false) {
  TempDir dir;
  Settings s;
  std::string err;
  s.listen = "127.0.0.1:0";
  if (withTls) {
    EXPECT_TRUE(genCert(dir.path()));
    s.tlsCert = dir.path() + "/z.crt";
    s.tlsKey = dir.path() + "/z.key";
  }
  s.root = dir.path() + "/root";
  s.state = dir.path() + "/state";
  std::string rootReal;
  Outcome prepared = platform::prepareDirectories(s, &rootReal);
  EXPECT_TRUE(prepared.isOk()) << prepared.message();
  uv_loop_t loop;
  uv_loop_init(&loop);
  platform::DrbgRandom random;
  EXPECT_TRUE(random.init().isOk());
  platform::UvClock clock;
  platform::UploadSha256 sha;
  platform::UvStorage storage(&loop, sha);
  if (s.fdatasync) storage.setWritebackBytes(s.writebackBytes);  // as bitsd_main: the writeback path too
  platform::UvFlushScheduler scheduler(&loop);
  Journal journal(storage, scheduler, random);
  scheduler.setJournal(&journal);
  UploadEngine engine(storage, clock, random, sha, journal);
  platform::UvAuthenticator auth;
  std::map<std::string, std::string> creds;
  if (withAuth) {
    std::string line;
    EXPECT_TRUE(platform::userLine("alice", "wonder land", 1000, &line, &err)) << err;
    s.usersFile = dir.path() + "/users";
    std::FILE* f = std::fopen(s.usersFile.c_str(), "w");
    std::fprintf(f, "%s\n", line.c_str());
    std::fclose(f);
    s.allowBasicOverHttp = true;
    Outcome loaded = auth.load(&loop, s.usersFile);
    EXPECT_TRUE(loaded.isOk()) << loaded.message();
    engine.setAuthenticator(&auth, {});
    creds["Authorization"] = "Basic YWxpY2U6d29uZGVyIGxhbmQ=";  // alice:wonder land
  }
  Settings es = s;
  es.root = rootReal;
  EXPECT_TRUE(engine.init(es).isOk());
  EXPECT_TRUE(journal.init(s.journalBufferBytes, 64, s.journalMaxBytes, s.state + "/journal").isOk());
  platform::RecoveryReport rep;
  Outcome recovered = platform::recoverState(s, engine, journal, sha, random, &rep);
  EXPECT_TRUE(recovered.isOk()) << recovered.message();
  platform::UvServer server(&loop, s, engine);
  server.setJournal(&journal, &scheduler);
  // The access log on: 4 KiB buffers, so that a flush through the thread pool starts every few
  // lines while counting.
  platform::AccessLogWriter accessLog(&loop, 4096);
  std::string logPath = dir.path() + "/access.log";
  if (withAccessLog) {
    Outcome opened = accessLog.open(logPath);
    EXPECT_TRUE(opened.isOk()) << opened.message();
    server.setAccessLog(&accessLog, AccessLogFormat::Text);
  }
  std::string url;
  Outcome started = server.start(&url);
  EXPECT_TRUE(started.isOk()) << started.message();
  int port = std::atoi(url.c_str() + url.rfind(':') + 1);
  uv_async_t stop;
  uv_async_init(&loop, &stop, [](uv_async_t* h) {
    static_cast<platform::UvServer*>(h->data)->shutdown();
    uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  });
  stop.data = &server;
  std::thread loopThread([&] { uv_run(&loop, UV_RUN_DEFAULT); });

  tIsClient = true;
  gAllocations = 0;
  long counted = -1;
  {
    TestConnection c;
    c.tls = withTls;
    EXPECT_TRUE(c.connect(port));
    std::map<std::string, std::string> h = creds;
    h["BITS-Supported-Protocols"] = kUploadProtocolGuid;
    Reply created = c.roundTrip(bitsRequest("/steady.bin", "Create-Session", h));
    EXPECT_EQ(created.status, 200) << created.raw;
    std::string id = created.get("BITS-Session-Id");
    const size_t kFrag = 1 << 20;
    const size_t kTotal = 24 * kFrag;
    std::string body = randomBytes(kFrag, 5);
    std::vector<std::string> requests;
    for (size_t i = 0; i < 24; ++i) {
      std::map<std::string, std::string> fh = creds;
      fh["BITS-Session-Id"] = id;
      fh["Content-Range"] = "bytes " + std::to_string(i * kFrag) + "-" + std::to_string((i + 1) * kFrag - 1) + "/" +
                            std::to_string(kTotal);
      requests.push_back(bitsRequest("/steady.bin", "Fragment", fh, body));
    }
    bool ok = !id.empty();
    for (size_t i = 0; ok && i < 23; ++i) {  // the last fragment commits: allocation is fine there
      if (i == 4) gCounting = true;          // the first fragments warm up pools, buffers and libuv's threads
      Reply r = c.roundTrip(requests[i]);
      EXPECT_EQ(r.status, 200) << r.raw;
      ok = r.status == 200;
    }
    gCounting = false;
    if (ok) {
      counted = gAllocations.load();
      EXPECT_EQ(c.roundTrip(requests[23]).status, 200);
    }
  }
  uv_async_send(&stop);
  loopThread.join();
  auth.close();
  accessLog.close();
  uv_run(&loop, UV_RUN_DEFAULT);
  if (withAccessLog) {
    std::string text;
    EXPECT_TRUE(readFile(logPath, &text));
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 25) << text;  // Create-Session and 24 fragments
    EXPECT_EQ(accessLog.dropped(), 0u);
  }
  EXPECT_EQ(uv_loop_close(&loop), 0) << "a handle was left open";
  tIsClient = false;
  return counted;
}

TEST(ZeroAllocation, SteadyFragmentsAllocateNothingOnAnyServerThread) {
  EXPECT_EQ(steadyUploadAllocations(false), 0)
      << "allocations during 19 steady fragments of 1 MiB (each written, hashed, synced, journaled and acked)";
}

TEST(ZeroAllocation, WithTheAccessLogOn) {
  EXPECT_EQ(steadyUploadAllocations(false, true), 0)
      << "allocations during 19 steady fragments with --access-log (formatted, buffered, flushed off the loop)";
  EXPECT_EQ(steadyUploadAllocations(true, true), 0) << "the same, authenticated (the user name is logged)";
}

TEST(ZeroAllocation, OverTlsToo) {
  if (!platform::kTlsBuilt) GTEST_SKIP() << "built without TLS";
  EXPECT_EQ(steadyUploadAllocations(false, false, true), 0)
      << "allocations during 19 steady fragments over TLS (decrypted into the read buffers, each Ack encrypted "
         "into a preallocated write request)";
}

TEST(ZeroAllocation, WithBasicAuthenticationToo) {
  EXPECT_EQ(steadyUploadAllocations(true), 0)
      << "allocations during 19 steady authenticated fragments (credentials answered from memory)";
}

}  // namespace
}  // namespace bitsd::testing
