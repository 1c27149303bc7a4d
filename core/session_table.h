// Fixed-capacity table of upload sessions, allocated once at start-up (STYLE.md §5). Lookup by
// session id through an open-addressing index (linear probing, backward-shift deletion). The ids
// are CSPRNG output, so their first bytes are already a good hash.
//
// Storage is calloc'ed: pages the OS never touched stay out of RSS until a slot is first used.
#pragma once

#include <cstddef>
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

// The client's address as the platform saw it (portable: no sockaddr in core).
struct ClientAddress {
  uint8_t family = 0;      // 0 unknown, 4 IPv4, 6 IPv6
  uint8_t bytes[16] = {};  // network byte order; IPv4 uses the first 4
};

// Who a session counts against for max-sessions-per-user: the authenticated user, or, with
// authentication off, the client's IPv4 address or the /64 prefix of its IPv6 address (one host
// or one site's LAN usually gets a whole /64, so its addresses are one party).
struct Party {
  enum Kind : uint8_t { None = 0, User = 1, Ipv4 = 4, Ipv6Prefix = 6 };
  uint8_t kind = None;
  uint64_t value = 0;  // user id; IPv4 address; the first 64 bits of the IPv6 address
  bool operator==(const Party&) const = default;
  bool known() const { return kind != None; }
};
// An IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack listener) counts as IPv4.
Party partyOfAddress(const ClientAddress& a);
inline constexpr size_t kMaxPartyTextBytes = 26;  // "@ffff:ffff:ffff:ffff::/64" plus a NUL
// The text a SessionOwner journal record holds for an address party: "@198.51.100.7" or
// "@2001:db8:0:1::/64" ('@' never starts a user name). Writes a NUL-terminated string into `out`
// (kMaxPartyTextBytes) and returns its length; 0 (and "") for a user or no party.
size_t formatPartyAddress(const Party& p, char* out);
// The reverse, for exactly the forms formatPartyAddress writes; false for anything else.
bool parsePartyAddress(std::string_view text, Party* out);

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
  Party party;                // who it counts against for max-sessions-per-user
  Sha256State hash;           // running SHA-256 of the bytes written so far
  // For the admin status page (core/admin.h): when it was created (or restored), from where, and
  // its recent rate (an EWMA updated at each acked fragment).
  uint64_t createdMs = 0;
  uint64_t rateAtMs = 0;
  double rateBps = 0;
  ClientAddress client;
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
  const Session& slotAt(uint32_t i) const { return sessions_[i]; }

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
