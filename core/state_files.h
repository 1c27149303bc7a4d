// What bitsd keeps in its state directory besides the journal, by name: the in-progress file of
// each open session (`<state>/partial/{id}.part`, the request file of a hand-off too) and the
// application's reply to a hand-off (`<state>/replies/{id}`), and the rule for how long a reply file
// is kept. The engine, start-up recovery (platform/recovery.cc) and tools (bitsbench) all name
// and recognise these files through here, so the names are written once.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "core/protocol.h"
#include "core/session_table.h"

namespace bitsd {

inline constexpr std::string_view kPartialDirName = "partial";
inline constexpr std::string_view kRepliesDirName = "replies";
inline constexpr std::string_view kPartialSuffix = ".part";
// The file name of an in-progress file ("{id}.part") and of a reply file ("{id}").
inline constexpr size_t kPartialNameBytes = kSessionIdTextBytes + kPartialSuffix.size();
inline constexpr size_t kReplyNameBytes = kSessionIdTextBytes;

// `<state>/partial` and `<state>/replies`, for the state directory `state` (trailing slashes
// ignored).
std::string partialDirOf(std::string_view state);
std::string repliesDirOf(std::string_view state);

// Writes "<dir>/{id}.part" (or "<dir>/{id}" for a reply) NUL-terminated into `out`, which holds
// at least dir.size() + 2 + kPartialNameBytes bytes. Returns the length without the NUL.
size_t formatPartialPath(std::string_view partialDir, const SessionId& id, char* out);
size_t formatReplyPath(std::string_view repliesDir, const SessionId& id, char* out);

// Just the in-progress file's name, "{id}.part" (kPartialNameBytes, no NUL).
void formatPartialName(const SessionId& id, char* out);

// A directory entry's name as bitsd writes it: true and the session's id if `name` is an
// in-progress file's (reply file's) name; anything else in those directories is a stray.
bool parsePartialName(std::string_view name, SessionId* id);
bool parseReplyName(std::string_view name, SessionId* id);

// The reply-retention rule: a reply URL is served while its session's delivery has ended and the
// session is neither closed nor expired (forgotten). The reply file is kept at least that long, and
// on a single node for as long as its delivery is remembered (servesReplyFile); recovery deletes any
// other reply file. The delivered-ID book keeps a delivery's answer at least as long.
inline bool keepsReply(const Session& s) { return s.handedOff && s.state == SessionState::Complete; }
// A delivery whose answer is a reply file served at a reply URL (200, a reply file, no static URL).
// On a single node that file is also its reply of record: kept after its session ends, for as long
// as the delivery is remembered, so that a later session of the same transaction gets a copy of it
// (UploadEngine::holdsReplyOfRecord, DeliveryBook::expire, platform/recovery.cc).
inline bool servesReplyFile(const DeliveryInfo& d) {
  return d.ended && d.status == 200 && (d.flags & kDeliveryHasReplyFile) != 0 && d.staticUrl.empty();
}

// How long a delivered transaction id is remembered after its delivery (seconds): the setting
// delivered-retention, or the session timeout when that is 0.
inline uint64_t deliveredRetentionSeconds(uint64_t deliveredRetention, uint64_t sessionTimeout) {
  return deliveredRetention != 0 ? deliveredRetention : sessionTimeout;
}

}  // namespace bitsd
