// The access log's line formats (README "Logs"): one line per request, as text (Common Log Format
// first, BITS fields after) or as a JSON object. Formatting only: the platform fills an
// AccessRecord, formats it into a fixed buffer and writes the bytes (platform/access_log_writer.h).
// Nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/protocol.h"
#include "core/request_parser.h"
#include "core/session_table.h"

namespace bitsd {

enum class AccessLogFormat : uint8_t { Text, Json };

// What one request was. Views must stay valid while the line is formatted. Empty views, status 0,
// hasError false, PacketType::Unknown and a null session mean "absent" ("-" in text, null in JSON).
struct AccessRecord {
  int64_t unixMs = 0;            // wall clock when the answer was sent
  ClientAddress client;
  std::string_view user;         // the authenticated user
  HttpMethod method = HttpMethod::Other;
  bool hasRequest = false;       // the request line was read (method, target, version are valid)
  std::string_view target;       // request-target as sent
  uint8_t httpMajor = 1, httpMinor = 1;
  PacketType packet = PacketType::Unknown;
  const SessionId* session = nullptr;
  std::string_view contentRange;  // the Content-Range header as sent
  int status = 0;                 // 0: no answer was sent (the connection closed first)
  bool hasError = false;
  uint32_t errorCode = 0;         // BITS-Error-Code
  uint64_t bytesIn = 0;           // request body bytes received (the head not counted)
  uint64_t bytesOut = 0;          // response bytes sent: head and body
  uint64_t durationUs = 0;        // from the request's first byte to its answer written
};

// Longest line formatAccessLine writes (the newline included). Untrusted fields are cut to fit and
// end with "..." when cut.
inline constexpr size_t kMaxAccessLineBytes = 4096;

// Writes one line ending in '\n' into `out` (at least kMaxAccessLineBytes); returns its length.
size_t formatAccessLine(AccessLogFormat format, const AccessRecord& r, char* out);

// "12.34.56.78" or an IPv6 address in RFC 5952 form; "-" when unknown. `out`: 46 bytes at least;
// returns the length (no terminator written).
size_t formatClientAddress(const ClientAddress& a, char* out);
inline constexpr size_t kClientAddressTextBytes = 46;

// A sentence for the error log naming why a request was refused, from its status and error code.
const char* refusalReason(int status, uint32_t errorCode);

// The error log's line for a refused request (status >= 400), once per request, at info (416, the
// normal answer to a resume, and 401, the normal first answer with authentication on, at debug).
// Rate-limited by reason (core/log.h).
void logRefusal(const AccessRecord& r, const char* reason);

}  // namespace bitsd
