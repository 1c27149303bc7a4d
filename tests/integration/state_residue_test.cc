// No upload byte lingers under --state (issue 20): after Close-Session, Cancel-Session, expiry by the
// sweep and expiry at start-up, no file anywhere under the state directory holds any 8-byte window
// of the upload; and across a kill -9 at an acked length that is not a multiple of 64, the SHA-256
// bitsd journals for the finished upload is SHA-256 of the file (recovery re-reads the short tail
// after the journal's digest checkpoint).
#include <dirent.h>
#include <gtest/gtest.h>
#include <mbedtls/sha256.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <thread>
#include <unordered_set>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Every regular file under `dir`, recursively (symlinks are not followed).
void listFiles(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = dir + "/" + name;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      listFiles(path, out);
    } else if (S_ISREG(st.st_mode)) {
      out->push_back(path);
    }
  }
  ::closedir(d);
}

// Files under `state` that hold an 8-byte window of `payload` ("path at offset" each); empty when none.
std::vector<std::string> residue(const std::string& state, const std::string& payload, int* scanned = nullptr) {
  constexpr size_t kWindow = 8;
  std::unordered_set<std::string_view> windows;
  for (size_t i = 0; i + kWindow <= payload.size(); ++i) windows.insert(std::string_view(payload).substr(i, kWindow));
  std::vector<std::string> files, found;
  listFiles(state, &files);
  if (scanned != nullptr) *scanned = static_cast<int>(files.size());
  for (const std::string& f : files) {
    std::string data;
    if (!readFile(f, &data)) continue;
    for (size_t i = 0; i + kWindow <= data.size(); ++i) {
      if (windows.count(std::string_view(data).substr(i, kWindow))) {
        found.push_back(f + " at offset " + std::to_string(i));
        break;
      }
    }
  }
  return found;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += x + "\n";
  return s;
}

// Sends payload[from, to) in fragments of awkward sizes (none a multiple of 64).
void sendOdd(Client& c, const std::string& path, const std::string& id, const std::string& payload, size_t from,
             size_t to) {
  static const size_t kSizes[] = {1001, 77, 40001, 333, 12345, 19, 65537};
  size_t i = 0;
  for (size_t at = from; at < to; ++i) {
    size_t n = std::min(kSizes[i % 7], to - at);
    Reply r = c.roundTrip(fragmentRequest(path, id, at, payload.substr(at, n), payload.size()));
    ASSERT_EQ(r.status, 200) << r.raw;
    at += n;
  }
}

bool waitFor(const std::function<bool()>& cond, int timeoutMs) { return waitUntil(cond, timeoutMs, 20); }

RunResult bitsctl(const std::vector<std::string>& args) {
  std::string cmd;
  for (const std::string& w : emulatorWords()) cmd += w + " ";
  cmd += BITSCTL_BINARY;
  for (const std::string& a : args) cmd += " '" + a + "'";
  TempDir d;
  cmd += " >" + d.path() + "/out 2>" + d.path() + "/err";
  RunResult r;
  int status = std::system(cmd.c_str());
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  readFile(d.path() + "/out", &r.out);
  readFile(d.path() + "/err", &r.err);
  return r;
}

std::string sha256Hex(const std::string& s) {
  uint8_t sum[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(s.data()), s.size(), sum, 0);
  char hex[65];
  for (int i = 0; i < 32; ++i) std::snprintf(hex + 2 * i, 3, "%02x", sum[i]);
  return hex;
}

TEST(StateResidue, CloseSessionLeavesNoUploadByteUnderTheState) {
  BitsdProcess server;
  ASSERT_TRUE(server.start());
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  const std::string payload = randomBytes(300000, 2001);
  std::string id = createSession(c, "/closed.bin");
  ASSERT_NO_FATAL_FAILURE(sendOdd(c, "/closed.bin", id, payload, 0, payload.size()));
  ASSERT_EQ(c.roundTrip(bitsRequest("/closed.bin", "Close-Session", {{"BITS-Session-Id", id}})).status, 200);
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/closed.bin", &got));
  EXPECT_TRUE(got == payload);
  int scanned = 0;
  EXPECT_TRUE(waitFor([&] { return listDir(server.state() + "/partial").empty(); }, 10000));
  std::vector<std::string> left = residue(server.state(), payload, &scanned);
  EXPECT_TRUE(left.empty()) << "upload bytes under --state after Close-Session:\n" << joined(left);
  EXPECT_GE(scanned, 1);  // the journal, at least
}

