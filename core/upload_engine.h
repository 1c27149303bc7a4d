// The BITS upload protocol as an I/O-free state machine (STYLE.md §2). The connection layer feeds it
// parsed requests, body bytes (views into its read buffer) and "now"; the engine decides, drives
// storage through the Storage seam, and leaves an Ack in the Exchange.
//
// Per-request flow, for the connection that owns an Exchange:
//   onHeaders(ex, head)        -> Continue | Wait   (Create-Session checks the disk; Fragment opens its file)
//   onBody(ex, bytes)*         -> Continue | Wait   (Wait while the bytes are written, zero-copy:
//                                                   the caller keeps `bytes` alive and stops reading)
//   onMessageComplete(ex)      -> Continue | Wait   (data sync, commit, Close/Cancel cleanup)
//   ex.response() is then the Ack to send; finish(ex) releases the request's hold on its session.
// Wait means the engine calls host.onExchangeReady(ex) exactly once when the step is done; it never
// does so from inside the call that returned Wait. If the connection dies, the host calls finish(ex)
// once !ex.inFlight() (a commit in progress always runs to its end, with nobody to answer).
//
// Durability order for every Fragment: data written, then fdatasync, then `have` advances, then a
// Progress record is made durable in the journal, then the Ack. At the last byte: commit by one
// atomic rename (or link, when overwrites are off, so an existing destination is never replaced)
// relative to the destination's directory, opened afresh below the root with no symlink followed,
// then fsync of that directory, then a durable Committed record, then the Ack.
// Create-Session and Close/Cancel-Session are journaled before their Acks too, so a restart never
// makes the client see BG_E_SESSION_NOT_FOUND for a session it was told about.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "core/admin.h"
#include "core/auth.h"
#include "core/delivery_book.h"
#include "core/farm.h"
#include "core/flows.h"
#include "core/journal.h"
#include "core/notify.h"
#include "core/ports.h"
#include "core/request_parser.h"
#include "core/response.h"
#include "core/session_table.h"
#include "core/settings.h"
#include "core/state_files.h"

namespace bitsd {

class Exchange;
class UploadEngine;

// Start-up reconciliation of journaled sessions with the files on disk (platform-implemented,
// blocking calls allowed: the loop is not serving yet).
struct RecoveryItem {
  SessionId id{};
  uint64_t haveBytes = 0;
  uint64_t totalBytes = 0;
  bool totalKnown = false;
  const char* partialPath = nullptr;
  const char* destPath = nullptr;
  // destPath is "<base>/<below>", the base being the root or a location's directory: its first
  // `destBaseBytes` bytes. Look the destination up below the base as the commit does (no symlink
  // followed), so a directory swapped for a symlink cannot make a file elsewhere count as committed.
  size_t destBaseBytes = 0;
  // Set when the session's hand-off to the application began but did not end: if the upload is
  // found at its destination, the application asked for the copy, and this reply file (if it
  // exists) holds its answer.
  const char* replyPath = nullptr;
};

enum class RecoveryAction {
  Keep,       // the partial file holds exactly the acked prefix (trimmed if it was longer)
  Drop,       // the data is gone: forget the session (the client starts over)
  Committed,  // the commit had happened before the crash: the file is at its destination
  SetHave,    // the partial file is shorter than the journal says: resume from `haveBytes`
};

struct RecoveryDecision {
  RecoveryAction action = RecoveryAction::Keep;
  uint64_t haveBytes = 0;
  bool replyExists = false;  // Committed with a replyPath: the reply file is there,
  uint64_t replyBytes = 0;   // this long
};

class RecoveryInspector {
 public:
  virtual RecoveryDecision inspect(const RecoveryItem& item) = 0;

 protected:
  ~RecoveryInspector() = default;
};

// Implemented by the connection that owns an Exchange.
class ExchangeHost {
 public:
  virtual void onExchangeReady(Exchange& ex) = 0;
  // The client's address as raw bytes (4: IPv4, 16: IPv6) into `out`; 0 when unknown. Failed
  // password checks are charged to it.
  virtual size_t clientAddress(uint8_t out[16]) const {
    (void)out;
    return 0;
  }
  // A newer request for the same session arrived while this one waits for body bytes from its
  // client (the connection probably died silently): drop the connection. The host must call
  // UploadEngine::finish(ex) before returning (it can: nothing is in flight).
  virtual void abandonExchange(Exchange& ex) = 0;

