// Small HTTP pieces for serving upload replies with GET and HEAD (BITS-UPLOAD.md §5.4, §10.1):
// IMF-fixdate for Last-Modified / If-Unmodified-Since, and the Range header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace bitsd {

inline constexpr size_t kHttpDateBytes = 29;  // "Sun, 06 Nov 1994 08:49:37 GMT"

// Writes exactly kHttpDateBytes characters (no terminator).
void formatHttpDate(uint64_t unixSeconds, char out[kHttpDateBytes]);
// IMF-fixdate only (what every modern client sends); false for anything else.
bool parseHttpDate(std::string_view text, uint64_t* unixSeconds);

enum class RangeAnswer : uint8_t {
  Partial,        // 206 with one range
  Multipart,      // 206 multipart/byteranges with several ranges
  Unsatisfiable,  // 416 with Content-Range: bytes */size
};

struct ReplyRange {
  uint64_t begin = 0;
  uint64_t end = 0;  // exclusive
};
// The most parts a multipart/byteranges answer has; more ranges are coalesced into one.
inline constexpr size_t kMaxReplyRanges = 8;

// Interprets a Range header against a body of `size` bytes into `out` (room for kMaxReplyRanges),
// in ascending order, overlapping and adjacent ranges merged (RFC 9110 §14.2 lets a server
// coalesce). Ranges that start past the end are dropped. BITS-UPLOAD.md §10.1: a Range request is
// never answered 200 (the client treats that as an error), so a header that is not a valid bytes
// range set, or has no satisfiable range, is Unsatisfiable (416). More than kMaxReplyRanges
// ranges left after merging become the one range that spans them all.
RangeAnswer interpretRanges(std::string_view header, uint64_t size, ReplyRange* out, size_t* count);

}  // namespace bitsd
