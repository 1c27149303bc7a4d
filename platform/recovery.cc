#include "platform/recovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "core/log.h"

namespace bitsd::platform {

namespace {

using Steady = std::chrono::steady_clock;

bool readWhole(const std::string& path, std::vector<uint8_t>* out, bool* exists, std::string* error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *exists = false;
    if (errno == ENOENT) return true;
    *error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  *exists = true;
  struct stat st;
  ::fstat(fd, &st);
  out->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out->size()) {
    ssize_t n = ::read(fd, out->data() + got, out->size() - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out->resize(got);
  ::close(fd);
  return true;
}

void syncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string dirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

class FileInspector final : public RecoveryInspector {
 public:
  RecoveryDecision inspect(const RecoveryItem& item) override {
    RecoveryDecision d;
    struct stat p, dst;
    bool hasPartial = ::stat(item.partialPath, &p) == 0;
    if (item.totalKnown && item.haveBytes == item.totalBytes) {
      bool hasDest = ::lstat(item.destPath, &dst) == 0;
      if (hasPartial && hasDest && p.st_ino == dst.st_ino && p.st_dev == dst.st_dev) {
        // Linked into place just before the crash: finish the commit's clean-up.
        ::unlink(item.partialPath);
        syncDir(dirOf(item.partialPath));
        d.action = RecoveryAction::Committed;
        return d;
      }
      if (!hasPartial && hasDest) {  // renamed into place just before the crash
        d.action = RecoveryAction::Committed;
        return d;
      }
    }
    if (!hasPartial) {
      logf(LogLevel::Warn, "recovery: in-progress file %s is missing; the session is dropped", item.partialPath);
      d.action = RecoveryAction::Drop;
      return d;
    }
    uint64_t size = static_cast<uint64_t>(p.st_size);
    if (size > item.haveBytes) {
      // Bytes written but never acked: trim them so the file holds exactly the acked prefix.
      if (::truncate(item.partialPath, static_cast<off_t>(item.haveBytes)) == 0) {
        int fd = ::open(item.partialPath, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
          ::fdatasync(fd);
          ::close(fd);
        }
        ++trimmed;
      }
    } else if (size < item.haveBytes) {
      logf(LogLevel::Warn, "recovery: %s holds %llu bytes, the journal says %llu; resuming from the file",
           item.partialPath, static_cast<unsigned long long>(size), static_cast<unsigned long long>(item.haveBytes));
      d.action = RecoveryAction::SetHave;
      d.haveBytes = size;
    }
    return d;
  }
  uint32_t trimmed = 0;
};

class FileHasher final : public RecoveryHasher {
 public:
  bool hashPrefix(const char* path, uint64_t bytes, Sha256& sha, Sha256State& st) override {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    std::vector<char> buf(256 * 1024);
    uint64_t left = bytes;
    while (left > 0) {
      ssize_t n = ::read(fd, buf.data(), static_cast<size_t>(std::min<uint64_t>(left, buf.size())));
      if (n <= 0) break;
      sha.update(st, std::span<const char>(buf.data(), static_cast<size_t>(n)));
      left -= static_cast<uint64_t>(n);
    }
    ::close(fd);
    return left == 0;
  }
};

bool writeAll(int fd, const uint8_t* p, size_t n, off_t off) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, off);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
    off += w;
  }
  return true;
}

}  // namespace

