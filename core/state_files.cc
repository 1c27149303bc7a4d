// Names of the files in the state directory (see core/state_files.h).
#include "core/state_files.h"

#include <cstring>

namespace bitsd {

namespace {
std::string dirOf(std::string_view state, std::string_view name) {
  std::string d(state);
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  d += '/';
  d += name;
  return d;
}

size_t formatIn(std::string_view dir, const SessionId& id, std::string_view suffix, char* out) {
  std::memcpy(out, dir.data(), dir.size());
  size_t n = dir.size();
  out[n++] = '/';
  formatSessionId(id, out + n);
  n += kSessionIdTextBytes;
  if (!suffix.empty()) std::memcpy(out + n, suffix.data(), suffix.size());
  n += suffix.size();
  out[n] = '\0';
  return n;
}
}  // namespace

void formatPartialName(const SessionId& id, char* out) {
  formatSessionId(id, out);
  std::memcpy(out + kSessionIdTextBytes, kPartialSuffix.data(), kPartialSuffix.size());
}

std::string partialDirOf(std::string_view state) { return dirOf(state, kPartialDirName); }
std::string repliesDirOf(std::string_view state) { return dirOf(state, kRepliesDirName); }

size_t formatPartialPath(std::string_view partialDir, const SessionId& id, char* out) {
  return formatIn(partialDir, id, kPartialSuffix, out);
}

size_t formatReplyPath(std::string_view repliesDir, const SessionId& id, char* out) {
  return formatIn(repliesDir, id, {}, out);
}

bool parsePartialName(std::string_view name, SessionId* id) {
  return name.size() == kPartialNameBytes && name.substr(kSessionIdTextBytes) == kPartialSuffix &&
         parseSessionId(name.substr(0, kSessionIdTextBytes), id);
}

bool parseReplyName(std::string_view name, SessionId* id) {
  return name.size() == kReplyNameBytes && parseSessionId(name, id);
}

}  // namespace bitsd
