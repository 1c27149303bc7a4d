// The journal format, its writer (group commit, compaction) and a power-loss sweep.
#include "core/journal.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>

#include "core/crc32c.h"
#include <mbedtls/sha256.h>
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

std::span<const uint8_t> asBytes(const std::string& s) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

SessionId idOf(int n) {
  SessionId id;
  for (int i = 0; i < 16; ++i) id.bytes[i] = static_cast<uint8_t>(n * 31 + i);
  return id;
}

// A journal image with a header and the given records, each flush padded like the writer does.
std::string buildJournal(uint32_t salt, const std::vector<JournalRecord>& recs, bool padEach = false) {
  std::string out(kJournalBlockBytes, '\0');
  JournalHeader h;
  h.salt = salt;
  encodeJournalHeader(h, reinterpret_cast<uint8_t*>(out.data()));
  uint64_t seq = 1;
  uint8_t buf[8192];
  for (const JournalRecord& r : recs) {
    size_t n = encodeRecord(r, salt, seq++, buf, sizeof buf);
    EXPECT_GT(n, 0u);
    out.append(reinterpret_cast<char*>(buf), n);
    if (padEach) {
      size_t p = encodePad(out.size(), salt, seq, buf, sizeof buf);
      if (p > 0) ++seq;
      out.append(reinterpret_cast<char*>(buf), p);
    }
  }
  return out;
}

std::vector<JournalRecord> sampleRecords() {
  std::vector<JournalRecord> v;
  JournalRecord c;
  c.type = RecordType::SessionCreated;
  c.id = idOf(1);
  c.wallSeconds = 1700000000;
  c.path = "dir/file.iso";
  v.push_back(c);
  JournalRecord p;
  p.type = RecordType::Progress;
  p.id = idOf(1);
  p.wallSeconds = 1700000001;
  p.totalBytes = 1000;
  p.haveBytes = 400;
  v.push_back(p);
  p.haveBytes = 1000;
  v.push_back(p);
  JournalRecord m;
  m.type = RecordType::Committed;
  m.id = idOf(1);
  m.totalBytes = 1000;
  for (int i = 0; i < 32; ++i) m.sha256[i] = static_cast<uint8_t>(i);
  v.push_back(m);
  JournalRecord cl;
  cl.type = RecordType::Closed;
  cl.id = idOf(1);
  cl.cancelled = true;
  v.push_back(cl);
  JournalRecord d;
  d.type = RecordType::Delivered;
  d.txid = "order-42";
  d.wallSeconds = 1700000002;
  v.push_back(d);
  JournalRecord b;
  b.type = RecordType::DeliveryBegan;
  b.id = idOf(1);
  b.wallSeconds = 1700000003;
  b.txid = "order-43";
  v.push_back(b);
  JournalRecord e;
  e.type = RecordType::DeliveryEnded;
  e.id = idOf(1);
  e.replySession = idOf(1);
  e.wallSeconds = 1700000004;
  e.txid = "order-43";
  e.status = 200;
  e.flags = kDeliveryHasReplyFile | kDeliveryCopied;
  e.replyBytes = 77;
  v.push_back(e);
  e.txid = "order-44";
  e.status = 404;
  e.hresult = 0x80190194;
  e.flags = 0;
  e.replyBytes = 0;
  e.url = "http://updates.example/pkg.cab";
  v.push_back(e);
  c.id = idOf(2);
  c.path = "other";
  v.push_back(c);
  JournalRecord f;
  f.type = RecordType::Forget;
  f.id = idOf(2);
  v.push_back(f);
  return v;
}

struct Collect : ReplaySink {
  void onRecord(const JournalRecord& r, uint64_t seq, uint64_t) override {
    types.push_back(r.type);
    seqs.push_back(seq);
    if (r.type == RecordType::SessionCreated) paths.emplace_back(r.path);
    if (r.type == RecordType::Delivered || r.type == RecordType::DeliveryBegan ||
        r.type == RecordType::DeliveryEnded) {
      txids.emplace_back(r.txid);
    }
  }
  std::vector<RecordType> types;
  std::vector<uint64_t> seqs;
  std::vector<std::string> paths, txids;
};