bool recoverState(const Settings& settings, UploadEngine& engine, Journal& journal, Sha256& sha,
                  Random& random, RecoveryReport* report, std::string* error) {
  auto t0 = Steady::now();
  const std::string path = journal.path();
  // One process per state directory: bitsd holds this lock for its lifetime, and so does
  // `bitsctl journal compact` while it rewrites the journal.
  int lock = ::open((settings.state + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    *error = "state directory " + settings.state + " is in use by another bitsd (or bitsctl)";
    if (lock >= 0) ::close(lock);
    return false;
  }
  ::unlink((path + ".tmp").c_str());  // a compaction that never reached its rename

  std::vector<uint8_t> bytes;
  bool exists = false;
  if (!readWhole(path, &bytes, &exists, error)) return false;
  report->journalBytes = bytes.size();

  // Replay straight into the engine's session table.
  ReplayResult rr;
  if (exists && !bytes.empty()) {
    rr = replayJournal(bytes, &engine);
    if (rr.status != ReplayStatus::Ok) {
      *error = path + ": " + replayStatusText(rr.status) + " (move it away, or use another --state)";
      return false;
    }
  }
  report->replayMs = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
  report->records = rr.records;
  report->tailBytes = rr.tailBytes;
  report->stopReason = rr.stopReason;

  auto tRestore = Steady::now();
  std::vector<SessionId> expired;
  Status st = engine.finishRestore(&expired);
  report->restoreMs = std::chrono::duration<double, std::milli>(Steady::now() - tRestore).count();
  if (!st.isOk()) {
    *error = std::string("journal: ") + st.message();
    return false;
  }
  report->expired = static_cast<uint32_t>(expired.size());

  // The journal file: keep the valid prefix, block-aligned, or start a new one.
  int fd = -1;
  uint32_t salt = rr.header.salt;
  uint64_t nextSeq = rr.nextSeq;
  uint64_t end = rr.validEnd;
  if (exists && !bytes.empty()) {
    fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(end)) != 0) {
      *error = "cannot open " + path + " for writing: " + std::strerror(errno);
      return false;
    }
    if (end % kJournalBlockBytes != 0) {
      uint8_t pad[2 * kJournalBlockBytes];
      size_t n = encodePad(end, salt, nextSeq, pad, sizeof pad);
      if (!writeAll(fd, pad, n, static_cast<off_t>(end))) {
        *error = "cannot write " + path + ": " + std::strerror(errno);
        return false;
      }
      ++nextSeq;
      end += n;
    }
    ::fdatasync(fd);
  } else {
    uint8_t rnd[4];
    if (!random.fill(rnd, sizeof rnd)) {
      *error = "random generator failed";
      return false;
    }
    JournalHeader h;
    h.salt = salt = static_cast<uint32_t>(getLe(rnd, 4));
    h.firstSeq = nextSeq = 1;
    uint8_t block[kJournalBlockBytes];
    encodeJournalHeader(h, block);
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !writeAll(fd, block, sizeof block, 0) || ::fdatasync(fd) != 0) {
      *error = "cannot create " + path + ": " + std::strerror(errno);
      return false;
    }
    syncDir(dirOf(path));
    end = kJournalBlockBytes;
  }
  uint64_t liveEstimate = engine.sessionCount() * 160ull + kJournalBlockBytes;
  journal.attach(fd, salt, nextSeq, end, liveEstimate);

  // Files: reconcile the open sessions, then delete every in-progress file no session owns.
  auto tFiles = Steady::now();
  FileInspector inspector;
  report->dropped = engine.reconcile(inspector);
  report->trimmed = inspector.trimmed;
  std::string partialDir = engine.partialDir();
  if (DIR* d = ::opendir(partialDir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      SessionId id;
      bool ours = name.size() == kSessionIdTextBytes + 5 && name.compare(kSessionIdTextBytes, 5, ".part") == 0 &&
                  parseSessionId(std::string_view(name).substr(0, kSessionIdTextBytes), &id);
      const Session* s = ours ? engine.findSession(id) : nullptr;
      if (s == nullptr || s->state != SessionState::Open) {
        if (::unlink((partialDir + "/" + name).c_str()) == 0) ++report->orphans;
      }
    }
    ::closedir(d);
  }
  FileHasher hasher;
  engine.rehashOpenSessions(hasher);
  report->filesMs = std::chrono::duration<double, std::milli>(Steady::now() - tFiles).count();
  report->sessions = engine.sessionCount();
  report->totalMs = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
  (void)sha;
  return true;
}

}  // namespace bitsd::platform
