// The journal never holds upload content (issue 20). A Progress record, and a compaction's snapshot,
// carry the SHA-256 checkpoint at the last whole 64-byte block (the chaining value and the byte
// count), never the unfinished block's bytes; recovery re-reads the short tail from the in-progress
// file. These tests search the journal (and every other file under the state directory) for the
// payload's bytes, and check that the digest of a finished upload is still SHA-256 of its content.
#include <gtest/gtest.h>
#include <mbedtls/sha256.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_set>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

// Random bytes from a fixed seed: distinctive, so an 8-byte window of them found anywhere else is
// a leak, not a coincidence.
std::string randomPayload(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t k = 0; k < 8 && i + k < n; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

// The offset in `payload` of an 8-byte window of it that occurs in `hay`, or npos.
size_t findLeak(const std::string& hay, const std::string& payload) {
  constexpr size_t kWindow = 8;
  if (payload.size() < kWindow || hay.size() < kWindow) return std::string::npos;
  std::unordered_set<std::string_view> windows;
  for (size_t i = 0; i + kWindow <= payload.size(); ++i) windows.insert(std::string_view(payload).substr(i, kWindow));
  for (size_t i = 0; i + kWindow <= hay.size(); ++i) {
    auto it = windows.find(std::string_view(hay).substr(i, kWindow));
    if (it != windows.end()) return static_cast<size_t>(it->data() - payload.data());
  }
  return std::string::npos;
}

std::string sha256Of(const std::string& s) {
  uint8_t d[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d, 0);
  return std::string(reinterpret_cast<char*>(d), 32);
}

std::string committedDigest(EngineDriver& d, const std::string& path) {
  JournalState st = d.replayed();
  for (const auto& [id, rs] : st.sessions) {
    if (rs.path == path && rs.committed) return std::string(reinterpret_cast<const char*>(rs.sha256), 32);
  }
  return "";
}

// Sends `payload[from, to)` in fragments of awkward lengths (none a multiple of 64), so every acked
// length but the last ends mid-block with at least 8 bytes in the unfinished block.
void sendOdd(EngineDriver& d, const std::string& path, const std::string& id, const std::string& payload, size_t from,
             size_t to) {
  static const size_t kLengths[] = {77, 131, 201, 45, 333, 1001, 19};
  size_t i = 0;
  for (size_t at = from; at < to; ++i) {
    size_t n = std::min(kLengths[i % 7], to - at);
    Reply r = d.fragment(path, id, at, payload.substr(at, n), payload.size());
    ASSERT_EQ(r.status, 200) << r.raw;
    at += n;
  }
}

TEST(JournalDigest, NoUploadByteIsLeftUnderTheStateAfterCloseAndCancel) {
  EngineDriver d;
  const std::string a = randomPayload(4000, 1), b = randomPayload(3000, 2), c = randomPayload(5000, 3);
  std::string ida = d.createSession("/a.bin");
  std::string idb = d.createSession("/b.bin");
  std::string idc = d.createSession("/c.bin");
  ASSERT_NO_FATAL_FAILURE(sendOdd(d, "/a.bin", ida, a, 0, 2222));  // left open, 2222 % 64 = 46
  ASSERT_NO_FATAL_FAILURE(sendOdd(d, "/b.bin", idb, b, 0, b.size()));
  ASSERT_EQ(d.close("/b.bin", idb).status, 200);
  ASSERT_NO_FATAL_FAILURE(sendOdd(d, "/c.bin", idc, c, 0, 2600));
  ASSERT_EQ(d.close("/c.bin", idc, "Cancel-Session").status, 200);
  d.settle();

  EXPECT_EQ(d.storage.contents(d.rootPath("b.bin")), b);
  EXPECT_EQ(committedDigest(d, "b.bin"), sha256Of(b));
  int scanned = 0;
  for (const auto& [path, data] : d.storage.files()) {
    if (path.rfind("/state/", 0) != 0) continue;
    ++scanned;
    EXPECT_EQ(findLeak(data, b), std::string::npos) << path << " holds bytes of the closed upload";
    EXPECT_EQ(findLeak(data, c), std::string::npos) << path << " holds bytes of the cancelled upload";
    if (path == d.partialPath(ida)) {
      EXPECT_EQ(data, a.substr(0, 2222));  // the open session's own file, and only it, holds its bytes
    } else {
      EXPECT_EQ(findLeak(data, a), std::string::npos) << path << " holds bytes of the open upload";
    }
  }
  EXPECT_GE(scanned, 2);  // the journal and a's in-progress file at least
  // The unfinished block of every acked length in particular (the bytes an older bitsd journaled).
  const std::string& journal = d.storage.contents(EngineDriver::kJournalPath);
  for (size_t have = 77; have < 2222; have += 77) {
    std::string tail = a.substr(have - have % 64, have % 64);
    if (tail.size() >= 6) {
      EXPECT_EQ(journal.find(tail), std::string::npos) << "tail of have=" << have;
    }
  }
}

TEST(JournalDigest, TheCompactionSnapshotHoldsNoUploadByte) {
  Settings s = EngineDriver::defaultSettings();
  s.journalMaxBytes = 8 * 1024;
  EngineDriver d(s);
  const std::string a = randomPayload(6000, 4);
  std::string ida = d.createSession("/a.bin");
  ASSERT_NO_FATAL_FAILURE(sendOdd(d, "/a.bin", ida, a, 0, 3131));  // 3131 % 64 = 59
  // What a compaction would write now.
  JournalState live;
  d.engine.snapshot(&live);
  uint64_t seq = 1, offset = kJournalBlockBytes;
  std::vector<uint8_t> image;
  encodeSnapshot(live, 7, &seq, &offset, &image);
  EXPECT_EQ(findLeak(std::string(image.begin(), image.end()), a), std::string::npos);
  // And a real one, forced by journal traffic from other sessions.
  for (int i = 0; d.journal.stats().compactions == 0 && i < 200; ++i) {
    std::string p = "/t" + std::to_string(i);
    std::string id = d.createSession(p);
    ASSERT_FALSE(id.empty());
    ASSERT_EQ(d.fragment(p, id, 0, "xy", 2).status, 200);
    ASSERT_EQ(d.close(p, id).status, 200);
  }
  d.settle();
  ASSERT_GT(d.journal.stats().compactions, 0u);
  EXPECT_EQ(findLeak(d.storage.contents(EngineDriver::kJournalPath), a), std::string::npos);
  // The compacted journal resumes the digest.
  EngineDriver again(s);
  again.restartFrom(d);
  ASSERT_NO_FATAL_FAILURE(sendOdd(again, "/a.bin", ida, a, 3131, a.size()));
  again.settle();
  EXPECT_EQ(again.storage.contents(again.rootPath("a.bin")), a);
  EXPECT_EQ(committedDigest(again, "a.bin"), sha256Of(a));
}

TEST(JournalDigest, ARestartAtAnyAckedLengthRereadsOnlyTheTailAndTheDigestIsRight) {
  const std::string p = randomPayload(1500, 5);
  for (size_t have : {1u, 7u, 63u, 64u, 65u, 127u, 128u, 1000u, 1087u}) {
    SCOPED_TRACE("acked " + std::to_string(have));
    EngineDriver first;
    std::string id = first.createSession("/p.bin");
    ASSERT_EQ(first.fragment("/p.bin", id, 0, p.substr(0, have), p.size()).status, 200);
    first.settle();
    EXPECT_EQ(findLeak(first.storage.contents(EngineDriver::kJournalPath), p), std::string::npos);
    EngineDriver second;
    second.restartFrom(first);
    EXPECT_EQ(second.rehashedBytes, have % 64);
    ASSERT_EQ(second.fragment("/p.bin", id, have, p.substr(have), p.size()).status, 200);
    second.settle();
    EXPECT_EQ(second.storage.contents(second.rootPath("p.bin")), p);
    EXPECT_EQ(committedDigest(second, "p.bin"), sha256Of(p));
  }
}

// tests/data/journal/buffered-digest.journal is the golden journal of tests/core/byte_order_test.cc
// as written before digest checkpoints: its open session's Progress record (1000 of 3000 bytes
// acked) carries the 40 bytes of its unfinished block.
std::string goldenContent(size_t n, int seed) {  // byte_order_test.cc's content()
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + static_cast<size_t>(seed)) >> 13);
  return s;
}

