// The request flows of the upload engine, one object per flow: CreateFlow (Create-Session),
// FragmentFlow (a Fragment's body, data sync and Progress record), CommitFlow (the upload to its
// destination, then Committed), CloseFlow (Close/Cancel-Session), DeliveryFlow (the hand-off to the
// server application) and ReplyFlow (GET/HEAD of a reply URL). An Exchange holds at most one of
// them at a time (Exchange::flow_, a std::variant), and each flow keeps its own state and the one
// completion it waits for (`wait_`): a storage, journal, notifier or password-check completion
// reaches only the flow of its exchange that issued it, and a completion its flow does not wait
// for is logged and dropped. A flow that hands over to the next (Fragment -> Commit or Delivery)
// replaces itself in the variant and returns at once: after that call it touches nothing of its own.
//
// Implementations: core/flow_create.cc, flow_fragment.cc, flow_commit.cc (Commit and Close),
// flow_delivery.cc, flow_farm.cc (the farm's part of a delivery, FarmHandoff), flow_reply.cc,
// flow_forward.cc (ForwardFlow: farm mode, a session another node owns). The engine (core/upload_engine.cc) admits the request, resolves
// its destination and starts the flow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/delivery_book.h"
#include "core/http_reply.h"
#include "core/journal_format.h"
#include "core/ports.h"
#include "core/request_parser.h"
#include "core/protocol.h"
#include "core/status.h"

namespace bitsd {

class Exchange;
class UploadEngine;
struct Session;
enum class Flow : uint8_t { Continue, Wait };

// The BG_E_* code for a failed storage or journal operation.
uint32_t hresultFor(const Status& s);

// The password check before any flow runs (authentication on).
struct Authenticating {};

class CreateFlow {
 public:
  // Checks the destination and creates the in-progress file (one storage step), then journals the
  // session (farm mode: then records this node as its owner in the farm).
  static Flow start(UploadEngine& e, Exchange& ex);
  void onStorage(UploadEngine& e, Exchange& ex);
  void onJournal(UploadEngine& e, Exchange& ex, const Status& st);
  void onFarm(UploadEngine& e, Exchange& ex);

 private:
  enum class Wait : uint8_t { None, CheckDestination, Journal, FarmOwner };
  void checked(UploadEngine& e, Exchange& ex);
  // True (and the answer formatted) when the checked destination, the journal or the table refuses
  // the session, or the in-progress file could not be created.
  bool refused(UploadEngine& e, Exchange& ex, const Status& st);
  void created(UploadEngine& e, Exchange& ex);
  void finishCreate(UploadEngine& e, Exchange& ex);
  void dropFile(UploadEngine& e, Exchange& ex);

  Wait wait_ = Wait::None;
  FileHandle newFile_ = kNoFile;  // the partial file, until the session exists
};

class FragmentFlow {
 public:
  static Flow start(UploadEngine& e, Exchange& ex, const RequestHead& head);
  Flow onBody(UploadEngine& e, Exchange& ex, std::span<const char> bytes);
  Flow onMessageComplete(UploadEngine& e, Exchange& ex);
  void onStorage(UploadEngine& e, Exchange& ex);
  void onJournal(UploadEngine& e, Exchange& ex, const Status& st);
  // The request ends: a fragment cut off mid-body (the connection died) rewinds the session's
  // digest to `have`, where the client's retry starts.
  void release(Session& s) const;
  // For a digest checkpoint while this fragment holds the session: the state its first write
  // started from (and at which length), when `hash` may run ahead of the durable bytes.
  bool hashing() const { return hashing_; }
  const Sha256State* snapshot(uint64_t* at) const {
    *at = hashSnapAt_;
    return hashSnapValid_ ? &hashSnap_ : nullptr;
  }

 private:
  enum class Wait : uint8_t { None, OpenFile, Write, Truncate, Sync, Journal };
  Flow issueWrite(UploadEngine& e, Exchange& ex);
  void written(UploadEngine& e, Exchange& ex, const Status& st);
  Flow journalProgress(UploadEngine& e, Exchange& ex);

  Wait wait_ = Wait::None;
  bool writing_ = false;           // body bytes go to the file
  bool writeFailed_ = false;
  bool hashing_ = false;           // the write in flight also feeds the session's SHA-256
  uint64_t skipBytes_ = 0;         // leading body bytes already stored (overlap)
  uint64_t writeOffset_ = 0;       // file offset of the next new byte
  uint64_t journaledTo_ = 0;       // `have` that the pending Progress record states
  std::span<const char> pending_;  // body bytes being written
  // The session's SHA-256 state as it was at `have` before this fragment's first write.
  bool hashSnapValid_ = false;
  uint64_t hashSnapAt_ = 0;
  Sha256State hashSnap_{};
};

class CommitFlow {
 public:
  // The upload is complete and no application takes it: link or rename it to its destination.
  static Flow start(UploadEngine& e, Exchange& ex);
  void onStorage(UploadEngine& e, Exchange& ex);
  void onJournal(UploadEngine& e, Exchange& ex, const Status& st);

