// Owns every setting: flags, config keys, board values, validation, --help and the SIGHUP reload
// table (core/settings.h).
#include "core/settings.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "core/auth.h"
#include "core/content_range.h"
#include "core/protocol.h"

namespace bitsd {

namespace {

enum class Kind { Str, U32, U64, Size32, Size64, Bool };

struct Field {
  const char* key;
  Kind kind;
  size_t offset;
  const char* help;
};

#define BITSD_FIELD(key, kind, member, help) {key, Kind::kind, offsetof(Settings, member), help}
// offsetof on a non-standard-layout type is conditionally supported; g++ and clang accept it for
// Settings, and a unit test round-trips every key.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
const Field kFields[] = {
    BITSD_FIELD("listen", Str, listen, "ADDR:PORT to listen on (port 0 picks a free port)"),
    BITSD_FIELD("root", Str, root, "upload root directory; URLs map below it"),
    BITSD_FIELD("state", Str, state, "state directory (in-progress data); same file system as root"),
    BITSD_FIELD("max-upload-size", Size64, maxUploadSizeBytes, "largest upload in bytes (500 BG_E_TOO_LARGE)"),
    BITSD_FIELD("session-timeout", U64, sessionTimeoutSeconds, "seconds without a packet before a session expires"),
    BITSD_FIELD("idle-session-timeout", U64, idleSessionTimeoutSeconds,
                "seconds before a session that never received a byte expires"),
    BITSD_FIELD("max-sessions-per-user", U32, maxSessionsPerUser,
                "open sessions of one user (no authentication: one client address); 0 = no limit"),
    BITSD_FIELD("allow-overwrites", Bool, allowOverwrites, "let an upload replace an existing file"),
    BITSD_FIELD("fdatasync", Bool, fdatasync, "sync data before each Ack (turn off only for benchmarks)"),
    BITSD_FIELD("digest", Bool, digest, "SHA-256 of each upload as it is written (costs CPU)"),
    BITSD_FIELD("log-level", Str, logLevel, "debug, info, warn or error"),
    BITSD_FIELD("access-log", Str, accessLog, "one line per request to FILE (reopened on SIGUSR1), or - for stderr; empty: off"),
    BITSD_FIELD("access-log-format", Str, accessLogFormat, "text (Common Log Format, then BITS fields) or json"),
    BITSD_FIELD("host-id", Str, hostId, "web farms: host name or address sent as BITS-Host-Id (empty: none)"),
    BITSD_FIELD("host-id-fallback-timeout", U64, hostIdFallbackTimeoutSeconds,
                "seconds a client keeps trying the host-id before it falls back"),
    BITSD_FIELD("send-host-id", Bool, sendHostId,
                "send host-id to clients as BITS-Host-Id (off: a farm whose nodes clients cannot reach)"),
    BITSD_FIELD("notify-type", Str, notifyType, "none, reference or value: how the application gets each upload"),
    BITSD_FIELD("notify-url", Str, notifyUrl, "http:// URL of the application (or relative to the upload's directory)"),
    BITSD_FIELD("notify-timeout", U64, notifyTimeoutSeconds, "seconds the application has to answer (then 408)"),
    BITSD_FIELD("transaction-header", Str, transactionHeader, "request header that carries the transaction id"),
    BITSD_FIELD("delivered-retention", U64, deliveredRetentionSeconds,
                "seconds a delivered transaction id is remembered (0: session-timeout)"),
    BITSD_FIELD("farm-etcd", Str, farmEtcd,
                "farm mode: etcd client URLs, comma-separated (http:// or https://); needs host-id"),
    BITSD_FIELD("farm-etcd-cacert", Str, farmEtcdCacert, "farm: PEM CA certificate for https etcd URLs and https peers"),
    BITSD_FIELD("farm-etcd-cert", Str, farmEtcdCert, "farm: PEM client certificate for etcd (with farm-etcd-key)"),
    BITSD_FIELD("farm-etcd-key", Str, farmEtcdKey, "farm: PEM private key of farm-etcd-cert"),
    BITSD_FIELD("farm-name", Str, farmName, "farm: key prefix in etcd (several farms can share one etcd)"),
    BITSD_FIELD("farm-peer-url", Str, farmPeerUrl,
                "farm: URL other nodes reach this one at (default: listen's scheme and port, host-id as host)"),
    BITSD_FIELD("farm-lease-seconds", U64, farmLeaseSeconds,
                "farm: TTL of the node's liveness lease (2..3600); without it the node neither claims nor posts"),
    BITSD_FIELD("tls-cert", Str, tlsCert, "PEM certificate (chain): serve https (with tls-key)"),
    BITSD_FIELD("tls-key", Str, tlsKey, "PEM private key of tls-cert (RSA or ECDSA, unencrypted)"),
    BITSD_FIELD("tls-handshake-timeout-ms", U32, tlsHandshakeTimeoutMs, "time a client has to finish the TLS handshake"),
    BITSD_FIELD("tls-buffer-bytes", Size32, tlsBufferBytes, "ciphertext read buffer of each TLS connection"),
    BITSD_FIELD("tls-record-bytes", Size32, tlsRecordBytes, "largest TLS record bitsd sends: 512, 1K, 2K, 4K or 16K"),
    BITSD_FIELD("users-file", Str, usersFile, "Basic authentication: users and PBKDF2 hashes (bitsctl user add)"),
    BITSD_FIELD("locations", Str, locations, "who may upload where: 'PREFIX USER...; PREFIX USER...' (* = anyone)"),
    BITSD_FIELD("allow-basic-over-http", Bool, allowBasicOverHttp, "accept passwords over plain http (not https)"),
    BITSD_FIELD("max-connections", U32, maxConnections, "open connections; beyond: 503 and close"),
    BITSD_FIELD("max-sessions", U32, maxSessions, "sessions held (open and closed tombstones)"),
    BITSD_FIELD("request-slots", U32, requestSlots, "requests parsed at once"),
    BITSD_FIELD("read-buffers", U32, readBuffers, "socket read buffers in the pool"),
    BITSD_FIELD("read-buffer-bytes", Size32, readBufferBytes, "size of one read buffer"),
    BITSD_FIELD("max-open-files", U32, maxOpenFiles, "in-progress files kept open"),
    BITSD_FIELD("thread-pool", U32, threadPool, "threads for file writes, syncs and digests (1..1024)"),
    BITSD_FIELD("max-header-bytes", Size32, maxHeaderBytes, "request line + headers; beyond: 431"),
    BITSD_FIELD("max-path-bytes", U32, maxPathBytes, "decoded URL path; beyond: 400"),
    BITSD_FIELD("max-fragment-bytes", Size64, maxFragmentBytes, "one Fragment body; beyond: 413"),
    BITSD_FIELD("idle-timeout-ms", U32, idleTimeoutMs, "idle keep-alive connection lifetime"),
    BITSD_FIELD("header-timeout-ms", U32, headerTimeoutMs, "time allowed to send request headers"),
    BITSD_FIELD("header-budget-ms", U32, headerBudgetMs,
                "a head slower than header-min-rate after this long gives its slot to a waiting request"),
    BITSD_FIELD("header-min-rate", U32, headerMinRate, "bytes/s that keep a head's slot past header-budget-ms"),
    BITSD_FIELD("body-timeout-ms", U32, bodyTimeoutMs, "longest pause inside a request body"),
    BITSD_FIELD("sweep-interval-ms", U32, sweepIntervalMs, "session expiry sweep period"),
    BITSD_FIELD("shutdown-grace-ms", U32, shutdownGraceMs, "SIGTERM: time for in-flight writes"),
    BITSD_FIELD("journal-max-bytes", Size64, journalMaxBytes, "journal size cap; near it, new sessions get 503"),
    BITSD_FIELD("journal-buffer-bytes", Size32, journalBufferBytes, "records batched into one journal sync"),
    BITSD_FIELD("writeback-bytes", Size32, writebackBytes,
                "fdatasync on: start the disk write of every such unit of a fragment as it arrives (0: off)"),
    BITSD_FIELD("max-notifications", U32, maxNotifications, "hand-offs to the application at once; beyond: 503"),
    BITSD_FIELD("admin-listen", Str, adminListen,
                "ADDR:PORT (or a bare PORT on 127.0.0.1) for /metrics, /status.json and the status page; off when unset"),
    BITSD_FIELD("admin-users", Str, adminUsers,
                "users of users-file who may read the admin listener (space-separated; unset: every user)"),
};
#pragma GCC diagnostic pop
#undef BITSD_FIELD

// SIGHUP re-reads the settings; these keys take effect without a restart (the running engine and
// server read them per request, per timer or per connection). Every other key needs a restart: it
// sizes a pool or buffer allocated at start-up, names the listening socket or a directory, or would
// change what sessions in progress were created under. A key not listed here (a new setting) needs a
// restart until someone checks that it is safe live. The README's reload table is generated from
// this list by reloadTable() and checked against it in a test.
struct LiveKey {
  const char* key;
  const char* note;  // when live only under a condition, or what happens to work in progress
};
const LiveKey kLiveKeys[] = {
    {"max-upload-size", "new sessions"},
    {"session-timeout", "every session from the next sweep"},
    {"idle-session-timeout", "every session from the next sweep"},
    {"max-sessions-per-user", "new sessions"},
    {"allow-overwrites", "commits from now on"},
    {"log-level", ""},
    {"host-id", "Acks from now on"},
    {"host-id-fallback-timeout", "Acks from now on"},
    {"send-host-id", "Acks from now on"},
    {"notify-url", "hand-offs that start from now on"},
    {"notify-timeout", "hand-offs that start from now on"},
    {"delivered-retention", ""},
    {"tls-cert", "while https stays on; new connections (live ones keep theirs)"},
    {"tls-key", "while https stays on; new connections (live ones keep theirs)"},
    {"tls-handshake-timeout-ms", "new connections"},
    {"tls-record-bytes", "new connections"},
    {"locations", "while users-file stays set; requests from now on"},
    {"allow-basic-over-http", ""},
    {"max-fragment-bytes", "requests from now on"},
    {"idle-timeout-ms", "timers armed from now on"},
    {"header-timeout-ms", "timers armed from now on"},
    {"header-budget-ms", "heads from now on"},
    {"header-min-rate", "heads from now on"},
    {"body-timeout-ms", "timers armed from now on"},
    {"sweep-interval-ms", ""},
    {"shutdown-grace-ms", ""},
};

const LiveKey* findLive(std::string_view key) {
  for (const LiveKey& l : kLiveKeys) {
    if (key == l.key) return &l;
  }
  return nullptr;
}

const Field* findField(std::string_view key) {
  for (const Field& f : kFields) {
    if (key == f.key) return &f;
  }
  return nullptr;
}

bool parseSize(std::string_view v, uint64_t* out) {
  uint64_t mul = 1;
  if (!v.empty()) {
    char c = v.back();
    if (c == 'k' || c == 'K') mul = 1024;
    if (c == 'm' || c == 'M') mul = 1024 * 1024;
    if (c == 'g' || c == 'G') mul = 1024ull * 1024 * 1024;
    if (mul != 1) v.remove_suffix(1);
  }
  uint64_t n = 0;
  if (!parseDecimal(v, &n) || n > UINT64_MAX / mul) return false;
  *out = n * mul;
  return true;
}

}  // namespace

bool isSettingKey(std::string_view key, bool* isBool) {
  const Field* f = findField(key);
  if (f != nullptr && isBool != nullptr) *isBool = f->kind == Kind::Bool;
  return f != nullptr;
}

namespace {

// The values an enumerated string setting accepts, for the one-line error ("expected A, B or C").
const char* choicesOf(std::string_view key) {
  if (key == "log-level") return "debug, info, warn or error";
  if (key == "notify-type") return "none, reference or value";
  return nullptr;
}

bool isChoice(std::string_view value, const char* choices) {
  std::string_view c = choices;
  while (!c.empty()) {
    size_t end = c.find_first_of(", ");
    std::string_view word = c.substr(0, end);
    if (word == value && word != "or") return true;
    if (end == std::string_view::npos) break;
    c = c.substr(end + 1);
    while (!c.empty() && (c.front() == ' ' || c.front() == ',')) c.remove_prefix(1);
  }
  return false;
}

// Parses `value` into the field. On failure, `expected` says what the value should have been.
bool parseInto(Settings* s, const Field& f, std::string_view value, std::string* expected) {
  char* base = reinterpret_cast<char*>(s) + f.offset;
  auto bad = [&](const char* what) {
    *expected = what;
    return false;
  };
  uint64_t n = 0;
  switch (f.kind) {
    case Kind::Str: {
      if (value.empty()) return bad("a non-empty string");
      const char* choices = choicesOf(f.key);
      if (choices != nullptr && !isChoice(value, choices)) return bad(choices);
      *reinterpret_cast<std::string*>(base) = std::string(value);
      return true;
    }
    case Kind::Bool: {
      bool v;
      if (value == "true" || value == "on" || value == "yes" || value == "1") {
        v = true;
      } else if (value == "false" || value == "off" || value == "no" || value == "0") {
        v = false;
      } else {
        return bad("on or off");
      }
      *reinterpret_cast<bool*>(base) = v;
      return true;
    }
    case Kind::U32:
      if (!parseDecimal(value, &n) || n > UINT32_MAX) return bad("a whole number");
      *reinterpret_cast<uint32_t*>(base) = static_cast<uint32_t>(n);
      return true;
    case Kind::U64:
      if (!parseDecimal(value, &n)) return bad("a whole number");
      *reinterpret_cast<uint64_t*>(base) = n;
      return true;
    case Kind::Size32:
      if (!parseSize(value, &n) || n > UINT32_MAX) return bad("a size in bytes (K/M/G suffix allowed)");
      *reinterpret_cast<uint32_t*>(base) = static_cast<uint32_t>(n);
      return true;
    case Kind::Size64:
      if (!parseSize(value, &n)) return bad("a size in bytes (K/M/G suffix allowed)");
      *reinterpret_cast<uint64_t*>(base) = n;
      return true;
  }
  return false;
}

}  // namespace

uint32_t effectiveThreadPool(const Settings& s) {
  return s.fdatasync || s.threadPoolSet ? s.threadPool : std::min(s.threadPool, kNoSyncThreadPool);
}

bool applySetting(Settings* s, std::string_view key, std::string_view value, std::string* error) {
  const Field* f = findField(key);
  if (f == nullptr) {
    *error = "unknown setting '" + std::string(key) + "'";
    return false;
  }
  value = trimOws(value);
  std::string expected;
  if (parseInto(s, *f, value, &expected)) {
    if (std::string_view(f->key) == "thread-pool") s->threadPoolSet = true;
    return true;
  }
  *error = "invalid value '" + std::string(value) + "' for " + f->key + ": expected " + expected;
  return false;
}

bool applyFlag(Settings* s, std::string_view key, std::string_view value, std::string* error) {
  const Field* f = findField(key);
  if (f == nullptr) {
    *error = "unknown option --" + std::string(key) + " (see --help)";
    return false;
  }
  value = trimOws(value);
  std::string expected;
  if (parseInto(s, *f, value, &expected)) {
    if (std::string_view(f->key) == "thread-pool") s->threadPoolSet = true;
    return true;
  }
  *error = "--" + std::string(f->key) + ": expected " + expected + ", got '" + std::string(value) + "'";
  return false;
}

bool applySettingsText(Settings* s, std::string_view text, std::string_view origin, std::string* error) {
  int lineNo = 0;
  // Each key at most once per text (as nginx refuses a duplicate directive): a second line for a
  // key is far more often a mistake than a wish for the last one to win.
  std::vector<std::pair<std::string, int>> seen;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++lineNo;
    size_t hash = line.find('#');
    if (hash != std::string_view::npos) line = line.substr(0, hash);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    line = trimOws(line);
    if (line.empty()) continue;
    size_t eq = line.find('=');
    std::string reason;
    if (eq == std::string_view::npos) {
      reason = "expected 'key = value', got '" + std::string(line) + "'";
    } else {
      const std::string key(trimOws(line.substr(0, eq)));
      auto first = std::find_if(seen.begin(), seen.end(), [&](const auto& k) { return k.first == key; });
      if (first != seen.end()) {
        reason = key + " is set twice (first on line " + std::to_string(first->second) + ")";
      } else if (applySetting(s, key, line.substr(eq + 1), &reason)) {
        seen.emplace_back(key, lineNo);
        continue;
      }
    }
    *error = std::string(origin) + ":" + std::to_string(lineNo) + ": " + reason;
    return false;
  }
  return true;
}

