// Owns the access log's line formats (text and JSON) and the error log's refusal lines
// (core/access_log.h).
#include "core/access_log.h"

#include <cstdio>
#include <cstring>

#include "core/log.h"

namespace bitsd {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Appends into [pos, end); never past `end`.
struct Out {
  char* pos;
  char* end;
  void put(char c) {
    if (pos < end) *pos++ = c;
  }
  void put(std::string_view s) {
    for (char c : s) put(c);
  }
  void putUnsigned(uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
      tmp[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) put(tmp[--n]);
  }
  void putFixed(uint64_t v, int width) {  // zero-padded
    char tmp[24];
    for (int i = width - 1; i >= 0; --i) {
      tmp[i] = static_cast<char>('0' + v % 10);
      v /= 10;
    }
    put(std::string_view(tmp, static_cast<size_t>(width)));
  }
  void putHex32(uint32_t v) {
    put("0x");
    for (int shift = 28; shift >= 0; shift -= 4) put(kHex[(v >> shift) & 0xf]);
  }
  void putMs(uint64_t us) {  // microseconds as milliseconds with three decimals
    putUnsigned(us / 1000);
    put('.');
    putFixed(us % 1000, 3);
  }
};

// Text fields: every byte outside 0x20..0x7e, and '"' and '\', becomes \xHH (as nginx does);
// unquoted fields (`quoted` false) escape the space too, so fields stay split by spaces. At most
// `limit` output bytes; a cut field ends with "...".
void putTextEscaped(Out& o, std::string_view s, bool quoted, size_t limit) {
  size_t used = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto b = static_cast<unsigned char>(s[i]);
    bool plain = b > 0x20 && b < 0x7f && b != '"' && b != '\\';
    if (b == ' ' && quoted) plain = true;
    size_t need = plain ? 1 : 4;
    if (used + need > limit) {
      o.put("...");
      return;
    }
    used += need;
    if (plain) {
      o.put(static_cast<char>(b));
    } else {
      o.put("\\x");
      o.put(kHex[b >> 4]);
      o.put(kHex[b & 0xf]);
    }
  }
}

