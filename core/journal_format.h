// The bitsd journal: an append-only log of sessions and delivered transaction ids.
//
// FILE LAYOUT. All integers are little-endian, whatever the host's byte order; nothing is ever
// written as a raw struct. The file is a sequence of 512-byte blocks.
//
//   Block 0, the file header (only the first 32 bytes are used; the rest is zero):
//     0   8  magic "BITSJRNL"
//     8   4  format version, currently 1
//     12  4  salt: random, new for every file (each compaction writes a new file)
//     16  8  sequence number of the first record
//     24  4  block size, 512
//     28  4  CRC-32C of bytes 0..27
//
//   From block 1 on, records, back to back:
//     0   4  payload length L (at most kMaxPayloadBytes)
//     4   4  CRC-32C of: salt (4 bytes) || sequence (8) || type (1) || payload (L)
//     8   8  sequence number: the header's first sequence for the first record, then +1 each
//     16  1  type
//     17  L  payload
//
//   Every flush (group commit) ends with a Pad record that fills the rest of its last block, so each
//   flush writes whole, aligned blocks and the next one starts on a block boundary. A Pad's payload
//   is zeros; if fewer than 17 bytes remain in the block, the Pad runs on to the end of the next one.
//
// RECORD PAYLOADS (id = 16-byte session id; wall = Unix seconds):
//     0 Pad            zeros
//     1 SessionCreated id, wall (8), path length (2), path (relative to the upload root)
//     2 Progress       id, wall, total (8), have (8), digest-state length (1), digest state (0..104):
//                      `have` contiguous bytes are durable on disk; the digest checkpoint below
//                      (length 0 when unknown), so recovery reads back at most its short tail
//     3 Committed      id, wall, size (8), SHA-256 of the content (32): the file is at its destination
//     4 Closed         id, wall, cancelled (1): tombstone after Close-Session / Cancel-Session
//     5 Forget         id: the session expired; forget it entirely
//     6 Delivered      wall, length (1), transaction id (1..255 bytes). Written by no current
//                      version (superseded by 8); replayed as an ended delivery with status 200
//     7 DeliveryBegan  id, wall, length (1), transaction id: the POST to the application for this
//                      upload is about to be sent (synced before it is)
//     8 DeliveryEnded  id, reply session id (16), wall, status (2), HRESULT (4), flags (1: bit 0 a
//                      reply file exists, bit 1 the upload was copied to its destination), reply
//                      size (8), txid length (1), txid, URL length (2), static reply URL (0..2200):
//                      the application's answer for this transaction; the reply file (if any) is
//                      `replies/<reply session id>` and was synced before this record
//     9 SessionOwner   id, length (1), owner (1..32): authentication on, the session belongs to
//                      this user; off, "@" and the client's address ("@198.51.100.7", or the IPv6
//                      /64 as "@2001:db8:0:1::/64"), which no user name can be (written with
//                      SessionCreated, in the same flush)
//
// DIGEST CHECKPOINT (a Progress record's digest state). 41 bytes: n (8), the number of bytes hashed,
// a multiple of 64 and at most `have`; the SHA-256 chaining value H0..H7 after those n bytes (8 x 4);
// the form, 1. It never holds upload data: SHA-256's chaining value covers whole 64-byte blocks
// only, and the `have - n` bytes after them (fewer than 64 as bitsd writes it) are re-read from the
// in-progress file at recovery. The 41st byte makes a bitsd older than this form (which expected
// 40 + (n mod 64) bytes) refuse the state and re-read the whole prefix rather than misread it.
// Older journals hold the state in the older form: 40 + (n mod 64) bytes, n = `have` not rounded,
// the 40 bytes as above, then the n mod 64 bytes of the unfinished block, which are upload data.
// Replay turns that form into this one (n rounded down, the block's bytes dropped: the same
// chaining value), and so does the encoder, so neither bitsd nor a compaction ever writes them
// again. A state in neither form reads as unknown (the digest is rebuilt from the file).
//
// READING. Replay checks the header, then reads records while each one is complete, fits the file,
// has a known type and a well-formed payload, matches its CRC under this file's salt, and carries
// the next sequence number. The first record that fails any check ends the journal: that is the
// normal ending after a torn write (power cut mid-flush), not an error. A stale record left in a
// reused region fails the salt or the sequence check, so it is never mistaken for a live one. Bytes
// after the end are reported and, at start-up, truncated away before anything new is appended.
//
// Replay is idempotent by design: records may be applied again (compaction can write a state into
// the new file that a pending record then repeats), so every record says "this is now true" rather
// than "change this".
//
// CODEC. journal_format.cc reads and writes these bytes only through the bounds-checked cursors of
// core/byte_cursor.h: each payload is written once as puts and once as the mirroring gets, and its
// size is what the puts count. What the records mean (the replay rules, JournalState, the
// compaction snapshot) is core/journal_model.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/protocol.h"

