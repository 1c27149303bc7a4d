// What the admin listener shows (issue 19): Prometheus metrics, the live sessions as JSON, and the
// status page. Portable formatting only; platform/admin_server.cc serves it.
//
// Everything formats into caller-owned fixed buffers through AdminWriter (no allocation): the metrics
// text has a bounded number of lines, and the session list is written one session at a time, so the
// server sends it in chunks of its buffer's size and never holds the loop for long.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/protocol.h"
#include "core/session_table.h"

namespace bitsd {

// Appends into a fixed buffer; once something did not fit, ok() is false and nothing more is added
// (the caller rolls back to a mark and sends what it has).
class AdminWriter {
 public:
  AdminWriter(char* buf, size_t cap) : buf_(buf), cap_(cap) {}
  void put(std::string_view s);
  void putU64(uint64_t v);
  void putDouble(double v, int decimals);  // fixed-point, no locale
  void putJsonString(std::string_view s);  // quoted, escaped
  size_t size() const { return len_; }
  bool ok() const { return ok_; }
  void rollback(size_t mark) {
    len_ = mark;
    ok_ = true;
  }
  const char* data() const { return buf_; }

 private:
  char* buf_;
  size_t cap_;
  size_t len_ = 0;
  bool ok_ = true;
};

// Request counters by packet type and status (bitsd_requests_total{packet,status}).
inline constexpr int kPacketKinds = 6;  // PacketType values; Unknown is shown as "none"
inline constexpr uint16_t kCountedStatuses[] = {100, 200, 206, 304, 400, 401, 403, 404, 405, 408, 409,
                                                411, 412, 413, 414, 416, 431, 500, 501, 503, 505};
inline constexpr int kStatusKinds = sizeof(kCountedStatuses) / sizeof(kCountedStatuses[0]) + 1;  // + "other"
int statusIndex(int status);
const char* packetLabel(int packetIndex);  // "Fragment", ...; "none" for Unknown (GET/HEAD of replies, errors)

// Latency histogram of the file syncs bitsd waits for (fdatasync of data and journal, directory
// fsync at commits), in fixed buckets; the platform observes each sync's duration.
struct SyncHistogram {
  static constexpr int kBuckets = 14;
  static constexpr uint64_t kBoundsUs[kBuckets] = {100,   250,    500,    1000,   2500,    5000,    10000,
                                                   25000, 50000, 100000, 250000, 500000, 1000000, 5000000};
  uint64_t counts[kBuckets + 1] = {};  // last: above the largest bound (+Inf only)
  uint64_t count = 0;
  uint64_t sumUs = 0;
  void observe(uint64_t us) {
    int i = 0;
    while (i < kBuckets && us > kBoundsUs[i]) ++i;
    ++counts[i];
    ++count;
    sumUs += us;
  }
};

// Per-session transfer rate: an exponentially weighted average with a time constant of kTauMs,
// updated when a fragment is acked: rate' = (rate * tau + bytes * 1000) / (tau + dt). Shown decayed
// by the same rule for the time since the last update, so a stalled upload drifts to 0.
inline constexpr double kRateTauMs = 5000.0;
void noteRate(Session& s, uint64_t ackedBytes, uint64_t nowMs);
double currentRate(const Session& s, uint64_t nowMs);

// Every number /metrics shows. The platform fills it from EngineStats, the server, the journal and
// storage before formatting.
struct MetricsSnapshot {
  const uint64_t (*requests)[kStatusKinds] = nullptr;  // [kPacketKinds][kStatusKinds]
  uint64_t bytesReceived = 0, bytesWritten = 0;
  uint64_t sessionsOpen = 0, sessionsHeld = 0, sessionsCapacity = 0, sessionsCreated = 0, sessionsExpired = 0,
           sessionsEvicted = 0;
  uint64_t uploadsCommitted = 0;
  uint64_t handoffsStarted = 0, handoffsDelivered = 0, handoffsReplayed = 0, handoffsRefused = 0, handoffsFailed = 0;
  uint64_t journalBytes = 0, journalCompactions = 0, journalFlushes = 0, journalFailures = 0, journalRefusals = 0;
  uint64_t diskFull = 0, quotaRefusals = 0, takeovers = 0;
  const SyncHistogram* syncs = nullptr;
  uint64_t connectionsActive = 0, connectionsAccepted = 0, connectionsRefused = 0, connectionTimeouts = 0,
           protocolErrors = 0;
  uint64_t slotsUsed = 0, slotsTotal = 0, buffersUsed = 0, buffersTotal = 0, openFiles = 0, openFilesMax = 0;
  uint64_t tlsHandshakes = 0, tlsFailures = 0;
  uint64_t readAheadBytes = 0;  // body bytes read into a second buffer while a write ran (read-ahead)
  uint64_t forwarded = 0, forwardFailures = 0;  // farm mode: requests streamed to their session's owner
  // Farm mode: whether this node holds its lease (1/0), and the hand-off's farm steps (EngineStats).
  uint64_t farmLive = 0, farmClaims = 0, farmReplays = 0, farmTakeovers = 0, farmUnavailable = 0;
  uint64_t uptimeSeconds = 0;
};
// Writes the Prometheus text exposition (format 0.0.4). Needs about 12 KiB plus 60 bytes per
// non-zero request counter; false if `w` ran out of room.
bool formatMetrics(const MetricsSnapshot& m, AdminWriter& w);

// One session of /status.json ({"id":..., "path":..., ...}); `user` empty when unknown. False if
// it did not fit (the writer is rolled back).
bool formatSessionJson(const Session& s, std::string_view path, std::string_view user, uint64_t nowMs,
                       AdminWriter& w);
const char* sessionStateLabel(const Session& s);  // "receiving", "open", "complete", "closed"
bool sessionIsLive(const Session& s);             // Open or Complete (tombstones are not listed)
// Text of a client address ("198.51.100.7", "2001:db8::1"-style, uncompressed); "" when unknown.
size_t formatClientAddress(const ClientAddress& a, char* out, size_t cap);

// The status page: one self-contained HTML document (inline CSS and JS, no external assets) that
// fetches /status.json every 1.5 s and draws the sessions with progress bars.
std::string_view statusPageHtml();

// The admin listener's own short answers (errors, 401, the 503 of a throttled password check): a
// text/plain head with Content-Length and Connection: close, one optional extra header
// (`extraName` empty: none), then `body` unless `headOnly` (HEAD). Written with the wire layer's
// HeadWriter into `out`; returns the length (the body is left out if it does not fit).
inline constexpr uint32_t kAdminRetryAfterSeconds = 5;
size_t formatAdminAnswer(char* out, size_t cap, int status, std::string_view extraName,
                         std::string_view extraValue, std::string_view body, bool headOnly);

}  // namespace bitsd
