// Zero allocations per fragment (STYLE.md §5, §8): the real server (UvServer, UploadEngine, Journal,
// UvStorage with the thread-pool digest) runs in this process on its own loop thread; the test
// thread is the client. malloc, calloc and realloc are interposed for the whole process (forwarding
// to glibc's __libc_* functions), and every allocation made by any thread other than the client's
// is counted while steady-state fragments are uploaded. The count must be 0.
#include <gtest/gtest.h>
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

// Uploads 24 fragments of 1 MiB and counts the server threads' allocations during 19 of them.
// `withAuth`: Basic authentication on (every request carries the header; the first one runs
// PBKDF2, the rest are answered from the authenticator's memory).
long steadyUploadAllocations(bool withAuth, bool withAccessLog = false) {
  TempDir dir;
  Settings s;
  std::string err;
  s.listen = "127.0.0.1:0";
  s.root = dir.path() + "/root";
  s.state = dir.path() + "/state";
  std::string rootReal;
  EXPECT_TRUE(platform::prepareDirectories(s, &rootReal, &err)) << err;
  uv_loop_t loop;
  uv_loop_init(&loop);
  platform::DrbgRandom random;
  EXPECT_TRUE(random.init(&err));
  platform::UvClock clock;
  platform::UploadSha256 sha;
  platform::UvStorage storage(&loop, sha);
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
    EXPECT_TRUE(auth.load(&loop, s.usersFile, &err)) << err;
    engine.setAuthenticator(&auth, {});
    creds["Authorization"] = "Basic YWxpY2U6d29uZGVyIGxhbmQ=";  // alice:wonder land
  }
  Settings es = s;
  es.root = rootReal;
  EXPECT_TRUE(engine.init(es).isOk());
  EXPECT_TRUE(journal.init(s.journalBufferBytes, 64, s.journalMaxBytes, s.state + "/journal").isOk());
  platform::RecoveryReport rep;
  EXPECT_TRUE(platform::recoverState(s, engine, journal, sha, random, &rep, &err)) << err;
  platform::UvServer server(&loop, s, engine);
  server.setJournal(&journal, &scheduler);
  // The access log on: 4 KiB buffers, so that a flush through the thread pool starts every few
  // lines while counting.
  platform::AccessLogWriter accessLog(&loop, 4096);
  std::string logPath = dir.path() + "/access.log";
  if (withAccessLog) {
    EXPECT_TRUE(accessLog.open(logPath, &err)) << err;
    server.setAccessLog(&accessLog, AccessLogFormat::Text);
  }
  std::string url;
  EXPECT_TRUE(server.start(&url, &err)) << err;
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
    Client c;
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

TEST(ZeroAllocation, WithBasicAuthenticationToo) {
  EXPECT_EQ(steadyUploadAllocations(true), 0)
      << "allocations during 19 steady authenticated fragments (credentials answered from memory)";
}

}  // namespace
}  // namespace bitsd::testing