TEST(Crc32c, KnownVector) {
  EXPECT_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

TEST(Crc32c, SlicedLoopMatchesTheBytewiseDefinition) {
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  for (size_t len = 0; len <= data.size(); len += 37) {
    for (size_t start : {0, 1, 3, 5}) {
      if (start > len) continue;
      uint32_t ref = 0xFFFFFFFFu;
      for (size_t i = start; i < len; ++i) {
        ref ^= static_cast<uint8_t>(data[i]);
        for (int k = 0; k < 8; ++k) ref = (ref & 1) ? (ref >> 1) ^ 0x82F63B78u : ref >> 1;
      }
      ASSERT_EQ(crc32c(0, data.data() + start, len - start), ~ref) << len << " " << start;
    }
  }
}

TEST(JournalFormat, HeaderIsLittleEndianWhateverTheHost) {
  uint8_t b[kJournalBlockBytes];
  JournalHeader h;
  h.salt = 0x11223344;
  h.firstSeq = 0x0102030405060708ull;
  encodeJournalHeader(h, b);
  EXPECT_EQ(std::memcmp(b, "BITSJRNL", 8), 0);
  const uint8_t version[4] = {1, 0, 0, 0};
  EXPECT_EQ(std::memcmp(b + 8, version, 4), 0);
  const uint8_t salt[4] = {0x44, 0x33, 0x22, 0x11};
  EXPECT_EQ(std::memcmp(b + 12, salt, 4), 0);
  const uint8_t seq[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  EXPECT_EQ(std::memcmp(b + 16, seq, 8), 0);
}

TEST(JournalFormat, RecordBytesAreFixedLittleEndian) {
  // A Progress record has one exact byte image on every host (golden bytes, byte-order proof).
  JournalRecord p;
  p.type = RecordType::Progress;
  p.id = idOf(0);
  p.wallSeconds = 0x0102030405060708ull;
  p.totalBytes = 0x1000;
  p.haveBytes = 0x10;
  uint8_t b[256];
  ASSERT_EQ(encodeRecord(p, 0xA1B2C3D4, 0x33, b, sizeof b), 58u);
  const uint8_t head[17] = {41, 0, 0, 0, b[4], b[5], b[6], b[7], 0x33, 0, 0, 0, 0, 0, 0, 0, 2};
  EXPECT_EQ(std::memcmp(b, head, 17), 0);
  const uint8_t wall[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  EXPECT_EQ(std::memcmp(b + 17 + 16, wall, 8), 0);
  EXPECT_EQ(getLe(b + 17 + 24, 8), 0x1000u);
  EXPECT_EQ(b[17 + 24], 0x00);
  EXPECT_EQ(b[17 + 25], 0x10);
}

TEST(JournalFormat, EveryRecordTypeRoundTrips) {
  std::string j = buildJournal(99, sampleRecords());
  Collect c;
  ReplayResult r = replayJournal(asBytes(j), &c);
  ASSERT_EQ(r.status, ReplayStatus::Ok);
  EXPECT_EQ(r.records, 11u);
  EXPECT_EQ(r.tailBytes, 0u);
  EXPECT_EQ(c.paths, (std::vector<std::string>{"dir/file.iso", "other"}));
  EXPECT_EQ(c.txids, (std::vector<std::string>{"order-42", "order-43", "order-43", "order-44"}));
  JournalState st;
  replayJournal(asBytes(j), &st);
  ASSERT_EQ(st.sessions.size(), 1u);  // the second was forgotten
  const RecoveredSession& s = st.sessions.at(idOf(1));
  EXPECT_TRUE(s.committed);
  EXPECT_TRUE(s.closed);
  EXPECT_TRUE(s.cancelled);
  EXPECT_EQ(s.totalBytes, 1000u);
  EXPECT_EQ(s.sha256[31], 31);
  EXPECT_EQ(st.delivered.count("order-42"), 1u);
  ASSERT_EQ(st.delivered.count("order-43"), 1u);
  const DeliveryInfo& d43 = st.delivered.at("order-43");
  EXPECT_TRUE(d43.ended);
  EXPECT_EQ(d43.status, 200);
  EXPECT_EQ(d43.flags, kDeliveryHasReplyFile | kDeliveryCopied);
  EXPECT_EQ(d43.replyBytes, 77u);
  EXPECT_TRUE(d43.replySession == idOf(1));
  EXPECT_EQ(d43.wallSeconds, 1700000004u);
  ASSERT_EQ(st.delivered.count("order-44"), 1u);
  const DeliveryInfo& d44 = st.delivered.at("order-44");
  EXPECT_EQ(d44.status, 404);
  EXPECT_EQ(d44.hresult, 0x80190194u);
  EXPECT_EQ(d44.staticUrl, "http://updates.example/pkg.cab");
}

TEST(JournalFormat, ABegunDeliveryIsNotEnded) {
  JournalRecord b;
  b.type = RecordType::DeliveryBegan;
  b.id = idOf(3);
  b.wallSeconds = 1700000005;
  b.txid = "order-45";
  std::string j = buildJournal(5, {b});
  JournalState st;
  ASSERT_EQ(replayJournal(asBytes(j), &st).status, ReplayStatus::Ok);
  ASSERT_EQ(st.delivered.count("order-45"), 1u);
  EXPECT_FALSE(st.delivered.at("order-45").ended);
  EXPECT_TRUE(st.delivered.at("order-45").replySession == idOf(3));
}

TEST(JournalFormat, DeliveryEndedBytesAreFixedLittleEndian) {
  JournalRecord e;
  e.type = RecordType::DeliveryEnded;
  e.id = idOf(1);
  e.replySession = idOf(2);
  e.wallSeconds = 0x0102030405060708ull;
  e.status = 0x0A0B;
  e.hresult = 0x80190194;
  e.flags = 1;
  e.replyBytes = 0x1122334455667788ull;
  e.txid = "t";
  e.url = "u";
  uint8_t buf[256];
  size_t n = encodeRecord(e, 9, 1, buf, sizeof buf);
  ASSERT_EQ(n, 75u + 1 + 1);
  const uint8_t* p = buf + 17;  // payload
  EXPECT_EQ(p[0], idOf(1).bytes[0]);
  EXPECT_EQ(p[16], idOf(2).bytes[0]);
  EXPECT_EQ(p[32], 0x08);  // wall, little-endian
  EXPECT_EQ(p[39], 0x01);
  EXPECT_EQ(p[40], 0x0B);  // status
  EXPECT_EQ(p[41], 0x0A);
  EXPECT_EQ(p[42], 0x94);  // HRESULT
  EXPECT_EQ(p[45], 0x80);
  EXPECT_EQ(p[46], 1);     // flags
  EXPECT_EQ(p[47], 0x88);  // reply size
  EXPECT_EQ(p[54], 0x11);
  EXPECT_EQ(p[55], 1);     // txid length
  EXPECT_EQ(p[56], 't');
  EXPECT_EQ(p[57], 1);     // URL length, 2 bytes
  EXPECT_EQ(p[58], 0);
  EXPECT_EQ(p[59], 'u');
}

TEST(JournalFormat, ATornTailAtEveryByteIsIgnoredNeverMisread) {
  std::vector<JournalRecord> recs = sampleRecords();
  std::string j = buildJournal(7, recs, /*padEach=*/true);
  // Where each real record ends in the full image.
  Collect full;
  replayJournal(asBytes(j), &full);
  for (size_t len = 0; len <= j.size(); ++len) {
    std::string cut = j.substr(0, len);
    Collect c;
    ReplayResult r = replayJournal(asBytes(cut), &c);
    if (len == 0) {
      EXPECT_EQ(r.status, ReplayStatus::Empty);
      continue;
    }
    if (len < kJournalHeaderUsedBytes) {
      EXPECT_EQ(r.status, ReplayStatus::NotAJournal) << len;
      continue;
    }
    ASSERT_EQ(r.status, ReplayStatus::Ok) << len;
    // A prefix of the records, in order, nothing else.
    ASSERT_LE(c.types.size(), full.types.size());
    for (size_t i = 0; i < c.types.size(); ++i) ASSERT_EQ(c.types[i], full.types[i]) << len;
    EXPECT_LE(r.validEnd, len);
    EXPECT_EQ(r.validEnd + r.tailBytes, len);
  }
}

TEST(JournalFormat, AFlippedBitEndsTheJournalAtThatRecord) {
  std::string j = buildJournal(7, sampleRecords());
  Collect full;
  replayJournal(asBytes(j), &full);
  for (size_t pos = kJournalBlockBytes; pos < j.size(); ++pos) {
    for (int bit : {0, 7}) {
      std::string bad = j;
      bad[pos] = static_cast<char>(bad[pos] ^ (1 << bit));
      Collect c;
      ReplayResult r = replayJournal(asBytes(bad), &c);
      ASSERT_EQ(r.status, ReplayStatus::Ok);
      ASSERT_LT(c.types.size(), full.types.size()) << "a corrupted record was accepted at byte " << pos;
      for (size_t i = 0; i < c.types.size(); ++i) ASSERT_EQ(c.types[i], full.types[i]);
    }
  }
}

TEST(JournalFormat, StaleRecordsFromAnotherSaltOrSequenceAreNotRead) {
  std::vector<JournalRecord> recs = sampleRecords();
  std::string j = buildJournal(1, {recs[0], recs[1]});
  // Append a valid-looking record under a different salt (left over from an older file).
  uint8_t buf[256];
  size_t n = encodeRecord(recs[2], /*salt=*/2, /*seq=*/3, buf, sizeof buf);
  std::string stale = j + std::string(reinterpret_cast<char*>(buf), n);
  Collect c;
  ReplayResult r = replayJournal(asBytes(stale), &c);
  EXPECT_EQ(c.types.size(), 2u);
  EXPECT_STREQ(r.stopReason, "CRC mismatch");
  // Right salt, wrong sequence number.
  n = encodeRecord(recs[2], 1, 9, buf, sizeof buf);
  std::string gap = j + std::string(reinterpret_cast<char*>(buf), n);
  Collect c2;
  r = replayJournal(asBytes(gap), &c2);
  EXPECT_EQ(c2.types.size(), 2u);
  EXPECT_STREQ(r.stopReason, "sequence number out of order");
}

TEST(JournalFormat, ForeignAndCorruptFilesAreReported) {
  EXPECT_EQ(replayJournal(asBytes(std::string("hello world, this is a text file, not a journal")), nullptr).status,
            ReplayStatus::NotAJournal);
  std::string j = buildJournal(1, {});
  std::string bad = j;
  bad[13] ^= 1;
  EXPECT_EQ(replayJournal(asBytes(bad), nullptr).status, ReplayStatus::CorruptHeader);
  std::string v2 = j;
  v2[8] = 2;
  putLe(reinterpret_cast<uint8_t*>(v2.data()) + 28, crc32c(0, v2.data(), 28), 4);
  EXPECT_EQ(replayJournal(asBytes(v2), nullptr).status, ReplayStatus::UnsupportedVersion);
}

TEST(JournalFormat, PadsAlignToBlocks) {
  for (uint64_t off = kJournalBlockBytes; off < 4 * kJournalBlockBytes; ++off) {
    size_t n = padBytesFor(off);
    EXPECT_EQ((off + n) % kJournalBlockBytes, 0u) << off;
    EXPECT_TRUE(n == 0 || n >= kRecordHeaderBytes) << off;
  }
}

// --- The writer -----------------------------------------------------------------------------------

TEST(JournalWriter, RecordsAppendedInOneTurnShareOneSync) {
  EngineDriver d;
  struct W : JournalWaiter {
    void onJournalDurable(const Status& s) override { ok += s.isOk(); }
    int ok = 0;
  } w;
  JournalRecord c;
  c.type = RecordType::SessionCreated;
  c.path = "x";
  for (int i = 0; i < 10; ++i) {
    c.id = idOf(i);
    ASSERT_TRUE(d.journal.append(c, &w).isOk());
  }
  EXPECT_EQ(w.ok, 0) << "never durable from inside append";
  d.settle();
  EXPECT_EQ(w.ok, 10);
  EXPECT_EQ(d.storage.journalSyncs, 1u);
  EXPECT_EQ(d.journal.sizeBytes() % kJournalBlockBytes, 0u);
  EXPECT_EQ(d.replayed().sessions.size(), 10u);
}

TEST(JournalWriter, AFailedFlushLeavesNoSequenceGap) {
  EngineDriver d;
  JournalRecord c;
  c.type = RecordType::SessionCreated;
  c.path = "x";
  c.id = idOf(1);
  ASSERT_TRUE(d.journal.append(c, nullptr).isOk());
  d.storage.failSync = true;  // this batch fails...
  d.settle();
  d.storage.failSync = false;
  c.id = idOf(2);
  ASSERT_TRUE(d.journal.append(c, nullptr).isOk());  // ...and the next one must still replay
  d.settle();
  JournalState st = d.replayed();
  EXPECT_EQ(st.sessions.count(idOf(2)), 1u);
}

TEST(JournalWriter, CompactionKeepsOnlyLiveStateAndReplaysTheSame) {
  Settings s = EngineDriver::defaultSettings();
  s.journalMaxBytes = 256 * 1024;
  s.maxSessions = 400;
  EngineDriver d(s);
  std::string keep = d.createSession("/keep");
  ASSERT_EQ(d.fragment("/keep", keep, 0, "abcd", 10).status, 200);
  for (int i = 0; i < 150; ++i) {
    std::string id = d.createSession("/t" + std::to_string(i));
    ASSERT_FALSE(id.empty());
    ASSERT_EQ(d.fragment("/t" + std::to_string(i), id, 0, "xy", 2).status, 200);
    ASSERT_EQ(d.close("/t" + std::to_string(i), id).status, 200);
    d.clock.advanceMs(1000);
  }
  d.settle();
  EXPECT_GT(d.journal.stats().compactions, 0u);
  EXPECT_LT(d.journal.sizeBytes(), s.journalMaxBytes);
  JournalState st = d.replayed();
  SessionId k;
  ASSERT_TRUE(parseSessionId(keep, &k));
  ASSERT_EQ(st.sessions.count(k), 1u);
  EXPECT_EQ(st.sessions.at(k).haveBytes, 4u);
  JournalState live;
  d.engine.snapshot(&live);
  EXPECT_EQ(st.sessions.size(), live.sessions.size());
  EXPECT_FALSE(d.storage.exists("/state/journal.tmp"));
}

TEST(JournalWriter, NearTheCapNewSessionsGet503AndOldOnesGoOn) {
  Settings s = EngineDriver::defaultSettings();
  s.journalMaxBytes = 16 * 1024;
  s.maxSessions = 400;
  EngineDriver d(s);
  std::string first = d.createSession("/first");
  int created = 1;
  Reply r;
  for (int i = 0; i < 300; ++i) {
    r = d.send(bitsRequest("/s" + std::to_string(i), "Create-Session",
                           {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
    d.settle();
    if (r.status != 200) break;
    ++created;
  }
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x800705AA");
  EXPECT_GT(created, 10);
  EXPECT_GT(d.engine.stats().journalRefusals, 0u);
  EXPECT_EQ(d.fragment("/first", first, 0, "abc", 3).status, 200) << "existing sessions keep working";
}

TEST(JournalWriter, CommittedDigestIsTheContentsSha256AcrossARestart) {
  std::string body(300000, '\0');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + i / 1000);
  uint8_t expected[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(body.data()), body.size(), expected, 0);

  EngineDriver first;
  std::string id = first.createSession("/d.bin");
  ASSERT_EQ(first.fragment("/d.bin", id, 0, body.substr(0, 100001), body.size()).status, 200);
  ASSERT_EQ(first.fragment("/d.bin", id, 50000, body.substr(50000, 100000), body.size()).status, 200);  // overlap
  first.settle();
  // "Restart": a new engine on a copy of the disk, restored from the journal alone.
  EngineDriver second;
  second.restartFrom(first);
  ASSERT_EQ(second.fragment("/d.bin", id, 150000, body.substr(150000), body.size()).status, 200);
  second.settle();
  EXPECT_EQ(second.storage.contents("/root/d.bin"), body);
  JournalState st = second.replayed();
  SessionId sid;
  ASSERT_TRUE(parseSessionId(id, &sid));
  ASSERT_TRUE(st.sessions.at(sid).committed);
  EXPECT_EQ(std::memcmp(st.sessions.at(sid).sha256, expected, 32), 0) << "digest differs from SHA-256(content)";
}

TEST(JournalFormat, ProgressDigestStateLengthIsBounded) {
  JournalRecord p;
  p.type = RecordType::Progress;
  p.shaStateLen = 105;
  uint8_t b[512];
  EXPECT_EQ(encodeRecord(p, 1, 1, b, sizeof b), 0u);
}

TEST(JournalWriter, BytesPerCompletedUpload) {
  // Not a speed target: a size property of the format, reported in docs/JOURNAL.md.
  EngineDriver d;
  uint64_t before = d.journal.sizeBytes();
  std::string id = d.createSession("/upload.bin");
  for (int i = 0; i < 4; ++i) ASSERT_EQ(d.fragment("/upload.bin", id, i * 100, std::string(100, 'z'), 400).status, 200);
  ASSERT_EQ(d.close("/upload.bin", id).status, 200);
  d.settle();
  uint64_t appended = d.journal.sizeBytes() - before;
  // Create + 4 Progress + Committed + Closed, each its own flush here: 7 blocks.
  EXPECT_EQ(appended, 7 * kJournalBlockBytes);
  std::printf("journal bytes appended for one 4-fragment upload: %llu; data syncs %llu, journal syncs %llu\n",
              static_cast<unsigned long long>(appended), static_cast<unsigned long long>(d.storage.syncCalls),
              static_cast<unsigned long long>(d.storage.journalSyncs));
  JournalState live;
  d.engine.snapshot(&live);
  std::vector<uint8_t> snap;
  uint64_t seq = 1, off = 0;
  encodeSnapshot(live, 1, &seq, &off, &snap);
  std::printf("compacted: %zu bytes for that closed upload, including the Pad that ends the block\n",
              static_cast<size_t>(snap.size()));
}

}  // namespace
}  // namespace bitsd::testing
