// Content-Range of a BITS Fragment: `bytes <first>-<last>/<total>` (zero-based, inclusive on the
// wire). We convert at the parser to half-open [begin, end) (STYLE.md §3). The unit is matched
// case-insensitively (the SDK writes `Bytes`). Zero-byte uploads use `bytes 0--1/0` or `bytes */0`
// (BITS-UPLOAD.md §10.1); both parse to begin = end = total = 0.
#pragma once

#include <cstdint>
#include <string_view>

namespace bitsd {

struct ByteRange {
  uint64_t begin = 0;  // first byte
  uint64_t end = 0;    // one past the last byte
  uint64_t total = 0;  // size of the whole upload
  uint64_t size() const { return end - begin; }
};

// Returns false when the text is not a well-formed range with begin < end <= total, or the empty
// range of a zero-byte upload. Never reads past `text`.
bool parseContentRange(std::string_view text, ByteRange* out);

// Parses a non-negative decimal with no sign, no spaces and no overflow.
bool parseDecimal(std::string_view text, uint64_t* out);

}  // namespace bitsd
