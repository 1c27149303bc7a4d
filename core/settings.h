// Everything bitsd can be told: the board's limits (STYLE.md: one `BoardLimits`-style value read at
// start-up) and the server options, in one struct with one text format.
//
// Format (board/<name>/board.conf, --config FILE, and every --flag): `key = value` lines; `#` starts
// a comment; blank lines are ignored. Keys are the long flag names without `--`. Layers apply in
// order: board defaults (embedded at build time), then the config file, then command-line flags.
// Sizes accept K, M, G suffixes (powers of 1024); booleans accept true/false, on/off, yes/no, 1/0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bitsd {

struct Settings {
  // Server options.
  std::string listen = "127.0.0.1:8080";
  std::string root = "var/uploads";
  std::string state = "var/state";
  uint64_t maxUploadSizeBytes = UINT64_MAX;   // whole upload; beyond: 500 BG_E_TOO_LARGE
  uint64_t sessionTimeoutSeconds = 1209600;   // 14 days, as IIS BITSSessionTimeout
  uint64_t idleSessionTimeoutSeconds = 3600;  // a session that never received a byte expires sooner
  uint32_t maxSessionsPerUser = 50;           // open sessions of one user (or client address); 0 = no limit
  bool allowOverwrites = false;
  bool fdatasync = true;                      // sync data before every Ack (off only for benchmarks)
  bool digest = true;                         // SHA-256 of every upload, computed as it is written
  std::string logLevel = "info";
  // Access log (README "Logs"): "" off (the default), "-" or "stderr", or a file (appended to,
  // reopened on SIGUSR1); one line per request as "text" (Common Log Format first) or "json".
  std::string accessLog;
  std::string accessLogFormat = "text";
  // Web farms (§7 of BITS-UPLOAD.md): when set, Create-Session Acks carry BITS-Host-Id, and the
  // client sends the rest of the session to that host, falling back to the original URL after
  // BITS-Host-Id-Fallback-Timeout seconds of failed connects.
  std::string hostId;
  uint64_t hostIdFallbackTimeoutSeconds = 86400;  // IIS BITSHostIdFallbackTimeout default
  // Off: Acks carry no BITS-Host-Id even with host-id set (a farm behind a balancer whose nodes the
  // clients cannot reach by their host-id; host-id still names the node in the farm).
  bool sendHostId = true;
  // The server application (BITS-UPLOAD.md §5): "none" (plain upload, the file is committed to its
  // destination), "reference" (a POST naming the uploaded file and the reply file) or "value" (the
  // uploaded file is the POST body, the response body is the reply).
  std::string notifyType = "none";
  std::string notifyUrl;                      // http:// URL, or relative to the upload URL's directory
  uint64_t notifyTimeoutSeconds = 120;        // the final Ack must beat the client's 5-minute timer
  std::string transactionHeader = "BITS-Transaction-Id";  // request header carrying the transaction id
  uint64_t deliveredRetentionSeconds = 0;     // how long delivered ids are kept; 0 = session-timeout
  // A farm of nodes on etcd (docs/FARMS.md): farmEtcd (comma-separated http(s):// client URLs) turns
  // farm mode on; the node's name is hostId. https to etcd needs farmEtcdCacert (and, for a client
  // certificate, farmEtcdCert with farmEtcdKey). farmPeerUrl: where other nodes reach this one
  // (empty: farmPeerUrl() below). The node's liveness lease lasts farmLeaseSeconds.
  std::string farmEtcd;
  std::string farmEtcdCacert;
  std::string farmEtcdCert;
  std::string farmEtcdKey;
  std::string farmName = "default";
  std::string farmPeerUrl;
  uint64_t farmLeaseSeconds = 10;