namespace {

bool hasSpaceOrControl(std::string_view v) {
  for (char c : v) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

// "http://HOST[:PORT][/...]" or "https://...", with a host and nothing that could break a header.
bool isHttpUrl(std::string_view u, bool* https) {
  size_t prefix = u.substr(0, 7) == "http://" ? 7 : u.substr(0, 8) == "https://" ? 8 : 0;
  if (prefix == 0 || u.size() <= prefix || u[prefix] == '/' || u[prefix] == ':') return false;
  if (u.size() > 2048 || hasSpaceOrControl(u)) return false;
  *https = prefix == 8;
  return true;
}

bool validateFarm(const Settings& s, std::string* error) {
  auto fail = [&](const char* msg) {
    *error = msg;
    return false;
  };
  if (s.farmName.empty() || s.farmName.size() > 64) return fail("farm-name must be 1..64 of A-Z a-z 0-9 . _ -");
  for (char c : s.farmName) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_';
    if (!ok) return fail("farm-name must be 1..64 of A-Z a-z 0-9 . _ -");
  }
  if (s.farmLeaseSeconds < 2 || s.farmLeaseSeconds > 3600) return fail("farm-lease-seconds must be 2..3600");
  if (s.farmEtcdCert.empty() != s.farmEtcdKey.empty()) {
    return fail("farm-etcd-cert and farm-etcd-key go together (a client certificate needs both)");
  }
  if (s.farmEtcd.empty()) {
    if (!s.farmEtcdCacert.empty() || !s.farmEtcdCert.empty() || !s.farmPeerUrl.empty()) {
      return fail("farm-etcd-cacert, farm-etcd-cert, farm-etcd-key and farm-peer-url need farm-etcd (farm mode)");
    }
    return true;
  }
  if (s.hostId.empty()) return fail("farm-etcd needs host-id: the node's name in the farm");
  std::vector<std::string> urls = farmEtcdEndpoints(s);
  if (urls.empty()) return fail("farm-etcd must name at least one etcd URL (http:// or https://, comma-separated)");
  for (const std::string& u : urls) {
    bool https = false;
    if (!isHttpUrl(u, &https)) {
      *error = "farm-etcd: '" + u.substr(0, 80) + "' is not an http:// or https:// URL with a host";
      return false;
    }
    if (https && s.farmEtcdCacert.empty()) {
      return fail("farm-etcd with an https:// URL needs farm-etcd-cacert (the CA that signed etcd's certificate)");
    }
  }
  if (!s.farmPeerUrl.empty()) {
    bool https = false;
    if (!isHttpUrl(s.farmPeerUrl, &https)) return fail("farm-peer-url must be an http:// or https:// URL with a host");
  }
  return true;
}

}  // namespace

