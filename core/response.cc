#include "core/response.h"

#include <cinttypes>
#include <cstdio>

#include "core/http_reply.h"

namespace bitsd {

const char* reasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 206: return "Partial Content";
    case 412: return "Precondition Failed";
    case 502: return "Bad Gateway";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 409: return "Conflict";
    case 501: return "Not Implemented";
    case 504: return "Gateway Timeout";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

void formatHresult(uint32_t code, char out[11]) {
  if (code == 0) {
    std::snprintf(out, 11, "0x0");
  } else {
    std::snprintf(out, 11, "0x%08" PRIX32, code);
  }
}

size_t formatAck(const AckSpec& spec, char* out) {
  size_t n = 0;
  auto put = [&](const char* fmt, auto... args) {
    int w = std::snprintf(out + n, kMaxAckBytes - n, fmt, args...);
    if (w > 0) n += static_cast<size_t>(w);
    if (n >= kMaxAckBytes) n = kMaxAckBytes - 1;
  };
  put("HTTP/1.1 %d %s\r\nBITS-Packet-Type: Ack\r\nContent-Length: 0\r\n", spec.status,
      reasonPhrase(spec.status));
  if (spec.createSession) {
    put("BITS-Protocol: %.*s\r\nAccept-Encoding: identity\r\n",
        static_cast<int>(kUploadProtocolGuid.size()), kUploadProtocolGuid.data());
    if (!spec.hostId.empty()) {
      put("BITS-Host-Id: %.*s\r\nBITS-Host-Id-Fallback-Timeout: %" PRIu64 "\r\n", static_cast<int>(spec.hostId.size()),
          spec.hostId.data(), spec.hostIdFallbackSeconds);
    }
  }
  if (spec.sessionId != nullptr) {
    char id[kSessionIdTextBytes];
    formatSessionId(*spec.sessionId, id);
    put("BITS-Session-Id: %.*s\r\n", static_cast<int>(kSessionIdTextBytes), id);
  }
  if (spec.hasReceived) put("BITS-Received-Content-Range: %" PRIu64 "\r\n", spec.receivedBytes);
  if (spec.hasError) {
    char code[11];
    formatHresult(spec.errorCode, code);
    put("BITS-Error-Code: %s\r\nBITS-Error-Context: 0x%X\r\n", code,
        static_cast<unsigned>(spec.context));
  }
  if (!spec.replyUrl.empty()) {
    put("BITS-Reply-URL: %.*s\r\n", static_cast<int>(spec.replyUrl.size()), spec.replyUrl.data());
  }
  if (spec.allowHeader) put("%s", "Allow: BITS_POST\r\n");
  if (spec.retryAfterSeconds != 0) put("Retry-After: %u\r\n", spec.retryAfterSeconds);
  if (spec.authenticate) put("%s", "WWW-Authenticate: Basic realm=\"bitsd\", charset=\"UTF-8\"\r\n");
  if (spec.close) put("%s", "Connection: close\r\n");
  put("%s", "\r\n");
  return n;
}

size_t formatReplyHead(const ReplyHeadSpec& spec, char* out) {
  size_t n = 0;
  auto put = [&](const char* fmt, auto... args) {
    int w = std::snprintf(out + n, kMaxAckBytes - n, fmt, args...);
    if (w > 0) n += static_cast<size_t>(w);
    if (n >= kMaxAckBytes) n = kMaxAckBytes - 1;
  };
  put("HTTP/1.1 %d %s\r\nContent-Length: %" PRIu64 "\r\nAccept-Ranges: bytes\r\n", spec.status,
      reasonPhrase(spec.status), spec.contentLength);
  if (spec.status == 200 || spec.status == 206) put("%s", "Content-Type: application/octet-stream\r\n");
  if (spec.lastModified != 0) {
    char date[kHttpDateBytes];
    formatHttpDate(spec.lastModified, date);
    put("Last-Modified: %.*s\r\n", static_cast<int>(kHttpDateBytes), date);
  }
  if (spec.status == 206) {
    put("Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", spec.rangeBegin, spec.rangeEnd - 1,
        spec.totalBytes);
  } else if (spec.status == 416) {
    put("Content-Range: bytes */%" PRIu64 "\r\n", spec.totalBytes);
  }
  if (spec.allowHeader) put("%s", "Allow: GET, HEAD, BITS_POST\r\n");
  if (spec.close) put("%s", "Connection: close\r\n");
  put("%s", "\r\n");
  return n;
}

}  // namespace bitsd