 private:
  enum class Wait : uint8_t { None, Link, Unlink, Journal };
  void linked(UploadEngine& e, Exchange& ex);
  void commitDone(UploadEngine& e, Exchange& ex);

  Wait wait_ = Wait::None;
};

class CloseFlow {
 public:
  // At the head: holds the session. At message end: journals Closed, then deletes the data of an
  // incomplete upload.
  static Flow start(UploadEngine& e, Exchange& ex, Session& s);
  Flow onMessageComplete(UploadEngine& e, Exchange& ex);
  void onStorage(UploadEngine& e, Exchange& ex);
  void onJournal(UploadEngine& e, Exchange& ex, const Status& st);

 private:
  enum class Wait : uint8_t { None, Journal, Remove };
  Wait wait_ = Wait::None;
  bool incomplete_ = false;  // the upload was incomplete: its data goes
};

// What the application answered (or the journal says it answered) for a transaction.
struct DeliveryOutcome {
  uint16_t status = 0;
  uint32_t hresult = 0;
  uint8_t flags = 0;
  uint64_t replyBytes = 0;
  SessionId replySession{};
};

class DeliveryFlow;

// The farm's part of a hand-off (farm mode, UploadEngine::farm() set; core/flow_farm.cc): the
// delivered-transaction record in the farm's shared store, around the local one. DeliveryFlow
// calls it at two points: once DeliveryBegan is durable (claim, then the POST or an answer from
// the shared record), and once the application's answer (and copy) is in hand (record "ended",
// fenced by the claim's revision, then DeliveryEnded). See docs/DESIGN.md, "The farm hand-off".
class FarmHandoff {
 public:
  static constexpr size_t kTokenBytes = 32;  // 16 random bytes as hex
  // DeliveryBegan is durable: claim the transaction in the farm (or reuse the token of a claim
  // whose answer was lost). Wait: a farm operation is in flight; the flow waits for it.
  void claim(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  // A retry of a final fragment whose POST was answered but whose "ended" did not reach the farm:
  // record it now, with the answer and the fence kept in the book (no POST).
  void endPending(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const FarmPending& p);
  // The application's answer (and copy) is in hand: record "ended" in the farm.
  void end(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  void onFarm(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  void onStorage(UploadEngine& e, Exchange& ex, DeliveryFlow& d);

 private:
  enum class Step : uint8_t { None, Claim, TakeOver, End, ReplyCreate, ReplyWrite, ReplySync };
  void claimed(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  void ended(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  void takeOver(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const char* why);
  void answerFromRecord(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  void replyWritten(UploadEngine& e, Exchange& ex, DeliveryFlow& d);
  void unavailable(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const char* why);
  void busy(UploadEngine& e, Exchange& ex, DeliveryFlow& d, const char* why);
  void issue(Exchange& ex, DeliveryFlow& d, Step step);
  std::string_view token() const { return std::string_view(token_, kTokenBytes); }

  Step step_ = Step::None;
  int64_t revision_ = 0;        // the revision our claim (or takeover) was put at: end()'s fence
  FileHandle replyFile_ = kNoFile;  // the inline reply being written to this session's reply file
  uint64_t replyAt_ = 0;            // ... and how much of it is written
  char token_[kTokenBytes] = {};
};

class DeliveryFlow {
 public:
  // The upload is complete and notify-type is set (BITS-UPLOAD.md §5, §8).
  static Flow start(UploadEngine& e, Exchange& ex);
  void onJournal(UploadEngine& e, Exchange& ex, const Status& st);
  void onNotify(UploadEngine& e, Exchange& ex);
  void onStorage(UploadEngine& e, Exchange& ex);
  void onFarm(UploadEngine& e, Exchange& ex);
  // The request ends: the transaction id is no longer being delivered.
  void release(UploadEngine& e);

 private:
  friend class FarmHandoff;
  enum class Wait : uint8_t { None, JournalBegan, Notify, CopyLink, JournalEnded, RemoveRequest, Farm, FarmStorage };
  Flow begin(UploadEngine& e, Exchange& ex);
  void beginNotify(UploadEngine& e, Exchange& ex);
  void copied(UploadEngine& e, Exchange& ex, const Status& st);
  // The answer is in hand: record it in the farm first (farm mode), then journal DeliveryEnded.
  void answered(UploadEngine& e, Exchange& ex);
  bool journalEnded(UploadEngine& e, Exchange& ex);  // false: refused, the answer is formatted
  void transient(UploadEngine& e, Exchange& ex, int status, uint32_t code, ErrorContext ctx, const char* why);
  // The retryable answer (503 + Retry-After, ...) without counting a notification failure.
  void retryLater(UploadEngine& e, Exchange& ex, int status, uint32_t code, ErrorContext ctx);
  std::string_view txid() const { return std::string_view(txid_, txidLen_); }

  Wait wait_ = Wait::None;
  bool delivering_ = false;  // txid_ is in the delivered-ID book's in-flight set
  DeliveryOutcome outcome_;
  FarmHandoff farm_;
  uint16_t txidLen_ = 0;
  char txid_[kMaxTxidBytes];
};

// A reply URL's path: ".../BITS-Sessions/Replies/<id>/responsefile.bin" (query ignored).
bool isReplyTarget(std::string_view target);

class ReplyFlow {
 public:
  // GET and HEAD on a reply URL (§5.4, §10.1): the head.
  static Flow start(UploadEngine& e, Exchange& ex, const RequestHead& head);
  // GET: the next part of the body, read from the reply file through Storage into `buf`.
  Flow read(UploadEngine& e, Exchange& ex, std::span<char> buf);
  void onStorage(UploadEngine& e, Exchange& ex);
  // The request ends: the reply file is closed.
  void release(UploadEngine& e);
  bool sendsFile() const { return sendFile_; }
  uint64_t fileOffset() const { return fileOffset_; }
  // The body's length: the range's bytes, or with several ranges the whole multipart body.
  uint64_t fileLength() const { return fileLength_; }
  std::span<const char> chunk() const { return chunk_; }

 private:
  enum class Wait : uint8_t { None, Open, Read };
  static constexpr size_t kPartTextBytes = 256;
  void issueRead(UploadEngine& e, Exchange& ex);
  void makeBoundary(const SessionId& sid);
  size_t partText(size_t i, char (&out)[kPartTextBytes]) const;

  // Several ranges (multipart/byteranges): the parts in order, the one being sent, and whether its
  // delimiter and head (textPos_ bytes of it sent) or its bytes are next.
  ReplyRange ranges_[kMaxReplyRanges];
  uint8_t rangeCount_ = 0;
  uint8_t part_ = 0;
  uint8_t boundaryLen_ = 0;
  bool inText_ = false;
  uint16_t textPos_ = 0;
  uint64_t totalBytes_ = 0;
  char boundary_[48];

  Wait wait_ = Wait::None;
  bool sendFile_ = false;
  uint64_t fileOffset_ = 0;
  uint64_t fileLength_ = 0;
  FileHandle file_ = kNoFile;
  uint64_t readAt_ = 0;           // file offset of the next byte to read
  std::span<char> buf_;           // the host's buffer for the read in flight
  std::span<const char> chunk_;   // the bytes the last read brought (empty: failed or short)
};

// Farm mode (docs/FARMS.md, "Forwarding"): a Fragment, Close/Cancel-Session or reply download for a
// session this node's table does not have. It asks the farm who owns the session: another node that
// is live -> the host proxies the request there (Exchange::forwardTo(), the owner's peer URL); no
// record, its node gone, or this node -> the answer as today (500 BG_E_SESSION_NOT_FOUND, 404 for a
// reply download); the farm unavailable, or this node not live -> 503 + Retry-After (BG_E busy).
class ForwardFlow {
 public:
  // The request may be forwarded: farm mode, and not itself forwarded by another node (a forwarded
  // request is never forwarded again, so two nodes that disagree cannot bounce it).
  static bool applies(const UploadEngine& e, const RequestHead& head);
  // `reply`: a GET/HEAD of a reply URL (its misses are 404).
  static Flow start(UploadEngine& e, Exchange& ex, const SessionId& id, bool reply);
  void onFarm(UploadEngine& e, Exchange& ex);
  // The decision was to forward: the peer URL is in the exchange (Exchange::forwardTo()).
  bool forwarding() const { return urlLen_ > 0; }
  uint32_t urlLength() const { return urlLen_; }

 private:
  void notFound(UploadEngine& e, Exchange& ex);

  bool waiting_ = false;  // lookupSession in flight
  bool reply_ = false;
  uint32_t urlLen_ = 0;   // forwarding: the peer URL's length (in Exchange::partial_)
};

}  // namespace bitsd
