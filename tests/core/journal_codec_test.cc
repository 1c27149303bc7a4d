// The journal codec's cursors (core/byte_cursor.h) and the record codec built on them
// (core/journal_format.cc): every record type round-trips field for field, and a payload cut short
// at any length, behind a valid header and CRC, is refused as malformed, never read past.
#include "core/byte_cursor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/journal_format.h"
#include "core/journal_model.h"

namespace bitsd::testing {
namespace {

// --- The cursors ----------------------------------------------------------------------------------

TEST(ByteCursor, EveryPutHasAGetThatUndoesIt) {
  uint8_t buf[64];
  ByteWriter w(buf, sizeof buf);
  w.u8(0xA5);
  w.le16(0xBEEF);
  w.le32(0xDEADBEEF);
  w.le64(0x0123456789ABCDEFull);
  w.bytes("xyz", 3);
  w.str8("ab");
  w.str16("cde");
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w.size(), 1u + 2 + 4 + 8 + 3 + 3 + 5);
  // Little-endian whatever the host: the least significant byte first.
  EXPECT_EQ(buf[1], 0xEF);
  EXPECT_EQ(buf[2], 0xBE);
  EXPECT_EQ(buf[7], 0xEF);
  EXPECT_EQ(buf[3], 0xEF);
  EXPECT_EQ(buf[6], 0xDE);
  EXPECT_EQ(buf[14], 0x01);

  ByteWriter counter = ByteWriter::counting();
  counter.u8(0);
  counter.le16(0);
  counter.le32(0);
  counter.le64(0);
  counter.bytes("xyz", 3);
  counter.str8("ab");
  counter.str16("cde");
  EXPECT_TRUE(counter.ok());
  EXPECT_EQ(counter.size(), w.size()) << "a counting writer counts exactly what the puts write";

