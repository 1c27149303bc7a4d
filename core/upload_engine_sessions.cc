// UploadEngine: who holds the session table. The party a session counts against (user or client
// address), max-sessions-per-user, making room in a full table (the biggest holder pays first),
// expiry (session-timeout, idle-session-timeout) and the sweep that deletes expired data (and
// forgets delivered transaction ids past their retention, core/delivery_book.h).
#include "core/upload_engine.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "core/log.h"

namespace bitsd {

// ---------------------------------------------------------------------------------------------------
// Expiry

Party UploadEngine::partyOf(const Exchange& ex) const {
  if (authenticator_ != nullptr) {
    return ex.user_ >= 0 ? Party{Party::User, static_cast<uint64_t>(ex.user_)} : Party{};
  }
  return partyOfAddress(ex.peer_);
}

void UploadEngine::describeParty(const Party& p, char* out, size_t cap) const {
  char text[kMaxPartyTextBytes];
  if (p.kind == Party::User && authenticator_ != nullptr) {
    std::string_view name = authenticator_->userName(static_cast<int32_t>(p.value));
    std::snprintf(out, cap, "user %.*s", static_cast<int>(name.size()), name.data());
  } else if (formatPartyAddress(p, text) > 0) {
    std::snprintf(out, cap, "client %s", text + 1);
  } else {
    std::snprintf(out, cap, "an unknown client");
  }
}

uint32_t UploadEngine::openSessionsOf(const Party& p) const {
  uint32_t n = 0;
  for (uint32_t i = 0; i < highWater_; ++i) {
    const Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Open && s.party == p) ++n;
  }
  for (const Exchange* e : creating_) {
    if (e->party_ == p) ++n;
  }
  return n;
}

void UploadEngine::endCreating(Exchange& ex) {
  if (!ex.creating_) return;
  ex.creating_ = false;
  for (size_t i = 0; i < creating_.size(); ++i) {
    if (creating_[i] == &ex) {
      creating_[i] = creating_.back();
      creating_.pop_back();
      return;
    }
  }
}

// Every Create-Session under way will take a slot (this one included), so room is made for all of
// them: two that pass this check in the same moment cannot both find the last slot.
bool UploadEngine::makeRoomForNewSession(const Exchange& ex) {
  while (sessions_.size() + creating_.size() > sessions_.capacity()) {
    if (evictForNewSession(ex.party_) == nullptr) return false;
  }
  return true;
}

Session* UploadEngine::evictForNewSession(const Party& newcomer) {
  // The table is full. Tombstones are the cheapest to forget: drop the oldest one.
  Session* oldest = nullptr;
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Closed && !s.busy &&
        (oldest == nullptr || s.lastActivityMs < oldest->lastActivityMs)) {
      oldest = &s;
    }
  }
  if (oldest != nullptr) {
    sessions_.erase(oldest);
    return oldest;
  }
  // No tombstone: the party holding the most open sessions pays, if it holds more than the newcomer
  // will (so a swap never turns the newcomer into the biggest holder, and two parties cannot evict
  // each other back and forth). Its oldest session that never received a byte goes first, else its
  // least recently active one. Otherwise the newcomer is the one over its share: 503.
  auto less = [](const Party& a, const Party& b) { return a.kind != b.kind ? a.kind < b.kind : a.value < b.value; };
  partyScratch_.clear();
  for (uint32_t i = 0; i < highWater_; ++i) {
    const Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Open && s.party.known()) partyScratch_.push_back(s.party);
  }
  std::sort(partyScratch_.begin(), partyScratch_.end(), less);
  uint32_t most = 0;
  for (size_t i = 0; i < partyScratch_.size();) {
    size_t j = i;
    while (j < partyScratch_.size() && partyScratch_[j] == partyScratch_[i]) ++j;
    if (j - i > most) most = static_cast<uint32_t>(j - i);
    i = j;
  }
  const uint32_t mine = newcomer.known() ? openSessionsOf(newcomer) : 1;  // counts the newcomer's own
  if (most <= mine) return nullptr;
  // Keep only the parties holding `most` (ties: the victim is the oldest among all of them).
  size_t top = 0;
  for (size_t i = 0; i < partyScratch_.size();) {
    size_t j = i;
    while (j < partyScratch_.size() && partyScratch_[j] == partyScratch_[i]) ++j;
    if (j - i == most) partyScratch_[top++] = partyScratch_[i];
    i = j;
  }
  partyScratch_.resize(top);
  Session* victim = nullptr;
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state != SessionState::Open || s.busy || !s.party.known() ||
        !std::binary_search(partyScratch_.begin(), partyScratch_.end(), s.party, less)) {
      continue;
    }
    if (victim == nullptr || (s.haveBytes == 0) > (victim->haveBytes == 0) ||
        ((s.haveBytes == 0) == (victim->haveBytes == 0) && s.lastActivityMs < victim->lastActivityMs)) {
      victim = &s;
    }
  }
  if (victim == nullptr) return nullptr;
  char who[80];
  describeParty(victim->party, who, sizeof who);
  logLimited(LogLevel::Info, "session eviction", "session table full: evicting a session of %s, which holds the most open sessions (%u)", who,
       most);
  if (!expireSession(*victim, "evicted")) return nullptr;
  ++stats_.sessionsEvicted;
  return victim;
}

