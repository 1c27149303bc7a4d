// The upload job of bitsclient, as the Windows BITS client runs it (../shared/protocol/BITS-UPLOAD.md
// §3.3, §4.2, §9): a state machine with no I/O and no clock of its own. The driver asks next(now) for
// the next request (or how long to wait), performs it, and hands the answer to onResponse(now). Time
// comes in as milliseconds, so tests run it on a fake clock.
//
//   Ping → Create-Session → [Ping the BITS-Host-Id] → Fragment… → [HEAD + ranged GETs of the reply]
//        → Close-Session
//
// One request at a time, fragments strictly ascending. The job adopts BITS-Received-Content-Range on
// 200 and on 416, shrinks the fragment on 413 (never below 5 KB), starts over with a new session
// after BG_E_SESSION_NOT_FOUND, retries transient answers with exponential backoff (bounded), stops
// on fatal ones, and follows BITS-Host-Id with its fallback timeout.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bitsd::client {

inline constexpr uint64_t kMinFragmentBytes = 5 * 1024;           // §9: never below 5 KB
inline constexpr uint64_t kMaxFragmentBytes = 13 * 1024 * 1024;   // §9: 13 MB
inline constexpr uint64_t kDefaultFragmentBytes = 1024 * 1024;
inline constexpr uint64_t kReplyChunkBytes = 1024 * 1024;         // one ranged GET of the reply

// Exit codes of bitsclient, one per class of outcome.
enum ExitCode : int {
  kExitOk = 0,
  kExitFatal = 1,      // the server gave a fatal answer (4xx, 501, 505, BG_E_TOO_LARGE, ...)
  kExitUsage = 2,      // bad flags, unreadable file or state file
  kExitRetries = 3,    // transient failures went on longer than the retry budget
  kExitSessionLost = 4,  // the session was lost more often than allowed
  kExitLocal = 5,      // a local file could not be read or written
};

// Exponential backoff: the n-th transient failure in a row (n >= 1) waits first * 2^(n-1), capped at
// max, and at least what Retry-After asked (itself capped at max). After maxFailures failures in a
// row without progress the job gives up.
struct RetryPolicy {
  uint32_t maxFailures = 8;
  uint64_t firstDelayMs = 1000;
  uint64_t maxDelayMs = 60000;
  uint64_t delayMs(uint32_t failures, uint64_t retryAfterMs) const;
};

// The fragment size: the configured one (clamped to 5 KB..13 MB), halved after each 413, never
// below 5 KB.
class FragmentSizer {
 public:
  explicit FragmentSizer(uint64_t configured = kDefaultFragmentBytes);
  uint64_t bytes() const { return bytes_; }
  bool shrink();  // false when already at the floor
  static uint64_t clamp(uint64_t b);

 private:
  uint64_t bytes_;
};

enum class Kind : uint8_t { Ping, CreateSession, Fragment, CloseSession, CancelSession, ReplyHead, ReplyGet };
const char* kindName(Kind k);

struct Request {
  Kind kind = Kind::Ping;
  uint64_t begin = 0;  // Fragment: [begin, end) of the file; ReplyGet: of the reply
  uint64_t end = 0;
  bool toHostId = false;  // send to the BITS-Host-Id host instead of the URL's
};

// What the driver saw. status 0: no HTTP answer (connect failed, reset, timed out).
struct Response {
  int status = 0;
  std::string transportError;
  std::string sessionId;
  bool hasReceived = false;
  uint64_t received = 0;  // BITS-Received-Content-Range
  bool hasErrorCode = false;
  uint32_t errorCode = 0;
  uint32_t errorContext = 0;
  std::string replyUrl;
  std::string hostId;
  bool hasFallback = false;
  uint64_t fallbackSeconds = 0;
  uint64_t retryAfterSeconds = 0;
  // HEAD/GET of the reply.
  bool hasContentLength = false;
  uint64_t contentLength = 0;
  bool hasContentRange = false;
  uint64_t rangeBegin = 0, rangeEnd = 0, rangeTotal = 0;  // [begin, end) of total
};

