#include "tools/client/messages.h"

#include <cstdio>

#include "core/protocol.h"

namespace bitsd::client {
namespace {

enum class Cred : uint8_t { Any, Given, NotGiven };
constexpr uint32_t kAnyCode = 0;
constexpr int kAnyStatus = 0;
constexpr uint32_t kAnyContext = 0xFFFFFFFF;
constexpr uint32_t kApplication = static_cast<uint32_t>(ErrorContext::RemoteApplication);

// One row: the first that matches the answer wins, so specific rows come before general ones.
// packets: a bit per Kind (0: any packet). In `text`, %d stands for the status, or for the
// application's status in rows of context 0x7.
struct Row {
  int status;
  uint32_t code;
  uint32_t context;
  uint32_t packets;
  Cred cred;
  const char* text;
};

constexpr uint32_t bit(Kind k) { return 1u << static_cast<unsigned>(k); }
constexpr uint32_t kCreate = bit(Kind::CreateSession);
constexpr uint32_t kFragment = bit(Kind::Fragment);

constexpr Row kRows[] = {
    // The server's application (upload-reply, notify): context 0x7.
    {kAnyStatus, hresult::kTimeout, kApplication, 0, Cred::Any, "the server's application did not answer in time"},
    {kAnyStatus, hresult::kRemoteApplication, kApplication, 0, Cred::Any,
     "the server could not reach its application, or could not understand its answer"},
    {kAnyStatus, kAnyCode, kApplication, 0, Cred::Any, "the server's application answered %d"},
    // Access.
    {403, hresult::kAccessDenied, kAnyContext, kCreate, Cred::NotGiven,
     "the file exists and the server does not allow overwrites"},
    {403, hresult::kAccessDenied, kAnyContext, kCreate, Cred::Given,
     "the server refused this upload here: the file exists and the server does not allow overwrites, or "
     "you may not upload to this path"},
    {403, hresult::kAccessDenied, kAnyContext, kFragment, Cred::Any,
     "the server cannot put the file in place: the file appeared there meanwhile and the server does not allow "
     "overwrites"},
    {403, kAnyCode, kAnyContext, 0, Cred::Any, "the server refused this request (access denied)"},
    {401, kAnyCode, kAnyContext, 0, Cred::NotGiven, "the server wants a user name and password (-u NAME:PASSWORD)"},
    {401, kAnyCode, kAnyContext, 0, Cred::Given, "the server refused the user name and password given"},
    // The destination.
    {404, hresult::kPathNotFound, kAnyContext, 0, Cred::Any, "the destination directory does not exist on the server"},
    {404, kAnyCode, kAnyContext, 0, Cred::Any, "the server has no such URL (is it a BITS upload location?)"},
    {kAnyStatus, hresult::kTooLarge, kAnyContext, 0, Cred::Any, "the file is larger than the server allows"},
    {kAnyStatus, hresult::kSessionNotFound, kAnyContext, 0, Cred::Any,
     "the server no longer knows this upload session (it expired or was cancelled); starting over"},
    {kAnyStatus, hresult::kDiskFull, kAnyContext, 0, Cred::Any, "the server's disk is full"},
    // Load: transient, so bitsclient retries.
    {503, hresult::kNoSystemResources, kAnyContext, kCreate, Cred::Any,
     "the server holds too many sessions (for you: max-sessions-per-user, or in all)"},
    {503, hresult::kNoSystemResources, kAnyContext, 0, Cred::Any,
     "the server is out of room (connections, sessions or journal space)"},
    {503, kAnyCode, kAnyContext, 0, Cred::Any, "the server is busy"},
    // The request itself.
    {413, kAnyCode, kAnyContext, kFragment, Cred::Any, "the server refuses even the smallest fragments (5 KB)"},
    {413, kAnyCode, kAnyContext, 0, Cred::Any, "the request is larger than the server accepts"},
    {416, kAnyCode, kAnyContext, 0, Cred::Any, "the server holds a different part of the file than this fragment"},
    {411, kAnyCode, kAnyContext, 0, Cred::Any, "the server wants a Content-Length on every request"},
    {400, kAnyCode, kAnyContext, kCreate, Cred::Any,
     "the server did not accept the request (the destination may be a directory, or the request is malformed)"},
    {400, kAnyCode, kAnyContext, 0, Cred::Any, "the server found the request malformed"},
    {505, kAnyCode, kAnyContext, 0, Cred::Any, "the server does not speak this HTTP version"},
    {501, kAnyCode, kAnyContext, 0, Cred::Any, "the server does not support this BITS packet (is it a BITS server?)"},
    {kAnyStatus, hresult::kProtocolMismatch, kAnyContext, 0, Cred::Any,
     "the server does not speak the BITS upload protocol this client offers"},
    {kAnyStatus, hresult::kInsufficientHttp, kAnyContext, 0, Cred::Any,
     "something between here and the server does not pass the HTTP the upload needs"},
    {408, kAnyCode, kAnyContext, 0, Cred::Any, "the server gave up waiting for the request"},
    {500, hresult::kInternal, kAnyContext, 0, Cred::Any, "the server failed internally (its log says why)"},
};

bool matches(const Row& row, const Response& r, Kind packet, bool credentialsGiven) {
  if (row.status != kAnyStatus && row.status != r.status) return false;
  if (row.code != kAnyCode && (!r.hasErrorCode || row.code != r.errorCode)) return false;
  if (row.context != kAnyContext && (!r.hasErrorCode || row.context != r.errorContext)) return false;
  if (row.packets != 0 && (row.packets & bit(packet)) == 0) return false;
  if (row.cred == Cred::Given && !credentialsGiven) return false;
  if (row.cred == Cred::NotGiven && credentialsGiven) return false;
  return true;
}

}  // namespace

std::string refusalSentence(const Response& r, Kind packet, bool credentialsGiven) {
  for (const Row& row : kRows) {
    if (!matches(row, r, packet, credentialsGiven)) continue;
    int shown = r.status;
    if (row.context == kApplication && r.hasErrorCode && r.errorCode > hresult::kHttpErrorBase &&
        r.errorCode < hresult::kHttpErrorBase + 1000) {
      shown = static_cast<int>(r.errorCode - hresult::kHttpErrorBase);
    }
    std::string text(row.text);
    if (size_t at = text.find("%d"); at != std::string::npos) text.replace(at, 2, std::to_string(shown));
    return text;
  }
  char buf[96];
  if (r.status >= 500) {
    std::snprintf(buf, sizeof buf, "the server had a problem (it answered %d)", r.status);
  } else {
    std::snprintf(buf, sizeof buf, "the server refused the request (it answered %d)", r.status);
  }
  return buf;
}

std::string refusalCodes(const Response& r) {
  // snprintf, not "(" + std::to_string(...): g++ 12 -O3 warns (-Werror=restrict) inside
  // std::string's insert for that form, a known false positive, and Release builds failed on it.
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%d", r.status);
  std::string s = buf;
  if (r.hasErrorCode) s.append(", ").append(hresultText(r.errorCode));
  s += ")";
  return s;
}

std::string refusalMessage(const Response& r, Kind packet, bool credentialsGiven) {
  return refusalSentence(r, packet, credentialsGiven) + " " + refusalCodes(r);
}

}  // namespace bitsd::client