  ByteReader r(buf, w.size());
  uint8_t a = 0;
  uint16_t b = 0;
  uint32_t c = 0;
  uint64_t d = 0;
  char e[3];
  std::string_view f, g;
  ASSERT_TRUE(r.u8(&a) && r.le16(&b) && r.le32(&c) && r.le64(&d) && r.bytes(e, 3) && r.str8(&f) && r.str16(&g));
  EXPECT_TRUE(r.atEnd());
  EXPECT_EQ(a, 0xA5);
  EXPECT_EQ(b, 0xBEEF);
  EXPECT_EQ(c, 0xDEADBEEFu);
  EXPECT_EQ(d, 0x0123456789ABCDEFull);
  EXPECT_EQ(std::string(e, 3), "xyz");
  EXPECT_EQ(f, "ab");
  EXPECT_EQ(g, "cde");
}

TEST(ByteCursor, AWriterNeverWritesPastItsEndAndStaysFailed) {
  uint8_t buf[16];
  std::memset(buf, 0xEE, sizeof buf);
  ByteWriter w(buf, 5);
  w.le32(1);
  EXPECT_TRUE(w.ok());
  w.le16(2);  // 6 > 5
  EXPECT_FALSE(w.ok());
  w.u8(3);  // would fit, but the writer has failed
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(w.size(), 4u);
  for (size_t i = 4; i < sizeof buf; ++i) EXPECT_EQ(buf[i], 0xEE) << i;
}

TEST(ByteCursor, AReaderCutShortAtEveryLengthFailsAndReadsNothingPastIt) {
  uint8_t full[1 + 2 + 4 + 8 + 3 + 4];
  ByteWriter w(full, sizeof full);
  w.u8(7);
  w.le16(8);
  w.le32(9);
  w.le64(10);
  w.str16("abc");  // 5 bytes
  w.bytes("wxyz", 2);
  ASSERT_TRUE(w.ok());
  const size_t n = w.size();
  for (size_t len = 0; len < n; ++len) {
    // A copy of exactly `len` bytes on the heap, so AddressSanitizer sees any read past it.
    std::vector<uint8_t> cut(full, full + len);
    ByteReader r(cut.data(), cut.size());
    uint8_t a;
    uint16_t b;
    uint32_t c;
    uint64_t d;
    std::string_view s;
    char tail[2];
    bool all = r.u8(&a) && r.le16(&b) && r.le32(&c) && r.le64(&d) && r.str16(&s) && r.bytes(tail, 2);
    EXPECT_FALSE(all) << len;
    EXPECT_FALSE(r.ok()) << len;
    EXPECT_FALSE(r.atEnd()) << len;
    EXPECT_LE(r.position(), len);
    uint8_t more = 0x55;
    EXPECT_FALSE(r.u8(&more)) << "a failed reader stays failed";
    EXPECT_EQ(more, 0x55) << "and leaves its output untouched";
  }
  ByteReader whole(full, n);
  std::string_view s;
  uint8_t a;
  uint16_t b;
  uint32_t c;
  uint64_t d;
  char tail[2];
  EXPECT_TRUE(whole.u8(&a) && whole.le16(&b) && whole.le32(&c) && whole.le64(&d) && whole.str16(&s) &&
              whole.bytes(tail, 2) && whole.atEnd());
}

TEST(ByteCursor, ALengthPrefixLargerThanTheInputIsRefused) {
  uint8_t buf[4] = {0xFF, 0xFF, 'a', 'b'};  // str16 says 65535 bytes follow; 2 do
  ByteReader r(buf, sizeof buf);
  std::string_view s;
  EXPECT_FALSE(r.str16(&s));
  EXPECT_TRUE(s.empty());
}

// --- The records ----------------------------------------------------------------------------------

SessionId idOf(int n) {
  SessionId id;
  for (int i = 0; i < 16; ++i) id.bytes[i] = static_cast<uint8_t>(n * 37 + i);
  return id;
}

// One record of each type, every field set to something other than its default.
std::vector<JournalRecord> everyRecordType() {
  std::vector<JournalRecord> v;
  JournalRecord r;
  r.type = RecordType::SessionCreated;
  r.id = idOf(1);
  r.wallSeconds = 1700000001;
  r.path = "dir/sub/file.iso";
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::Progress;
  r.id = idOf(2);
  r.wallSeconds = 1700000002;
  r.totalBytes = 1u << 20;
  r.haveBytes = 200;
  r.shaStateLen = static_cast<uint8_t>(kDigestCheckpointBytes);
  putLe(r.shaState, 192, 8);  // n: whole blocks, at most `have`
  for (size_t i = 8; i < kDigestChainBytes; ++i) r.shaState[i] = static_cast<uint8_t>(i * 7);
  r.shaState[kDigestChainBytes] = kDigestCheckpointForm;
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::Committed;
  r.id = idOf(3);
  r.wallSeconds = 1700000003;
  r.totalBytes = 123456789;
  for (int i = 0; i < 32; ++i) r.sha256[i] = static_cast<uint8_t>(0xC0 + i);
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::Closed;
  r.id = idOf(4);
  r.wallSeconds = 1700000004;
  r.cancelled = true;
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::Forget;
  r.id = idOf(5);
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::Delivered;
  r.wallSeconds = 1700000006;
  r.txid = "order-6";
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::DeliveryBegan;
  r.id = idOf(7);
  r.wallSeconds = 1700000007;
  r.txid = "order-7";
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::DeliveryEnded;
  r.id = idOf(8);
  r.replySession = idOf(9);
  r.wallSeconds = 1700000008;
  r.status = 404;
  r.hresult = 0x80190194;
  r.flags = kDeliveryHasReplyFile | kDeliveryCopied;
  r.replyBytes = 0x0102030405ull;
  r.txid = "order-8";
  r.url = "http://updates.example/pkg.cab";
  v.push_back(r);

  r = JournalRecord();
  r.type = RecordType::SessionOwner;
  r.id = idOf(10);
  r.owner = "@2001:db8:0:1::/64";
  v.push_back(r);
  return v;
}

void expectSameRecord(const JournalRecord& a, const JournalRecord& b) {
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.wallSeconds, b.wallSeconds);
  EXPECT_EQ(a.totalBytes, b.totalBytes);
  EXPECT_EQ(a.haveBytes, b.haveBytes);
  EXPECT_EQ(a.shaStateLen, b.shaStateLen);
  EXPECT_EQ(std::memcmp(a.shaState, b.shaState, sizeof a.shaState), 0);
  EXPECT_EQ(std::memcmp(a.sha256, b.sha256, sizeof a.sha256), 0);
  EXPECT_EQ(a.cancelled, b.cancelled);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.txid, b.txid);
  EXPECT_EQ(a.replySession, b.replySession);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.hresult, b.hresult);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.replyBytes, b.replyBytes);
  EXPECT_EQ(a.url, b.url);
  EXPECT_EQ(a.owner, b.owner);
}

// Collects records as replay decodes them (the views point into the image, which outlives this).
struct Records : ReplaySink {
  void onRecord(const JournalRecord& r, uint64_t, uint64_t) override { got.push_back(r); }
  std::vector<JournalRecord> got;
};

constexpr uint32_t kSalt = 0x5EED;

// A journal image: the header, then `rec` (already encoded) at sequence 1.
std::vector<uint8_t> imageWith(const uint8_t* rec, size_t n) {
  std::vector<uint8_t> image(kJournalBlockBytes, 0);
  JournalHeader h;
  h.salt = kSalt;
  encodeJournalHeader(h, image.data());
  image.insert(image.end(), rec, rec + n);
  return image;
}

TEST(JournalCodec, EveryRecordTypeRoundTripsFieldForField) {
  for (const JournalRecord& in : everyRecordType()) {
    SCOPED_TRACE(recordTypeName(in.type));
    uint8_t buf[kRecordHeaderBytes + kMaxPayloadBytes];
    size_t n = encodeRecord(in, kSalt, 1, buf, sizeof buf);
    ASSERT_GT(n, kRecordHeaderBytes);
    // The exact size: no room to spare is needed, and one byte less is refused.
    uint8_t exact[kRecordHeaderBytes + kMaxPayloadBytes];
    EXPECT_EQ(encodeRecord(in, kSalt, 1, exact, n), n);
    EXPECT_EQ(std::memcmp(exact, buf, n), 0);
    EXPECT_EQ(encodeRecord(in, kSalt, 1, exact, n - 1), 0u);
    std::vector<uint8_t> image = imageWith(buf, n);
    Records sink;
    ReplayResult res = replayJournal(image, &sink);
    ASSERT_EQ(res.status, ReplayStatus::Ok);
    EXPECT_STREQ(res.stopReason, "end of file");
    ASSERT_EQ(sink.got.size(), 1u);
    expectSameRecord(sink.got[0], in);
  }
}