// Length of the valid UTF-8 sequence at s[i] (1..4), or 0 if the bytes there are not one.
size_t utf8Length(std::string_view s, size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) {
    n = 2;
    cp = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    cp = b & 0x0f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    cp = b & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

// A JSON string, quotes included: '"' and '\' escaped, control bytes and DEL as \u00XX, valid
// UTF-8 kept, every byte of invalid UTF-8 as \ufffd (JSON cannot carry raw bytes).
void putJsonString(Out& o, std::string_view s, size_t limit) {
  o.put('"');
  size_t used = 0;
  for (size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    size_t n = utf8Length(s, i);
    char esc[8];
    std::string_view piece;
    if (n == 0) {
      piece = "\\ufffd";
      n = 1;
    } else if (b == '"' || b == '\\') {
      esc[0] = '\\';
      esc[1] = static_cast<char>(b);
      piece = std::string_view(esc, 2);
    } else if (b < 0x20 || b == 0x7f) {
      std::memcpy(esc, "\\u00", 4);
      esc[4] = kHex[b >> 4];
      esc[5] = kHex[b & 0xf];
      piece = std::string_view(esc, 6);
    } else {
      piece = s.substr(i, n);
    }
    if (used + piece.size() > limit) {
      o.put("...");
      break;
    }
    used += piece.size();
    o.put(piece);
    i += n;
  }
  o.put('"');
}

const char* methodName(HttpMethod m) {
  switch (m) {
    case HttpMethod::BitsPost: return "BITS_POST";
    case HttpMethod::Get: return "GET";
    case HttpMethod::Head: return "HEAD";
    case HttpMethod::Other: break;
  }
  return "OTHER";
}

// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm), so no libc time call is needed.
void civilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

struct Civil {
  int64_t year;
  unsigned month, day, hour, minute, second, ms;
};

Civil civil(int64_t unixMs) {
  int64_t secs = unixMs >= 0 ? unixMs / 1000 : (unixMs - 999) / 1000;
  Civil c{};
  c.ms = static_cast<unsigned>(unixMs - secs * 1000);
  int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  auto rem = static_cast<unsigned>(secs - days * 86400);
  c.hour = rem / 3600;
  c.minute = rem / 60 % 60;
  c.second = rem % 60;
  civilFromDays(days, &c.year, &c.month, &c.day);
  return c;
}

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

constexpr size_t kTargetLimit = 2048;
constexpr size_t kFieldLimit = 256;

void formatText(Out& o, const AccessRecord& r) {
  char addr[kClientAddressTextBytes];
  o.put(std::string_view(addr, formatClientAddress(r.client, addr)));
  o.put(" - ");
  if (r.user.empty()) {
    o.put('-');
  } else {
    putTextEscaped(o, r.user, false, kFieldLimit);
  }
  Civil c = civil(r.unixMs);
  o.put(" [");
  o.putFixed(c.day, 2);
  o.put('/');
  o.put(kMonths[c.month - 1]);
  o.put('/');
  o.putFixed(static_cast<uint64_t>(c.year), 4);
  o.put(':');
  o.putFixed(c.hour, 2);
  o.put(':');
  o.putFixed(c.minute, 2);
  o.put(':');
  o.putFixed(c.second, 2);
  o.put(" +0000] ");
  if (r.hasRequest) {
    o.put('"');
    o.put(methodName(r.method));
    o.put(' ');
    putTextEscaped(o, r.target, true, kTargetLimit);
    o.put(" HTTP/");
    o.putUnsigned(r.httpMajor);
    o.put('.');
    o.putUnsigned(r.httpMinor);
    o.put('"');
  } else {
    o.put("\"-\"");
  }
  o.put(' ');
  if (r.status == 0) {
    o.put('-');
  } else {
    o.putUnsigned(static_cast<uint64_t>(r.status));
  }
  o.put(' ');
  o.putUnsigned(r.bytesOut);
  o.put(' ');
  o.put(r.packet == PacketType::Unknown ? "-" : packetTypeName(r.packet));
  o.put(' ');
  if (r.session != nullptr) {
    char id[kSessionIdTextBytes];
    formatSessionId(*r.session, id);
    o.put(std::string_view(id, sizeof id));
  } else {
    o.put('-');
  }
  o.put(' ');
  if (r.contentRange.empty()) {
    o.put("\"-\"");
  } else {
    o.put('"');
    putTextEscaped(o, r.contentRange, true, kFieldLimit);
    o.put('"');
  }
  o.put(' ');
  if (r.hasError) {
    o.putHex32(r.errorCode);
  } else {
    o.put('-');
  }
  o.put(' ');
  o.putUnsigned(r.bytesIn);
  o.put(' ');
  o.putMs(r.durationUs);
}

void formatJson(Out& o, const AccessRecord& r) {
  Civil c = civil(r.unixMs);
  o.put("{\"time\":\"");
  o.putFixed(static_cast<uint64_t>(c.year), 4);
  o.put('-');
  o.putFixed(c.month, 2);
  o.put('-');
  o.putFixed(c.day, 2);
  o.put('T');
  o.putFixed(c.hour, 2);
  o.put(':');
  o.putFixed(c.minute, 2);
  o.put(':');
  o.putFixed(c.second, 2);
  o.put('.');
  o.putFixed(c.ms, 3);
  o.put("Z\",\"client\":");
  if (r.client.family == 0) {
    o.put("null");
  } else {
    char addr[kClientAddressTextBytes];
    o.put('"');
    o.put(std::string_view(addr, formatClientAddress(r.client, addr)));
    o.put('"');
  }
  o.put(",\"user\":");
  if (r.user.empty()) {
    o.put("null");
  } else {
    putJsonString(o, r.user, kFieldLimit);
  }
  o.put(",\"method\":");
  if (r.hasRequest) {
    o.put('"');
    o.put(methodName(r.method));
    o.put("\",\"path\":");
    putJsonString(o, r.target, kTargetLimit);
  } else {
    o.put("null,\"path\":null");
  }
  o.put(",\"packet\":");
  if (r.packet == PacketType::Unknown) {
    o.put("null");
  } else {
    o.put('"');
    o.put(packetTypeName(r.packet));
    o.put('"');
  }
  o.put(",\"session\":");
  if (r.session != nullptr) {
    char id[kSessionIdTextBytes];
    formatSessionId(*r.session, id);
    o.put('"');
    o.put(std::string_view(id, sizeof id));
    o.put('"');
  } else {
    o.put("null");
  }
  o.put(",\"range\":");
  if (r.contentRange.empty()) {
    o.put("null");
  } else {
    putJsonString(o, r.contentRange, kFieldLimit);
  }
  o.put(",\"status\":");
  if (r.status == 0) {
    o.put("null");
  } else {
    o.putUnsigned(static_cast<uint64_t>(r.status));
  }
  o.put(",\"error\":");
  if (r.hasError) {
    o.put('"');
    o.putHex32(r.errorCode);
    o.put('"');
  } else {
    o.put("null");
  }
  o.put(",\"bytes_in\":");
  o.putUnsigned(r.bytesIn);
  o.put(",\"bytes_out\":");
  o.putUnsigned(r.bytesOut);
  o.put(",\"duration_ms\":");
  o.putMs(r.durationUs);
  o.put('}');
}

}  // namespace

