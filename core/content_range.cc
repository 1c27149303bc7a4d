// Owns the parsing of a Fragment's Content-Range (core/content_range.h).
#include "core/content_range.h"

#include "core/protocol.h"

namespace bitsd {

bool parseDecimal(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool parseContentRange(std::string_view text, ByteRange* out) {
  text = trimOws(text);
  if (text.size() < 6 || !equalsIgnoreCase(text.substr(0, 5), "bytes") ||
      (text[5] != ' ' && text[5] != '\t')) {
    return false;
  }
  text = trimOws(text.substr(6));
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return false;
  std::string_view span = text.substr(0, slash);
  uint64_t total = 0;
  if (!parseDecimal(text.substr(slash + 1), &total)) return false;
  if (span == "*" || span == "0--1") {
    if (total != 0) return false;
    *out = ByteRange{0, 0, 0};
    return true;
  }
  size_t dash = span.find('-');
  if (dash == std::string_view::npos) return false;
  uint64_t first = 0, last = 0;
  if (!parseDecimal(span.substr(0, dash), &first) || !parseDecimal(span.substr(dash + 1), &last)) {
    return false;
  }
  if (first > last || last >= total) return false;
  *out = ByteRange{first, last + 1, total};
  return true;
}

}  // namespace bitsd