std::vector<std::string> farmEtcdEndpoints(const Settings& s) {
  std::vector<std::string> out;
  std::string_view rest = s.farmEtcd;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view one = trimOws(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    while (!one.empty() && one.back() == '/') one.remove_suffix(1);
    if (!one.empty()) out.emplace_back(one);
  }
  return out;
}

std::string farmPeerUrl(const Settings& s, uint16_t boundPort) {
  if (!s.farmPeerUrl.empty()) return s.farmPeerUrl;
  std::string url = s.tlsCert.empty() ? "http://" : "https://";
  std::string_view host = s.hostId;
  size_t bracket = host.rfind(']');
  size_t colon = host.rfind(':');
  bool hostHasPort = colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket) &&
                     (host.front() == '[' || host.find(':') == colon);
  url += host;
  if (hostHasPort) return url;
  std::string_view listen = s.listen;
  size_t lc = listen.rfind(':');
  std::string port = lc == std::string_view::npos ? std::string(listen) : std::string(listen.substr(lc + 1));
  if (boundPort != 0) port = std::to_string(boundPort);
  return url + ":" + port;
}

bool validateSettings(const Settings& s, std::string* error) {
  auto fail = [&](const char* msg) {
    *error = msg;
    return false;
  };
  if (s.maxConnections == 0) return fail("max-connections must be at least 1");
  if (s.maxSessions == 0) return fail("max-sessions must be at least 1");
  if (s.requestSlots == 0) return fail("request-slots must be at least 1");
  if (s.readBuffers == 0) return fail("read-buffers must be at least 1");
  if (s.readBufferBytes < 4096) return fail("read-buffer-bytes must be at least 4096");
  if (s.maxOpenFiles == 0) return fail("max-open-files must be at least 1");
  if (s.threadPool == 0 || s.threadPool > 1024) return fail("thread-pool must be 1..1024");
  if (s.maxHeaderBytes < 512) return fail("max-header-bytes must be at least 512");
  if (s.maxPathBytes < 16 || s.maxPathBytes > 4096) return fail("max-path-bytes must be 16..4096");
  if (s.maxFragmentBytes < 5120) return fail("max-fragment-bytes must be at least 5120 (BITS minimum fragment)");
  if (s.sessionTimeoutSeconds == 0) return fail("session-timeout must be at least 1 second");
  if (s.idleSessionTimeoutSeconds == 0) return fail("idle-session-timeout must be at least 1 second");
  if (s.journalBufferBytes < 8192) return fail("journal-buffer-bytes must be at least 8192");
  if (s.writebackBytes != 0 && s.writebackBytes < 65536) return fail("writeback-bytes must be 0 (off) or at least 64K");
  if (s.journalMaxBytes < 256 * 1024) return fail("journal-max-bytes must be at least 256K");
  if (s.idleTimeoutMs == 0 || s.headerTimeoutMs == 0 || s.bodyTimeoutMs == 0 || s.sweepIntervalMs == 0) {
    return fail("timeouts must be at least 1 ms");
  }
  if (s.headerBudgetMs == 0) return fail("header-budget-ms must be at least 1");
  if (s.headerMinRate > 1000000) return fail("header-min-rate must be 0..1000000 bytes/s");
  if (s.hostId.size() > 200) return fail("host-id must be at most 200 characters");
  for (char c : s.hostId) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || c == ':' || c == '[' || c == ']';
    if (!ok) return fail("host-id must be a host name, an IPv4 address or a bracketed IPv6 address, optionally with :port");
  }
  if (s.hostIdFallbackTimeoutSeconds == 0 || s.hostIdFallbackTimeoutSeconds > UINT32_MAX) {
    return fail("host-id-fallback-timeout must be 1..4294967295 seconds");
  }
  if (s.notifyType != "none" && s.notifyType != "reference" && s.notifyType != "value") {
    return fail("notify-type must be none, reference or value");
  }
  if (s.notifyType != "none" && s.notifyUrl.empty()) return fail("notify-type reference or value needs notify-url");
  if (!s.notifyUrl.empty()) {
    std::string_view u = s.notifyUrl;
    if (u.size() > 2200) return fail("notify-url must be at most 2200 characters");
    if (u.substr(0, 8) == "https://") return fail("notify-url must be http:// (the application is called over plain HTTP)");
    if (u.find("://") != std::string_view::npos && u.substr(0, 7) != "http://") {
      return fail("notify-url must be an http:// URL or a relative path");
    }
    for (char c : u) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return fail("notify-url must not contain spaces or control characters");
    }
  }
  if (s.notifyTimeoutSeconds == 0 || s.notifyTimeoutSeconds > 3600) return fail("notify-timeout must be 1..3600 seconds");
  if (s.transactionHeader.size() > 32) return fail("transaction-header must be at most 32 characters");
  for (char c : s.transactionHeader) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return fail("transaction-header must be a header name (letters, digits, '-', '_')");
  }
  if (s.maxNotifications == 0) return fail("max-notifications must be at least 1");
  if (s.tlsCert.empty() != s.tlsKey.empty()) return fail("tls-cert and tls-key go together (https needs both)");
  if (s.tlsHandshakeTimeoutMs == 0) return fail("tls-handshake-timeout-ms must be at least 1");
  if (s.tlsBufferBytes < 1024 || s.tlsBufferBytes > 1048576) return fail("tls-buffer-bytes must be 1K..1M");
  if (s.tlsRecordBytes != 512 && s.tlsRecordBytes != 1024 && s.tlsRecordBytes != 2048 && s.tlsRecordBytes != 4096 &&
      s.tlsRecordBytes != 16384) {
    return fail("tls-record-bytes must be 512, 1K, 2K, 4K or 16K (the sizes TLS can announce)");
  }
  if (!s.locations.empty() && s.usersFile.empty()) return fail("locations needs users-file (who the users are)");
  if (!s.usersFile.empty() && s.tlsCert.empty() && !s.allowBasicOverHttp) {
    return fail("users-file over plain http would send passwords in clear: set tls-cert and tls-key, or "
                "allow-basic-over-http to accept that");
  }
  {
    std::vector<Location> locs;
    std::string why;
    if (!parseLocations(s.locations, &locs, &why)) {
      *error = why;
      return false;
    }
  }
  if (!s.adminListen.empty()) {
    std::string_view a = s.adminListen;
    size_t colon = a.rfind(':');
    std::string_view port = colon == std::string_view::npos ? a : a.substr(colon + 1);
    uint64_t n = 0;
    if (!parseDecimal(port, &n) || n > 65535 || (colon != std::string_view::npos && colon == 0)) {
      return fail("admin-listen must be ADDR:PORT or a port number (0..65535)");
    }
  }
  if (!s.adminUsers.empty()) {
    if (s.usersFile.empty()) return fail("admin-users needs users-file (who the users are)");
    std::string_view rest = s.adminUsers;
    while (!rest.empty()) {
      size_t sp = rest.find(' ');
      std::string_view name = rest.substr(0, sp);
      rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      if (!name.empty() && !validUserName(name)) {
        *error = "admin-users: '" + std::string(name) + "' is not a user name (1..32 of A-Z a-z 0-9 . _ -)";
        return false;
      }
    }
  }
  if (!validateFarm(s, error)) return false;
  if (s.logLevel != "debug" && s.logLevel != "info" && s.logLevel != "warn" && s.logLevel != "error") {
    return fail("log-level must be debug, info, warn or error");
  }
  if (s.accessLogFormat != "text" && s.accessLogFormat != "json") return fail("access-log-format must be text or json");
  return true;
}

