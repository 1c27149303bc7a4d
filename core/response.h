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
  bool allowReplyMethods = false;        // ... on a reply URL: Allow: BITS_POST, GET, HEAD (§10.1)
  bool close = false;                    // Connection: close
  uint32_t retryAfterSeconds = 0;        // Retry-After when non-zero (503)
  std::string_view hostId;               // with createSession: BITS-Host-Id (at most 200 bytes)
  uint64_t hostIdFallbackSeconds = 0;    // BITS-Host-Id-Fallback-Timeout, sent with hostId
  std::string_view replyUrl;             // BITS-Reply-URL (final Ack of an upload-reply), ≤ 2200 bytes
  bool authenticate = false;             // 401: WWW-Authenticate: Basic realm="bitsd"
};

// Room for the longest Ack: a final Ack with a 2,200-byte BITS-Reply-URL is about 2,600 bytes.
inline constexpr size_t kMaxAckBytes = 3072;

// The head of an answer to GET/HEAD on a reply URL (plain HTTP, no BITS headers). `contentLength` is
// the length of the body that follows (for HEAD: what a GET would send). For 206, `rangeBegin`,
// `rangeEnd` (half-open) and `totalBytes` give Content-Range; for 416, Content-Range is `*/total`.
struct ReplyHeadSpec {
  int status = 200;
  uint64_t contentLength = 0;
  uint64_t rangeBegin = 0;
  uint64_t rangeEnd = 0;
  uint64_t totalBytes = 0;
  uint64_t lastModified = 0;  // Unix seconds; sent when non-zero
  bool allowHeader = false;   // 405: Allow: GET, HEAD, BITS_POST
  std::string_view multipartBoundary;  // 206 with several ranges: multipart/byteranges, no Content-Range
  bool close = false;
};
size_t formatReplyHead(const ReplyHeadSpec& spec, char* out);

// Returns the number of bytes written (always < kMaxAckBytes).
size_t formatAck(const AckSpec& spec, char* out);

// The answers the server sends on its own, outside an exchange, each then closing the connection
// (BITS-UPLOAD.md §7). Both write into `out` (room for kMaxAckBytes) and return the length.
//   408: a request stalled (header or body timeout), or its slow head lost its slot to a waiting one.
inline constexpr uint32_t kRequestTimeoutErrorCode = hresult::kInvalidArg;  // its BITS-Error-Code
size_t formatRequestTimeout(char* out);
//   503 with Retry-After: no room for the connection (max-connections); transient for the client.
inline constexpr uint32_t kBusyRetryAfterSeconds = 5;
size_t formatServerBusy(char* out, uint32_t retryAfterSeconds = kBusyRetryAfterSeconds);

// "0x8020001F" style, 8 digits except for 0 which is "0x0" (§10.1 416 row).
void formatHresult(uint32_t code, char out[11]);

const char* reasonPhrase(int status);

}  // namespace bitsd
