// The seams through which core/ reaches the world (STYLE.md §1, §2): storage, clock, randomness.
// core/ never touches a file descriptor, a clock or an entropy source itself; platform/ implements
// these with libuv, and tests/ with fakes (fault injection, simulated time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/status.h"

namespace bitsd {

using FileHandle = int32_t;
inline constexpr FileHandle kNoFile = -1;

enum class FileKind : uint8_t { Missing, File, Directory, Other };

// SHA-256 of uploads, computed on the fly as fragments are written (mbedTLS on the platform). The
// running state lives in caller-owned opaque storage, one per session.
struct Sha256State {
  static constexpr size_t kBytes = 128;
  alignas(8) unsigned char bytes[kBytes];
};

class Sha256 {
 public:
  virtual ~Sha256() = default;
  virtual void start(Sha256State& st) = 0;
  virtual void update(Sha256State& st, std::span<const char> data) = 0;
  virtual void finish(Sha256State& st, uint8_t out[32]) = 0;
  // The running state at its last whole 64-byte block, as portable bytes (explicit little-endian):
  // the number of bytes hashed rounded down to a multiple of 64 (8), then the chaining value H0..H7
  // (8 x 4): 40 bytes, or 0 if it cannot. Never the bytes of the unfinished block: they are upload
  // data, and this goes into the journal (core/journal_format.h, "digest checkpoint").
  static constexpr size_t kMaxExportBytes = 104;
  virtual size_t exportState(const Sha256State& st, uint8_t* out) = 0;
  // Restores such a state; the bytes after it must then be fed again. False if the bytes are not
  // a valid exported state.
  virtual bool importState(Sha256State& st, const uint8_t* in, size_t len) = 0;
};

class StorageOp;

// Receives the completion of a StorageOp. Runs on the loop thread.
class StorageCallback {
 public:
  virtual void onStorageDone(StorageOp& op) = 0;

 protected:
  ~StorageCallback() = default;
};

// One asynchronous storage request, owned by the caller (like uv_fs_t). At most one operation is in
// flight per StorageOp. `impl` is scratch space for the platform's own request object.
class StorageOp {
 public:
  static constexpr size_t kImplBytes = 704;

  StorageCallback* callback = nullptr;
  bool busy = false;
  // Outcome, valid in onStorageDone.
  Status status;
  int64_t result = 0;          // handle (create/open), bytes written (write) or read (read)
  FileKind kind = FileKind::Missing;  // checkDestination, openRead
  uint64_t sizeBytes = 0;      // checkDestination, openRead
  // commitBeneath: the fsync of the destination's directory after the link or rename succeeded.
  // The commit stands whatever it says (status is ok); a failure is only worth a log line.
  Status syncStatus;
  // checkDestination with `create`: the in-progress file's creation (ok when none was tried).
  Status createStatus;

  alignas(16) unsigned char impl[kImplBytes];
};

// Asynchronous file operations. Every call starts one operation on `op` (not busy, callback set)
// and completes later through op.callback->onStorageDone(op): never from inside the call itself,
// so callers need not guard against re-entry. Paths are NUL-terminated and must stay valid until
// completion. Errors come back as op.status (NoSpace, NotFound, AlreadyExists, AccessDenied, Io...).
class Storage {
 public:
  virtual ~Storage() = default;