std::string readWhole(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(JournalDigest, AJournalFromBeforeCheckpointsResumesAndItsBlockBytesAreNotCarriedOn) {
  const std::string old = readWhole(std::string(BITSD_TEST_DATA_DIR) + "/journal/buffered-digest.journal");
  ASSERT_FALSE(old.empty());
  const std::string a = goldenContent(3000, 1);
  ASSERT_NE(old.find(a.substr(960, 40)), std::string::npos) << "the fixture should hold a's unfinished block";

  JournalState st;
  ReplayResult rr = replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(old.data()), old.size()), &st);
  ASSERT_EQ(rr.status, ReplayStatus::Ok);
  const RecoveredSession* open = nullptr;
  for (const auto& [id, rs] : st.sessions) {
    if (rs.path == "a.bin") open = &rs;
  }
  ASSERT_NE(open, nullptr);
  EXPECT_EQ(open->haveBytes, 1000u);
  ASSERT_EQ(open->shaStateLen, kDigestCheckpointBytes) << "read as a checkpoint";
  EXPECT_EQ(digestCheckpointBytes(open->shaState), 960u);
  // A compaction of it (bitsctl journal compact does exactly this) writes none of those bytes.
  uint64_t seq = 1, offset = kJournalBlockBytes;
  std::vector<uint8_t> image;
  encodeSnapshot(st, 7, &seq, &offset, &image);
  EXPECT_EQ(findLeak(std::string(image.begin(), image.end()), a), std::string::npos);

  // bitsd resumes it: the 40 bytes come back from the in-progress file, and the digest is right.
  EngineDriver d;
  SessionId sid = open->id;
  char text[kSessionIdTextBytes];
  formatSessionId(sid, text);
  const std::string id(text, sizeof text);
  d.storage.addFile(EngineDriver::kJournalPath, old);
  d.storage.addFile(d.partialPath(id), a.substr(0, 1000));
  d.storage.addFile(d.rootPath("b.bin"), goldenContent(500, 2));
  ASSERT_NO_FATAL_FAILURE(d.restoreFromDisk());
  EXPECT_EQ(d.rehashedBytes, 40u);
  ASSERT_EQ(d.fragment("/a.bin", id, 1000, a.substr(1000), a.size()).status, 200);
  d.settle();
  EXPECT_EQ(committedDigest(d, "a.bin"), sha256Of(a));
}

