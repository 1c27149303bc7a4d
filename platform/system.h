// Host services behind core's seams: the monotonic clock (libuv), the CSPRNG (mbedTLS CTR-DRBG seeded
// from the OS entropy source), the stderr log sink, and start-up file-system preparation.
#pragma once

#include <uv.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/sha256.h>

#include <string>
#include <vector>

#include "core/auth.h"
#include "core/journal.h"
#include "core/ports.h"
#include "core/settings.h"

namespace bitsd::platform {

class UvClock final : public Clock {
 public:
  uint64_t nowMs() override { return uv_hrtime() / 1000000; }
  uint64_t wallSeconds() override {
    uv_timeval64_t tv;
    return uv_gettimeofday(&tv) == 0 ? static_cast<uint64_t>(tv.tv_sec) : 0;
  }
};

// SHA-256 with mbedTLS; the context lives in the caller's Sha256State.
class MbedSha256 final : public Sha256 {
 public:
  void start(Sha256State& st) override;
  void update(Sha256State& st, std::span<const char> data) override;
  void finish(Sha256State& st, uint8_t out[32]) override;
  size_t exportState(const Sha256State& st, uint8_t* out) override;
  bool importState(Sha256State& st, const uint8_t* in, size_t len) override;
  // What computes SHA-256 in this build ("mbedTLS 2.28.3"), for --version.
  static const char* implementation();
};

// Runs Journal::flush() once per loop turn, after that turn's I/O callbacks (a uv_check handle):
// every record appended during the turn goes into one write and one fdatasync.
class UvFlushScheduler final : public FlushScheduler {
 public:
  explicit UvFlushScheduler(uv_loop_t* loop);
  void setJournal(Journal* journal) { journal_ = journal; }
  void requestFlush() override;
  void close();

 private:
  static void onCheckThunk(uv_check_t* h);
  uv_check_t check_;
  // An active idle handle makes the loop poll without blocking, so a flush requested after this
  // turn's check phase (from a close callback, say) runs on the next turn, not after the next event.
  uv_idle_t idle_;
  Journal* journal_ = nullptr;
  bool closed_ = false;
};

class DrbgRandom final : public Random {
 public:
  DrbgRandom();
  ~DrbgRandom() override;
  // Seeds from the OS. Io (with the mbedTLS error) if the entropy source fails.
  Outcome init();
  bool fill(uint8_t* out, size_t len) override;

 private:
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  bool ready_ = false;
};

// Anonymous memory advised for transparent huge pages (MADV_HUGEPAGE), 2 MiB-aligned, for the
// session table: fewer page faults when recovery fills it. Pages stay out of RSS until touched.
// The first 2 MiB are not advised, so a lightly used table does not cost whole huge pages.
class HugePageAllocator final : public BulkAllocator {
 public:
  void* allocateZeroed(size_t bytes) override;
  void release(void* p, size_t bytes) override;
};

// Installs the stderr log sink at the configured level.
void installLogging(const std::string& level);

// Start-up checks and preparation, before the loop serves anyone (blocking calls are fine here):
// creates root and state (and state/partial), checks that both are directories on the same file
// system and that neither contains the other, resolves the root's real path, and deletes orphaned
// in-progress files (without a journal, nothing can resume them after a restart).
// Start-up errors come back as an Outcome with one line naming the problem.
// `createdDirs` (if given) gets the directories it made, parents first, for the start-up log.
Outcome prepareDirectories(const Settings& s, std::string* rootReal, std::vector<std::string>* createdDirs = nullptr);
// The directories of `locations` (those that have one): creates them, replaces each with its real
// path, and checks what the root is checked for: on the state's file system (a commit is a link or
// rename out of state/partial), writable, and neither inside the state nor containing it.
Outcome prepareLocationDirs(const Settings& s, std::vector<Location>* locations);

// Connections beyond max-connections that are accepted only to be answered 503 and closed.
constexpr uint32_t kRejectConnectionSlots = 16;

// File descriptors the settings need at most: every connection (plus the reserve that answers
// 503), every open upload file, and a few for the journal, lock, listener and loop.
uint64_t fileDescriptorsNeeded(const Settings& s);

// Raises the soft RLIMIT_NOFILE towards `needed` (never above the hard limit). Returns the limit now
// in force; below `needed`, connections beyond it fail to be accepted, so the caller warns.
uint64_t raiseFileLimit(uint64_t needed);

// The service manager's readiness protocol (sd_notify(3), without libsystemd): sends `state`
// ("READY=1", "RELOADING=1", "STOPPING=1"...) as one datagram to $NOTIFY_SOCKET (a path, or an
// abstract name written with a leading '@'). Nothing when the variable is unset; failures are
// ignored (the service manager may be gone).
void notifyServiceManager(const std::string& state);
// "RELOADING=1\nMONOTONIC_USEC=<now>", as Type=notify-reload services send it.
void notifyReloading();

// Reads a whole (small) regular file; an error names the file and the reason (a directory is refused).
Outcome readTextFile(const std::string& path, std::string* out);

}  // namespace bitsd::platform
