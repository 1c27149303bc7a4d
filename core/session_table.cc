// Owns the preallocated session table: lookup by id, insert, erase, slots (core/session_table.h).
#include "core/session_table.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace bitsd {

Party partyOfAddress(const ClientAddress& a) {
  Party p;
  auto be = [&](int from, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = v << 8 | a.bytes[from + i];
    return v;
  };
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (a.family == 4) {
    p.kind = Party::Ipv4;
    p.value = be(0, 4);
  } else if (a.family == 6 && std::memcmp(a.bytes, kMapped, sizeof kMapped) == 0) {
    p.kind = Party::Ipv4;
    p.value = be(12, 4);
  } else if (a.family == 6) {
    p.kind = Party::Ipv6Prefix;
    p.value = be(0, 8);
  }
  return p;
}

size_t formatPartyAddress(const Party& p, char* out) {
  int n = 0;
  if (p.kind == Party::Ipv4) {
    n = std::snprintf(out, kMaxPartyTextBytes, "@%u.%u.%u.%u", static_cast<unsigned>(p.value >> 24 & 0xff),
                      static_cast<unsigned>(p.value >> 16 & 0xff), static_cast<unsigned>(p.value >> 8 & 0xff),
                      static_cast<unsigned>(p.value & 0xff));
  } else if (p.kind == Party::Ipv6Prefix) {
    n = std::snprintf(out, kMaxPartyTextBytes, "@%x:%x:%x:%x::/64", static_cast<unsigned>(p.value >> 48 & 0xffff),
                      static_cast<unsigned>(p.value >> 32 & 0xffff), static_cast<unsigned>(p.value >> 16 & 0xffff),
                      static_cast<unsigned>(p.value & 0xffff));
  }
  if (n <= 0) {
    out[0] = '\0';
    return 0;
  }
  return static_cast<size_t>(n);
}

bool parsePartyAddress(std::string_view t, Party* out) {
  if (t.size() < 2 || t[0] != '@') return false;
  t.remove_prefix(1);
  const bool v6 = t.size() > 5 && t.substr(t.size() - 5) == "::/64";
  if (v6) t.remove_suffix(5);
  const char sep = v6 ? ':' : '.';
  const int groups = 4, base = v6 ? 16 : 10, maxDigits = v6 ? 4 : 3;
  const uint64_t maxGroup = v6 ? 0xffff : 255;
  uint64_t value = 0;
  for (int g = 0; g < groups; ++g) {
    uint64_t x = 0;
    int digits = 0;
    while (!t.empty() && t[0] != sep) {
      char c = t[0];
      int d = c >= '0' && c <= '9' ? c - '0' : (base == 16 && c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      if (d < 0 || ++digits > maxDigits) return false;
      x = x * base + static_cast<uint64_t>(d);
      t.remove_prefix(1);
    }
    if (digits == 0 || x > maxGroup) return false;
    value = value << (v6 ? 16 : 8) | x;
    if (g + 1 < groups) {
      if (t.empty() || t[0] != sep) return false;
      t.remove_prefix(1);
    }
  }
  if (!t.empty()) return false;
  out->kind = v6 ? Party::Ipv6Prefix : Party::Ipv4;
  out->value = value;
  return true;
}

SessionTable::~SessionTable() {
  if (bulk_ != nullptr) {
    if (sessions_ != nullptr) bulk_->release(sessions_, sessionsBytes_);
    if (paths_ != nullptr) bulk_->release(paths_, pathsBytes_);
  } else {
    std::free(sessions_);
    std::free(paths_);
  }
  std::free(index_);
  std::free(freeList_);
}

Status SessionTable::init(uint32_t capacity, uint32_t pathBytes, BulkAllocator* bulk) {
  size_t indexSize = 16;
  while (indexSize < static_cast<size_t>(capacity) * 2) indexSize <<= 1;
  bulk_ = bulk;
  sessionsBytes_ = static_cast<size_t>(capacity) * sizeof(Session);
  pathsBytes_ = static_cast<size_t>(capacity) * pathBytes;
  if (bulk != nullptr) {
    sessions_ = static_cast<Session*>(bulk->allocateZeroed(sessionsBytes_));
    paths_ = static_cast<char*>(bulk->allocateZeroed(pathsBytes_));
  } else {
    sessions_ = static_cast<Session*>(std::calloc(capacity, sizeof(Session)));
    paths_ = static_cast<char*>(std::calloc(capacity, pathBytes));
  }
  index_ = static_cast<int32_t*>(std::malloc(indexSize * sizeof(int32_t)));
  freeList_ = static_cast<uint32_t*>(std::malloc(capacity * sizeof(uint32_t)));
  if (sessions_ == nullptr || paths_ == nullptr || index_ == nullptr || freeList_ == nullptr) {
    return Status(Code::Exhausted, "out of memory for the session table");
  }
  for (size_t i = 0; i < indexSize; ++i) index_[i] = -1;
  // Hand out low slots first so a lightly used table touches few pages.
  for (uint32_t i = 0; i < capacity; ++i) freeList_[i] = capacity - 1 - i;
  freeCount_ = capacity;
  capacity_ = capacity;
  pathBytes_ = pathBytes;
  indexMask_ = indexSize - 1;
  return Status::ok();
}

size_t SessionTable::indexOf(const SessionId& id) const {
  uint64_t h;
  std::memcpy(&h, id.bytes.data(), sizeof h);
  return static_cast<size_t>(h ^ (h >> 29)) & indexMask_;
}

Session* SessionTable::find(const SessionId& id) {
  for (size_t i = indexOf(id);; i = (i + 1) & indexMask_) {
    int32_t slot = index_[i];
    if (slot < 0) return nullptr;
    if (sessions_[slot].id == id) return &sessions_[slot];
  }
}

Session* SessionTable::insert(const SessionId& id, std::string_view path) {
  if (freeCount_ == 0 || path.size() > pathBytes_) return nullptr;
  uint32_t slot = freeList_[--freeCount_];
  Session* s = new (&sessions_[slot]) Session();
  s->id = id;
  s->state = SessionState::Open;
  s->slot = slot;
  s->pathLen = static_cast<uint32_t>(path.size());
  std::memcpy(paths_ + static_cast<size_t>(slot) * pathBytes_, path.data(), path.size());
  size_t i = indexOf(id);
  while (index_[i] >= 0) i = (i + 1) & indexMask_;
  index_[i] = static_cast<int32_t>(slot);
  ++size_;
  return s;
}

void SessionTable::erase(Session* s) {
  size_t i = indexOf(s->id);
  while (index_[i] != static_cast<int32_t>(s->slot)) i = (i + 1) & indexMask_;
  // Backward-shift deletion keeps every probe chain unbroken without tombstones in the index.
  size_t hole = i;
  for (size_t j = (hole + 1) & indexMask_; index_[j] >= 0; j = (j + 1) & indexMask_) {
    size_t home = indexOf(sessions_[index_[j]].id);
    // Move entry j into the hole unless its home lies cyclically in (hole, j].
    bool homeInRange = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!homeInRange) {
      index_[hole] = index_[j];
      hole = j;
    }
  }
  index_[hole] = -1;
  s->state = SessionState::Free;
  freeList_[freeCount_++] = s->slot;
  --size_;
}

}  // namespace bitsd