TEST(JournalDigest, ReplayCountsTheOlderStatesAndACompactionOnRequestRemovesTheirBytes) {
  const std::string old = readWhole(std::string(BITSD_TEST_DATA_DIR) + "/journal/buffered-digest.journal");
  const std::string golden = readWhole(std::string(BITSD_TEST_DATA_DIR) + "/journal/golden.journal");
  ASSERT_FALSE(old.empty());
  ASSERT_FALSE(golden.empty());
  auto rewritten = [](const std::string& j) {
    return replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(j.data()), j.size()), nullptr)
        .digestStatesRewritten;
  };
  EXPECT_EQ(rewritten(old), 3u);  // a at 1000, b at 200 and at 500: each held its unfinished block
  EXPECT_EQ(rewritten(golden), 0u);
  // What bitsd does at start-up when the count is not zero (platform/recovery.cc): a compaction,
  // whatever the journal's size. The journal is small, so the size rule alone would not compact it.
  const std::string a = goldenContent(3000, 1), b = goldenContent(500, 2);
  EngineDriver d;
  d.storage.addFile(EngineDriver::kJournalPath, old);
  SessionId sid{};
  JournalState st = d.replayed();
  for (const auto& [id, rs] : st.sessions) {
    if (rs.path == "a.bin") sid = id;
  }
  char text[kSessionIdTextBytes];
  formatSessionId(sid, text);
  d.storage.addFile(d.partialPath(std::string(text, sizeof text)), a.substr(0, 1000));
  d.storage.addFile(d.rootPath("b.bin"), b);
  ASSERT_NO_FATAL_FAILURE(d.restoreFromDisk());
  d.settle();
  EXPECT_EQ(d.journal.stats().compactions, 0u);
  EXPECT_NE(findLeak(d.storage.contents(EngineDriver::kJournalPath), a), std::string::npos);
  d.journal.compactSoon();
  d.settle();
  EXPECT_EQ(d.journal.stats().compactions, 1u);
  const std::string& now = d.storage.contents(EngineDriver::kJournalPath);
  EXPECT_EQ(findLeak(now, a), std::string::npos);
  EXPECT_EQ(findLeak(now, b), std::string::npos);
  EXPECT_EQ(rewritten(now), 0u);
  EXPECT_EQ(d.replayed().sessions.size(), 2u);  // the same live state
}