TEST(StateResidue, CancelSessionLeavesNoUploadByteUnderTheState) {
  BitsdProcess server;
  ASSERT_TRUE(server.start());
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  const std::string payload = randomBytes(300000, 2002);
  std::string id = createSession(c, "/cancelled.bin");
  ASSERT_NO_FATAL_FAILURE(sendOdd(c, "/cancelled.bin", id, payload, 0, 150001));
  ASSERT_FALSE(residue(server.state(), payload).empty()) << "the in-progress file should hold the acked bytes";
  ASSERT_EQ(c.roundTrip(bitsRequest("/cancelled.bin", "Cancel-Session", {{"BITS-Session-Id", id}})).status, 200);
  EXPECT_TRUE(waitFor([&] { return listDir(server.state() + "/partial").empty(); }, 10000))
      << "the in-progress file was not deleted";
  std::vector<std::string> left = residue(server.state(), payload);
  EXPECT_TRUE(left.empty()) << "upload bytes under --state after Cancel-Session:\n" << joined(left);
  EXPECT_FALSE(fileExists(server.root() + "/cancelled.bin"));
}

TEST(StateResidue, ExpiryByTheSweepLeavesNoUploadByteUnderTheState) {
  BitsdProcess server({"--session-timeout", "1", "--sweep-interval-ms", "100"});
  ASSERT_TRUE(server.start());
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  const std::string payload = randomBytes(200000, 2003);
  std::string id = createSession(c, "/expired.bin");
  ASSERT_NO_FATAL_FAILURE(sendOdd(c, "/expired.bin", id, payload, 0, 100003));
  // The session expires one second after its last packet; the sweep forgets it and deletes its data.
  EXPECT_TRUE(waitFor([&] { return server.stderrText().find("expired; in-progress data deleted") != std::string::npos; },
                      15000))
      << server.stderrText();
  EXPECT_TRUE(waitFor([&] { return listDir(server.state() + "/partial").empty(); }, 10000));
  std::vector<std::string> left = residue(server.state(), payload);
  EXPECT_TRUE(left.empty()) << "upload bytes under --state after expiry:\n" << joined(left);
  Reply r = c.roundTrip(fragmentRequest("/expired.bin", id, 100003, payload.substr(100003, 10), payload.size()));
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x8020001F") << r.raw;  // BG_E_SESSION_NOT_FOUND: it is gone
}

TEST(StateResidue, ExpiryAtStartUpLeavesNoUploadByteUnderTheState) {
  BitsdProcess server({"--session-timeout", "1"});
  ASSERT_TRUE(server.start());
  const std::string payload = randomBytes(200000, 2004);
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port()));
    std::string id = createSession(c, "/idle.bin");
    ASSERT_NO_FATAL_FAILURE(sendOdd(c, "/idle.bin", id, payload, 0, 77777));
  }
  EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  // Down for longer than the session timeout (journal times are whole seconds): the session
  // expired while bitsd was down, and start-up drops it with its data.
  auto downSince = SteadyClock::now();
  waitFor([&] { return SteadyClock::now() - downSince > std::chrono::milliseconds(2200); }, 5000);
  ASSERT_TRUE(server.start()) << server.stderrText();
  EXPECT_NE(server.stderrText().find("1 expired"), std::string::npos) << server.stderrText();
  EXPECT_TRUE(waitFor([&] { return listDir(server.state() + "/partial").empty(); }, 10000));
  std::vector<std::string> left = residue(server.state(), payload);
  EXPECT_TRUE(left.empty()) << "upload bytes under --state after expiry at start-up:\n" << joined(left);
}

