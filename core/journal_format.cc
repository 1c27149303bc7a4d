#include "core/journal_format.h"

#include <cstring>

#include "core/crc32c.h"

namespace bitsd {

namespace {
constexpr uint8_t kMagic[8] = {'B', 'I', 'T', 'S', 'J', 'R', 'N', 'L'};

uint32_t recordCrc(uint32_t salt, uint64_t seq, uint8_t type, const uint8_t* payload, size_t len) {
  uint8_t pre[13];
  putLe(pre, salt, 4);
  putLe(pre + 4, seq, 8);
  pre[12] = type;
  return crc32c(crc32c(0, pre, sizeof pre), payload, len);
}

size_t payloadSize(const JournalRecord& r) {
  switch (r.type) {
    case RecordType::Pad: return 0;
    case RecordType::SessionCreated: return 16 + 8 + 2 + r.path.size();
    case RecordType::Progress: return 16 + 8 + 8 + 8 + 1 + r.shaStateLen;
    case RecordType::Committed: return 16 + 8 + 8 + 32;
    case RecordType::Closed: return 16 + 8 + 1;
    case RecordType::Forget: return 16;
    case RecordType::Delivered: return 8 + 1 + r.txid.size();
  }
  return 0;
}

// Decodes a payload; false if it is malformed for its type.
bool decodePayload(RecordType type, const uint8_t* p, size_t len, JournalRecord* r) {
  r->type = type;
  auto id = [&] { std::memcpy(r->id.bytes.data(), p, 16); };
  switch (type) {
    case RecordType::Pad: return true;
    case RecordType::SessionCreated: {
      if (len < 26) return false;
      id();
      r->wallSeconds = getLe(p + 16, 8);
      size_t n = getLe(p + 24, 2);
      if (n == 0 || len != 26 + n) return false;
      r->path = std::string_view(reinterpret_cast<const char*>(p + 26), n);
      return true;
    }
    case RecordType::Progress:
      if (len < 41 || p[40] > sizeof r->shaState || len != 41u + p[40]) return false;
      id();
      r->wallSeconds = getLe(p + 16, 8);
      r->totalBytes = getLe(p + 24, 8);
      r->haveBytes = getLe(p + 32, 8);
      r->shaStateLen = p[40];
      std::memcpy(r->shaState, p + 41, r->shaStateLen);
      return r->haveBytes <= r->totalBytes;
    case RecordType::Committed:
      if (len != 64) return false;
      id();
      r->wallSeconds = getLe(p + 16, 8);
      r->totalBytes = getLe(p + 24, 8);
      std::memcpy(r->sha256, p + 32, 32);
      return true;
    case RecordType::Closed:
      if (len != 25 || p[24] > 1) return false;
      id();
      r->wallSeconds = getLe(p + 16, 8);
      r->cancelled = p[24] == 1;
      return true;
    case RecordType::Forget:
      if (len != 16) return false;
      id();
      return true;
    case RecordType::Delivered: {
      if (len < 10) return false;
      r->wallSeconds = getLe(p, 8);
      size_t n = p[8];
      if (n == 0 || len != 9 + n) return false;
      r->txid = std::string_view(reinterpret_cast<const char*>(p + 9), n);
      return true;
    }
  }
  return false;
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
  std::memcpy(out, kMagic, 8);
  putLe(out + 8, h.version, 4);
  putLe(out + 12, h.salt, 4);
  putLe(out + 16, h.firstSeq, 8);
  putLe(out + 24, kJournalBlockBytes, 4);
  putLe(out + 28, crc32c(0, out, 28), 4);
}

size_t encodeRecord(const JournalRecord& r, uint32_t salt, uint64_t seq, uint8_t* out, size_t cap) {
  if (r.type == RecordType::SessionCreated && (r.path.empty() || r.path.size() > 4096)) return 0;
  if (r.type == RecordType::Delivered && (r.txid.empty() || r.txid.size() > kMaxTxidBytes)) return 0;
  if (r.type == RecordType::Progress && r.shaStateLen > sizeof r.shaState) return 0;
  size_t len = payloadSize(r);
  if (kRecordHeaderBytes + len > cap) return 0;
  uint8_t* p = out + kRecordHeaderBytes;
  auto id = [&] { std::memcpy(p, r.id.bytes.data(), 16); };
  switch (r.type) {
    case RecordType::Pad: break;
    case RecordType::SessionCreated:
      id();
      putLe(p + 16, r.wallSeconds, 8);
      putLe(p + 24, r.path.size(), 2);
      std::memcpy(p + 26, r.path.data(), r.path.size());
      break;
    case RecordType::Progress:
      id();
      putLe(p + 16, r.wallSeconds, 8);
      putLe(p + 24, r.totalBytes, 8);
      putLe(p + 32, r.haveBytes, 8);
      p[40] = r.shaStateLen;
      std::memcpy(p + 41, r.shaState, r.shaStateLen);
      break;
    case RecordType::Committed:
      id();
      putLe(p + 16, r.wallSeconds, 8);
      putLe(p + 24, r.totalBytes, 8);
      std::memcpy(p + 32, r.sha256, 32);
      break;
    case RecordType::Closed:
      id();
      putLe(p + 16, r.wallSeconds, 8);
      p[24] = r.cancelled ? 1 : 0;
      break;
    case RecordType::Forget: id(); break;
    case RecordType::Delivered:
      putLe(p, r.wallSeconds, 8);
      p[8] = static_cast<uint8_t>(r.txid.size());
      std::memcpy(p + 9, r.txid.data(), r.txid.size());
      break;
  }
  putLe(out, len, 4);
  putLe(out + 4, recordCrc(salt, seq, static_cast<uint8_t>(r.type), p, len), 4);
  putLe(out + 8, seq, 8);
  out[16] = static_cast<uint8_t>(r.type);
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
  putLe(out, len, 4);
  putLe(out + 4, recordCrc(salt, seq, 0, out + kRecordHeaderBytes, len), 4);
  putLe(out + 8, seq, 8);
  out[16] = 0;
  return n;
}

ReplayResult replayJournal(std::span<const uint8_t> bytes, ReplaySink* sink) {
  ReplayResult res;
  if (bytes.empty()) {
    res.status = ReplayStatus::Empty;
    return res;
  }
  if (bytes.size() < kJournalHeaderUsedBytes || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    res.status = ReplayStatus::NotAJournal;
    return res;
  }
  if (getLe(bytes.data() + 28, 4) != crc32c(0, bytes.data(), 28)) {
    res.status = ReplayStatus::CorruptHeader;
    return res;
  }
  res.header.version = static_cast<uint32_t>(getLe(bytes.data() + 8, 4));
  res.header.salt = static_cast<uint32_t>(getLe(bytes.data() + 12, 4));
  res.header.firstSeq = getLe(bytes.data() + 16, 8);
  if (res.header.version != kJournalVersion || getLe(bytes.data() + 24, 4) != kJournalBlockBytes) {
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
    size_t left = bytes.size() - off;
    if (left == 0) {
      res.stopReason = "end of file";
      break;
    }
    if (left < kRecordHeaderBytes) {
      res.stopReason = "incomplete record header";
      break;
    }
    const uint8_t* p = bytes.data() + off;
    uint64_t len = getLe(p, 4);
    if (len > kMaxPayloadBytes + kJournalBlockBytes) {  // a Pad may exceed the record limit by a block
      res.stopReason = "record length out of range";
      break;
    }
    if (len > left - kRecordHeaderBytes) {
      res.stopReason = "record runs past the end of the file";
      break;
    }
    uint8_t type = p[16];
    if (getLe(p + 8, 8) != seq) {
      res.stopReason = "sequence number out of order";
      break;
    }
    if (getLe(p + 4, 4) != recordCrc(res.header.salt, seq, type, p + kRecordHeaderBytes, len)) {
      res.stopReason = "CRC mismatch";
      break;
    }
    if (type > static_cast<uint8_t>(RecordType::Delivered)) {
      res.stopReason = "unknown record type";
      break;
    }
    JournalRecord r;
    if (!decodePayload(static_cast<RecordType>(type), p + kRecordHeaderBytes, len, &r) ||
        (r.type != RecordType::Pad && len > kMaxPayloadBytes)) {
      res.stopReason = "malformed payload";
      break;
    }
    if (sink != nullptr && r.type != RecordType::Pad) sink->onRecord(r, seq, off);
    ++res.records;
    ++seq;
    off += kRecordHeaderBytes + len;
  }
  res.validEnd = off;
  res.nextSeq = seq;
  res.tailBytes = bytes.size() - off;
  return res;
}

void JournalState::onRecord(const JournalRecord& r, uint64_t, uint64_t) { apply(r); }

void JournalState::apply(const JournalRecord& r) {
  switch (r.type) {
    case RecordType::Pad: return;
    case RecordType::SessionCreated: {
      auto [it, fresh] = sessions.try_emplace(r.id);
      if (fresh) {
        it->second.id = r.id;
        it->second.path = std::string(r.path);
      }
      if (r.wallSeconds > it->second.wallSeconds) it->second.wallSeconds = r.wallSeconds;
      return;
    }
    case RecordType::Progress: {
      auto it = sessions.find(r.id);
      if (it == sessions.end()) return;  // a record for a forgotten session
      RecoveredSession& s = it->second;
      if (s.closed || s.committed) return;
      s.totalKnown = true;
      s.totalBytes = r.totalBytes;
      if (r.haveBytes >= s.haveBytes) {
        s.haveBytes = r.haveBytes;
        s.shaStateLen = r.shaStateLen;
        std::memcpy(s.shaState, r.shaState, r.shaStateLen);
      }
      if (r.wallSeconds > s.wallSeconds) s.wallSeconds = r.wallSeconds;
      return;
    }
    case RecordType::Committed: {
      auto it = sessions.find(r.id);
      if (it == sessions.end()) return;
      RecoveredSession& s = it->second;
      s.committed = true;
      s.totalKnown = true;
      s.totalBytes = r.totalBytes;
      s.haveBytes = r.totalBytes;
      std::memcpy(s.sha256, r.sha256, 32);
      if (r.wallSeconds > s.wallSeconds) s.wallSeconds = r.wallSeconds;
      return;
    }
    case RecordType::Closed: {
      auto it = sessions.find(r.id);
      if (it == sessions.end()) return;
      it->second.closed = true;
      it->second.cancelled = it->second.cancelled || r.cancelled;
      if (r.wallSeconds > it->second.wallSeconds) it->second.wallSeconds = r.wallSeconds;
      return;
    }
    case RecordType::Forget: sessions.erase(r.id); return;
    case RecordType::Delivered: {
      uint64_t& w = delivered[std::string(r.txid)];
      if (r.wallSeconds > w) w = r.wallSeconds;
      return;
    }
  }
}

void encodeSnapshot(const JournalState& state, uint32_t salt, uint64_t* seq, uint64_t* offset,
                    std::vector<uint8_t>* out) {
  uint8_t buf[kRecordHeaderBytes + kMaxPayloadBytes + 2 * kJournalBlockBytes];
  auto emit = [&](const JournalRecord& r) {
    size_t n = encodeRecord(r, salt, (*seq)++, buf, sizeof buf);
    out->insert(out->end(), buf, buf + n);
    *offset += n;
  };
  for (const auto& [id, s] : state.sessions) {
    JournalRecord r;
    r.id = id;
    r.type = RecordType::SessionCreated;
    r.path = s.path;
    r.wallSeconds = s.wallSeconds;
    emit(r);
    if (s.committed) {
      r.type = RecordType::Committed;
      r.totalBytes = s.totalBytes;
      std::memcpy(r.sha256, s.sha256, 32);
      emit(r);
    } else if (s.totalKnown) {
      r.type = RecordType::Progress;
      r.totalBytes = s.totalBytes;
      r.haveBytes = s.haveBytes;
      r.shaStateLen = s.shaStateLen;
      std::memcpy(r.shaState, s.shaState, s.shaStateLen);
      emit(r);
    }
    if (s.closed) {
      r.type = RecordType::Closed;
      r.cancelled = s.cancelled;
      emit(r);
    }
  }
  for (const auto& [txid, wall] : state.delivered) {
    JournalRecord r;
    r.type = RecordType::Delivered;
    r.txid = txid;
    r.wallSeconds = wall;
    emit(r);
  }
  size_t n = encodePad(*offset, salt, *seq, buf, sizeof buf);
  if (n > 0) {
    ++*seq;
    out->insert(out->end(), buf, buf + n);
    *offset += n;
  }
}

}  // namespace bitsd
