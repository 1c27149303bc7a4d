// Owns the platform's small services: the CTR-DRBG random source, the mbedTLS SHA-256, huge-page
// allocation, the journal's flush scheduler, the log sink, clocks and start-up directories
// (platform/system.h).
#include "platform/system.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/version.h>

#include <cstddef>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <cstring>

#include "core/log.h"

namespace bitsd::platform {

DrbgRandom::DrbgRandom() {
  mbedtls_entropy_init(&entropy_);
  mbedtls_ctr_drbg_init(&drbg_);
}

DrbgRandom::~DrbgRandom() {
  mbedtls_ctr_drbg_free(&drbg_);
  mbedtls_entropy_free(&entropy_);
}

Outcome DrbgRandom::init() {
  static const unsigned char kPersonalisation[] = "bitsd session ids";
  int rc = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, kPersonalisation,
                                 sizeof kPersonalisation - 1);
  if (rc != 0) {
    return Outcome::fail(Code::Io, "cannot seed the random generator (mbedtls error " + std::to_string(rc) + ")");
  }
  mbedtls_ctr_drbg_set_prediction_resistance(&drbg_, MBEDTLS_CTR_DRBG_PR_OFF);
  ready_ = true;
  return Outcome::ok();
}

bool DrbgRandom::fill(uint8_t* out, size_t len) {
  return ready_ && mbedtls_ctr_drbg_random(&drbg_, out, len) == 0;
}

static_assert(sizeof(mbedtls_sha256_context) <= Sha256State::kBytes, "Sha256State too small");

const char* MbedSha256::implementation() { return "mbedTLS " MBEDTLS_VERSION_STRING; }

void MbedSha256::start(Sha256State& st) {
  auto* c = reinterpret_cast<mbedtls_sha256_context*>(st.bytes);
  mbedtls_sha256_init(c);
  mbedtls_sha256_starts_ret(c, 0);
}

void MbedSha256::update(Sha256State& st, std::span<const char> data) {
  mbedtls_sha256_update_ret(reinterpret_cast<mbedtls_sha256_context*>(st.bytes),
                            reinterpret_cast<const unsigned char*>(data.data()), data.size());
}

void MbedSha256::finish(Sha256State& st, uint8_t out[32]) {
  auto* c = reinterpret_cast<mbedtls_sha256_context*>(st.bytes);
  mbedtls_sha256_finish_ret(c, out);
  mbedtls_sha256_free(c);
}

// Exported state: the byte count rounded down to a whole block (total[0] & ~63, total[1]), then
// state[0..7], as little-endian u32 (40 bytes). Fields of mbedTLS 2.28's public context: state[]
// covers exactly the whole blocks hashed; c->buffer (the unfinished block's bytes) is never read.
size_t MbedSha256::exportState(const Sha256State& st, uint8_t* out) {
  auto* c = reinterpret_cast<const mbedtls_sha256_context*>(st.bytes);
  if (c->is224 != 0) return 0;
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  put32(0, c->total[0] & ~63u);
  put32(4, c->total[1]);
  for (int i = 0; i < 8; ++i) put32(8 + 4 * static_cast<size_t>(i), c->state[i]);
  return 40;
}

bool MbedSha256::importState(Sha256State& st, const uint8_t* in, size_t len) {
  if (len != 40) return false;
  auto get32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | in[at + static_cast<size_t>(i)];
    return v;
  };
  if (get32(0) % 64 != 0) return false;
  auto* c = reinterpret_cast<mbedtls_sha256_context*>(st.bytes);
  mbedtls_sha256_init(c);
  c->total[0] = get32(0);
  c->total[1] = get32(4);
  for (int i = 0; i < 8; ++i) c->state[i] = get32(8 + 4 * static_cast<size_t>(i));
  c->is224 = 0;
  return true;
}

namespace {
constexpr size_t kHugePage = 2u << 20;
size_t roundUp(size_t n) { return (n + kHugePage - 1) & ~(kHugePage - 1); }
}  // namespace

void* HugePageAllocator::allocateZeroed(size_t bytes) {
  if (bytes == 0) bytes = 1;
  // Over-allocate by one huge page to align the start; the slack is returned at once.
  size_t len = roundUp(bytes) + kHugePage;
  void* raw = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  uintptr_t start = (reinterpret_cast<uintptr_t>(raw) + kHugePage - 1) & ~(kHugePage - 1);
  size_t head = start - reinterpret_cast<uintptr_t>(raw);
  if (head > 0) ::munmap(raw, head);
  size_t tail = len - head - roundUp(bytes);
  if (tail > 0) ::munmap(reinterpret_cast<char*>(start) + roundUp(bytes), tail);
  // The first 2 MiB keep small pages: tables hand out low slots first, so a server with a few
  // sessions touches only there, and one huge page there would put 2 MiB in RSS for the first
  // session (the paths of a 4,096-session table are 4 MiB: 4 MiB of RSS for one upload). Recovery
  // filling a big table still gets huge pages for the rest. Advice only; may be refused.
  if (roundUp(bytes) > kHugePage) {
    ::madvise(reinterpret_cast<char*>(start) + kHugePage, roundUp(bytes) - kHugePage, MADV_HUGEPAGE);
  }
  return reinterpret_cast<void*>(start);
}