std::string adminListenAddress(const Settings& s) {
  if (s.adminListen.empty()) return "";
  if (s.adminListen.find(':') == std::string::npos) return "127.0.0.1:" + s.adminListen;
  return s.adminListen;
}

bool isLiveSetting(std::string_view key) { return findLive(key) != nullptr; }

namespace {

bool sameField(const Field& f, const Settings& a, const Settings& b) {
  const char* pa = reinterpret_cast<const char*>(&a) + f.offset;
  const char* pb = reinterpret_cast<const char*>(&b) + f.offset;
  switch (f.kind) {
    case Kind::Str:
      return *reinterpret_cast<const std::string*>(pa) == *reinterpret_cast<const std::string*>(pb);
    case Kind::Bool:
      return *reinterpret_cast<const bool*>(pa) == *reinterpret_cast<const bool*>(pb);
    case Kind::U32:
    case Kind::Size32:
      return *reinterpret_cast<const uint32_t*>(pa) == *reinterpret_cast<const uint32_t*>(pb);
    case Kind::U64:
    case Kind::Size64:
      return *reinterpret_cast<const uint64_t*>(pa) == *reinterpret_cast<const uint64_t*>(pb);
  }
  return false;
}

void copyField(const Field& f, const Settings& from, Settings* to) {
  const char* src = reinterpret_cast<const char*>(&from) + f.offset;
  char* dst = reinterpret_cast<char*>(to) + f.offset;
  switch (f.kind) {
    case Kind::Str:
      *reinterpret_cast<std::string*>(dst) = *reinterpret_cast<const std::string*>(src);
      return;
    case Kind::Bool:
      *reinterpret_cast<bool*>(dst) = *reinterpret_cast<const bool*>(src);
      return;
    case Kind::U32:
    case Kind::Size32:
      *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src);
      return;
    case Kind::U64:
    case Kind::Size64:
      *reinterpret_cast<uint64_t*>(dst) = *reinterpret_cast<const uint64_t*>(src);
      return;
  }
}