TEST(JournalCodec, APayloadCutShortAtEveryLengthIsMalformedNotReadPast) {
  for (const JournalRecord& in : everyRecordType()) {
    SCOPED_TRACE(recordTypeName(in.type));
    uint8_t buf[kRecordHeaderBytes + kMaxPayloadBytes];
    const size_t n = encodeRecord(in, kSalt, 1, buf, sizeof buf);
    ASSERT_GT(n, kRecordHeaderBytes);
    for (size_t len = 0; len < n - kRecordHeaderBytes; ++len) {
      // The record with its payload cut to `len` bytes, its length and CRC made to match: only
      // the payload's shape is wrong, so only the decoder can refuse it.
      std::vector<uint8_t> rec(buf, buf + kRecordHeaderBytes + len);
      putLe(rec.data(), len, 4);
      ASSERT_EQ(restampRecord(rec.data(), rec.size(), kSalt, 1), rec.size());
      std::vector<uint8_t> image = imageWith(rec.data(), rec.size());
      Records sink;
      ReplayResult res = replayJournal(image, &sink);
      ASSERT_EQ(res.status, ReplayStatus::Ok);
      EXPECT_STREQ(res.stopReason, "malformed payload") << len;
      EXPECT_TRUE(sink.got.empty()) << len;
      EXPECT_EQ(res.validEnd, kJournalBlockBytes) << len;
    }
  }
}

TEST(JournalCodec, APayloadWithBytesToSpareIsMalformed) {
  for (const JournalRecord& in : everyRecordType()) {
    SCOPED_TRACE(recordTypeName(in.type));
    uint8_t buf[kRecordHeaderBytes + kMaxPayloadBytes + 1];
    const size_t n = encodeRecord(in, kSalt, 1, buf, sizeof buf - 1);
    ASSERT_GT(n, kRecordHeaderBytes);
    buf[n] = 0;
    putLe(buf, n + 1 - kRecordHeaderBytes, 4);
    ASSERT_EQ(restampRecord(buf, n + 1, kSalt, 1), n + 1);
    std::vector<uint8_t> image = imageWith(buf, n + 1);
    ReplayResult res = replayJournal(image, nullptr);
    EXPECT_STREQ(res.stopReason, "malformed payload");
  }
}

TEST(JournalCodec, TheEncoderRefusesWhatReplayWouldRefuse) {
  // Replay ends the journal at a record it refuses, so writing one would lose every record after
  // it: the encoder checks the same rules.
  JournalRecord p;
  p.type = RecordType::Progress;
  p.id = idOf(1);
  p.totalBytes = 10;
  p.haveBytes = 11;
  uint8_t buf[512];
  EXPECT_EQ(encodeRecord(p, kSalt, 1, buf, sizeof buf), 0u);
  JournalRecord o;
  o.type = RecordType::SessionOwner;
  o.owner = std::string_view("a-user-name-longer-than-32-bytes!");
  EXPECT_EQ(encodeRecord(o, kSalt, 1, buf, sizeof buf), 0u);
  JournalRecord e;
  e.type = RecordType::DeliveryEnded;
  e.txid = "t";
  e.flags = 4;
  EXPECT_EQ(encodeRecord(e, kSalt, 1, buf, sizeof buf), 0u);
  JournalRecord c;
  c.type = RecordType::SessionCreated;
  EXPECT_EQ(encodeRecord(c, kSalt, 1, buf, sizeof buf), 0u) << "an empty path";
}

TEST(JournalCodec, RestampGivesARecordANewSaltAndSequence) {
  JournalRecord r = everyRecordType()[0];
  uint8_t buf[256];
  size_t n = encodeRecord(r, 1, 7, buf, sizeof buf);
  ASSERT_GT(n, 0u);
  uint64_t seq = 0;
  ASSERT_TRUE(recordSequence(std::span<const uint8_t>(buf, n), &seq));
  EXPECT_EQ(seq, 7u);
  EXPECT_EQ(restampRecord(buf, n, kSalt, 1), n);
  ASSERT_TRUE(recordSequence(std::span<const uint8_t>(buf, n), &seq));
  EXPECT_EQ(seq, 1u);
  Records sink;
  std::vector<uint8_t> image = imageWith(buf, n);
  EXPECT_EQ(replayJournal(image, &sink).records, 1u);
  EXPECT_EQ(restampRecord(buf, n - 1, kSalt, 1), 0u) << "not a whole record";
  EXPECT_FALSE(recordSequence(std::span<const uint8_t>(buf, kRecordHeaderBytes - 1), &seq));
}

}  // namespace
}  // namespace bitsd::testing
