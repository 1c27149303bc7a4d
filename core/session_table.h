// Fixed-capacity table of upload sessions, allocated once at start-up (STYLE.md §5). Lookup by
// session id through an open-addressing index (linear probing, backward-shift deletion). The ids
// are CSPRNG output, so their first bytes are already a good hash.
//
// Storage is calloc'ed: pages the OS never touched stay out of RSS until a slot is first used.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/ports.h"
#include "core/protocol.h"

namespace bitsd {

enum class SessionState : uint8_t {
  Free,      // slot unused
  Open,      // receiving fragments
  Complete,  // last byte received and committed; answers repeats with the final Ack
  Closed,    // tombstone after Close-Session/Cancel-Session: repeats answer 200
};

class Exchange;

struct Session {
  SessionId id;
  Exchange* holder = nullptr;  // the request holding it busy (not owned)
  SessionState state = SessionState::Free;
  bool busy = false;          // an exchange is writing/committing for this session
  bool totalKnown = false;
  bool committed = false;     // the upload reached its destination (stays true after Close)
  FileHandle file = kNoFile;  // in-progress file, when open
  uint64_t totalBytes = 0;
  uint64_t haveBytes = 0;     // contiguous bytes durably stored from offset 0
  uint64_t journaledBytes = 0;  // the `have` that the journal holds durably
  uint64_t lastActivityMs = 0;
  bool hashValid = false;     // `hash` covers exactly [0, hashedBytes)
  uint64_t hashedBytes = 0;
  uint8_t sha256[32] = {};    // of the committed content
  bool digestKnown = false;   // sha256 holds the content's digest
  bool handedOff = false;     // the application has answered for this upload (DeliveryEnded)
  int32_t owner = -1;         // authentication on: the user who created it (Authenticator id)
  Sha256State hash;           // running SHA-256 of the bytes written so far
  uint32_t pathLen = 0;
  uint32_t slot = 0;
};

class SessionTable {
 public:
  SessionTable() = default;
  ~SessionTable();
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // Allocates everything for `capacity` sessions whose paths hold up to `pathBytes` bytes, through
  // `bulk` for the two large arrays (calloc when null).
  Status init(uint32_t capacity, uint32_t pathBytes, BulkAllocator* bulk = nullptr);

  Session* find(const SessionId& id);
  // nullptr when full. The new session is Open with the given path.
  Session* insert(const SessionId& id, std::string_view path);
  void erase(Session* s);

  std::string_view path(const Session& s) const {
    return std::string_view(paths_ + static_cast<size_t>(s.slot) * pathBytes_, s.pathLen);
  }
  uint32_t size() const { return size_; }
  uint32_t capacity() const { return capacity_; }
  // Slot i (0 <= i < capacity); check state != Free.
  Session& slotAt(uint32_t i) { return sessions_[i]; }

 private:
  size_t indexOf(const SessionId& id) const;

  Session* sessions_ = nullptr;
  char* paths_ = nullptr;
  BulkAllocator* bulk_ = nullptr;
  size_t sessionsBytes_ = 0;
  size_t pathsBytes_ = 0;
  int32_t* index_ = nullptr;  // -1 = empty, else slot number
  uint32_t* freeList_ = nullptr;
  uint32_t freeCount_ = 0;
  uint32_t capacity_ = 0;
  uint32_t pathBytes_ = 0;
  uint32_t size_ = 0;
  size_t indexMask_ = 0;
};

}  // namespace bitsd
