// Byte order and word size: a journal has one byte image on every host, and a journal written on
// one host resumes on any other. tests/data/journal/golden.journal was written on x86-64 (little
// endian, 64-bit) by the scenario below; tools/cross-test runs this file on aarch64, armhf, mipsel
// (32-bit) and s390x (big endian), where the same scenario must write the same bytes and the
// golden file must resume. To regenerate it after a deliberate format change:
//   BITSD_WRITE_GOLDEN=tests/data/journal/golden.journal build/bin/core_tests --gtest_filter='ByteOrder.*'
#include <gtest/gtest.h>
#include <mbedtls/sha256.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "core/protocol.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

const std::string kGolden = std::string(BITSD_TEST_DATA_DIR) + "/journal/golden.journal";

std::string content(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + static_cast<size_t>(seed)) >> 13);
  return s;
}

std::string sha256Of(const std::string& s) {
  uint8_t d[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d, 0);
  return std::string(reinterpret_cast<char*>(d), 32);
}

std::string readWhole(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const std::string kA = content(3000, 1);  // left open after 1000 bytes
const std::string kB = content(500, 2);   // uploaded, committed and closed

// The scenario that wrote the golden journal: every record type the engine writes in normal
// operation, including a Progress record whose `have` (1000) ends mid-block, so its digest
// checkpoint covers 960 bytes and recovery re-reads the other 40 from the file.
struct Scenario {
  EngineDriver d;
  std::string idA, idB;
  void run() {
    idA = d.createSession("/a.bin");
    ASSERT_FALSE(idA.empty());
    ASSERT_EQ(d.fragment("/a.bin", idA, 0, kA.substr(0, 1000), kA.size()).status, 200);
    d.clock.advanceMs(1500);
    idB = d.createSession("/b.bin");
    ASSERT_FALSE(idB.empty());
    ASSERT_EQ(d.fragment("/b.bin", idB, 0, kB.substr(0, 200), kB.size()).status, 200);
    ASSERT_EQ(d.fragment("/b.bin", idB, 200, kB.substr(200), kB.size()).status, 200);
    ASSERT_EQ(d.close("/b.bin", idB).status, 200);
    d.settle();
  }
};

TEST(ByteOrder, TheScenarioWritesTheGoldenBytesOnThisHost) {
  Scenario s;
  ASSERT_NO_FATAL_FAILURE(s.run());
  const std::string& written = s.d.storage.contents(EngineDriver::kJournalPath);
  if (const char* out = std::getenv("BITSD_WRITE_GOLDEN")) {
    std::ofstream(out, std::ios::binary) << written;
  }
  std::string golden = readWhole(kGolden);
  ASSERT_FALSE(golden.empty()) << "missing " << kGolden;
  ASSERT_EQ(written.size(), golden.size());
  for (size_t i = 0; i < golden.size(); ++i) {
    ASSERT_EQ(static_cast<uint8_t>(written[i]), static_cast<uint8_t>(golden[i])) << "first difference at byte " << i;
  }
}

TEST(ByteOrder, TheGoldenJournalReplaysToTheSameFacts) {
  std::string golden = readWhole(kGolden);
  ASSERT_FALSE(golden.empty()) << "missing " << kGolden;
  JournalState st;
  ReplayResult rr =
      replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(golden.data()), golden.size()), &st);
  ASSERT_EQ(rr.status, ReplayStatus::Ok);
  EXPECT_EQ(rr.validEnd, golden.size());
  ASSERT_EQ(st.sessions.size(), 2u);
  int open = 0, done = 0;
  for (const auto& [id, rs] : st.sessions) {
    if (rs.path == "a.bin") {
      ++open;
      EXPECT_TRUE(rs.totalKnown);
      EXPECT_EQ(rs.totalBytes, 3000u);
      EXPECT_EQ(rs.haveBytes, 1000u);
      EXPECT_FALSE(rs.committed);
      ASSERT_EQ(rs.shaStateLen, kDigestCheckpointBytes);
      EXPECT_EQ(digestCheckpointBytes(rs.shaState), 960u);  // 15 whole blocks; no upload byte
    } else if (rs.path == "b.bin") {
      ++done;
      EXPECT_TRUE(rs.committed);
      EXPECT_TRUE(rs.closed);
      EXPECT_EQ(rs.totalBytes, 500u);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(rs.sha256), 32), sha256Of(kB));
    }
  }
  EXPECT_EQ(open, 1);
  EXPECT_EQ(done, 1);
}

TEST(ByteOrder, AnUploadJournaledOnAnotherHostResumesHereWithTheRightDigest) {
  // This host's engine restores from the golden journal (written on x86-64) and the 1000 bytes it
  // acked, takes the rest of the upload, and must commit a file whose recorded SHA-256 continues
  // the running state that the other host journaled.
  std::string golden = readWhole(kGolden);
  ASSERT_FALSE(golden.empty()) << "missing " << kGolden;
  Scenario ref;  // only to learn the session ids the golden scenario used
  ASSERT_NO_FATAL_FAILURE(ref.run());
  EngineDriver d;
  d.storage.addFile(EngineDriver::kJournalPath, golden);
  d.storage.addFile(d.partialPath(ref.idA), kA.substr(0, 1000));
  d.storage.addFile(d.rootPath("b.bin"), kB);
  ASSERT_NO_FATAL_FAILURE(d.restoreFromDisk());
  EXPECT_EQ(d.rehashedBytes, 40u) << "only the tail after the checkpoint is read back";
  Reply r = d.fragment("/a.bin", ref.idA, 1000, kA.substr(1000), kA.size());
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(d.close("/a.bin", ref.idA).status, 200);
  d.settle();
  EXPECT_TRUE(d.storage.contents(d.rootPath("a.bin")) == kA);
  JournalState st = d.replayed();
  bool found = false;
  for (const auto& [id, rs] : st.sessions) {
    if (rs.path != "a.bin") continue;
    found = true;
    EXPECT_TRUE(rs.committed);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(rs.sha256), 32), sha256Of(kA));
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace bitsd::testing
