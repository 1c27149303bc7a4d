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
  Whole,          // no usable Range header: 200 with the whole body
  Partial,        // 206 with [begin, end)
  Unsatisfiable,  // 416 with Content-Range: bytes */size
};

// Interprets a Range header against a body of `size` bytes. Several ranges are coalesced into the
// one range that spans them all (RFC 9110 §14.2 lets a server coalesce), so the answer is always a
// single part. A header that is not a bytes range is ignored (RFC 9110: Whole).
RangeAnswer interpretRange(std::string_view header, uint64_t size, uint64_t* begin, uint64_t* end);

}  // namespace bitsd
