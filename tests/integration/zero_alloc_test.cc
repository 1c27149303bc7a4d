// Zero allocations per fragment (STYLE.md §5, §8): the real server (UvServer, UploadEngine, Journal,
// UvStorage with the thread-pool digest) runs in this process on its own loop thread; the test
// thread is the client. malloc, calloc and realloc are interposed for the whole process (forwarding
// to glibc's __libc_* functions), and every allocation made by any thread other than the client's
// is counted while steady-state fragments are uploaded. The count must be 0.
#include <gtest/gtest.h>
#include <uv.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/journal.h"
#include "core/upload_engine.h"
#include "platform/recovery.h"
#include "platform/system.h"
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

TEST(ZeroAllocation, SteadyFragmentsAllocateNothingOnAnyServerThread) {
  TempDir dir;
  Settings s;
  std::string err;
  s.listen = "127.0.0.1:0";
  s.root = dir.path() + "/root";
  s.state = dir.path() + "/state";
  std::string rootReal;
  ASSERT_TRUE(platform::prepareDirectories(s, &rootReal, &err)) << err;
  uv_loop_t loop;
  uv_loop_init(&loop);
  platform::DrbgRandom random;
  ASSERT_TRUE(random.init(&err));
  platform::UvClock clock;
  platform::MbedSha256 sha;
  platform::UvStorage storage(&loop, sha);
  platform::UvFlushScheduler scheduler(&loop);
  Journal journal(storage, scheduler, random);
  scheduler.setJournal(&journal);
  UploadEngine engine(storage, clock, random, sha, journal);
  Settings es = s;
  es.root = rootReal;
  ASSERT_TRUE(engine.init(es).isOk());
  ASSERT_TRUE(journal.init(s.journalBufferBytes, 64, s.journalMaxBytes, s.state + "/journal").isOk());
  platform::RecoveryReport rep;
  ASSERT_TRUE(platform::recoverState(s, engine, journal, sha, random, &rep, &err)) << err;
  platform::UvServer server(&loop, s, engine);
  server.setJournal(&journal, &scheduler);
  std::string url;
  ASSERT_TRUE(server.start(&url, &err)) << err;
  int port = std::atoi(url.c_str() + url.rfind(':') + 1);
  uv_async_t stop;
  uv_async_init(&loop, &stop, [](uv_async_t* h) {
    static_cast<platform::UvServer*>(h->data)->shutdown();
    uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  });
  stop.data = &server;
  std::thread loopThread([&] { uv_run(&loop, UV_RUN_DEFAULT); });

  tIsClient = true;
  {
    Client c;
    ASSERT_TRUE(c.connect(port));
    std::string id = createSession(c, "/steady.bin");
    ASSERT_FALSE(id.empty());
    const size_t kFrag = 1 << 20;
    const size_t kTotal = 24 * kFrag;
    std::string body = randomBytes(kFrag, 5);
    std::vector<std::string> requests;
    for (size_t i = 0; i < 24; ++i) requests.push_back(fragmentRequest("/steady.bin", id, i * kFrag, body, kTotal));
    long counted = 0;
    for (size_t i = 0; i < 23; ++i) {  // the last fragment commits: allocation is fine there
      if (i == 4) gCounting = true;   // the first fragments warm up pools, buffers and libuv's threads
      Reply r = c.roundTrip(requests[i]);
      ASSERT_EQ(r.status, 200) << r.raw;
    }
    gCounting = false;
    counted = gAllocations.load();
    EXPECT_EQ(counted, 0) << "allocations during 19 steady fragments of 1 MiB (each written, hashed, synced, "
                             "journaled and acked)";
    EXPECT_EQ(c.roundTrip(requests[23]).status, 200);
  }
  uv_async_send(&stop);
  loopThread.join();
  uv_loop_close(&loop);
}

}  // namespace
}  // namespace bitsd::testing
