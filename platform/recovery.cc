// Owns start-up recovery: the journal's replay, the partial files' reconciliation, the digests'
// rehash (platform/recovery.h).
#include "platform/recovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/log.h"
#include "core/state_files.h"
#include "platform/beneath.h"

namespace bitsd::platform {

namespace {

using Steady = std::chrono::steady_clock;

Outcome readWhole(const std::string& path, std::vector<uint8_t>* out, bool* exists) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *exists = false;
    if (errno == ENOENT) return Outcome::ok();
    return Outcome::fail(Code::Io, "cannot open " + path + ": " + std::strerror(errno));
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
  return Outcome::ok();
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

// One pass over <state>/partial: readdir plus an fstatat per entry (no path walk per file). Each
// in-progress file is looked up here by session id; everything else found is a candidate orphan.
struct PartialFile {
  uint64_t size;
  ino_t ino;
  dev_t dev;
  bool claimed;  // an open session owns it
};

// The destination as the commit sees it: its directory opened below the base with no symlink
// followed, then the name not followed either. False when it is missing, or when the way to it is
// not what the commit would take (a directory swapped for a symlink: whatever lies there was not
// committed by us).
bool statBeneath(const RecoveryItem& item, struct stat* st) {
  std::string base(item.destPath, item.destBaseBytes);
  std::string_view parent, name;
  splitBelow(std::string_view(item.destPath + item.destBaseBytes + 1), &parent, &name);
  int dir = openDirBeneath(base.c_str(), parent);
  if (dir < 0) return false;
  bool found = ::fstatat(dir, name.data(), st, AT_SYMLINK_NOFOLLOW) == 0;
  ::close(dir);
  return found;
}

class FileInspector final : public RecoveryInspector {
 public:
  explicit FileInspector(std::unordered_map<SessionId, PartialFile, SessionIdHash>& files) : files_(files) {}