  // Board limits.
  uint32_t maxConnections = 1024;       // beyond: 503, then close
  uint32_t maxSessions = 4096;          // open sessions plus tombstones
  uint32_t requestSlots = 256;          // requests being parsed at once (each ~22 KiB)
  uint32_t readBuffers = 32;            // pool of socket read buffers
  uint32_t readBufferBytes = 262144;    // size of each read buffer
  uint32_t maxOpenFiles = 256;          // in-progress files kept open at once
  uint32_t threadPool = 4;              // threads for file writes, syncs and digests (libuv's pool)
  bool threadPoolSet = false;           // thread-pool came from a config file or a flag, not the board
  uint32_t maxHeaderBytes = 8192;       // request line + headers; beyond: 431
  uint32_t maxPathBytes = 1024;         // decoded, normalised path; beyond: 400
  uint64_t maxFragmentBytes = 16777216; // one Fragment body; beyond: 413 (client shrinks)
  std::string tlsCert;                  // https when set (with tlsKey)
  std::string tlsKey;
  uint32_t tlsHandshakeTimeoutMs = 10000;
  uint32_t tlsBufferBytes = 65536;      // ciphertext read buffer per TLS connection (board-sized)
  uint32_t tlsRecordBytes = 16384;      // largest TLS record payload bitsd sends: 512, 1K, 2K, 4K or 16K
  std::string usersFile;                // Basic authentication on when set
  std::string locations;                // "PREFIX USER...; ..." (core/auth.h)
  bool allowBasicOverHttp = false;
  uint32_t idleTimeoutMs = 120000;      // keep-alive connection with no request
  uint32_t headerTimeoutMs = 30000;     // from the first byte of a request to the end of its headers
  // A head still incomplete this long after its first byte, and slower than headerMinRate on
  // average, gives its request slot (408, close) to a connection that waits for one.
  uint32_t headerBudgetMs = 2000;
  uint32_t headerMinRate = 500;         // bytes/s that keep a head past headerBudgetMs (mod_reqtimeout's MinRate)
  uint32_t bodyTimeoutMs = 60000;       // longest gap between body bytes
  uint32_t sweepIntervalMs = 5000;      // session-timeout sweep period (at most)
  uint32_t shutdownGraceMs = 4000;      // SIGTERM: time allowed for in-flight writes
  uint64_t journalMaxBytes = 64ull << 20;  // cap on the journal file; compaction keeps it below
  uint32_t journalBufferBytes = 65536;  // records waiting for one group commit
  uint32_t writebackBytes = 1u << 20;   // fdatasync on: start writeback of each such unit written (0: off)
  uint32_t maxNotifications = 16;       // hand-offs to the application in flight at once; beyond: 503
  // Admin listener (/metrics, /status.json, the status page): off when empty; a bare port means
  // 127.0.0.1. With users-file set it asks for Basic credentials of a user in the file (of one of
  // adminUsers, a space-separated list, when that is set).
  std::string adminListen;
  std::string adminUsers;
};

// The admin listener's ADDR:PORT ("127.0.0.1:PORT" for a bare port), "" when it is off.
std::string adminListenAddress(const Settings& s);

// Farm mode is on (farm-etcd is set).
inline bool farmMode(const Settings& s) { return !s.farmEtcd.empty(); }

// The etcd client URLs of farm-etcd, in order (empty entries dropped).
std::vector<std::string> farmEtcdEndpoints(const Settings& s);

// Where other nodes reach this one: farm-peer-url when set, else the scheme of the listener (https
// with tls-cert) and the port of `listen` (or `boundPort` when not 0: the port actually bound, for
// `listen` port 0) with host-id as host. A host-id that carries its own port keeps it.
std::string farmPeerUrl(const Settings& s, uint16_t boundPort = 0);

// Applies one `key`/`value` pair. On failure returns false and writes a one-line reason (naming the
// key and the problem) into `error`.
bool applySetting(Settings* s, std::string_view key, std::string_view value, std::string* error);

// Applies a whole `key = value` text. `origin` names the source in error messages ("board host",
// "config file x.conf"); errors read "<origin>:<line>: <reason>".
bool applySettingsText(Settings* s, std::string_view text, std::string_view origin, std::string* error);

// The thread pool bitsd starts: `thread-pool`, except that with fdatasync off and thread-pool left at
// the board's value it is at most kNoSyncThreadPool. No thread then waits on the disk, and fewer
// threads hand work over faster (docs/BENCHMARKS.md, "Issue 18 at stop 25": small uploads).
inline constexpr uint32_t kNoSyncThreadPool = 4;
uint32_t effectiveThreadPool(const Settings& s);

// Checks cross-field rules (non-zero limits, sane ranges). One-line reason on failure.
bool validateSettings(const Settings& s, std::string* error);

// The same for a command-line flag: errors read "--KEY: expected on or off, got 'maybe'".
bool applyFlag(Settings* s, std::string_view key, std::string_view value, std::string* error);

// SIGHUP. Whether a running bitsd takes a new value of `key` without a restart (the table is in
// settings.cc; a key not in it needs a restart).
bool isLiveSetting(std::string_view key);

// The keys whose values differ between the running settings and a re-read of them, in --help
// order: those applied live, and those that need a restart to take effect.
struct SettingsDiff {
  std::vector<const char*> live;
  std::vector<const char*> restart;
};
SettingsDiff diffSettings(const Settings& running, const Settings& next);

// Copies the settings `next` changes live into `running`; the others keep their running value.
void copyLiveSettings(const Settings& next, Settings* running);

// The reload table as Markdown (| Setting | On SIGHUP |), every key in --help order: the README's
// "Reload" section carries it, and a test checks that the two agree.
std::string reloadTable();

// True when `key` is a known setting; `isBool` tells whether a flag may omit its value.
bool isSettingKey(std::string_view key, bool* isBool);

// The text of --help's settings table: one line per key with its meaning.
const char* settingsHelp();
// The same with each key's value in `defaults` (the board's) after its meaning: "[default: 256K]".
std::string settingsHelp(const Settings& defaults);

}  // namespace bitsd