// Progress events, drained by the driver for the progress bar or JSON lines.
struct Event {
  enum class Type : uint8_t { SessionCreated, Acked, Resync, Shrunk, Retry, Restart, HostId, Fallback, Reply, Done, Failed };
  Type type;
  uint64_t offset = 0;     // Acked/Resync: the server's offset; Reply: reply bytes so far
  uint64_t previous = 0;   // Resync: where the client was; Shrunk: the old fragment size
  uint64_t delayMs = 0;    // Retry
  uint32_t failures = 0;   // Retry
  int status = 0;
  uint32_t errorCode = 0;
  std::string text;        // reason, session id, host, or reply URL
};
const char* eventName(Event::Type t);

struct JobConfig {
  uint64_t fileBytes = 0;
  uint64_t fragmentBytes = kDefaultFragmentBytes;
  RetryPolicy retry;
  uint32_t maxRestarts = 3;     // new sessions after BG_E_SESSION_NOT_FOUND
  bool wantReply = false;       // download the reply (upload-reply job) before closing
  bool credentialsGiven = false;  // -u was given: a 403 may be a location refusal (messages.h)
};

class Job {
 public:
  explicit Job(const JobConfig& config);

  // Carry on with a session that already exists (bitsclient resume): Ping, then fragments from
  // `offset` (the server corrects it with BITS-Received-Content-Range).
  void resume(std::string_view sessionId, uint64_t offset, std::string_view hostId, uint64_t fallbackSeconds);
  // Send Cancel-Session for the current session instead of going on (needs a session).
  void cancel();

  enum class Next : uint8_t { Send, Wait, Done, Failed };
  Next next(uint64_t nowMs, Request* out, uint64_t* waitUntilMs);
  void onResponse(const Response& r, uint64_t nowMs);

  std::vector<Event> takeEvents();

  const std::string& sessionId() const { return sessionId_; }
  uint64_t offset() const { return offset_; }
  uint64_t totalBytes() const { return config_.fileBytes; }
  uint64_t fragmentBytes() const { return sizer_.bytes(); }
  const std::string& hostId() const { return hostId_; }
  bool usingHostId() const { return usingHostId_; }
  uint64_t fallbackSeconds() const { return fallbackSeconds_; }
  const std::string& replyUrl() const { return replyUrl_; }
  uint64_t replyBytes() const { return replyTotal_; }
  int exitCode() const { return exitCode_; }
  const std::string& failure() const { return failure_; }
  // While the job waits to retry (only a retry's backoff waits): how long it still waits (0 when it is not waiting).
  uint64_t retryWaitMs(uint64_t nowMs) const { return waitUntilMs_ > nowMs ? waitUntilMs_ - nowMs : 0; }
  uint32_t restarts() const { return restarts_; }

 private:
  enum class Phase : uint8_t { Ping, Create, Fragments, ReplyHead, ReplyGet, Close, Cancel, Done, Failed };
  void fail(int exitCode, std::string reason);
  void transient(const Response& r, uint64_t nowMs, const char* what);
  void progress();
  void restart(const Response& r);
  Kind phaseKind() const;
  void classify(const Response& r, uint64_t nowMs, const char* what);
  void emit(Event e) { events_.push_back(std::move(e)); }

  JobConfig config_;
  FragmentSizer sizer_;
  Phase phase_ = Phase::Ping;
  Phase afterPing_ = Phase::Create;
  std::string sessionId_;
  uint64_t offset_ = 0;
  uint32_t failures_ = 0;
  uint64_t waitUntilMs_ = 0;
  uint32_t restarts_ = 0;
  std::string hostId_;
  bool usingHostId_ = false;
  uint64_t fallbackSeconds_ = 0;  // 0: never fall back
  uint64_t hostIdFailingSinceMs_ = 0;
  bool hostIdFailing_ = false;
  std::string replyUrl_;
  uint64_t replyTotal_ = 0;
  uint64_t replyHave_ = 0;
  int exitCode_ = kExitOk;
  std::string failure_;
  std::vector<Event> events_;
};

// "0x8020001F" for an HRESULT.
std::string hresultText(uint32_t code);

}  // namespace bitsd::client