 protected:
  ~ExchangeHost() = default;
};

// Counters for the log and for tests.
struct EngineStats {
  uint64_t sessionsCreated = 0;
  uint64_t fragments = 0;
  uint64_t bytesWritten = 0;
  uint64_t commits = 0;
  uint64_t syncs = 0;
  uint64_t sessionsExpired = 0;
  uint64_t errors = 0;
  uint64_t diskFull = 0;
  uint64_t journalRefusals = 0;  // 503 because the journal was full
  uint64_t takeovers = 0;        // sessions taken from a stalled connection by a newer request
  uint64_t notifications = 0;    // POSTs to the application
  uint64_t deliveriesEnded = 0;  // DeliveryEnded records written (answers that count as delivered)
  uint64_t deliveriesReplayed = 0;  // final fragments answered from an earlier delivery of their id
  uint64_t notificationsRefused = 0;  // final fragments answered 503 because max-notifications were in flight
  uint64_t notifyFailures = 0;   // unreachable, malformed, timed out, or a transient status
  uint64_t replies = 0;          // GET/HEAD answers on reply URLs
  uint64_t quotaRefusals = 0;    // Create-Session answered 503: its party holds max-sessions-per-user
  uint64_t sessionsEvicted = 0;  // open sessions expired to make room for another party's (table full)
  uint64_t bytesReceived = 0;    // Fragment body bytes received (before overlap is skipped)
  // Farm mode (core/flow_farm.cc).
  uint64_t farmClaims = 0;       // claims of a transaction id in the farm
  uint64_t farmReplays = 0;      // final fragments answered from the farm's "ended" record (no POST)
  uint64_t farmTakeovers = 0;    // hand-offs taken over from a node that lost its lease (or an earlier life)
  uint64_t farmUnavailable = 0;  // 503: no live lease, or the farm could not be asked
  uint64_t forwarded = 0;        // farm mode: requests handed to the owner of their session (ForwardFlow)
  // Requests answered, by packet type (PacketType's value) and status (core/admin.h statusIndex),
  // counted once per request when finish() releases it.
  uint64_t requests[kPacketKinds][kStatusKinds] = {};
};

// Reads part of the acked prefix of an in-progress file at recovery, to bring its running SHA-256
// up to the acked length (the only time bitsd reads upload data back): the short tail after the
// journal's digest checkpoint, or the whole prefix when the checkpoint is unknown. Feeds the bytes
// [from, from + bytes) to `st`; false if the file does not hold them all. Platform-implemented; may
// block (start-up only).
class RecoveryHasher {
 public:
  virtual bool hashRange(const char* path, uint64_t from, uint64_t bytes, Sha256& sha, Sha256State& st) = 0;