void HugePageAllocator::release(void* p, size_t bytes) { ::munmap(p, roundUp(bytes == 0 ? 1 : bytes)); }

UvFlushScheduler::UvFlushScheduler(uv_loop_t* loop) {
  uv_check_init(loop, &check_);
  check_.data = this;
  uv_idle_init(loop, &idle_);
  idle_.data = this;
}

void UvFlushScheduler::requestFlush() {
  if (closed_) return;
  uv_check_start(&check_, onCheckThunk);
  uv_idle_start(&idle_, [](uv_idle_t*) {});
}

void UvFlushScheduler::onCheckThunk(uv_check_t* h) {
  auto* self = static_cast<UvFlushScheduler*>(h->data);
  uv_check_stop(&self->check_);
  uv_idle_stop(&self->idle_);
  if (self->journal_ != nullptr) self->journal_->flush();
}

void UvFlushScheduler::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
}

namespace {
// Under journald (JOURNAL_STREAM set, as systemd documents for services whose stderr is the
// journal) lines go without a timestamp, since journald adds its own; otherwise each line starts
// with the local time to the millisecond.
bool gTimestamps = true;

void stderrSink(LogLevel level, const char* line) {
  static const char* kNames[] = {"debug", "info", "warn", "error"};
  if (!gTimestamps) {
    std::fprintf(stderr, "bitsd: %s: %s\n", kNames[static_cast<int>(level)], line);
    return;
  }
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  ::localtime_r(&ts.tv_sec, &tm);
  char when[40];
  size_t n = std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(when + n, sizeof when - n, ".%03ld", static_cast<long>(ts.tv_nsec / 1000000));
  char zone[8];
  std::strftime(zone, sizeof zone, "%z", &tm);
  std::fprintf(stderr, "%s%s bitsd: %s: %s\n", when, zone, kNames[static_cast<int>(level)], line);
}

uint64_t monotonicMs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// errno after a failed call, as a core code.
Code codeFromErrno(int e) {
  switch (e) {
    case ENOENT:
    case ENOTDIR: return Code::NotFound;
    case EACCES:
    case EPERM:
    case EROFS: return Code::AccessDenied;
    case ENOSPC:
    case EDQUOT: return Code::NoSpace;
    case EEXIST: return Code::AlreadyExists;
    default: return Code::Io;
  }
}

// `created` (if given) collects the directories this call made, for the start-up log.
Outcome makeDirs(const std::string& path, std::vector<std::string>* created = nullptr) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) == 0) {
      if (created != nullptr) created->push_back(partial);
    } else if (errno != EEXIST) {
      return Outcome::fail(codeFromErrno(errno), "cannot create directory " + partial + ": " + std::strerror(errno));
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Outcome::fail(Code::NotDirectory, path + " is not a directory");
  }
  return Outcome::ok();
}

Outcome realPath(const std::string& path, std::string* out) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) {
    return Outcome::fail(codeFromErrno(errno), "cannot resolve " + path + ": " + std::strerror(errno));
  }
  *out = buf;
  return Outcome::ok();
}

bool contains(const std::string& dir, const std::string& inner) {
  return inner == dir || (inner.size() > dir.size() && inner.compare(0, dir.size(), dir) == 0 &&
                          (dir == "/" || inner[dir.size()] == '/'));
}
}  // namespace

void installLogging(const std::string& level) {
  const char* journal = std::getenv("JOURNAL_STREAM");
  gTimestamps = journal == nullptr || journal[0] == '\0';
  setLogSink(stderrSink);
  setLogClock(monotonicMs);
  setLogLevel(level == "debug" ? LogLevel::Debug
              : level == "warn" ? LogLevel::Warn
              : level == "error" ? LogLevel::Error
                                  : LogLevel::Info);
}

