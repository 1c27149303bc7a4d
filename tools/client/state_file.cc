// bitsclient's state file: write and read (state_file.h).
#include "tools/client/state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/content_range.h"

namespace bitsd::client {

bool writeState(const Options& o, const Job& job, std::string* error) {
  std::ostringstream s;
  s << "# bitsclient job: bitsclient resume " << o.statePath << "\n"
    << "version=1\nfile=" << o.file << "\nsize=" << o.fileBytes << "\nurl=" << o.url
    << "\nsession=" << job.sessionId() << "\noffset=" << job.offset() << "\nfragment=" << job.fragmentBytes()
    << "\nhost-id=" << (job.usingHostId() ? job.hostId() : std::string()) << "\nfallback=" << job.fallbackSeconds()
    << "\nreply-out=" << o.replyOut << "\n";
  for (const std::string& h : o.headers) s << "header=" << h << "\n";
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

void readState(const std::string& path, Options* o) {
  std::ifstream in(path);
  if (!in) usageError("cannot read state file " + path + ": " + std::strerror(errno));
  std::string line;
  bool sawVersion = false;
  int lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) usageError(path + ":" + std::to_string(lineNo) + ": not key=value");
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    uint64_t n = 0;
    auto num = [&]() {
      if (!bitsd::parseDecimal(v, &n)) usageError(path + ":" + std::to_string(lineNo) + ": bad number for " + k);
      return n;
    };
    if (k == "version") {
      if (v != "1") usageError(path + ": unknown state file version " + v);
      sawVersion = true;
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
      usageError(path + ":" + std::to_string(lineNo) + ": unknown key " + k);
    }
  }
  if (!sawVersion || o->file.empty() || o->url.empty()) usageError(path + ": not a bitsclient state file");
  o->statePath = path;
}

}  // namespace bitsd::client