 protected:
  ~RecoveryHasher() = default;
};

// Per-request state, embedded in the connection's request slot. Not copyable.
class Exchange final : public StorageCallback,
                       public JournalWaiter,
                       public NotifyCallback,
                       public AuthCallback,
                       public FarmCallback {
 public:
  static constexpr size_t kPathBufBytes = 4608;

  Exchange() = default;
  // The connection that owns this exchange now (request slots are pooled across connections).
  void setHost(ExchangeHost* host) { host_ = host; }
  // The client's address (kept across requests; the sessions it creates count against it when
  // authentication is off).
  void setPeer(const ClientAddress& peer) { peer_ = peer; }
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // After onHeaders returned Continue (or the host got onExchangeReady for it):
  // answer now, without reading the body, then close (a refused `Expect: 100-continue`).
  bool respondNow() const { return respondNow_; }
  // Send `100 Continue` before reading the body.
  bool expectContinue() const { return expectContinue_; }
  // The Ack, valid once the request is over (or respondNow()).
  std::string_view response() const { return std::string_view(response_, responseLen_); }
  bool closeAfterResponse() const { return close_; }
  bool inFlight() const { return op_.busy || journalWait_ || notify_.busy || auth_.busy || farm_.busy; }
  int status() const { return status_; }
  // onHeaders returned Wait for a password check that is not answered from memory (it may take
  // seconds under throttling): the host should hold nothing it can give back meanwhile.
  bool waitsForPasswordCheck() const { return std::holds_alternative<Authenticating>(flow_) && auth_.slow; }
  // After the response: read nothing more from this client for this long (a throttled password
  // check was refused with 503 and Retry-After). 0: carry on.
  uint32_t holdOffMs() const { return holdOffMs_; }
  // GET on a reply URL: after response(), send fileLength() bytes of the reply from fileOffset(),
  // read part by part with UploadEngine::readReply (filePath() names the file, for the log).
  bool sendsFile() const {
    const ReplyFlow* r = std::get_if<ReplyFlow>(&flow_);
    return r != nullptr && r->sendsFile();
  }
  const char* filePath() const { return partial_; }
  // For the access and error logs (core/access_log.h), valid until finish().
  PacketType packetType() const { return type_; }
  const SessionId* sessionId() const { return hasSessionId_ ? &sessionId_ : nullptr; }
  // The answer carried BITS-Error-Code (errorCode(); 0x0 on a 416, §10.1).
  bool hasErrorCode() const { return errorAnswered_; }
  uint32_t errorCode() const { return errorCode_; }
  // Why the request was refused, when the engine knows better than its status says (else null).
  const char* refusalReason() const { return reason_; }
  uint64_t fileOffset() const {
    const ReplyFlow* r = std::get_if<ReplyFlow>(&flow_);
    return r != nullptr ? r->fileOffset() : 0;
  }
  uint64_t fileLength() const {
    const ReplyFlow* r = std::get_if<ReplyFlow>(&flow_);
    return r != nullptr ? r->fileLength() : 0;
  }
  // After UploadEngine::readReply completed: the reply bytes it read (empty: the file is gone or
  // shorter than the head said; close the connection, the client retries).
  std::span<const char> replyChunk() const {
    const ReplyFlow* r = std::get_if<ReplyFlow>(&flow_);
    return r != nullptr ? r->chunk() : std::span<const char>();
  }
  // Farm mode, after onHeaders returned Continue (or onExchangeReady): not empty when the request
  // goes to the node that owns its session, at this URL (http:// or https://). The host then streams
  // the request and the answer through itself, calls neither onBody nor onMessageComplete, and
  // finish()es the exchange when both are over. Valid until finish().
  std::string_view forwardTo() const {
    const ForwardFlow* f = std::get_if<ForwardFlow>(&flow_);
    return f != nullptr && f->forwarding() ? std::string_view(partial_, f->urlLength()) : std::string_view();
  }

 private:
  friend class UploadEngine;
  friend class CreateFlow;
  friend class FragmentFlow;
  friend class CommitFlow;
  friend class CloseFlow;
  friend class DeliveryFlow;
  friend class FarmHandoff;
  friend class ReplyFlow;
  friend class ForwardFlow;

  // The completions of the operations below go to the flow in flow_ (UploadEngine::dispatch*).
  void onStorageDone(StorageOp& op) override;
  void onJournalDurable(const Status& status) override;
  void onNotifyDone(NotifyOp& op) override;
  void onAuthDone(AuthOp& op) override;
  void onFarmDone(FarmOp& op) override;
  void clear();

  ExchangeHost* host_ = nullptr;
  UploadEngine* engine_ = nullptr;
  // The request's I/O slots (one operation in flight on each at most), owned here so that their
  // addresses stay put while the flow in flow_ changes.
  StorageOp op_;
  bool journalWait_ = false;       // a journal record appended with this exchange as its waiter
  NotifyOp notify_;                // hand-off; notify_.result also holds a static reply URL
  AuthOp auth_;                    // credentials check
  FarmOp farm_;                    // the farm's shared record (farm mode)
  // The flow the request is in (monostate: none, or answered without one, e.g. Ping or an error).
  std::variant<std::monostate, Authenticating, CreateFlow, FragmentFlow, CommitFlow, CloseFlow, DeliveryFlow, ReplyFlow,
               ForwardFlow>
      flow_;

  // The request and its answer, whatever the flow.
  PacketType type_ = PacketType::Unknown;
  Session* session_ = nullptr;     // session this request holds busy
  SessionId sessionId_{};
  bool hasSessionId_ = false;
  bool failed_ = false;            // response decided early; the body is discarded
  bool respondNow_ = false;
  bool expectContinue_ = false;
  bool close_ = false;
  int status_ = 0;
  uint32_t errorCode_ = 0;         // the BITS-Error-Code answered (see errorAnswered_)
  bool errorAnswered_ = false;     // fail() answered with BITS-Error-Code
  const char* reason_ = nullptr;   // a static sentence for the error log (see refusalReason())
  // dest_ holds the destination path, NUL-terminated; the root-relative path (as the journal and
  // the session table keep it) is at dest_ + relOffset_: right after "<root>/", or after the NUL
  // when a location maps the path to its own directory (UploadEngine::resolveDestination).
  uint32_t relOffset_ = 0;
  uint32_t relLen_ = 0;
  const char* destBase_ = nullptr;  // the directory the destination must resolve below
  size_t responseLen_ = 0;
  const RequestHead* head_ = nullptr;  // the request's head (in the parser), valid until finish()
  int32_t user_ = -1;              // the authenticated user (authentication on), else -1
  ClientAddress peer_;             // set by the platform (setPeer); not cleared between requests
  Party party_;                    // Create-Session: who the new session counts against
  bool creating_ = false;          // Create-Session: in UploadEngine::creating_ until finish()
  bool counted_ = false;           // finish() counted it in EngineStats::requests
  uint32_t holdOffMs_ = 0;         // see holdOffMs(); also the 503's Retry-After
  char response_[kMaxAckBytes];
  char dest_[kPathBufBytes];
  char partial_[kPathBufBytes];    // the session's in-progress (or reply) file
};

class UploadEngine final : public StorageCallback, public SnapshotSource, public ReplaySink, public FarmCallback {
 public:
  UploadEngine(Storage& storage, Clock& clock, Random& random, Sha256& sha, Journal& journal);
  ~UploadEngine();
  // The server application's client; required when notify-type is not none.
  void setNotifier(Notifier* notifier) { notifier_ = notifier; }
  // Farm mode (docs/FARMS.md): the shared record of session owners and delivered transaction ids.
  // Null: a single node (the default).
  void setFarm(Farm* farm) { farm_ = farm; }
  Farm* farm() const { return farm_; }
  // Authentication on: every request needs Basic credentials the authenticator accepts, uploads
  // obey `locations`, and sessions belong to their creator. Null: off (the default).
  // Locations with a directory map their uploads there; the platform hands their directories over
  // resolved (realpath) and checked to be on the state's file system.
  void setAuthenticator(Authenticator* auth, std::vector<Location> locations) {
    authenticator_ = auth;
    locations_ = std::move(locations);
  }

