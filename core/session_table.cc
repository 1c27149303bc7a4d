#include "core/session_table.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace bitsd {

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