// Live keys whose live-ness depends on the rest: the certificate can change while https stays on
// (turning https on or off changes every listener's scheme), locations while users-file stays set.
bool liveHere(const Field& f, const Settings& running, const Settings& next) {
  if (findLive(f.key) == nullptr) return false;
  std::string_view k = f.key;
  if (k == "tls-cert" || k == "tls-key") return !running.tlsCert.empty() && !next.tlsCert.empty();
  if (k == "locations") return !running.usersFile.empty() && running.usersFile == next.usersFile;
  return true;
}

}  // namespace

SettingsDiff diffSettings(const Settings& running, const Settings& next) {
  SettingsDiff d;
  for (const Field& f : kFields) {
    if (sameField(f, running, next)) continue;
    (liveHere(f, running, next) ? d.live : d.restart).push_back(f.key);
  }
  return d;
}

void copyLiveSettings(const Settings& next, Settings* running) {
  for (const Field& f : kFields) {
    if (liveHere(f, *running, next)) copyField(f, next, running);
  }
}

std::string reloadTable() {
  std::string t = "| Setting | On SIGHUP |\n|---|---|\n";
  for (const Field& f : kFields) {
    const LiveKey* l = findLive(f.key);
    t += std::string("| `") + f.key + "` | ";
    if (l == nullptr) {
      t += "needs a restart";
    } else {
      t += "live";
      if (l->note[0] != '\0') t += std::string(" (") + l->note + ")";
    }
    t += " |\n";
  }
  return t;
}

