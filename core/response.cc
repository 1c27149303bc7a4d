// Owns the server's answers: Acks, the 408 and the 503, status reason phrases, HRESULT text
// (core/response.h).
#include "core/response.h"

#include <cinttypes>
#include <cstdio>

#include "core/http_head.h"
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
  HeadWriter w(out, kMaxAckBytes - 1);  // the length stays below kMaxAckBytes
  w.statusLine(spec.status).header("BITS-Packet-Type", "Ack").header("Content-Length", "0");
  if (spec.createSession) {
    w.header("BITS-Protocol", kUploadProtocolGuid).header("Accept-Encoding", "identity");
    if (!spec.hostId.empty()) {
      w.header("BITS-Host-Id", spec.hostId).headerNumber("BITS-Host-Id-Fallback-Timeout", spec.hostIdFallbackSeconds);
    }
  }
  if (spec.sessionId != nullptr) {
    char id[kSessionIdTextBytes];
    formatSessionId(*spec.sessionId, id);
    w.header("BITS-Session-Id", std::string_view(id, kSessionIdTextBytes));
  }
  if (spec.hasReceived) w.headerNumber("BITS-Received-Content-Range", spec.receivedBytes);
  if (spec.hasError) {
    char code[11];
    formatHresult(spec.errorCode, code);
    char context[16];
    std::snprintf(context, sizeof context, "0x%X", static_cast<unsigned>(spec.context));
    w.header("BITS-Error-Code", code).header("BITS-Error-Context", context);
  }
  if (!spec.replyUrl.empty()) w.header("BITS-Reply-URL", spec.replyUrl);
  if (spec.allowHeader) w.header("Allow", spec.allowReplyMethods ? "BITS_POST, GET, HEAD" : "BITS_POST");
  if (spec.retryAfterSeconds != 0) w.headerNumber("Retry-After", spec.retryAfterSeconds);
  if (spec.authenticate) w.header("WWW-Authenticate", "Basic realm=\"bitsd\", charset=\"UTF-8\"");
  if (spec.close) w.header("Connection", "close");
  return w.end();
}

size_t formatRequestTimeout(char* out) {
  AckSpec spec;
  spec.status = 408;
  spec.hasError = true;
  spec.errorCode = kRequestTimeoutErrorCode;
  spec.close = true;
  return formatAck(spec, out);
}

size_t formatServerBusy(char* out, uint32_t retryAfterSeconds) {
  AckSpec spec;
  spec.status = 503;
  spec.hasError = true;
  spec.errorCode = hresult::kNoSystemResources;
  spec.close = true;
  spec.retryAfterSeconds = retryAfterSeconds;
  return formatAck(spec, out);
}

size_t formatReplyHead(const ReplyHeadSpec& spec, char* out) {
  HeadWriter w(out, kMaxAckBytes - 1);
  w.statusLine(spec.status).headerNumber("Content-Length", spec.contentLength).header("Accept-Ranges", "bytes");
  char type[96];
  if (!spec.multipartBoundary.empty()) {
    std::snprintf(type, sizeof type, "multipart/byteranges; boundary=%.*s", static_cast<int>(spec.multipartBoundary.size()),
                  spec.multipartBoundary.data());
    w.header("Content-Type", type);
  } else if (spec.status == 200 || spec.status == 206) {
    w.header("Content-Type", "application/octet-stream");
  }
  if (spec.lastModified != 0) {
    char date[kHttpDateBytes];
    formatHttpDate(spec.lastModified, date);
    w.header("Last-Modified", std::string_view(date, kHttpDateBytes));
  }
  char range[80];
  if (spec.status == 206 && spec.multipartBoundary.empty()) {
    std::snprintf(range, sizeof range, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, spec.rangeBegin, spec.rangeEnd - 1,
                  spec.totalBytes);
    w.header("Content-Range", range);
  } else if (spec.status == 416) {
    std::snprintf(range, sizeof range, "bytes */%" PRIu64, spec.totalBytes);
    w.header("Content-Range", range);
  }
  if (spec.allowHeader) w.header("Allow", "GET, HEAD, BITS_POST");
  if (spec.close) w.header("Connection", "close");
  return w.end();
}

}  // namespace bitsd