bool UploadEngine::removeInBackground(const SessionId& id) {
  for (int i = 0; i < kBackgroundOps; ++i) {
    if (!background_[i].busy) {
      formatPartialPath(id, backgroundPath_[i]);
      background_[i].busy = true;
      storage_.remove(background_[i], backgroundPath_[i]);
      return true;
    }
  }
  return false;
}

void UploadEngine::onStorageDone(StorageOp& op) {
  op.busy = false;
  if (!op.status.isOk()) logf(LogLevel::Warn, "deleting expired session data: %s", op.status.message());
}

// A session that never received a byte expires after idle-session-timeout, any other after
// session-timeout (whichever is shorter).
uint64_t UploadEngine::expiryLimitMs(const Session& s) const {
  if (s.state == SessionState::Open && s.haveBytes == 0) return std::min(idleSessionTimeoutMs_, sessionTimeoutMs_);
  return sessionTimeoutMs_;
}

// Forgets `s` and deletes its data; false when that cannot be done now (journal buffer or background
// operations full: the caller tries again later).
bool UploadEngine::expireSession(Session& s, const char* why) {
  // Forget it in the journal first (no need to wait: if that record is lost, recovery expires the
  // session again), then delete its data.
  JournalRecord rec;
  rec.type = RecordType::Forget;
  rec.id = s.id;
  bool open = s.state == SessionState::Open;
  if (open && !backgroundOpFree()) return false;
  if (!journal_.append(rec, nullptr).isOk()) return false;
  if (keepsReply(s) && !holdsReplyOfRecord(s.id)) removeReplyInBackground(s.id);
  book_.forgetSession(s.id);
  if (open) {
    closeFile(s);
    removeInBackground(s.id);
    char id[kSessionIdTextBytes];
    formatSessionId(s.id, id);
    logf(LogLevel::Info, "session %.38s %s; in-progress data deleted", id, why);
  }
  sessions_.erase(&s);
  return true;
}

void UploadEngine::sweep() {
  const uint64_t now = clock_.nowMs();
  for (uint32_t i = 0; i < highWater_; ++i) {
    Session& s = sessions_.slotAt(i);
    if (s.state == SessionState::Free || s.busy) continue;
    if (now - s.lastActivityMs < expiryLimitMs(s)) continue;
    if (!expireSession(s, s.haveBytes == 0 && s.state == SessionState::Open ? "expired (never received a byte)"
                                                                              : "expired")) {
      continue;
    }
    ++stats_.sessionsExpired;
  }
  expireDeliveries();
  publishEnded();
}

void UploadEngine::expireDeliveries() {
  if (farm_ != nullptr) return book_.expire(clock_.wallSeconds(), retentionSeconds_, sessions_);
  // A single node's forgotten deliveries take their retained reply files with them.
  replyScratch_.clear();
  book_.expire(clock_.wallSeconds(), retentionSeconds_, sessions_, &replyScratch_);
  for (const SessionId& id : replyScratch_) {
    if (!removeReplyInBackground(id)) {
      logf(LogLevel::Debug, "a forgotten delivery's reply file stays until the next start: background deletions are busy");
    }
  }
}

bool UploadEngine::holdsReplyOfRecord(const SessionId& id) const {
  if (farm_ != nullptr) return false;  // a farm keeps small replies in etcd instead
  const DeliveryInfo* d = book_.endedFor(id);
  return d != nullptr && d->replySession == id && servesReplyFile(*d);
}

std::unordered_set<SessionId, SessionIdHash> UploadEngine::repliesOfRecord() const {
  std::unordered_set<SessionId, SessionIdHash> ids;
  if (farm_ != nullptr) return ids;
  for (const auto& [txid, d] : book_.deliveries) {
    if (servesReplyFile(d)) ids.insert(d.replySession);
  }
  return ids;
}

const DeliveryInfo* UploadEngine::findDelivery(std::string_view txid) const { return book_.find(txid); }

}  // namespace bitsd
