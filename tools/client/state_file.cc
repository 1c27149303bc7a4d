// bitsclient's state file: write and read (state_file.h).
#include "tools/client/state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "core/content_range.h"

namespace bitsd::client {

bool writeState(const Options& o, const Job& job, std::string* error) {
  // One value per line: a newline in one (a file name may hold one) would be read back as another key.
  const std::string hostId = job.usingHostId() ? job.hostId() : std::string();
  for (const std::string* v : {&o.statePath, &o.file, &o.url, &job.sessionId(), &hostId, &o.replyOut}) {
    if (v->find('\n') != std::string::npos) {
      *error = "cannot keep a name with a line break in the state file " + o.statePath;
      return false;
    }
  }
  std::ostringstream s;
  s << "# bitsclient job: bitsclient resume " << o.statePath << "\n"
    << "version=1\n";
  // The headers before the keys every file has, so that a file cut after any line lacks one of them.
  for (const std::string& h : o.headers) s << "header=" << h << "\n";
  s << "file=" << o.file << "\nsize=" << o.fileBytes << "\nurl=" << o.url
    << "\nsession=" << job.sessionId() << "\noffset=" << job.offset() << "\nfragment=" << job.fragmentBytes()
    << "\nhost-id=" << (job.usingHostId() ? job.hostId() : std::string()) << "\nfallback=" << job.fallbackSeconds()
    << "\nreply-out=" << o.replyOut << "\n";
  std::string text = s.str();
  std::string tmp = o.statePath + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "cannot write " + tmp + ": " + std::strerror(errno);
    return false;
  }
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), o.statePath.c_str()) != 0) {
    *error = "cannot write " + o.statePath + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

bool readState(const std::string& path, Options* o, std::string* error) {
  // Read whole with read(2): an istream would throw on a directory. A state file is a few hundred
  // bytes; anything past kMaxBytes is something else (e.g. the upload's own file given by mistake).
  constexpr size_t kMaxBytes = 1024 * 1024;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot read state file " + path + ": " + std::strerror(errno);
    return false;
  }
  std::string text;
  char buf[4096];
  ssize_t got = 0;
  while ((got = ::read(fd, buf, sizeof buf)) > 0 && text.size() <= kMaxBytes) text.append(buf, static_cast<size_t>(got));
  int readErrno = errno;
  ::close(fd);
  if (got < 0) {
    *error = "cannot read state file " + path + ": " + std::strerror(readErrno);
    return false;
  }
  if (text.size() > kMaxBytes) {
    *error = path + ": not a bitsclient state file (over " + std::to_string(kMaxBytes) + " bytes)";
    return false;
  }
  // The writer ends every line, and writes every key but header= every time: a file that stops
  // mid-line or lacks a key was cut short (or is not ours), and its values are not to be trusted
  // (a URL cut short is another upload's URL).
  if (!text.empty() && text.back() != '\n') {
    *error = path + ": ends mid-line (a truncated state file?)";
    return false;
  }
  static constexpr const char* kKeys[] = {"version", "file",     "size",     "url",      "session",
                                          "offset",  "fragment", "host-id", "fallback", "reply-out"};
  bool seen[std::size(kKeys)] = {};
  size_t pos = 0;
  int lineNo = 0;
  while (pos < text.size()) {
    size_t nl = std::min(text.find('\n', pos), text.size());
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineNo;
    std::string where = path + ":" + std::to_string(lineNo) + ": ";
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) {
      *error = where + "not key=value";
      return false;
    }
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    uint64_t n = 0;
    bool badNumber = false;
    auto num = [&]() {
      if (!bitsd::parseDecimal(v, &n)) badNumber = true;
      return n;
    };
    for (size_t i = 0; i < std::size(kKeys); ++i) seen[i] = seen[i] || k == kKeys[i];
    if (k == "version") {
      if (v != "1") {
        *error = path + ": unknown state file version " + v;
        return false;
      }
    } else if (k == "file") {
      o->file = v;
    } else if (k == "size") {
      o->fileBytes = num();
    } else if (k == "url") {
      o->url = v;
    } else if (k == "session") {
      o->sessionId = v;
    } else if (k == "offset") {
      o->offset = num();
    } else if (k == "fragment") {
      o->job.fragmentBytes = num();
    } else if (k == "host-id") {
      o->hostId = v;
    } else if (k == "fallback") {
      o->fallbackSeconds = num();
    } else if (k == "reply-out") {
      o->replyOut = v;
      o->job.wantReply = !v.empty();
    } else if (k == "header") {
      o->headers.push_back(v);
    } else {
      *error = where + "unknown key " + k;
      return false;
    }
    if (badNumber) {
      *error = where + "bad number for " + k;
      return false;
    }
  }
  if (!seen[0] || o->file.empty() || o->url.empty()) {
    *error = path + ": not a bitsclient state file";
    return false;
  }
  for (size_t i = 0; i < std::size(kKeys); ++i) {
    if (!seen[i]) {
      *error = path + ": no " + kKeys[i] + "= line (a truncated state file?)";
      return false;
    }
  }
  o->statePath = path;
  return true;
}

}  // namespace bitsd::client