TEST(JournalDigest, TheEncoderWritesAnyDigestStateAsACheckpointOrNotAtAll) {
  // An older-form state (count = have = 100, then the 36 bytes of its unfinished block) handed to
  // the encoder, as a compaction of an old journal would: the block's bytes never reach the file.
  const std::string secret = randomPayload(36, 6);
  JournalRecord p;
  p.type = RecordType::Progress;
  p.id.bytes[0] = 1;
  p.totalBytes = 1000;
  p.haveBytes = 100;
  putLe(p.shaState, 100, 8);
  for (int i = 8; i < 40; ++i) p.shaState[i] = static_cast<uint8_t>(i);
  std::memcpy(p.shaState + 40, secret.data(), secret.size());
  p.shaStateLen = 76;
  uint8_t b[512];
  size_t n = encodeRecord(p, 1, 1, b, sizeof b);
  ASSERT_EQ(n, kRecordHeaderBytes + 41 + kDigestCheckpointBytes);
  std::string bytes(reinterpret_cast<char*>(b), n);
  EXPECT_EQ(bytes.find(secret.substr(0, 8)), std::string::npos);
  EXPECT_EQ(bytes.find(secret.substr(28, 8)), std::string::npos);
  EXPECT_EQ(getLe(b + kRecordHeaderBytes + 41, 8), 64u);  // rounded down to the whole block
  EXPECT_EQ(b[kRecordHeaderBytes + 41 + 40], kDigestCheckpointForm);

  // States in neither form are written as unknown (recovery then re-reads the whole prefix).
  auto written = [&](const JournalRecord& r) {
    size_t k = encodeRecord(r, 1, 1, b, sizeof b);
    return k == 0 ? -1 : static_cast<int>(b[kRecordHeaderBytes + 40]);
  };
  JournalRecord q = p;
  q.shaStateLen = 75;  // length does not match the count
  EXPECT_EQ(written(q), 0);
  q = p;
  q.haveBytes = 90;  // an older-form count other than `have`
  EXPECT_EQ(written(q), 0);
  q = p;
  putLe(q.shaState, 128, 8);  // a checkpoint past `have`
  q.shaState[40] = kDigestCheckpointForm;
  q.shaStateLen = 41;
  EXPECT_EQ(written(q), 0);
  q.haveBytes = 150;  // ... and the same one within it
  EXPECT_EQ(written(q), 41);
  q.shaState[40] = 2;  // an unknown form
  EXPECT_EQ(written(q), 0);
  q.shaStateLen = 39;
  EXPECT_EQ(written(q), 0);
}

}  // namespace
}  // namespace bitsd::testing
