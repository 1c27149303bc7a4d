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
    case RecordType::DeliveryBegan: return 16 + 8 + 1 + r.txid.size();
    case RecordType::DeliveryEnded: return 16 + 16 + 8 + 2 + 4 + 1 + 8 + 1 + r.txid.size() + 2 + r.url.size();
    case RecordType::SessionOwner: return 16 + 1 + r.owner.size();
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
      normalizeDigestCheckpoint(r->shaState, &r->shaStateLen, r->haveBytes);
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
    case RecordType::DeliveryBegan: {
      if (len < 26) return false;
      id();
      r->wallSeconds = getLe(p + 16, 8);
      size_t n = p[24];
      if (n == 0 || len != 25 + n) return false;
      r->txid = std::string_view(reinterpret_cast<const char*>(p + 25), n);
      return true;
    }
    case RecordType::DeliveryEnded: {
      constexpr size_t kFixed = 16 + 16 + 8 + 2 + 4 + 1 + 8;  // 55
      if (len < kFixed + 1 + 1 + 2) return false;
      id();
      std::memcpy(r->replySession.bytes.data(), p + 16, 16);
      r->wallSeconds = getLe(p + 32, 8);
      r->status = static_cast<uint16_t>(getLe(p + 40, 2));
      r->hresult = static_cast<uint32_t>(getLe(p + 42, 4));
      r->flags = p[46];
      r->replyBytes = getLe(p + 47, 8);
      size_t n = p[kFixed];
      if (n == 0 || len < kFixed + 1 + n + 2) return false;
      r->txid = std::string_view(reinterpret_cast<const char*>(p + kFixed + 1), n);
      size_t u = getLe(p + kFixed + 1 + n, 2);
      if (u > kMaxReplyUrlBytes || len != kFixed + 1 + n + 2 + u || r->flags > 3) return false;
      r->url = std::string_view(reinterpret_cast<const char*>(p + kFixed + 3 + n), u);
      return true;
    }
    case RecordType::SessionOwner: {
      if (len < 18) return false;
      id();
      size_t n = p[16];
      if (n == 0 || n > kMaxOwnerBytes || len != 17 + n) return false;
      r->owner = std::string_view(reinterpret_cast<const char*>(p + 17), n);
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
  std::memcpy(out, kMagic, 8);
  putLe(out + 8, h.version, 4);
  putLe(out + 12, h.salt, 4);
  putLe(out + 16, h.firstSeq, 8);
  putLe(out + 24, kJournalBlockBytes, 4);
  putLe(out + 28, crc32c(0, out, 28), 4);
}

