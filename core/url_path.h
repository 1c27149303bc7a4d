// Maps a request-target to a path relative to the upload root, or refuses it.
//
// The path part is percent-decoded exactly once and normalised: empty and `.` segments are dropped.
// Refused (the caller answers 400 E_INVALIDARG): `..` segments, encoded slashes (%2F), backslashes
// (raw or %5C), NUL and other control bytes, malformed escapes, a trailing slash or an empty path
// (both name a directory), a segment over 255 bytes, or a result longer than `maxPathBytes`.
// Content-Name never enters here: the URL alone picks the destination.
#pragma once

#include <cstddef>
#include <string_view>

namespace bitsd {

enum class PathError { None, Malformed, Traversal, TooLong, Directory };

struct UploadPath {
  std::string_view relative;  // points into the caller's output buffer; no leading slash
  std::string_view query;     // raw query string after '?', without the '?' (points into the input)
};

// `out` must hold at least `maxPathBytes` bytes. Absolute-form targets (`http://host/path`, as sent
// through a proxy) have their scheme and authority removed first.
PathError resolveUploadPath(std::string_view target, size_t maxPathBytes, char* out, UploadPath* result);

const char* pathErrorText(PathError e);

// A Host header value as RFC 9112 §3.2 and RFC 3986 §3.2.2 allow it: uri-host [":" port], where
// uri-host is a reg-name (letters, digits, "-._~", %XX and "!$&'()*+,;="), an IPv4 address or a
// bracketed IPv6 address, and port is at most 65535 (or empty, as RFC 3986 allows). An empty Host
// is valid (RFC 9112 allows it). Such a value goes into BITS-Reply-URL, so anything else (spaces,
// "/", "?", "@", a bare IPv6) is 400.
bool isValidHostHeader(std::string_view host);

}  // namespace bitsd