  // SIGHUP, between loop callbacks: takes the settings that change live (isLiveSetting) from
  // `next`; the rest keep their start-up values. Requests and sessions in progress read the new
  // limits from their next step on.
  void applyLive(const Settings& next);
  // SIGHUP with authentication on: new locations (directories resolved and checked, as for
  // setAuthenticator). Requests from now on are matched against them.
  void setLocations(std::vector<Location> locations) { locations_ = std::move(locations); }

  // Takes the server options and board limits. Fails on impossible values (paths too long).
  // `bulk` (may be null) allocates the session table.
  Status init(const Settings& settings, BulkAllocator* bulk = nullptr);

  Flow onHeaders(Exchange& ex, const RequestHead& head);
  Flow onBody(Exchange& ex, std::span<const char> bytes);
  Flow onMessageComplete(Exchange& ex);
  // GET on a reply URL (ex.sendsFile()), once response() is sent: reads the next part of the
  // body, at most buf.size() bytes of the fileLength() still unsent, from the reply file through
  // Storage into `buf`, which the host keeps alive until then. Returns Wait; the host then gets
  // onExchangeReady, and ex.replyChunk() holds the bytes read.
  Flow readReply(Exchange& ex, std::span<char> buf);
  // Ends the request: releases the session, resets `ex`. Requires !ex.inFlight().
  void finish(Exchange& ex);

  // The authenticated user of the request (empty when none), for the access log.
  std::string_view userOf(const Exchange& ex) const;

  // An answer for a request the parser could not even read (400/405/414/431/505), or a timeout (408).
  void formatProtocolError(Exchange& ex, int status);
  // Farm mode: the request's forward (ex.forwardTo()) failed before any byte of the owner's answer
  // reached the client (unreachable, reset, timed out): 503 + Retry-After, BG_E busy, and close
  // (the rest of the body is not read). ex.response() is then the answer to send.
  void formatForwardFailure(Exchange& ex);

  // Expires sessions idle for longer than the session timeout and deletes their data. Cheap to call
  // often; the platform calls it from a timer.
  void sweep();

