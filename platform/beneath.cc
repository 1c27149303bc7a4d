// Owns opening a destination's directory below the root with no symlink followed, and the commit
// there (platform/beneath.h).
#include "platform/beneath.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#if defined(__linux__)
#include <sys/syscall.h>
#endif
#if defined(__linux__) && __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#if defined(SYS_openat2)
#define BITSD_HAVE_OPENAT2 1
#endif
#endif

namespace bitsd::platform {

namespace {

#ifdef O_PATH
constexpr int kPassThrough = O_PATH;  // a step on the way needs search permission only
#else
constexpr int kPassThrough = O_RDONLY;
#endif

bool validSegments(std::string_view dir) {
  if (dir.empty()) return true;
  size_t start = 0;
  while (true) {
    size_t slash = dir.find('/', start);
    std::string_view seg = dir.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (seg.empty() || seg == "." || seg == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

// One step: `name` below `at`, never following a symlink. The kernel reports a symlink opened with
// O_NOFOLLOW | O_DIRECTORY as ENOTDIR (or ELOOP); fstatat tells a symlink from a file.
int openStep(int at, const char* name, int flags) {
  int fd = ::openat(at, name, flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) return fd;
  int e = errno;
  if (e == ENOTDIR || e == ELOOP) {
    struct stat st;
    if (::fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) return -ELOOP;
    return -ENOTDIR;
  }
  return -e;
}

// Walks `path` ('/'-separated, empty segments skipped for an absolute base) from `at`; the last
// directory is opened read-only (it may be fsync'ed), the ones on the way only for search. `at` is
// never closed here.
int walk(int at, std::string_view path, bool last) {
  char name[NAME_MAX + 1];
  int cur = at;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    size_t end = slash == std::string_view::npos ? path.size() : slash;
    std::string_view seg = path.substr(start, end - start);
    start = end + 1;
    if (seg.empty()) continue;
    if (seg == "." || seg == "..") {
      if (cur != at) ::close(cur);
      return -EINVAL;
    }
    if (seg.size() > NAME_MAX) {
      if (cur != at) ::close(cur);
      return -ENAMETOOLONG;
    }
    std::memcpy(name, seg.data(), seg.size());
    name[seg.size()] = '\0';
    bool isLast = last && end == path.size();  // no trailing '/': a realpath, or a checked `dir`
    int next = openStep(cur, name, isLast ? O_RDONLY : kPassThrough);
    if (cur != at) ::close(cur);
    if (next < 0) return next;
    cur = next;
  }
  if (cur == at) {  // nothing to walk: the starting directory itself, read-only
    int fd = ::openat(at, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
  }
  return cur;
}

int walkBeneath(const char* base, std::string_view dir) {
  int root = ::open("/", kPassThrough | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return -errno;
  int b = walk(root, base, dir.empty());
  ::close(root);
  if (b < 0 || dir.empty()) return b;
  int fd = walk(b, dir, true);
  ::close(b);
  return fd;
}

#ifdef BITSD_HAVE_OPENAT2
std::atomic<bool> noOpenat2{false};

// -ENOSYS when the kernel (or a seccomp filter) has no openat2: the caller walks instead.
int openat2Beneath(const char* base, std::string_view dir) {
  char rel[PATH_MAX];
  if (dir.size() >= sizeof rel) return -ENAMETOOLONG;
  if (!dir.empty()) std::memcpy(rel, dir.data(), dir.size());  // an empty view may hold nullptr
  rel[dir.size()] = '\0';
  struct open_how how;
  std::memset(&how, 0, sizeof how);
  how.flags = kPassThrough | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int b = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, base, &how, sizeof how));
  if (b < 0) {
    int e = errno;
    if (e == ENOSYS) noOpenat2.store(true, std::memory_order_relaxed);
    return e == ENOSYS || e == EPERM || e == EAGAIN ? -ENOSYS : -e;
  }
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, b, dir.empty() ? "." : rel, &how, sizeof how));
  int e = errno;
  ::close(b);
  if (fd >= 0) return fd;
  if (e == EXDEV) return -ELOOP;  // would leave the base: cannot happen without ".." or a symlink
  return e == EPERM || e == EAGAIN ? -ENOSYS : -e;
}
#endif

}  // namespace

int openDirBeneath(const char* base, std::string_view dir, BeneathMode mode) {
  if (!validSegments(dir)) return -EINVAL;
#ifdef BITSD_HAVE_OPENAT2
  if (mode == BeneathMode::Auto && !noOpenat2.load(std::memory_order_relaxed)) {
    int fd = openat2Beneath(base, dir);
    if (fd != -ENOSYS) return fd;
  }
#else
  (void)mode;
#endif
  return walkBeneath(base, dir);
}

namespace {
// renameat2(RENAME_NOREPLACE) through syscall(2): glibc has had a wrapper only since 2.28 and musl
// since 1.2.4, and the number is all that is needed. -1 with ENOSYS where there is none.
int renameNoReplace(int fromDir, const char* from, int toDir, const char* to) {
#if defined(__linux__) && defined(SYS_renameat2)
  constexpr unsigned kRenameNoReplace = 1u << 0;  // RENAME_NOREPLACE, <linux/fs.h>
  return static_cast<int>(::syscall(SYS_renameat2, fromDir, from, toDir, to, kRenameNoReplace));
#else
  (void)fromDir, (void)from, (void)toDir, (void)to;
  errno = ENOSYS;
  return -1;
#endif
}
}  // namespace

int commitBelow(const char* from, const char* base, const char* below, bool replace, bool* dirOpened, int* syncErr,
                BeneathMode mode, bool* moved) {
  *dirOpened = false;
  if (moved != nullptr) *moved = false;
  if (syncErr != nullptr) *syncErr = 0;
  std::string_view parent, name;
  splitBelow(below, &parent, &name);
  int dir = openDirBeneath(base, parent, mode);
  if (dir < 0) return -dir;
  *dirOpened = true;
  // `name` ends the NUL-terminated `below`, so it can be passed on as it is.
  const char* leaf = name.data();
  int err = 0;
  int r;
  if (replace) {
    r = ::renameat(AT_FDCWD, from, dir, leaf);
    if (r == 0 && moved != nullptr) *moved = true;
  } else {
    bool link = true;
    r = -1;
    if (moved != nullptr) {
      r = renameNoReplace(AT_FDCWD, from, dir, leaf);
      if (r == 0) *moved = true;
      link = r != 0 && (errno == EINVAL || errno == ENOSYS);  // EEXIST and the rest stand
    }
    if (link) r = ::linkat(AT_FDCWD, from, dir, leaf, 0);
  }
  if (r != 0) {
    err = errno;
  } else if (syncErr != nullptr && ::fsync(dir) != 0) {
    *syncErr = errno;
  }
  ::close(dir);
  return err;
}

}  // namespace bitsd::platform
