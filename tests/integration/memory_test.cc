// bitsd's resident memory under the loads issue 18 names (no timing: sizes only). RSS is read from
// /proc; in a cross build the process is the emulator, and under AddressSanitizer most of it is
// the sanitizer's, so these tests skip there.
#include <dirent.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

// VmRSS of `pid` in KiB, or -1.
long rssKiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Open descriptors of `pid` (bitsd holds one per connection).
int openFds(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

// Waits (bounded) until bitsd holds `want` descriptors, i.e. it has accepted or closed them all.
bool waitForFds(pid_t pid, int want) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (openFds(pid) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

bool emulated() { return !emulatorWords().empty(); }

// ASan's shadow memory, redzones and quarantine are in RSS too: sizes there say nothing about bitsd's.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

#define SKIP_UNLESS_RSS_MEANS_BITSD()                                                  \
  do {                                                                                 \
    if (emulated()) GTEST_SKIP() << "RSS under an emulator is the emulator's";         \
    if (kSanitized) GTEST_SKIP() << "RSS under AddressSanitizer is mostly its shadow"; \
  } while (0)

TEST(BitsdMemory, TheFirstUploadDoesNotPutWholeHugePagesInRss) {
  SKIP_UNLESS_RSS_MEANS_BITSD();
  // The host board's session table (4,096 sessions) is on huge-page-advised memory for recovery.
  // The first session once faulted in a whole 2 MiB page of it (and another for its path): +4 MiB
  // for one small upload. Now the table's first 2 MiB keep small pages.
  BitsdProcess server({"--max-sessions", "4096", "--max-path-bytes", "1024"});
  ASSERT_TRUE(server.start());
  {
    Client warm;
    ASSERT_TRUE(warm.connect(server.port()));
    ASSERT_EQ(warm.roundTrip(bitsRequest("/x", "Ping")).status, 200);
  }
  long before = rssKiB(server.pid());
  ASSERT_GT(before, 0);
  std::string body = randomBytes(64 * 1024, 5);
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string id = createSession(c, "/first.bin");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(c.roundTrip(fragmentRequest("/first.bin", id, 0, body, body.size())).status, 200);
  long after = rssKiB(server.pid());
  // One read buffer (256 KiB), a request slot, the journal's buffer, the thread pool's first
  // stacks: well under 2 MiB; a single huge page alone would be 2 MiB.
  EXPECT_LT(after - before, 1536) << "RSS " << before << " KiB -> " << after << " KiB";
}

TEST(BitsdMemory, IdleKeepAliveConnectionsCostLittleAndClosingThemTouchesNoSlots) {
  SKIP_UNLESS_RSS_MEANS_BITSD();
  const int kConns = 500;
  BitsdProcess server({"--max-connections", "1024", "--request-slots", "256"});
  ASSERT_TRUE(server.start());
  int fds = 0;
  {
    Client warm;
    ASSERT_TRUE(warm.connect(server.port()));
    ASSERT_EQ(warm.roundTrip(bitsRequest("/x", "Ping")).status, 200);
    fds = openFds(server.pid()) - 1;  // without the warm-up connection, once it is closed
  }
  ASSERT_TRUE(waitForFds(server.pid(), fds));
  long before = rssKiB(server.pid());
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < kConns; ++i) {
    idle.push_back(std::make_unique<Client>());
    ASSERT_TRUE(idle.back()->connect(server.port())) << i;
    ASSERT_EQ(idle.back()->roundTrip(bitsRequest("/x", "Ping")).status, 200) << i;
  }
  ASSERT_TRUE(waitForFds(server.pid(), fds + kConns));
  long open = rssKiB(server.pid());
  // An idle connection holds its connection record only (no request slot, no read buffer, no write
  // request, no timer of its own). It was 1,080 bytes with a reply download's uv_fs_t in it; 624
  // without; 1,008 with a write request in its Stream; 480 now (measured ~499 here, with the
  // pool's page rounding, the timer heap's entry and libuv's per-descriptor slot; issue 18 asks
  // <= 512; docs/BENCHMARKS.md).
  EXPECT_LE((open - before) * 1024 / kConns, 512) << "RSS " << before << " KiB -> " << open << " KiB";
  for (auto& c : idle) c->close();
  ASSERT_TRUE(waitForFds(server.pid(), fds));
  long closed = rssKiB(server.pid());
  // Each EOF is read with a request slot taken for it (~23 KiB once touched). Given back before the
  // close callbacks, the same few slots serve every closing connection; held until then, 256 did.
  EXPECT_LT(closed - open, 512) << "RSS " << open << " KiB -> " << closed << " KiB after closing";
}

}  // namespace
}  // namespace bitsd::testing
