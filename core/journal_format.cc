// The journal codec: the file header, the record header and each record type's payload, encoded and
// decoded on the cursors of core/byte_cursor.h. Each layout is written twice, once as puts
// (writePayload) and once as the gets that undo them (readPayload), in the same order, so the two
// can be read side by side; a record's size is what writePayload puts into a counting writer. The
// format itself is described at the top of core/journal_format.h.
#include "core/journal_format.h"

#include <cstring>

#include "core/byte_cursor.h"
#include "core/crc32c.h"

namespace bitsd {

namespace {
constexpr uint8_t kMagic[8] = {'B', 'I', 'T', 'S', 'J', 'R', 'N', 'L'};
constexpr size_t kHeaderCrcOffset = 28;  // the header's CRC covers the 28 bytes before it
// The longest path a SessionCreated record takes (its length prefix could say more).
constexpr size_t kMaxRecordPathBytes = 4096;

uint32_t recordCrc(uint32_t salt, uint64_t seq, uint8_t type, const uint8_t* payload, size_t len) {
  uint8_t pre[13];
  ByteWriter w(pre, sizeof pre);
  w.le32(salt);
  w.le64(seq);
  w.u8(type);
  return crc32c(crc32c(0, pre, sizeof pre), payload, len);
}

// --- The record header: length, CRC, sequence, type (17 bytes). --------------------------------

struct RecordHeader {
  uint32_t payloadBytes = 0;
  uint32_t crc = 0;
  uint64_t seq = 0;
  uint8_t type = 0;
};

// Writes the header of the record whose payload (`len` bytes) is already at rec + 17.
void writeRecordHeader(uint8_t* rec, size_t len, uint32_t salt, uint64_t seq, uint8_t type) {
  ByteWriter w(rec, kRecordHeaderBytes);
  w.le32(static_cast<uint32_t>(len));
  w.le32(recordCrc(salt, seq, type, rec + kRecordHeaderBytes, len));
  w.le64(seq);
  w.u8(type);
}

bool readRecordHeader(ByteReader& in, RecordHeader* h) {
  return in.le32(&h->payloadBytes) && in.le32(&h->crc) && in.le64(&h->seq) && in.u8(&h->type);
}

// --- The payloads: writePayload and readPayload mirror each other, field for field. -------------

void putId(ByteWriter& w, const SessionId& id) { w.bytes(id.bytes.data(), id.bytes.size()); }
bool getId(ByteReader& in, SessionId* id) { return in.bytes(id->bytes.data(), id->bytes.size()); }

void writePayload(ByteWriter& w, const JournalRecord& r) {
  switch (r.type) {
    case RecordType::Pad: return;  // zeros, written by encodePad
    case RecordType::SessionCreated:
      putId(w, r.id);
      w.le64(r.wallSeconds);
      w.str16(r.path);
      return;
    case RecordType::Progress:
      putId(w, r.id);
      w.le64(r.wallSeconds);
      w.le64(r.totalBytes);
      w.le64(r.haveBytes);
      w.u8(r.shaStateLen);
      w.bytes(r.shaState, r.shaStateLen);
      return;
    case RecordType::Committed:
      putId(w, r.id);
      w.le64(r.wallSeconds);
      w.le64(r.totalBytes);
      w.bytes(r.sha256, sizeof r.sha256);
      return;
    case RecordType::Closed:
      putId(w, r.id);
      w.le64(r.wallSeconds);
      w.u8(r.cancelled ? 1 : 0);
      return;
    case RecordType::Forget:
      putId(w, r.id);
      return;
    case RecordType::Delivered:
      w.le64(r.wallSeconds);
      w.str8(r.txid);
      return;
    case RecordType::DeliveryBegan:
      putId(w, r.id);
      w.le64(r.wallSeconds);
      w.str8(r.txid);
      return;
    case RecordType::DeliveryEnded:
      putId(w, r.id);
      putId(w, r.replySession);
      w.le64(r.wallSeconds);
      w.le16(r.status);
      w.le32(r.hresult);
      w.u8(r.flags);
      w.le64(r.replyBytes);
      w.str8(r.txid);
      w.str16(r.url);
      return;
    case RecordType::SessionOwner:
      putId(w, r.id);
      w.str8(r.owner);
      return;
  }
}

// Reads what writePayload wrote for r->type; false unless the payload has exactly that shape.
bool readPayload(ByteReader& in, JournalRecord* r) {
  switch (r->type) {
    case RecordType::Pad: return true;  // any length; its bytes mean nothing
    case RecordType::SessionCreated:
      return getId(in, &r->id) && in.le64(&r->wallSeconds) && in.str16(&r->path) && in.atEnd();
    case RecordType::Progress:
      return getId(in, &r->id) && in.le64(&r->wallSeconds) && in.le64(&r->totalBytes) &&
             in.le64(&r->haveBytes) && in.u8(&r->shaStateLen) && r->shaStateLen <= sizeof r->shaState &&
             in.bytes(r->shaState, r->shaStateLen) && in.atEnd();
    case RecordType::Committed:
      return getId(in, &r->id) && in.le64(&r->wallSeconds) && in.le64(&r->totalBytes) &&
             in.bytes(r->sha256, sizeof r->sha256) && in.atEnd();
    case RecordType::Closed: {
      uint8_t cancelled = 0;
      if (!(getId(in, &r->id) && in.le64(&r->wallSeconds) && in.u8(&cancelled) && in.atEnd())) return false;
      r->cancelled = cancelled == 1;
      return cancelled <= 1;
    }
    case RecordType::Forget:
      return getId(in, &r->id) && in.atEnd();
    case RecordType::Delivered:
      return in.le64(&r->wallSeconds) && in.str8(&r->txid) && in.atEnd();
    case RecordType::DeliveryBegan:
      return getId(in, &r->id) && in.le64(&r->wallSeconds) && in.str8(&r->txid) && in.atEnd();
    case RecordType::DeliveryEnded:
      return getId(in, &r->id) && getId(in, &r->replySession) && in.le64(&r->wallSeconds) &&
             in.le16(&r->status) && in.le32(&r->hresult) && in.u8(&r->flags) && in.le64(&r->replyBytes) &&
             in.str8(&r->txid) && in.str16(&r->url) && in.atEnd();
    case RecordType::SessionOwner:
      return getId(in, &r->id) && in.str8(&r->owner) && in.atEnd();
  }
  return false;
}

// The rules on field values, checked by the encoder before it writes a record and by replay after it
// reads one: bitsd never writes a record its own replay would refuse (replay would end there).
bool fieldsValid(const JournalRecord& r) {
  switch (r.type) {
    case RecordType::SessionCreated: return !r.path.empty();
    case RecordType::Progress: return r.shaStateLen <= sizeof r.shaState && r.haveBytes <= r.totalBytes;
    case RecordType::Delivered:
    case RecordType::DeliveryBegan: return !r.txid.empty() && r.txid.size() <= kMaxTxidBytes;
    case RecordType::DeliveryEnded:
      return !r.txid.empty() && r.txid.size() <= kMaxTxidBytes && r.url.size() <= kMaxReplyUrlBytes &&
             r.flags <= (kDeliveryHasReplyFile | kDeliveryCopied);
    case RecordType::SessionOwner: return !r.owner.empty() && r.owner.size() <= kMaxOwnerBytes;
    case RecordType::Pad:
    case RecordType::Committed:
    case RecordType::Closed:
    case RecordType::Forget: return true;
  }
  return false;
}

// Decodes a payload; false if it is malformed for its type. `*digestRewritten`: a Progress record's
// digest state held more than a checkpoint (and was normalized).
bool decodePayload(RecordType type, std::span<const uint8_t> payload, JournalRecord* r, bool* digestRewritten) {
  r->type = type;
  ByteReader in(payload);
  if (!readPayload(in, r) || !fieldsValid(*r)) return false;
  if (type == RecordType::Progress && r->shaStateLen > 0) {
    uint8_t raw[sizeof r->shaState];
    const uint8_t rawLen = r->shaStateLen;
    std::memcpy(raw, r->shaState, rawLen);
    normalizeDigestCheckpoint(r->shaState, &r->shaStateLen, r->haveBytes);
    *digestRewritten = rawLen > kDigestChainBytes &&
                       (rawLen != r->shaStateLen || std::memcmp(raw, r->shaState, rawLen) != 0);
  }
  return true;
}
}  // namespace

void putLe(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t getLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

const char* recordTypeName(RecordType t) {
  switch (t) {
    case RecordType::Pad: return "Pad";
    case RecordType::SessionCreated: return "SessionCreated";
    case RecordType::Progress: return "Progress";
    case RecordType::Committed: return "Committed";
    case RecordType::Closed: return "Closed";
    case RecordType::Forget: return "Forget";
    case RecordType::Delivered: return "Delivered";
    case RecordType::DeliveryBegan: return "DeliveryBegan";
    case RecordType::SessionOwner: return "SessionOwner";
    case RecordType::DeliveryEnded: return "DeliveryEnded";
  }
  return "?";
}

const char* replayStatusText(ReplayStatus s) {
  switch (s) {
    case ReplayStatus::Ok: return "ok";
    case ReplayStatus::Empty: return "empty file";
    case ReplayStatus::NotAJournal: return "not a bitsd journal (bad magic)";
    case ReplayStatus::UnsupportedVersion: return "journal format version not supported";
    case ReplayStatus::CorruptHeader: return "journal header is corrupt (CRC mismatch)";
  }
  return "?";
}

void encodeJournalHeader(const JournalHeader& h, uint8_t* out) {
  std::memset(out, 0, kJournalBlockBytes);
  ByteWriter w(out, kJournalHeaderUsedBytes);
  w.bytes(kMagic, sizeof kMagic);
  w.le32(h.version);
  w.le32(h.salt);
  w.le64(h.firstSeq);
  w.le32(static_cast<uint32_t>(kJournalBlockBytes));
  w.le32(crc32c(0, out, kHeaderCrcOffset));
}

void normalizeDigestCheckpoint(uint8_t* state, uint8_t* len, uint64_t have) {
  const size_t n = *len;
  uint8_t form = 0;  // 0: unknown
  uint64_t hashed = 0;
  if (n >= kDigestChainBytes) ByteReader(state, n).le64(&hashed);
  if (n == kDigestCheckpointBytes && hashed % 64 == 0 && state[kDigestChainBytes] == kDigestCheckpointForm &&
      hashed <= have) {
    form = kDigestCheckpointForm;
  } else if (n >= kDigestChainBytes && n == kDigestChainBytes + hashed % 64 && hashed == have) {
    // The older form: the chaining value covers the whole blocks; drop the unfinished block's bytes.
    ByteWriter(state, 8).le64(hashed - hashed % 64);
    form = kDigestCheckpointForm;
  }
  if (form == 0) {
    std::memset(state, 0, 104);
    *len = 0;
    return;
  }
  state[kDigestChainBytes] = form;
  std::memset(state + kDigestCheckpointBytes, 0, 104 - kDigestCheckpointBytes);
  *len = static_cast<uint8_t>(kDigestCheckpointBytes);
}

uint64_t digestCheckpointBytes(const uint8_t* state) {
  uint64_t n = 0;
  ByteReader(state, 8).le64(&n);
  return n;
}

size_t encodeRecord(const JournalRecord& r, uint32_t salt, uint64_t seq, uint8_t* out, size_t cap) {
  if (!fieldsValid(r)) return 0;
  if (r.type == RecordType::SessionCreated && r.path.size() > kMaxRecordPathBytes) return 0;
  const JournalRecord* rec = &r;
  JournalRecord normalized;
  if (r.type == RecordType::Progress && r.shaStateLen > 0) {
    // Only ever a checkpoint, whatever form the caller holds: no upload data reaches the file.
    normalized = r;
    normalizeDigestCheckpoint(normalized.shaState, &normalized.shaStateLen, normalized.haveBytes);
    rec = &normalized;
  }
  ByteWriter counter = ByteWriter::counting();
  writePayload(counter, *rec);
  const size_t len = counter.size();
  if (len > kMaxPayloadBytes || cap < kRecordHeaderBytes || len > cap - kRecordHeaderBytes) return 0;
  ByteWriter body(out + kRecordHeaderBytes, len);
  writePayload(body, *rec);
  if (!body.ok() || body.size() != len) return 0;  // cannot happen: the same puts were counted
  writeRecordHeader(out, len, salt, seq, static_cast<uint8_t>(r.type));
  return kRecordHeaderBytes + len;
}

size_t padBytesFor(uint64_t offset) {
  size_t rem = static_cast<size_t>(offset % kJournalBlockBytes);
  if (rem == 0) return 0;
  size_t gap = kJournalBlockBytes - rem;
  return gap >= kRecordHeaderBytes ? gap : gap + kJournalBlockBytes;
}

size_t encodePad(uint64_t offset, uint32_t salt, uint64_t seq, uint8_t* out, size_t cap) {
  size_t n = padBytesFor(offset);
  if (n == 0 || n > cap) return 0;
  size_t len = n - kRecordHeaderBytes;
  std::memset(out + kRecordHeaderBytes, 0, len);
  writeRecordHeader(out, len, salt, seq, static_cast<uint8_t>(RecordType::Pad));
  return n;
}

size_t restampRecord(uint8_t* rec, size_t avail, uint32_t salt, uint64_t seq) {
  ByteReader in(rec, avail);
  RecordHeader h;
  if (!readRecordHeader(in, &h) || h.payloadBytes > in.remaining()) return 0;
  writeRecordHeader(rec, h.payloadBytes, salt, seq, h.type);
  return kRecordHeaderBytes + h.payloadBytes;
}

bool recordSequence(std::span<const uint8_t> rec, uint64_t* seq) {
  ByteReader in(rec);
  RecordHeader h;
  if (!readRecordHeader(in, &h)) return false;
  *seq = h.seq;
  return true;
}

ReplayResult replayJournal(std::span<const uint8_t> bytes, ReplaySink* sink) {
  ReplayResult res;
  if (bytes.empty()) {
    res.status = ReplayStatus::Empty;
    return res;
  }
  ByteReader header(bytes);
  uint8_t magic[sizeof kMagic] = {};
  uint32_t blockBytes = 0, headerCrc = 0;
  if (bytes.size() < kJournalHeaderUsedBytes || !header.bytes(magic, sizeof magic) ||
      std::memcmp(magic, kMagic, sizeof kMagic) != 0) {
    res.status = ReplayStatus::NotAJournal;
    return res;
  }
  header.le32(&res.header.version);
  header.le32(&res.header.salt);
  header.le64(&res.header.firstSeq);
  header.le32(&blockBytes);
  header.le32(&headerCrc);  // all there: the file holds at least the 32 bytes the header uses
  if (headerCrc != crc32c(0, bytes.data(), kHeaderCrcOffset)) {
    res.header = JournalHeader{};
    res.status = ReplayStatus::CorruptHeader;
    return res;
  }
  if (res.header.version != kJournalVersion || blockBytes != kJournalBlockBytes) {
    res.status = ReplayStatus::UnsupportedVersion;
    return res;
  }
  uint64_t seq = res.header.firstSeq;
  size_t off = kJournalBlockBytes;
  if (bytes.size() < off) {
    res.validEnd = bytes.size();
    res.nextSeq = seq;
    res.stopReason = "header block incomplete";
    return res;
  }
  while (true) {
    if (off == bytes.size()) {
      res.stopReason = "end of file";
      break;
    }
    ByteReader in(bytes.subspan(off));
    RecordHeader h;
    if (!readRecordHeader(in, &h)) {
      res.stopReason = "incomplete record header";
      break;
    }
    if (h.payloadBytes > kMaxPayloadBytes + kJournalBlockBytes) {  // a Pad may exceed the limit by a block
      res.stopReason = "record length out of range";
      break;
    }
    if (h.payloadBytes > in.remaining()) {
      res.stopReason = "record runs past the end of the file";
      break;
    }
    if (h.seq != seq) {
      res.stopReason = "sequence number out of order";
      break;
    }
    std::span<const uint8_t> payload = bytes.subspan(off + kRecordHeaderBytes, h.payloadBytes);
    if (h.crc != recordCrc(res.header.salt, seq, h.type, payload.data(), payload.size())) {
      res.stopReason = "CRC mismatch";
      break;
    }
    if (h.type > kLastRecordType) {
      res.stopReason = "unknown record type";
      break;
    }
    JournalRecord r;
    bool digestRewritten = false;
    if (!decodePayload(static_cast<RecordType>(h.type), payload, &r, &digestRewritten) ||
        (r.type != RecordType::Pad && payload.size() > kMaxPayloadBytes)) {
      res.stopReason = "malformed payload";
      break;
    }
    if (digestRewritten) ++res.digestStatesRewritten;
    if (sink != nullptr && r.type != RecordType::Pad) sink->onRecord(r, seq, off);
    ++res.records;
    ++seq;
    off += kRecordHeaderBytes + payload.size();
  }
  res.validEnd = off;
  res.nextSeq = seq;
  res.tailBytes = bytes.size() - off;
  return res;
}

}  // namespace bitsd