  RecoveryDecision inspect(const RecoveryItem& item) override {
    RecoveryDecision d;
    struct stat dst;
    auto it = files_.find(item.id);
    bool hasPartial = it != files_.end();
    if (hasPartial) it->second.claimed = true;
    if (item.totalKnown && item.haveBytes == item.totalBytes) {
      bool hasDest = statBeneath(item, &dst);
      if (hasPartial && hasDest && it->second.ino == dst.st_ino && it->second.dev == dst.st_dev) {
        // Linked into place just before the crash: finish the commit's clean-up.
        ::unlink(item.partialPath);
        syncDir(dirOf(item.partialPath));
        d.action = RecoveryAction::Committed;
        statReply(item, &d);
        return d;
      }
      if (!hasPartial && hasDest && S_ISREG(dst.st_mode)) {  // renamed into place just before the crash
        d.action = RecoveryAction::Committed;
        statReply(item, &d);
        return d;
      }
    }
    if (!hasPartial) {
      logf(LogLevel::Warn, "recovery: in-progress file %s is missing; the session is dropped", item.partialPath);
      d.action = RecoveryAction::Drop;
      return d;
    }
    uint64_t size = it->second.size;
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

 private:
  static void statReply(const RecoveryItem& item, RecoveryDecision* d) {
    struct stat rst;
    if (item.replyPath != nullptr && ::stat(item.replyPath, &rst) == 0 && S_ISREG(rst.st_mode)) {
      d->replyExists = true;
      d->replyBytes = static_cast<uint64_t>(rst.st_size);
    }
  }
  std::unordered_map<SessionId, PartialFile, SessionIdHash>& files_;
};

class FileHasher final : public RecoveryHasher {
 public:
  bool hashRange(const char* path, uint64_t from, uint64_t bytes, Sha256& sha, Sha256State& st) override {
    if (bytes == 0) return true;
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(bytes, 256 * 1024)));
    uint64_t left = bytes;
    uint64_t at = from;
    while (left > 0) {
      ssize_t n = ::pread(fd, buf.data(), static_cast<size_t>(std::min<uint64_t>(left, buf.size())),
                          static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      sha.update(st, std::span<const char>(buf.data(), static_cast<size_t>(n)));
      left -= static_cast<uint64_t>(n);
      at += static_cast<uint64_t>(n);
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

Outcome recoverState(const Settings& settings, UploadEngine& engine, Journal& journal, Sha256& sha,
                     Random& random, RecoveryReport* report) {
  auto t0 = Steady::now();
  const std::string path = journal.path();
  // One process per state directory: bitsd holds this lock for its lifetime, and so does
  // `bitsctl journal compact` while it rewrites the journal.
  int lock = ::open((settings.state + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    if (lock >= 0) ::close(lock);
    return Outcome::fail(Code::AccessDenied, "state directory " + settings.state + " is in use by another bitsd (or bitsctl)");
  }
  ::unlink((path + ".tmp").c_str());  // a compaction that never reached its rename

  std::vector<uint8_t> bytes;
  bool exists = false;
  if (Outcome o = readWhole(path, &bytes, &exists); !o.isOk()) return o;
  report->journalBytes = bytes.size();

  // Replay straight into the engine's session table.
  ReplayResult rr;
  if (exists && !bytes.empty()) {
    rr = replayJournal(bytes, &engine);
    if (rr.status != ReplayStatus::Ok) {
      return Outcome::fail(Code::InvalidArgument,
                           path + ": " + replayStatusText(rr.status) + " (move it away, or use another --state)");
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
  if (!st.isOk()) return Outcome(st).within("journal: ");
  report->expired = static_cast<uint32_t>(expired.size());

  // The journal file: keep the valid prefix, block-aligned, or start a new one.
  int fd = -1;
  uint32_t salt = rr.header.salt;
  uint64_t nextSeq = rr.nextSeq;
  uint64_t end = rr.validEnd;
  if (exists && !bytes.empty()) {
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);  // read-write: appends are read back
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(end)) != 0) {
      return Outcome::fail(Code::Io, "cannot open " + path + " for writing: " + std::strerror(errno));
    }
    if (end % kJournalBlockBytes != 0) {
      uint8_t pad[2 * kJournalBlockBytes];
      size_t n = encodePad(end, salt, nextSeq, pad, sizeof pad);
      if (!writeAll(fd, pad, n, static_cast<off_t>(end))) {
        return Outcome::fail(Code::Io, "cannot write " + path + ": " + std::strerror(errno));
      }
      ++nextSeq;
      end += n;
    }
    ::fdatasync(fd);
  } else {
    uint8_t rnd[4];
    if (!random.fill(rnd, sizeof rnd)) {
      return Outcome::fail(Code::Io, "random generator failed");
    }
    JournalHeader h;
    h.salt = salt = static_cast<uint32_t>(getLe(rnd, 4));
    h.firstSeq = nextSeq = 1;
    uint8_t block[kJournalBlockBytes];
    encodeJournalHeader(h, block);
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !writeAll(fd, block, sizeof block, 0) || ::fdatasync(fd) != 0) {
      return Outcome::fail(Code::Io, "cannot create " + path + ": " + std::strerror(errno));
    }
    syncDir(dirOf(path));
    end = kJournalBlockBytes;
  }
  uint64_t liveEstimate = engine.sessionCount() * 160ull + kJournalBlockBytes;
  journal.attach(fd, salt, nextSeq, end, liveEstimate);
  if (rr.digestStatesRewritten > 0) {
    // An older bitsd journaled the unfinished SHA-256 block of its uploads (upload data): rewrite
    // the journal without it as soon as the loop runs, rather than at the next size-driven compaction.
    logf(LogLevel::Info,
         "journal: %llu digest state(s) written by an older bitsd hold upload bytes; compacting the journal",
         static_cast<unsigned long long>(rr.digestStatesRewritten));
    journal.compactSoon();
  }

  // Files: one scan of the in-progress directory, then reconcile the open sessions against it, then
  // delete every in-progress file no open session owns.
  auto tFiles = Steady::now();
  std::string partialDir = engine.partialDir();
  std::unordered_map<SessionId, PartialFile, SessionIdHash> files;
  std::vector<std::string> strays;
  files.reserve(engine.sessionCount());
  if (DIR* d = ::opendir(partialDir.c_str())) {
    int dfd = ::dirfd(d);
    struct stat pst;
    while (dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      SessionId id;
      bool ours = parsePartialName(name, &id);
      if (ours && ::fstatat(dfd, e->d_name, &pst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(pst.st_mode)) {
        files.emplace(id, PartialFile{static_cast<uint64_t>(pst.st_size), pst.st_ino, pst.st_dev, false});
      } else {
        strays.emplace_back(name);
      }
    }
    ::closedir(d);
  }
  FileInspector inspector(files);
  report->dropped = engine.reconcile(inspector);
  report->trimmed = inspector.trimmed;
  for (const auto& [id, f] : files) {
    if (f.claimed) {
      const Session* s = engine.findSession(id);  // reconcile may have dropped it or marked it committed
      if (s != nullptr && s->state == SessionState::Open) continue;
    }
    char name[kPartialNameBytes];
    formatPartialName(id, name);
    strays.emplace_back(name, sizeof name);
  }
  for (const std::string& name : strays) {
    if (::unlink((partialDir + "/" + name).c_str()) == 0) ++report->orphans;
  }
  // Reply files (hand-off to the application): kept for sessions whose delivery ended and that are
  // neither closed nor expired, and (single node) for the reply of record of every delivery still
  // remembered; anything else is left over from a crash and goes.
  std::string repliesDir = engine.repliesDir();
  const auto ofRecord = engine.repliesOfRecord();
  if (DIR* d = ::opendir(repliesDir.c_str())) {
    std::vector<std::string> leftovers;
    while (dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      SessionId id;
      const bool named = parseReplyName(name, &id);
      const Session* s = named ? engine.findSession(id) : nullptr;
      if (s != nullptr && keepsReply(*s)) continue;  // the reply-retention rule
      if (named && ofRecord.count(id) != 0) continue;
      leftovers.emplace_back(name);
    }
    ::closedir(d);
    for (const std::string& name : leftovers) {
      if (::unlink((repliesDir + "/" + name).c_str()) == 0) ++report->orphans;
    }
  }
  FileHasher hasher;
  engine.rehashOpenSessions(hasher);
  report->filesMs = std::chrono::duration<double, std::milli>(Steady::now() - tFiles).count();
  report->sessions = engine.sessionCount();
  report->totalMs = std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
  (void)sha;
  return Outcome::ok();
}

}  // namespace bitsd::platform