TEST(StateResidue, KillNineMidBlockThenTheJournaledDigestIsTheFilesSha256) {
  BitsdProcess server;
  ASSERT_TRUE(server.start());
  const std::string payload = randomBytes(1000000 + 13, 2005);
  const size_t acked = 400037;  // 400037 % 64 = 37: the checkpoint stops 37 bytes short of it
  std::string id;
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port()));
    id = createSession(c, "/digest.bin");
    ASSERT_NO_FATAL_FAILURE(sendOdd(c, "/digest.bin", id, payload, 0, acked));
    // Part of the next fragment reaches bitsd, never acked.
    std::string req = fragmentRequest("/digest.bin", id, acked, payload.substr(acked, 70001), payload.size());
    ASSERT_TRUE(c.sendAll(req.substr(0, req.size() / 2)));
  }
  EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  std::vector<std::string> inJournal;
  for (const std::string& f : residue(server.state(), payload)) {
    if (f.find("/partial/") == std::string::npos) inJournal.push_back(f);
  }
  EXPECT_TRUE(inJournal.empty()) << "upload bytes outside the in-progress file:\n" << joined(inJournal);
  ASSERT_TRUE(server.start()) << server.stderrText();
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  ASSERT_NO_FATAL_FAILURE(sendOdd(c, "/digest.bin", id, payload, acked, payload.size()));
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/digest.bin", &got));
  ASSERT_TRUE(got == payload);
  RunResult dump = bitsctl({"journal", "dump", "--state", server.state()});
  ASSERT_EQ(dump.exitCode, 0) << dump.err;
  EXPECT_NE(dump.out.find("sha256=" + sha256Hex(payload)), std::string::npos)
      << "the journaled digest is not SHA-256 of the file:\n" << dump.out;
  ASSERT_EQ(c.roundTrip(bitsRequest("/digest.bin", "Close-Session", {{"BITS-Session-Id", id}})).status, 200);
  std::vector<std::string> left = residue(server.state(), payload);
  EXPECT_TRUE(left.empty()) << "upload bytes under --state after Close-Session:\n" << joined(left);
}

// A journal written before digest checkpoints (tests/data/journal/buffered-digest.journal, the
// golden journal of tests/core/byte_order_test.cc as it was) holds its uploads' unfinished blocks.
// bitsd started on it compacts it at once, so those bytes do not wait for the journal to grow.
TEST(StateResidue, AJournalFromAnOlderBitsdIsRewrittenWithoutItsUploadBytesAtStartUp) {
  std::string old;
  ASSERT_TRUE(readFile(std::string(BITSD_TEST_DATA_DIR) + "/journal/buffered-digest.journal", &old));
  auto goldenContent = [](size_t n, int seed) {  // byte_order_test.cc's content()
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + static_cast<size_t>(seed)) >> 13);
    return s;
  };
  const std::string a = goldenContent(3000, 1), b = goldenContent(500, 2);
  BitsdProcess server;
  ASSERT_TRUE(server.start());
  ASSERT_EQ(server.stop(), 0);
  {
    std::ofstream f(server.state() + "/journal", std::ios::binary | std::ios::trunc);
    f << old;
  }
  ASSERT_FALSE(residue(server.state(), a).empty()) << "the old journal should hold a's unfinished block";
  ASSERT_TRUE(server.start()) << server.stderrText();
  EXPECT_NE(server.stderrText().find("3 digest state(s) written by an older bitsd"), std::string::npos)
      << server.stderrText();
  EXPECT_TRUE(waitFor([&] { return server.stderrText().find("journal compacted") != std::string::npos; }, 10000))
      << server.stderrText();
  std::vector<std::string> left = residue(server.state(), a), leftB = residue(server.state(), b);
  left.insert(left.end(), leftB.begin(), leftB.end());
  EXPECT_TRUE(left.empty()) << "upload bytes under --state after the start-up compaction:\n" << joined(left);
  ASSERT_EQ(server.stop(), 0);
  EXPECT_EQ(bitsctl({"journal", "verify", "--state", server.state()}).exitCode, 0);
}

}  // namespace
}  // namespace bitsd::testing
