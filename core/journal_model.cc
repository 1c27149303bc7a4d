// The journal's meaning: applyRecord's target for JournalState, applyDelivery, and the snapshot a
// compaction writes. See core/journal_model.h.
#include "core/journal_model.h"

#include <cstring>

namespace bitsd {

namespace {
// JournalState as applyRecord sees it.
struct StateTarget {
  using Session = RecoveredSession;
  JournalState& state;

  Session* find(const SessionId& id) {
    auto it = state.sessions.find(id);
    return it == state.sessions.end() ? nullptr : &it->second;
  }
  Session* create(const JournalRecord& r) {
    Session& s = state.sessions[r.id];
    s.id = r.id;
    s.path = std::string(r.path);
    return &s;
  }
  void erase(Session& s) { state.sessions.erase(s.id); }
  DeliveryMap& deliveries() { return state.delivered; }
  void touch(Session& s, uint64_t wall) {
    if (wall > s.wallSeconds) s.wallSeconds = wall;
  }
  bool ended(const Session& s) const { return s.closed || s.committed || s.handedOff; }
  uint64_t have(const Session& s) const { return s.haveBytes; }
  uint64_t total(const Session& s) const { return s.totalBytes; }
  void setTotal(Session& s, uint64_t total) {
    s.totalKnown = true;
    s.totalBytes = total;
  }
  void setHave(Session& s, uint64_t have, const JournalRecord* progress) {
    s.haveBytes = have;
    if (progress == nullptr) return;  // complete: the checkpoint no longer matters
    s.shaStateLen = progress->shaStateLen;
    std::memcpy(s.shaState, progress->shaState, progress->shaStateLen);
  }
  void complete(Session&) {}  // committed or handedOff say it
  void commit(Session& s, const uint8_t* sha256) {
    s.committed = true;
    if (sha256 != nullptr) std::memcpy(s.sha256, sha256, sizeof s.sha256);
  }
  void close(Session& s, bool cancelled) {
    s.closed = true;
    s.cancelled = s.cancelled || cancelled;
  }
  void handOff(Session& s, std::string_view txid) {
    s.handedOff = true;
    s.txid = std::string(txid);
  }
  void setOwner(Session& s, std::string_view owner) { s.owner = std::string(owner); }
};
}  // namespace

void JournalState::onRecord(const JournalRecord& r, uint64_t, uint64_t) { apply(r); }

void JournalState::apply(const JournalRecord& r) {
  StateTarget t{*this};
  applyRecord(t, r);
}

void applyDelivery(const JournalRecord& r, DeliveryMap* deliveries) {
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