void normalizeDigestCheckpoint(uint8_t* state, uint8_t* len, uint64_t have) {
  const size_t n = *len;
  uint8_t form = 0;  // 0: unknown
  uint64_t hashed = n >= kDigestChainBytes ? getLe(state, 8) : 0;
  if (n == kDigestCheckpointBytes && hashed % 64 == 0 && state[kDigestChainBytes] == kDigestCheckpointForm &&
      hashed <= have) {
    form = kDigestCheckpointForm;
  } else if (n >= kDigestChainBytes && n == kDigestChainBytes + hashed % 64 && hashed == have) {
    // The older form: the chaining value covers the whole blocks; drop the unfinished block's bytes.
    putLe(state, hashed - hashed % 64, 8);
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

uint64_t digestCheckpointBytes(const uint8_t* state) { return getLe(state, 8); }

size_t encodeRecord(const JournalRecord& r, uint32_t salt, uint64_t seq, uint8_t* out, size_t cap) {
  if (r.type == RecordType::SessionCreated && (r.path.empty() || r.path.size() > 4096)) return 0;
  bool hasTxid = r.type == RecordType::Delivered || r.type == RecordType::DeliveryBegan ||
                 r.type == RecordType::DeliveryEnded;
  if (hasTxid && (r.txid.empty() || r.txid.size() > kMaxTxidBytes)) return 0;
  if (r.type == RecordType::DeliveryEnded && (r.url.size() > kMaxReplyUrlBytes || r.flags > 3)) return 0;
  if (r.type == RecordType::Progress && r.shaStateLen > sizeof r.shaState) return 0;
  if (r.type == RecordType::Progress && r.shaStateLen > 0) {
    // Only ever a checkpoint, whatever form the caller holds: no upload data reaches the file.
    JournalRecord c = r;
    normalizeDigestCheckpoint(c.shaState, &c.shaStateLen, c.haveBytes);
    if (c.shaStateLen != r.shaStateLen || std::memcmp(c.shaState, r.shaState, sizeof r.shaState) != 0) {
      return encodeRecord(c, salt, seq, out, cap);  // once: a normalized state is its own normal form
    }
  }
  if (r.type == RecordType::SessionOwner && (r.owner.empty() || r.owner.size() > kMaxOwnerBytes)) return 0;
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
    case RecordType::DeliveryBegan:
      id();
      putLe(p + 16, r.wallSeconds, 8);
      p[24] = static_cast<uint8_t>(r.txid.size());
      std::memcpy(p + 25, r.txid.data(), r.txid.size());
      break;
    case RecordType::DeliveryEnded: {
      id();
      std::memcpy(p + 16, r.replySession.bytes.data(), 16);
      putLe(p + 32, r.wallSeconds, 8);
      putLe(p + 40, r.status, 2);
      putLe(p + 42, r.hresult, 4);
      p[46] = r.flags;
      putLe(p + 47, r.replyBytes, 8);
      uint8_t* q = p + 55;
      *q++ = static_cast<uint8_t>(r.txid.size());
      std::memcpy(q, r.txid.data(), r.txid.size());
      q += r.txid.size();
      putLe(q, r.url.size(), 2);
      if (!r.url.empty()) std::memcpy(q + 2, r.url.data(), r.url.size());
      break;
    }
    case RecordType::SessionOwner:
      id();
      p[16] = static_cast<uint8_t>(r.owner.size());
      std::memcpy(p + 17, r.owner.data(), r.owner.size());
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
    if (type > kLastRecordType) {
      res.stopReason = "unknown record type";
      break;
    }
    JournalRecord r;
    if (!decodePayload(static_cast<RecordType>(type), p + kRecordHeaderBytes, len, &r) ||
        (r.type != RecordType::Pad && len > kMaxPayloadBytes)) {
      res.stopReason = "malformed payload";
      break;
    }
    if (r.type == RecordType::Progress) {
      const uint8_t* raw = p + kRecordHeaderBytes + 40;  // digest-state length, then the state
      if (raw[0] > kDigestChainBytes &&
          (raw[0] != r.shaStateLen || std::memcmp(raw + 1, r.shaState, r.shaStateLen) != 0)) {
        ++res.digestStatesRewritten;
      }
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
    case RecordType::SessionOwner: {
      auto it = sessions.find(r.id);
      if (it != sessions.end()) it->second.owner = std::string(r.owner);
      return;
    }
    case RecordType::Delivered:
    case RecordType::DeliveryBegan: applyDelivery(r, &delivered); return;
    case RecordType::DeliveryEnded: {
      applyDelivery(r, &delivered);
      auto it = sessions.find(r.id);
      if (it == sessions.end()) return;
      RecoveredSession& s = it->second;
      s.handedOff = true;
      s.txid = std::string(r.txid);
      if (r.flags & kDeliveryCopied) s.committed = true;
      if (r.wallSeconds > s.wallSeconds) s.wallSeconds = r.wallSeconds;
      return;
    }
  }
}

void applyDelivery(const JournalRecord& r, std::unordered_map<std::string, DeliveryInfo>* deliveries) {
  DeliveryInfo& d = (*deliveries)[std::string(r.txid)];
  switch (r.type) {
    case RecordType::Delivered:  // older format: an ended delivery with no reply
      if (!d.ended) d = DeliveryInfo{};
      d.ended = true;
      if (d.status == 0) d.status = 200;
      break;
    case RecordType::DeliveryBegan:
      if (!d.ended) d.replySession = r.id;
      break;
    case RecordType::DeliveryEnded:
      d.ended = true;
      d.replySession = r.replySession;
      d.status = r.status;
      d.hresult = r.hresult;
      d.flags = r.flags;
      d.replyBytes = r.replyBytes;
      d.staticUrl = std::string(r.url);
      break;
    default: return;
  }
  if (r.wallSeconds > d.wallSeconds) d.wallSeconds = r.wallSeconds;
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
    if (!s.owner.empty()) {
      JournalRecord o;
      o.type = RecordType::SessionOwner;
      o.id = id;
      o.owner = s.owner;
      emit(o);
    }
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
  // Deliveries: one record per transaction id (ended ones carry the outcome), then one per session
  // that was answered from a delivery it did not POST itself (a repeat of a delivered id).
  auto emitDelivery = [&](const std::string& txid, const DeliveryInfo& d, const SessionId& session) {
    JournalRecord r;
    r.id = session;
    r.txid = txid;
    r.wallSeconds = d.wallSeconds;
    if (!d.ended) {
      r.type = RecordType::DeliveryBegan;
    } else {
      r.type = RecordType::DeliveryEnded;
      r.replySession = d.replySession;
      r.status = d.status;
      r.hresult = d.hresult;
      r.flags = d.flags;
      r.replyBytes = d.replyBytes;
      r.url = d.staticUrl;
    }
    emit(r);
  };
  for (const auto& [txid, d] : state.delivered) emitDelivery(txid, d, d.replySession);
  for (const auto& [id, s] : state.sessions) {
    if (!s.handedOff) continue;
    auto it = state.delivered.find(s.txid);
    if (it == state.delivered.end() || !it->second.ended || it->second.replySession == id) continue;
    emitDelivery(it->first, it->second, id);
  }
  size_t n = encodePad(*offset, salt, *seq, buf, sizeof buf);
  if (n > 0) {
    ++*seq;
    out->insert(out->end(), buf, buf + n);
    *offset += n;
  }
}

}  // namespace bitsd