  // Creates a new file for writing; AlreadyExists if present. result = handle.
  virtual void createExclusive(StorageOp& op, const char* path) = 0;
  // Opens an existing file for writing. result = handle.
  virtual void openWrite(StorageOp& op, const char* path) = 0;
  // Writes `data` at `offsetBytes` straight from the caller's buffer (no copy). result = bytes
  // written, which may be fewer than asked. With `hash`, the whole of `data` is also fed to that
  // running SHA-256 off the loop (beside the write, or after it in the same work item for a span
  // of 64 KiB or less; both only read the buffer); the operation completes when both are done.
  // `hash` must not be touched until then.
  virtual void write(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<const char> data,
                     Sha256State* hash = nullptr) = 0;
  // Creates a file for writing, or empties the one there (a reply file written again after a
  // crash). Private to bitsd's user (mode 0640). result = handle.
  virtual void createTruncate(StorageOp& op, const char* path) = 0;
  // Opens an existing file for reading (reply downloads, the application's reply file). result =
  // handle; `kind` is File for a regular file (else Other) and `sizeBytes` its size then.
  virtual void openRead(StorageOp& op, const char* path) = 0;
  // Reads up to data.size() bytes at `offsetBytes` into the caller's buffer, which must stay valid
  // until completion. result = bytes read: fewer than asked only at the end of the file (0: at it).
  // Reply downloads, and the journal reading back what it wrote (core/journal.cc): a handle from
  // createExclusive/openWrite is open for reading too.
  virtual void read(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<char> data) = 0;
  // fdatasync.
  virtual void syncData(StorageOp& op, FileHandle file) = 0;
  virtual void truncate(StorageOp& op, FileHandle file, uint64_t sizeBytes) = 0;
  // Destinations are named by `base` (the upload root, or a location's directory: absolute, resolved
  // with realpath at start-up) and `below`, the path under it ("d/x.bin": no empty, "." or ".."
  // segment). The parent of base/below is opened from the base one component at a time, following
  // no symlink anywhere (neither in base's own path nor below it), and the operation works relative
  // to that directory, so a directory swapped for a symlink after an earlier check cannot redirect
  // it. A missing component, or one that is not a directory: NotFound. A symlink: AccessDenied.
  //
  // Checks the destination (Create-Session): its parent as above, then sets `kind` and `sizeBytes`
  // of the destination itself, without following a final symlink (a symlink is FileKind::Other).
  // With `create` (not null), in the same step (one thread-pool round trip for Create-Session): if
  // the check found nothing there, or anything but a directory and `mayReplace`, creates the file
  // `create` as createExclusive does. result = its handle, or -1 when none was created; createStatus says
  // why when the creation was tried and failed.
  virtual void checkDestination(StorageOp& op, const char* base, const char* below, const char* create,
                                bool mayReplace) = 0;
  // Commits `from` (a file in the state directory) as base/below: opens the parent as above, then
  // moves it there without replacing anything (replace false: AlreadyExists if the name exists in
  // any form, a symlink included) or renames it over the name (replace true), and fsyncs that same
  // directory (op.syncStatus). result = 1 when `from` is gone (renamed), 0 when it was linked (a
  // file system that cannot rename without replacing): the caller removes `from` afterwards.
  virtual void commitBeneath(StorageOp& op, const char* from, const char* base, const char* below, bool replace) = 0;
  // Renames `from` over `to` (the journal's compaction, inside the state directory). Atomic on POSIX
  // file systems.
  virtual void rename(StorageOp& op, const char* from, const char* to) = 0;
  // Removes a file; a missing file is success.
  virtual void remove(StorageOp& op, const char* path) = 0;
  // fsync of a directory, so a rename or link inside it is durable.
  virtual void syncDir(StorageOp& op, const char* dirPath) = 0;
  // Closes a handle synchronously (close(2) of a regular file does not wait on the device).
  virtual void closeNow(FileHandle file) = 0;
};

// Large zeroed regions allocated once at start-up (the session table). The platform may back them
// with huge pages (first touch of a 30 MB table is a measurable part of recovery). Untouched pages
// must stay out of RSS, as calloc's do. nullptr when out of memory.
class BulkAllocator {
 public:
  virtual ~BulkAllocator() = default;
  virtual void* allocateZeroed(size_t bytes) = 0;
  virtual void release(void* p, size_t bytes) = 0;
};

// Monotonic milliseconds for timers, and wall-clock Unix seconds for what outlives a restart (the
// journal). Simulated in tests.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual uint64_t nowMs() = 0;
  virtual uint64_t wallSeconds() = 0;
};


// Cryptographically secure random bytes (CTR-DRBG on the platform). False if the generator failed.
class Random {
 public:
  virtual ~Random() = default;
  virtual bool fill(uint8_t* out, size_t len) = 0;
};

}  // namespace bitsd