namespace {

// A setting's value as a config file would give it: sizes with the largest exact K/M/G suffix.
std::string valueText(const Field& f, const Settings& s) {
  const char* p = reinterpret_cast<const char*>(&s) + f.offset;
  auto size = [](uint64_t v) {
    if (v != 0 && v % (1ull << 30) == 0) return std::to_string(v >> 30) + "G";
    if (v != 0 && v % (1ull << 20) == 0) return std::to_string(v >> 20) + "M";
    if (v != 0 && v % (1ull << 10) == 0) return std::to_string(v >> 10) + "K";
    return std::to_string(v);
  };
  switch (f.kind) {
    case Kind::Str: {
      const std::string& v = *reinterpret_cast<const std::string*>(p);
      return v.empty() ? "(empty)" : v;
    }
    case Kind::Bool: return *reinterpret_cast<const bool*>(p) ? "on" : "off";
    case Kind::U32: return std::to_string(*reinterpret_cast<const uint32_t*>(p));
    case Kind::U64: return std::to_string(*reinterpret_cast<const uint64_t*>(p));
    case Kind::Size32: return size(*reinterpret_cast<const uint32_t*>(p));
    case Kind::Size64: return size(*reinterpret_cast<const uint64_t*>(p));
  }
  return "";
}

std::string helpText(const Settings* defaults) {
  std::string t;
  for (const Field& f : kFields) {
    std::string k = std::string("  --") + f.key;
    if (f.kind != Kind::Bool) k += " V";
    if (k.size() >= 30) k += "\n";  // a long name: its help goes on the next line, aligned
    size_t col = k.size() - (k.rfind('\n') == std::string::npos ? 0 : k.rfind('\n') + 1);
    k.append(col < 30 ? 30 - col : 0, ' ');
    t += k + f.help;
    if (defaults != nullptr) t += " [default: " + valueText(f, *defaults) + "]";
    t += "\n";
  }
  return t;
}

}  // namespace

const char* settingsHelp() {
  static std::string text = helpText(nullptr);
  return text.c_str();
}

std::string settingsHelp(const Settings& defaults) { return helpText(&defaults); }

}  // namespace bitsd