Outcome prepareDirectories(const Settings& s, std::string* rootReal, std::vector<std::string>* createdDirs) {
  std::string partialDir = s.state + "/partial";
  std::vector<std::string> created;
  for (const std::string& dir : {s.root, partialDir, s.state + "/replies"}) {
    if (Outcome o = makeDirs(dir, &created); !o.isOk()) return o;
  }
  std::string stateReal;
  if (Outcome o = realPath(s.root, rootReal); !o.isOk()) return o;
  if (Outcome o = realPath(s.state, &stateReal); !o.isOk()) return o;
  if (contains(*rootReal, stateReal) || contains(stateReal, *rootReal)) {
    return Outcome::fail(Code::InvalidArgument,
                         "root (" + *rootReal + ") and state (" + stateReal + ") must not contain each other");
  }
  struct stat a, b;
  if (::stat(rootReal->c_str(), &a) != 0 || ::stat(partialDir.c_str(), &b) != 0) {
    return Outcome::fail(codeFromErrno(errno), std::string("cannot stat root or state: ") + std::strerror(errno));
  }
  if (a.st_dev != b.st_dev) {
    return Outcome::fail(Code::InvalidArgument,
                         "root and state are on different file systems; the commit must be a single rename");
  }
  if (::access(rootReal->c_str(), W_OK) != 0 || ::access(partialDir.c_str(), W_OK) != 0) {
    return Outcome::fail(Code::AccessDenied, "root and state must be writable by this user");
  }
  if (createdDirs != nullptr) *createdDirs = std::move(created);
  return Outcome::ok();
}

Outcome prepareLocationDirs(const Settings& s, std::vector<Location>* locations) {
  std::string stateReal;
  if (Outcome o = realPath(s.state, &stateReal); !o.isOk()) return o;
  struct stat st;
  if (::stat((s.state + "/partial").c_str(), &st) != 0) {
    return Outcome::fail(codeFromErrno(errno), std::string("cannot stat state: ") + std::strerror(errno));
  }
  for (Location& l : *locations) {
    if (l.dir.empty()) continue;
    const std::string where = "locations: /" + l.prefix + " -> " + l.dir + ": ";
    auto fail = [&](Code code, const std::string& what) { return Outcome::fail(code, where + what); };
    const std::string stateMsg = "must not contain the state directory (" + stateReal + ") or be inside it";
    if (contains(l.dir, stateReal) || contains(stateReal, l.dir)) return fail(Code::InvalidArgument, stateMsg);  // before creating anything
    std::string real;
    if (Outcome o = makeDirs(l.dir); !o.isOk()) return o.within(where);
    if (Outcome o = realPath(l.dir, &real); !o.isOk()) return o.within(where);
    struct stat d;
    if (::stat(real.c_str(), &d) != 0 || !S_ISDIR(d.st_mode)) return fail(Code::NotDirectory, "not a directory");
    if (contains(real, stateReal) || contains(stateReal, real)) return fail(Code::InvalidArgument, stateMsg);  // through symlinks
    if (d.st_dev != st.st_dev) {
      return fail(Code::InvalidArgument, "on another file system than the state; the commit must be a single rename");
    }
    if (::access(real.c_str(), W_OK) != 0) return fail(Code::AccessDenied, "not writable by this user");
    l.dir = real;
  }
  return Outcome::ok();
}

Outcome readTextFile(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Outcome::fail(codeFromErrno(errno), "cannot read config file " + path + ": " + std::strerror(errno));
  }
  struct stat st = {};
  if (::fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fclose(f);
    return Outcome::fail(S_ISDIR(st.st_mode) ? Code::IsDirectory : Code::InvalidArgument,
                         "config file " + path + " is not a regular file" +
                             (S_ISDIR(st.st_mode) ? " (it is a directory)" : ""));
  }
  char buf[4096];
  size_t n;
  out->clear();
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    out->append(buf, n);
    if (out->size() > (1u << 20)) {
      std::fclose(f);
      return Outcome::fail(Code::InvalidArgument, "config file " + path + " is larger than 1 MiB");
    }
  }
  std::fclose(f);
  return Outcome::ok();
}

void notifyServiceManager(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return;
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  size_t len = std::strlen(path);
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract name
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
  ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), alen);
  (void)n;
  ::close(fd);
}

void notifyReloading() {
  timespec ts = {};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t usec = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  notifyServiceManager("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

uint64_t fileDescriptorsNeeded(const Settings& s) {
  constexpr uint64_t kFixed = 64;  // stdio, listener, journal, lock, loop, signals, thread pool
  return uint64_t{s.maxConnections} + uint64_t{kRejectConnectionSlots} + uint64_t{s.maxOpenFiles} + kFixed;
}

uint64_t raiseFileLimit(uint64_t needed) {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= needed) return needed;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= needed ? static_cast<rlim_t>(needed) : rl.rlim_max;
  rlim_t before = rl.rlim_cur;
  rl.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return before;
  return want;
}

}  // namespace bitsd::platform