  const EngineStats& stats() const { return stats_; }
  uint32_t sessionCount() const { return sessions_.size(); }
  // The admin listener's view (core/admin.h): the table, slots [0, highWater()) to scan, the open
  // in-progress files, and the authenticator that names session owners (null: authentication off).
  const SessionTable& sessionTable() const { return sessions_; }
  uint32_t highWater() const { return highWater_; }
  uint32_t openFiles() const { return openFiles_; }
  const Authenticator* authenticator() const { return authenticator_; }
  uint64_t nowMs() { return clock_.nowMs(); }
  // The partial-file directory (`<state>/partial`) that the platform creates and cleans at start-up.
  const std::string& partialDir() const { return partialDir_; }
  // The reply directory (`<state>/replies`), created at start-up like partialDir().
  const std::string& repliesDir() const { return repliesDir_; }
  // What is known about a transaction id (nullptr if nothing), for tests and bitsctl.
  const DeliveryInfo* findDelivery(std::string_view txid) const;
  // Single node: the sessions whose reply file is a delivery's reply of record (kept after the
  // session ends, until the delivery is forgotten, so that a later session of the same transaction
  // gets a copy). Start-up keeps these files (platform/recovery.cc).
  std::unordered_set<SessionId, SessionIdHash> repliesOfRecord() const;
  // True while background deletions are still running (shutdown waits for them).
  bool backgroundBusy() const;

  // Start-up: the engine is itself the ReplaySink of the journal, so replay fills the preallocated
  // session table directly (no intermediate copy). Call replayJournal(bytes, &engine), then
  // finishRestore(), which converts journal times, leaves out sessions idle for longer than the
  // session timeout (their ids go to `expired`; the caller deletes their data), and fails if the
  // journal holds more sessions than max-sessions.
  void onRecord(const JournalRecord& r, uint64_t seq, uint64_t offset) override;
  Status finishRestore(std::vector<SessionId>* expired);
  // Start-up, after restore(): lets `inspector` check every open session against its files, applies
  // the decisions and journals them (flushed once the loop runs). Returns how many were dropped.
  uint32_t reconcile(RecoveryInspector& inspector);
  // Start-up, after reconcile(): brings each open session's SHA-256 up to its acked length, by
  // re-reading the bytes after its digest checkpoint (fewer than 64), or the whole acked prefix
  // when there is no checkpoint.
  void rehashOpenSessions(RecoveryHasher& hasher);
  // Writes the live state for a journal compaction (SnapshotSource).
  void snapshot(JournalState* out) override;
  void formatPartialPathForTest(const SessionId& id, char* out) { formatPartialPath(id, out); }

  // A session by id (nullptr if unknown), for recovery and tests.
  const Session* findSession(const SessionId& id) { return sessions_.find(id); }
  const Session* findSessionForTest(const SessionId& id) { return sessions_.find(id); }
  // Open sessions held by `p`, counting Create-Sessions under way (max-sessions-per-user).
  uint32_t openSessionsOf(const Party& p) const;

 private:
  // The session table as applyRecord (core/journal_model.h) sees it: onRecord's replay rules.
  struct ReplayTarget;
  friend class Exchange;
  friend class CreateFlow;
  friend class FragmentFlow;
  friend class CommitFlow;
  friend class CloseFlow;
  friend class DeliveryFlow;
  friend class FarmHandoff;
  friend class ReplyFlow;
  friend class ForwardFlow;
  static constexpr int kBackgroundOps = 8;

  // Where a root-relative upload path goes: the root, or the directory of the location it falls
  // in, and the path below that. Requests (afterAuth) and start-up reconciliation both use it.
  struct Destination {
    const Location* location = nullptr;  // the location the path falls in (null: none)
    std::string_view base;               // the directory the destination resolves below
    std::string_view below;              // the path under `base`
  };
  Destination resolveDestination(std::string_view rel) const;

  // Completions, each to the flow of `ex` that waits for it (a stray one is logged and dropped).
  void onStorageDone(StorageOp& op) override;  // the background deletions
  // Farm mode: deliveries that start-up proved ended (the copy was at its destination) while the
  // farm still holds this node's "began" are recorded as "ended" there, one at a time, from sweep():
  // claim (or take over this node's earlier life's claim), then end. Other nodes answer such an id
  // 503 until then.
  void publishEnded();
  void onFarmDone(FarmOp& op) override;
  void dispatchStorage(Exchange& ex);
  void dispatchJournal(Exchange& ex, const Status& st);
  void dispatchNotify(Exchange& ex);
  void dispatchFarm(Exchange& ex);
  void authDone(Exchange& ex);
  void stray(const Exchange& ex, const char* what);