size_t formatAccessLine(AccessLogFormat format, const AccessRecord& r, char* out) {
  // The field limits keep a line well inside kMaxAccessLineBytes (a JSON path escape is at most
  // 6 bytes per input byte, but the limit counts output bytes); the last byte is kept for '\n'.
  Out o{out, out + kMaxAccessLineBytes - 1};
  if (format == AccessLogFormat::Json) {
    formatJson(o, r);
  } else {
    formatText(o, r);
  }
  *o.pos++ = '\n';
  return static_cast<size_t>(o.pos - out);
}

size_t formatClientAddress(const ClientAddress& a, char* out) {
  Out o{out, out + kClientAddressTextBytes};
  if (a.family == 4) {
    for (int i = 0; i < 4; ++i) {
      if (i > 0) o.put('.');
      o.putUnsigned(a.bytes[i]);
    }
  } else if (a.family == 6) {
    uint16_t w[8];
    for (int i = 0; i < 8; ++i) w[i] = static_cast<uint16_t>(a.bytes[2 * i] << 8 | a.bytes[2 * i + 1]);
    // RFC 5952: the longest run (2 or more) of zero groups becomes "::", the first one on a tie.
    int bestAt = -1, bestLen = 1;
    for (int i = 0; i < 8;) {
      int j = i;
      while (j < 8 && w[j] == 0) ++j;
      if (j - i > bestLen) {
        bestAt = i;
        bestLen = j - i;
      }
      i = j > i ? j : i + 1;
    }
    bool v4mapped = bestAt == 0 && bestLen == 5 && w[5] == 0xffff;
    for (int i = 0; i < 8; ++i) {
      if (i == bestAt) {
        o.put("::");
        i += bestLen - 1;
        continue;
      }
      if (v4mapped && i == 6) {
        o.put(':');
        for (int k = 12; k < 16; ++k) {
          if (k > 12) o.put('.');
          o.putUnsigned(a.bytes[k]);
        }
        break;
      }
      if (i > 0 && i != bestAt + bestLen) o.put(':');
      bool started = false;
      for (int shift = 12; shift >= 0; shift -= 4) {
        unsigned nib = (w[i] >> shift) & 0xf;
        if (nib != 0 || started || shift == 0) {
          o.put(kHex[nib]);
          started = true;
        }
      }
    }
  } else {
    o.put('-');
  }
  return static_cast<size_t>(o.pos - out);
}

const char* refusalReason(int status, uint32_t errorCode) {
  switch (status) {
    case 400: return "bad request";
    case 401: return "no valid credentials";
    case 403: return "access denied";
    case 404: return errorCode == hresult::kSessionNotFound ? "unknown session" : "not found";
    case 405: return "method not allowed";
    case 408: return "request timed out";
    case 411: return "Content-Length required";
    case 413: return "body too large";
    case 414: return "URL too long";
    case 416: return "range does not continue the upload (the client resumes)";
    case 431: return "request head too large";
    case 500: return errorCode == hresult::kTooLarge ? "upload larger than max-upload-size" : "server error";
    case 501: return "not implemented";
    case 503: return "server busy";
    case 505: return "HTTP version not supported";
    default: return "refused";
  }
}

void logRefusal(const AccessRecord& r, const char* reason) {
  if (r.status < 400) return;
  LogLevel level = r.status == 416 ? LogLevel::Debug : LogLevel::Info;
  if (!logEnabled(level)) return;
  char addr[kClientAddressTextBytes + 1];
  addr[formatClientAddress(r.client, addr)] = '\0';
  char path[160];
  Out o{path, path + sizeof path - 1};
  putTextEscaped(o, r.target, true, sizeof path - 4);
  *o.pos = '\0';
  if (reason == nullptr) reason = refusalReason(r.status, r.errorCode);
  // Keyed by the reason: the same refusal at most once per window (core/log.h).
  logLimited(level, reason, "refused %s %s from %s: %d %s (BITS-Error-Code 0x%08x)",
             r.packet == PacketType::Unknown ? (r.hasRequest ? methodName(r.method) : "request")
                                             : packetTypeName(r.packet),
             r.hasRequest ? path : "-", addr, r.status, reason, r.hasError ? r.errorCode : 0u);
}

}  // namespace bitsd
