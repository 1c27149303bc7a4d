// Owns the hand-off's rules: notify-type and URL parsing, the application's answer headers and which
// statuses are transient (core/notify.h).
#include "core/notify.h"

#include "core/http_head.h"

#include <cstring>

#include "core/content_range.h"
#include "core/protocol.h"

namespace bitsd {

NotifyMode parseNotifyMode(std::string_view text) {
  if (text == "reference") return NotifyMode::Reference;
  if (text == "value") return NotifyMode::Value;
  return NotifyMode::None;
}

const char* notifyOutcomeName(NotifyOutcome o) {
  switch (o) {
    case NotifyOutcome::Answered: return "answered";
    case NotifyOutcome::Unreachable: return "unreachable";
    case NotifyOutcome::Malformed: return "malformed answer";
    case NotifyOutcome::TimedOut: return "timed out";
    case NotifyOutcome::LocalError: return "local I/O error";
    case NotifyOutcome::Busy: return "all notification slots busy";
  }
  return "?";
}

bool takeNotifyHeader(std::string_view name, std::string_view value, NotifyResult* r) {
  if (equalsIgnoreCase(name, "BITS-Static-Response-URL")) {
    value = trimOws(value);
    if (value.empty() || value.size() > NotifyResult::kMaxUrlBytes) return false;
    std::memcpy(r->staticUrl, value.data(), value.size());
    r->staticUrlLen = value.size();
  } else if (equalsIgnoreCase(name, "BITS-Copy-File-To-Destination")) {
    r->copyToDestination = true;
  }
  return true;
}

bool isTransientStatus(int status) {
  // BITS-UPLOAD.md §5.5: fatal are 300-305, 307, 4xx except 408/409, 501, 505; everything else
  // (other 3xx, 408, 409, 5xx, non-standard codes) is transient.
  if ((status >= 300 && status <= 305) || status == 307) return false;
  if (status >= 400 && status <= 499) return status == 408 || status == 409;
  if (status == 501 || status == 505) return false;
  return true;
}

namespace {
struct Writer {
  char* out;
  size_t cap;
  size_t len = 0;
  bool ok = true;
  void put(std::string_view s) {
    if (len + s.size() >= cap) {
      ok = false;
      return;
    }
    std::memcpy(out + len, s.data(), s.size());
    len += s.size();
  }
};
}  // namespace

bool resolveNotifyUrl(std::string_view notifyUrl, std::string_view hostAndPort, std::string_view target,
                      char* out, size_t cap) {
  std::string_view path = target;
  std::string_view query;
  size_t q = target.find('?');
  if (q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  // An absolute-form request-target ("http://host/path") carries its own authority.
  if (path.substr(0, 7) == "http://") {
    size_t slash = path.find('/', 7);
    if (slash == std::string_view::npos) {
      hostAndPort = path.substr(7);
      path = "/";
    } else {
      hostAndPort = path.substr(7, slash - 7);
      path = path.substr(slash);
    }
  }
  Writer w{out, cap};
  if (notifyUrl.substr(0, 7) == "http://") {
    w.put(notifyUrl);
  } else {
    w.put("http://");
    w.put(hostAndPort);
    if (!notifyUrl.empty() && notifyUrl.front() == '/') {
      w.put(notifyUrl);
    } else {
      size_t dirEnd = path.rfind('/');
      w.put(dirEnd == std::string_view::npos ? std::string_view("/") : path.substr(0, dirEnd + 1));
      w.put(notifyUrl);
    }
  }
  if (!query.empty()) {
    std::string_view sofar(out, w.ok ? w.len : 0);
    w.put(sofar.find('?') == std::string_view::npos ? "?" : "&");
    w.put(query);
  }
  if (!w.ok) return false;
  out[w.len] = '\0';
  return true;
}

bool parseHttpUrl(std::string_view url, HttpUrl* out) {
  if (url.substr(0, 7) != "http://") return false;
  std::string_view rest = url.substr(7);
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  out->pathAndQuery = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return false;
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
  }
  if (host.empty() || host.size() > 253) return false;
  out->host = host;
  out->port = 80;
  if (!port.empty()) {
    uint64_t n = 0;
    if (!parseDecimal(port, &n) || n == 0 || n > 65535) return false;
    out->port = static_cast<uint16_t>(n);
  }
  return true;
}

size_t base64Encode(const uint8_t* in, size_t n, char* out) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = static_cast<uint32_t>(in[i]) << 16;
    if (i + 1 < n) v |= static_cast<uint32_t>(in[i + 1]) << 8;
    if (i + 2 < n) v |= in[i + 2];
    out[o++] = kAlphabet[(v >> 18) & 63];
    out[o++] = kAlphabet[(v >> 12) & 63];
    out[o++] = i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? kAlphabet[v & 63] : '=';
  }
  return o;
}

size_t formatNotifyHead(const NotifyRequest& req, const HttpUrl& url, char* out, size_t cap) {
  HeadWriter w(out, cap);
  // "http://h?q" has the query only: the target is "/?q".
  bool slash = !url.pathAndQuery.empty() && url.pathAndQuery.front() == '?';
  if (!slash) {
    w.requestLine("POST", url.pathAndQuery);
  } else {
    char target[NotifyResult::kMaxUrlBytes + 2];
    if (url.pathAndQuery.size() + 1 > sizeof target) return 0;
    target[0] = '/';
    std::memcpy(target + 1, url.pathAndQuery.data(), url.pathAndQuery.size());
    w.requestLine("POST", std::string_view(target, url.pathAndQuery.size() + 1));
  }
  // Host: an IPv6 literal in brackets; the port unless it is 80.
  char host[300];
  size_t hn = 0;
  bool v6 = url.host.find(':') != std::string_view::npos;
  if (url.host.size() + 10 > sizeof host) return 0;
  if (v6) host[hn++] = '[';
  std::memcpy(host + hn, url.host.data(), url.host.size());
  hn += url.host.size();
  if (v6) host[hn++] = ']';
  if (url.port != 80) {
    host[hn++] = ':';
    hn += formatDecimal(url.port, host + hn);
  }
  w.header("Host", std::string_view(host, hn));
  w.header("User-Agent", "bitsd BITSExts/1.5");
  w.header("BITS-Original-Request-URL", req.originalUrl);
  if (!req.byValue) {
    w.header("BITS-Request-DataFile-Name", req.requestFile != nullptr ? req.requestFile : "");
    w.header("BITS-Response-DataFile-Name", req.replyFile != nullptr ? req.replyFile : "");
  }
  w.header("BITS-Transaction-Id", req.transactionId);
  w.header("BITS-Session-Id", req.sessionId);
  if (req.sha256 != nullptr) {
    char digest[9 + 44 + 1] = "sha-256=:";
    size_t n = 9 + base64Encode(req.sha256, 32, digest + 9);
    digest[n++] = ':';
    w.header("Repr-Digest", std::string_view(digest, n));
  }
  w.headerNumber("Content-Length", req.byValue ? req.contentBytes : 0);
  if (req.byValue) w.header("Content-Type", "application/octet-stream");
  w.header("Connection", "close");
  size_t len = w.end();
  return w.truncated() ? 0 : len;
}

}  // namespace bitsd
