// The hand-off of a finished upload to the server application (BITS-UPLOAD.md §5), as a seam: core/
// decides when to notify and what the answer means; platform/ speaks HTTP to the application on the
// loop (UvNotifier) and tests use a fake.
//
// One NotifyOp is one POST. Like StorageOp, it is owned by the caller, at most one call is in
// flight on it, and it completes later through op.callback->onNotifyDone(op), never from inside
// post(). Before it completes, the notifier has also dealt with the reply file:
//   by value:     the response body (if any) was written to `replyFile` and synced;
//   by reference: the application wrote `replyFile` itself; the notifier synced it if it exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace bitsd {

enum class NotifyMode : uint8_t { None, Reference, Value };

// Parses the notify-type setting ("none", "reference", "value"); None for anything else.
NotifyMode parseNotifyMode(std::string_view text);

struct NotifyRequest {
  std::string_view url;          // absolute http:// URL, query string already appended
  std::string_view originalUrl;  // BITS-Original-Request-URL: the absolute URL of the upload
  const char* requestFile = nullptr;  // the uploaded bytes (by value: the body; by reference: named)
  const char* replyFile = nullptr;    // where the reply goes
  bool byValue = false;
  uint64_t contentBytes = 0;     // size of requestFile
  std::string_view transactionId;
  std::string_view sessionId;    // {GUID} text
  const uint8_t* sha256 = nullptr;  // SHA-256 of the content (Repr-Digest), or null when unknown
  uint64_t timeoutMs = 0;        // for the whole exchange, connect to last response byte
};

enum class NotifyOutcome : uint8_t {
  Answered,     // a complete HTTP response; see status
  Unreachable,  // name lookup, connect, send or receive failed, or the connection closed early
  Malformed,    // the response could not be parsed, or a header we use is unusable
  TimedOut,     // no complete answer within timeoutMs
  LocalError,   // bitsd could not read the upload or write the reply (disk)
  Busy,         // every notification slot is in use (max-notifications)
};

const char* notifyOutcomeName(NotifyOutcome o);

struct NotifyResult {
  static constexpr size_t kMaxUrlBytes = 2200;  // BITS-UPLOAD.md §5.4
  NotifyOutcome outcome = NotifyOutcome::Unreachable;
  int status = 0;                  // the application's HTTP status (Answered)
  bool copyToDestination = false;  // BITS-Copy-File-To-Destination was present
  bool hasReplyFile = false;       // replyFile exists (by value: a body was received)
  uint64_t replyBytes = 0;
  size_t staticUrlLen = 0;         // BITS-Static-Response-URL, when non-zero
  char staticUrl[kMaxUrlBytes];
  std::string_view staticResponseUrl() const { return std::string_view(staticUrl, staticUrlLen); }
};

class NotifyOp;

class NotifyCallback {
 public:
  virtual void onNotifyDone(NotifyOp& op) = 0;

 protected:
  ~NotifyCallback() = default;
};

class NotifyOp {
 public:
  NotifyCallback* callback = nullptr;
  bool busy = false;
  NotifyResult result;
  void* impl = nullptr;  // the platform's client state while busy
};

class Notifier {
 public:
  virtual ~Notifier() = default;
  // Starts one POST. The strings in `req` need only live until post() returns.
  virtual void post(NotifyOp& op, const NotifyRequest& req) = 0;
};

// One header of the application's answer (§5.4): BITS-Static-Response-URL and
// BITS-Copy-File-To-Destination go into `r`; every other header is ignored. False when a header bitsd
// uses is unusable (an empty or over-long static URL): the answer is then Malformed.
bool takeNotifyHeader(std::string_view name, std::string_view value, NotifyResult* r);

// HTTP status classes for application answers (§5.5): transient ones make the client retry the final
// fragment later (and bitsd posts again then); fatal ones end the delivery.
bool isTransientStatus(int status);

// Resolves the notify-url setting for one upload (§5.2). `hostAndPort` is the upload's authority
// (Host header), `target` the upload's request-target (path and optional query). Relative URLs
// resolve against the target's directory; the target's query string is appended. Writes a
// NUL-terminated URL into out (room for `cap` bytes); false if it does not fit.
bool resolveNotifyUrl(std::string_view notifyUrl, std::string_view hostAndPort, std::string_view target,
                      char* out, size_t cap);

// Parsed absolute http:// URL (views into the input).
struct HttpUrl {
  std::string_view host;   // without brackets for IPv6
  uint16_t port = 80;
  std::string_view pathAndQuery;  // "/" when empty; may start with '?' ("http://h?q")
};
bool parseHttpUrl(std::string_view url, HttpUrl* out);

// The hand-off's request head (the POST to `url`, parsed from req.url), written with the wire
// layer's HeadWriter into `out`: Host, User-Agent, BITS-Original-Request-URL, the data file names
// (by reference), BITS-Transaction-Id, BITS-Session-Id, Repr-Digest (when req.sha256 is set),
// Content-Length (req.contentBytes by value, else 0), Content-Type (by value), Connection: close.
// Returns its length, or 0 if it does not fit in `cap` (a head is never sent cut short).
inline constexpr size_t kMaxNotifyHeadBytes = 16384;
size_t formatNotifyHead(const NotifyRequest& req, const HttpUrl& url, char* out, size_t cap);

// RFC 4648 base64 of `in` into `out` (room for 4 * ((n + 2) / 3) bytes); returns the length.
size_t base64Encode(const uint8_t* in, size_t n, char* out);

}  // namespace bitsd
