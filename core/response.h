// Formats BITS Acks and the few plain HTTP answers bitsd sends. Every answer is HTTP/1.1 with
// `BITS-Packet-Type: Ack` and `Content-Length: 0` (BITS-UPLOAD.md §0.1, §3.1), formatted into a fixed
// caller buffer without allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/protocol.h"

namespace bitsd {

struct AckSpec {
  int status = 200;
  const SessionId* sessionId = nullptr;  // echoed when set
  bool createSession = false;            // adds BITS-Protocol and Accept-Encoding
  bool hasReceived = false;
  uint64_t receivedBytes = 0;            // BITS-Received-Content-Range
  bool hasError = false;
  uint32_t errorCode = 0;                // BITS-Error-Code, as 0x + 8 upper-case hex digits
  ErrorContext context = ErrorContext::RemoteFile;
  bool allowHeader = false;              // Allow: BITS_POST (405)
  bool close = false;                    // Connection: close
  uint32_t retryAfterSeconds = 0;        // Retry-After when non-zero (503)
  std::string_view hostId;               // with createSession: BITS-Host-Id (at most 200 bytes)
  uint64_t hostIdFallbackSeconds = 0;    // BITS-Host-Id-Fallback-Timeout, sent with hostId
};

// Room for the longest Ack: a Create-Session Ack with a 200-byte Host-Id is about 500 bytes.
inline constexpr size_t kMaxAckBytes = 768;

// Returns the number of bytes written (always < kMaxAckBytes).
size_t formatAck(const AckSpec& spec, char* out);

// "0x8020001F" style, 8 digits except for 0 which is "0x0" (§10.1 416 row).
void formatHresult(uint32_t code, char out[11]);

const char* reasonPhrase(int status);

}  // namespace bitsd