  Flow fail(Exchange& ex, int status, uint32_t hresult, bool withRange = false);
  void respond(Exchange& ex, int status, bool withRange);
  void ready(Exchange& ex);
  Flow afterAuth(Exchange& ex, const RequestHead& head);
  // The upload is complete: commit it, or hand it to the application.
  Flow startCompletion(Exchange& ex);
  // The destination's path below its base (ex.destBase_): dest_ is "<base>/<below>".
  static const char* destBelow(const Exchange& ex);
  bool appendOrFail(Exchange& ex, const JournalRecord& r);  // false: refused, 503 formatted
  // The answer for a delivery (fresh, replayed, or from the journal), total the upload's size.
  void respondDelivered(Exchange& ex, const DeliveryOutcome& d, std::string_view staticUrl, uint64_t total);
  size_t formatReplyUrl(const Exchange& ex, const SessionId& replySession, char* out, size_t cap);
  std::string_view requestHost(const Exchange& ex) const;
  void formatPartialPath(const SessionId& id, char* out) { bitsd::formatPartialPath(partialDir_, id, out); }
  void formatReplyPath(const SessionId& id, char* out) { bitsd::formatReplyPath(repliesDir_, id, out); }
  bool removeReplyInBackground(const SessionId& id);
  // Single node: session `id`'s reply file is its delivery's reply of record (repliesOfRecord()).
  bool holdsReplyOfRecord(const SessionId& id) const;
  void expireDeliveries();
  void concludeCopiedDelivery(ReplayTarget& facts, Session& s, const std::string& txid, const RecoveryDecision& d);
  void closeFile(Session& s);
  void makeRoomForOpenFile();
  bool removeInBackground(const SessionId& id);
  bool removePathInBackground(const char* path);
  std::vector<SessionId> replyScratch_;  // expireDeliveries: reply files to delete
  bool backgroundOpFree() const;
  Session* evictForNewSession(const Party& newcomer);
  bool makeRoomForNewSession(const Exchange& ex);
  bool expireSession(Session& s, const char* why);
  uint64_t expiryLimitMs(const Session& s) const;
  Party partyOf(const Exchange& ex) const;
  void describeParty(const Party& p, char* out, size_t cap) const;
  void endCreating(Exchange& ex);
  void touch(Session& s);
  // `have` advanced to `newHave` for the request `ex`: the session's rate and client (admin page).
  void noteAcked(Exchange& ex, Session& s, uint64_t newHave);
  // The session's digest checkpoint for a Progress record (core/journal_format.h): its length, 0
  // when the digest is unknown or runs ahead of the durable bytes.
  uint8_t digestCheckpoint(const Session& s, uint8_t* out);
  bool takeOver(Session& s);
  void hold(Session& s, Exchange& ex);

  Storage& storage_;
  Clock& clock_;
  Random& random_;
  Sha256& sha_;
  Journal& journal_;
  Settings settings_;
  void deriveTimeouts();  // the *Ms_ and retention below, from settings_
  uint64_t sessionTimeoutMs_ = 0;
  uint64_t idleSessionTimeoutMs_ = 0;
  std::string root_;
  std::string partialDir_;
  SessionTable sessions_;
  uint32_t openFiles_ = 0;
  uint32_t highWater_ = 0;  // slots [0, highWater_) have ever been used
  std::vector<Exchange*> creating_;  // Create-Sessions under way (each will take a table slot)
  std::vector<Party> partyScratch_;  // eviction: parties of the open sessions (capacity max-sessions)
  EngineStats stats_;
  bool restoreOverflow_ = false;
  Notifier* notifier_ = nullptr;
  Farm* farm_ = nullptr;
  Authenticator* authenticator_ = nullptr;
  std::vector<Location> locations_;
  NotifyMode notifyMode_ = NotifyMode::None;
  std::string repliesDir_;
  uint64_t retentionSeconds_ = 0;
  // Transaction ids (core/delivery_book.h); replay (ReplayTarget) writes its two maps.
  DeliveryBook book_;
  StorageOp background_[kBackgroundOps];
  char backgroundPath_[kBackgroundOps][Exchange::kPathBufBytes];
  enum class PublishStep : uint8_t { None, Claim, TakeOver, End };
  FarmOp publishOp_;
  PublishStep publishStep_ = PublishStep::None;
  std::string publishTxid_;
  char publishToken_[FarmHandoff::kTokenBytes] = {};
  char publishReplyPath_[Exchange::kPathBufBytes] = {};
};

}  // namespace bitsd
