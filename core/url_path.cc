// Owns the mapping of a request target to a root-relative upload path, refusing traversal
// (core/url_path.h).
#include "core/url_path.h"

#include <cstdint>

#include "core/protocol.h"

namespace bitsd {

namespace {
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
constexpr size_t kMaxSegmentBytes = 255;
}  // namespace

const char* pathErrorText(PathError e) {
  switch (e) {
    case PathError::None: return "ok";
    case PathError::Malformed: return "malformed URL path";
    case PathError::Traversal: return "URL path leaves the upload root";
    case PathError::TooLong: return "URL path too long";
    case PathError::Directory: return "URL names a directory";
  }
  return "?";
}

PathError resolveUploadPath(std::string_view target, size_t maxPathBytes, char* out,
                            UploadPath* result) {
  // Absolute-form: strip "scheme://authority".
  if (target.size() > 8 && (equalsIgnoreCase(target.substr(0, 7), "http://") ||
                            equalsIgnoreCase(target.substr(0, 8), "https://"))) {
    size_t schemeEnd = target.find("://") + 3;
    // The authority ends at the first '/', '?' or '#' (RFC 3986 3.2): "http://h?/a" has no path.
    size_t slash = target.find_first_of("/?#", schemeEnd);
    if (slash == std::string_view::npos || target[slash] != '/') return PathError::Directory;
    target.remove_prefix(slash);
  }
  if (target.empty() || target[0] != '/') return PathError::Malformed;
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  result->query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  if (path.find('#') != std::string_view::npos) return PathError::Malformed;

  size_t outLen = 0;
  size_t segStart = 0;   // start of the current segment in `out`
  bool lastWasSlash = true;
  auto endSegment = [&]() -> PathError {
    std::string_view seg(out + segStart, outLen - segStart);
    if (seg.empty() || seg == ".") {
      outLen = segStart;  // drop it
    } else if (seg == "..") {
      return PathError::Traversal;
    } else if (seg.size() > kMaxSegmentBytes) {
      return PathError::TooLong;
    } else {
      if (outLen >= maxPathBytes) return PathError::TooLong;
      out[outLen++] = '/';
    }
    segStart = outLen;
    return PathError::None;
  };

  for (size_t i = 1; i < path.size(); ++i) {
    char c = path[i];
    if (c == '/') {
      PathError e = endSegment();
      if (e != PathError::None) return e;
      lastWasSlash = true;
      continue;
    }
    if (c == '%') {
      if (i + 2 >= path.size()) return PathError::Malformed;
      int hi = hexValue(path[i + 1]);
      int lo = hexValue(path[i + 2]);
      if (hi < 0 || lo < 0) return PathError::Malformed;
      c = static_cast<char>(hi << 4 | lo);
      i += 2;
      // A decoded slash would change the segment structure after the fact: refuse it.
      if (c == '/') return PathError::Traversal;
    }
    if (c == '\\') return PathError::Traversal;
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) return PathError::Malformed;
    if (outLen >= maxPathBytes) return PathError::TooLong;
    out[outLen++] = c;
    lastWasSlash = false;
  }
  if (lastWasSlash) return PathError::Directory;
  // Final segment, without a trailing slash.
  std::string_view seg(out + segStart, outLen - segStart);
  if (seg == "..") return PathError::Traversal;
  if (seg == ".") return PathError::Directory;
  if (seg.size() > kMaxSegmentBytes) return PathError::TooLong;
  if (outLen == 0) return PathError::Directory;
  result->relative = std::string_view(out, outLen);
  return PathError::None;
}

bool isValidHostHeader(std::string_view host) {
  if (host.empty()) return true;
  std::string_view rest;
  if (host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close < 3) return false;  // "[::]" is the shortest
    for (char c : host.substr(1, close - 1)) {
      bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
      if (!ok) return false;
    }
    rest = host.substr(close + 1);
  } else {
    size_t colon = host.find(':');
    std::string_view name = host.substr(0, colon);
    if (name.empty()) return false;
    for (size_t i = 0; i < name.size(); ++i) {
      char c = name[i];
      bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '.' || c == '_' || c == '~';
      bool subDelim = std::string_view("!$&'()*+,;=").find(c) != std::string_view::npos;
      auto hex = [](char h) { return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'); };
      if (c == '%') {
        if (i + 2 >= name.size() || !hex(name[i + 1]) || !hex(name[i + 2])) return false;
        i += 2;
        continue;
      }
      if (!unreserved && !subDelim) return false;
    }
    rest = colon == std::string_view::npos ? std::string_view() : host.substr(colon);
  }
  if (rest.empty()) return true;
  if (rest.front() != ':' || rest.size() > 6) return false;
  uint32_t port = 0;
  for (char c : rest.substr(1)) {
    if (c < '0' || c > '9') return false;
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  return port <= 65535;
}

}  // namespace bitsd