namespace bitsd {

inline constexpr size_t kJournalBlockBytes = 512;
inline constexpr size_t kJournalHeaderUsedBytes = 32;
inline constexpr size_t kRecordHeaderBytes = 17;
inline constexpr size_t kMaxPayloadBytes = 4200;
inline constexpr uint32_t kJournalVersion = 1;
inline constexpr size_t kMaxTxidBytes = 255;
inline constexpr size_t kMaxOwnerBytes = 32;  // = kMaxUserNameBytes (core/auth.h)
// The digest checkpoint (above): the chaining state as the Sha256 port exports it, then the form.
inline constexpr size_t kDigestChainBytes = 40;
inline constexpr size_t kDigestCheckpointBytes = 41;
inline constexpr uint8_t kDigestCheckpointForm = 1;

enum class RecordType : uint8_t {
  Pad = 0,
  SessionCreated = 1,
  Progress = 2,
  Committed = 3,
  Closed = 4,
  Forget = 5,
  Delivered = 6,
  DeliveryBegan = 7,
  DeliveryEnded = 8,
  SessionOwner = 9,
};
inline constexpr uint8_t kLastRecordType = 9;
inline constexpr size_t kMaxReplyUrlBytes = 2200;

// DeliveryEnded flags.
inline constexpr uint8_t kDeliveryHasReplyFile = 1;
inline constexpr uint8_t kDeliveryCopied = 2;

const char* recordTypeName(RecordType t);

struct JournalRecord {
  RecordType type = RecordType::Pad;
  SessionId id{};
  uint64_t wallSeconds = 0;
  uint64_t totalBytes = 0;  // Progress: total; Committed: size
  uint64_t haveBytes = 0;   // Progress
  uint8_t shaStateLen = 0;  // Progress: digest checkpoint (0 or kDigestCheckpointBytes once decoded)
  uint8_t shaState[104] = {};
  uint8_t sha256[32] = {};  // Committed
  bool cancelled = false;   // Closed
  std::string_view path;    // SessionCreated (a view; the encoder copies it)
  std::string_view txid;    // Delivered, DeliveryBegan, DeliveryEnded
  // DeliveryEnded
  SessionId replySession{};
  uint16_t status = 0;
  uint32_t hresult = 0;
  uint8_t flags = 0;
  uint64_t replyBytes = 0;
  std::string_view url;     // static reply URL (empty when the reply is a file or none)
  std::string_view owner;   // SessionOwner
};

struct JournalHeader {
  uint32_t version = kJournalVersion;
  uint32_t salt = 0;
  uint64_t firstSeq = 1;
};

// Writes block 0 (kJournalBlockBytes bytes) into `out`.
void encodeJournalHeader(const JournalHeader& h, uint8_t* out);

// Encodes one record at `out` (room for `cap` bytes). Returns its size, or 0 if it does not fit or
// the record is invalid (path or txid too long).
size_t encodeRecord(const JournalRecord& r, uint32_t salt, uint64_t seq, uint8_t* out, size_t cap);

// Gives the encoded record at `rec` (`avail` bytes from it) a new salt and sequence number: rewrites
// its sequence and CRC; the payload does not change. Returns the record's size, 0 if `avail` does
// not hold a whole record.
size_t restampRecord(uint8_t* rec, size_t avail, uint32_t salt, uint64_t seq);
// The sequence number of the encoded record at the start of `rec`; false if its header is cut short.
bool recordSequence(std::span<const uint8_t> rec, uint64_t* seq);

// Size of the Pad record that takes `offset` to the next block boundary (0 if already aligned).
size_t padBytesFor(uint64_t offset);
// Encodes that Pad record at `out`.
size_t encodePad(uint64_t offset, uint32_t salt, uint64_t seq, uint8_t* out, size_t cap);

enum class ReplayStatus { Ok, Empty, NotAJournal, UnsupportedVersion, CorruptHeader };
const char* replayStatusText(ReplayStatus s);

class ReplaySink {
 public:
  virtual void onRecord(const JournalRecord& r, uint64_t seq, uint64_t offset) = 0;

 protected:
  ~ReplaySink() = default;
};

struct ReplayResult {
  ReplayStatus status = ReplayStatus::Ok;
  JournalHeader header;
  uint64_t records = 0;      // valid records, pads included
  uint64_t validEnd = 0;     // offset just past the last valid record
  uint64_t nextSeq = 0;      // sequence number for the next record
  uint64_t tailBytes = 0;    // bytes after validEnd (a torn or stale tail)
  // Progress records whose digest state, as stored, held more than a checkpoint: the unfinished
  // block's bytes of a journal written before digest checkpoints (upload data), or a state in no
  // known form. Replay drops them; a compaction removes them from the file.
  uint64_t digestStatesRewritten = 0;
  const char* stopReason = "end of file";
};

// Reads a whole journal image. Never reads outside `bytes`; any content is safe to pass.
ReplayResult replayJournal(std::span<const uint8_t> bytes, ReplaySink* sink);

// Brings a Progress record's digest state (`state`, `*len` bytes; room for 104) into the checkpoint
// form for a session with `have` durable bytes: keeps a checkpoint, converts the older form (drops
// its block bytes), and makes anything else unknown (*len = 0). Every byte past *len is zeroed.
void normalizeDigestCheckpoint(uint8_t* state, uint8_t* len, uint64_t have);
// The number of bytes a checkpoint (normalized, *len == kDigestCheckpointBytes) has hashed.
uint64_t digestCheckpointBytes(const uint8_t* state);

// Little-endian helpers, shared with the tests.
void putLe(uint8_t* p, uint64_t v, int bytes);
uint64_t getLe(const uint8_t* p, int bytes);

}  // namespace bitsd
