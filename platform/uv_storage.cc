// Owns the Storage seam on libuv: uv_fs_* calls, writes with hashing and early writeback, the commit
// below the root (platform/uv_storage.h).
#include "platform/uv_storage.h"

#include <fcntl.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "platform/beneath.h"

namespace bitsd::platform {

namespace {
enum Kind {
  kCreate,
  kOpen,
  kWrite,
  kRead,
  kSync,
  kTruncate,
  kCheck,
  kCommit,
  kRename,
  kRemove,
  kDirOpen,
  kDirSync,
  kDirClose,
  kOpenRead,
  kOpenStat,
};

// A write of at most this many bytes that carries a digest is hashed in its own work item, after
// the write; a larger one is hashed by a second work item running beside it.
constexpr size_t kSerialHashBytes = 64 * 1024;
}  // namespace

struct UvStorage::UvOp {
  union {
    uv_fs_t req;
    uv_work_t writeWork;  // a write with early writeback (setWritebackBytes): pwrite + sync_file_range;
                          // or a small write with its digest: pwrite, then the hash
  };
  uv_work_t hashWork;  // the digest of a write; or the whole of checkDestination / commitBeneath
  Sha256State* hash;
  bool hashAfterWrite;  // a small write: its digest runs in the write's own work item, after it
  std::span<const char> hashData;
  int pending;  // parts still running: the write, and the hash if any
  UvStorage* self;
  StorageOp* op;
  int kind;
  const char* path;
  const char* base;   // checkDestination, commitBeneath: the directory the destination stays below
  const char* below;  // ... and the destination's path under it
  bool replace;       // commitBeneath: rename over the name (else link, never replacing)
  bool dirOpened;     // ... the destination's directory was opened (else `err` is the open's)
  int err;            // on the thread pool: 0, or the errno of the step that failed
  union {
    int syncErr;    // commitBeneath: errno of the directory fsync after the commit
    int createErr;  // checkDestination with a file to create: errno of its creation
  };
  uv_file file;
  union {
    uint64_t syncStartNs;  // kSync, kDirSync: when the sync was issued (the fsync histogram)
    uint64_t writeOffset;  // kWrite with early writeback: where the write goes
  };
  Status firstError;
};
static_assert(sizeof(UvStorage::UvOp) <= StorageOp::kImplBytes, "StorageOp::kImplBytes too small");

Status statusFromUv(int e, const char* what) {
  switch (e) {
    case 0: return Status::ok();
    case UV_ENOSPC:
    case UV_EFBIG: return Status(Code::NoSpace, what, e);
    case UV_ENOENT:
    case UV_ENOTDIR: return Status(Code::NotFound, what, e);
    case UV_EEXIST: return Status(Code::AlreadyExists, what, e);
    case UV_EACCES:
    case UV_EPERM:
    case UV_EROFS: return Status(Code::AccessDenied, what, e);
    case UV_EISDIR: return Status(Code::IsDirectory, what, e);
    default: return Status(Code::Io, what, e);
  }
}

UvStorage::UvOp* UvStorage::prepare(StorageOp& op, int kind) {
  UvOp* u = new (op.impl) UvOp();
  u->req.data = u;
  u->self = this;
  u->op = &op;
  u->kind = kind;
  op.status = Status::ok();
  op.result = 0;
  return u;
}

void UvStorage::onFsThunk(uv_fs_t* req) {
  UvOp* u = static_cast<UvOp*>(req->data);
  u->self->onFs(u);
}

void UvStorage::createExclusive(StorageOp& op, const char* path) {
  UvOp* u = prepare(op, kCreate);
  // Read-write: the journal reads back what it wrote.
  uv_fs_open(loop_, &u->req, path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644, onFsThunk);
}

void UvStorage::openWrite(StorageOp& op, const char* path) {
  UvOp* u = prepare(op, kOpen);
  uv_fs_open(loop_, &u->req, path, O_RDWR | O_CLOEXEC, 0, onFsThunk);
}

void UvStorage::createTruncate(StorageOp& op, const char* path) {
  UvOp* u = prepare(op, kCreate);
  uv_fs_open(loop_, &u->req, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640, onFsThunk);
}

void UvStorage::openRead(StorageOp& op, const char* path) {
  UvOp* u = prepare(op, kOpenRead);
  uv_fs_open(loop_, &u->req, path, O_RDONLY | O_CLOEXEC, 0, onFsThunk);
}

void UvStorage::read(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<char> data) {
  UvOp* u = prepare(op, kRead);
  uv_buf_t buf = uv_buf_init(data.data(), static_cast<unsigned>(data.size()));
  uv_fs_read(loop_, &u->req, file, &buf, 1, static_cast<int64_t>(offsetBytes), onFsThunk);
}

void UvStorage::write(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<const char> data,
                      Sha256State* hash) {
  UvOp* u = prepare(op, kWrite);
  u->pending = 1;
  if (hash != nullptr && data.size() <= kSerialHashBytes) {
    // A small span (a small upload's whole body): one work item writes it and then hashes it. Two
    // items side by side would cost a second thread wake-up and completion for a few microseconds
    // of hashing.
    u->hash = hash;
    u->hashAfterWrite = true;
  } else if (hash != nullptr) {
    // The digest runs on another thread-pool thread at the same time as the write: both only read
    // the buffer, and the loop thread does neither.
    u->pending = 2;
    u->hash = hash;
    u->hashData = data;
    u->hashWork.data = u;
    uv_queue_work(loop_, &u->hashWork, hashWorkThunk, hashDoneThunk);
  }
  if (writebackBytes_ > 0 || u->hashAfterWrite) {
    u->file = file;
    u->writeOffset = offsetBytes;
    u->hashData = data;
    u->writeWork = uv_work_t{};  // the union's member in use from here (instead of req)
    u->writeWork.data = u;
    uv_queue_work(loop_, &u->writeWork, writeWorkThunk, writeDoneThunk);
    return;
  }
  // The buffer points into the connection's read buffer; libuv keeps up to 4 uv_buf_t inline.
  uv_buf_t buf = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
  uv_fs_write(loop_, &u->req, file, &buf, 1, static_cast<int64_t>(offsetBytes), onFsThunk);
}

// On the thread pool: the write, then, for every whole writeback unit it completed, the start of the
// kernel's writeback of that unit (sync_file_range SYNC_FILE_RANGE_WRITE: it queues the dirty pages
// to the device and returns; it waits for nothing and makes nothing durable). The fdatasync before
// the Ack then finds most of the fragment written or in flight, instead of starting all of it. This
// is RocksDB's bytes_per_sync; the durability order is unchanged (only fdatasync makes data durable).
void UvStorage::writeWorkThunk(uv_work_t* w) {
  UvOp* u = static_cast<UvOp*>(w->data);
  ssize_t n;
  do {
    n = ::pwrite(u->file, u->hashData.data(), u->hashData.size(), static_cast<off_t>(u->writeOffset));
  } while (n < 0 && errno == EINTR);
  const int writeErr = n < 0 ? errno : 0;
  // Like the parallel digest: the whole span is hashed, however much was written.
  if (u->hashAfterWrite) u->self->sha_.update(*u->hash, u->hashData);
  if (n < 0) {
    u->err = writeErr;
    return;
  }
  // The StorageOp is the caller's until completion and read only after it (as in checkDestination).
  u->op->result = n;
#ifdef SYNC_FILE_RANGE_WRITE
  const uint64_t unit = u->self->writebackBytes_;
  if (unit == 0) return;
  const uint64_t from = u->writeOffset / unit * unit, to = (u->writeOffset + static_cast<uint64_t>(n)) / unit * unit;
  // Advice only: an error here (EIO included) comes back from the fdatasync that follows.
  if (to > from) ::sync_file_range(u->file, static_cast<off_t>(from), static_cast<off_t>(to - from), SYNC_FILE_RANGE_WRITE);
#endif
}

void UvStorage::writeDoneThunk(uv_work_t* w, int status) {
  UvOp* u = static_cast<UvOp*>(w->data);
  u->self->writeDone(u, status != 0 ? status : u->err != 0 ? uv_translate_sys_error(u->err) : 0);
}

// Completes a write (either way it ran) once its digest, if any, is done too. op.result holds the
// bytes written unless `err`.
void UvStorage::writeDone(UvOp* u, int err) {
  StorageOp& op = *u->op;
  if (err != 0) {
    op.status = statusFromUv(err, "write failed");
    op.result = 0;
  }
  if (--u->pending > 0) return;  // the digest is still running
  u->~UvOp();
  op.callback->onStorageDone(op);
}

void UvStorage::hashWorkThunk(uv_work_t* w) {
  UvOp* u = static_cast<UvOp*>(w->data);
  u->self->sha_.update(*u->hash, u->hashData);
}

void UvStorage::hashDoneThunk(uv_work_t* w, int) {
  UvOp* u = static_cast<UvOp*>(w->data);
  if (--u->pending > 0) return;  // the write is still running
  StorageOp* o = u->op;
  u->~UvOp();
  o->callback->onStorageDone(*o);
}

void UvStorage::syncData(StorageOp& op, FileHandle file) {
  UvOp* u = prepare(op, kSync);
  u->syncStartNs = uv_hrtime();
  uv_fs_fdatasync(loop_, &u->req, file, onFsThunk);
}

void UvStorage::truncate(StorageOp& op, FileHandle file, uint64_t sizeBytes) {
  UvOp* u = prepare(op, kTruncate);
  uv_fs_ftruncate(loop_, &u->req, file, static_cast<int64_t>(sizeBytes), onFsThunk);
}

void UvStorage::checkDestination(StorageOp& op, const char* base, const char* below, const char* create,
                                 bool mayReplace) {
  UvOp* u = prepare(op, kCheck);
  u->base = base;
  u->below = below;
  u->path = create;
  u->replace = mayReplace;
  op.result = -1;
  op.createStatus = Status::ok();
  u->hashWork.data = u;
  uv_queue_work(loop_, &u->hashWork, beneathWorkThunk, beneathDoneThunk);
}

void UvStorage::commitBeneath(StorageOp& op, const char* from, const char* base, const char* below, bool replace) {
  UvOp* u = prepare(op, kCommit);
  u->path = from;
  u->base = base;
  u->below = below;
  u->replace = replace;
  u->hashWork.data = u;
  uv_queue_work(loop_, &u->hashWork, beneathWorkThunk, beneathDoneThunk);
}

// On the thread pool: open the destination's parent below the base (no symlink followed), then
// lstat the name (check) or link/rename into it and fsync it (commit: commitBelow), all through that
// descriptor.
void UvStorage::beneathWorkThunk(uv_work_t* w) {
  UvOp* u = static_cast<UvOp*>(w->data);
  if (u->kind == kCommit) {
    u->syncErr = 0;
    int* syncErr = u->self->syncDirs_ ? &u->syncErr : nullptr;
    bool moved = false;
    u->err = commitBelow(u->path, u->base, u->below, u->replace, &u->dirOpened, syncErr, BeneathMode::Auto, &moved);
    // The StorageOp is the caller's until completion, and read only after it.
    u->op->result = moved ? 1 : 0;
    return;
  }
  std::string_view parent, name;
  splitBelow(u->below, &parent, &name);
  int dir = openDirBeneath(u->base, parent);
  if (dir < 0) {
    u->err = -dir;
    return;
  }
  u->dirOpened = true;
  // `name` ends the NUL-terminated `below`, so it can be passed on as it is.
  const char* leaf = name.data();
  struct stat st;
  // The StorageOp is the caller's until completion, and read only after it (uv_queue_work's
  // after-callback runs on the loop once this has returned).
  StorageOp& op = *u->op;
  if (::fstatat(dir, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) u->err = errno;
    op.kind = FileKind::Missing;
  } else {
    op.sizeBytes = static_cast<uint64_t>(st.st_size);
    op.kind = S_ISREG(st.st_mode) ? FileKind::File : S_ISDIR(st.st_mode) ? FileKind::Directory : FileKind::Other;
  }
  ::close(dir);
  // Create-Session's in-progress file, when the destination can take the upload (createExclusive's
  // flags: the journal's files are opened the same way).
  // With overwrites on, whatever is there and is not a directory may be replaced (a symlink itself:
  // the commit's rename replaces the link, never its target).
  if (u->path != nullptr && u->err == 0 &&
      (op.kind == FileKind::Missing || (op.kind != FileKind::Directory && u->replace))) {
    int fd = ::open(u->path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) {
      u->createErr = errno;
    } else {
      op.result = fd;
    }
  }
}

void UvStorage::beneathDoneThunk(uv_work_t* w, int status) {
  UvOp* u = static_cast<UvOp*>(w->data);
  StorageOp& op = *u->op;
  if (status != 0) {  // cancelled before it ran (bitsd never cancels one): nothing was done
    op.status = statusFromUv(status, "destination operation cancelled");
  } else if (u->err == ELOOP) {
    op.status = Status(Code::AccessDenied, "a symlink in the destination's path", UV_ELOOP);
  } else if (u->err != 0) {  // ENOENT, ENOTDIR: NotFound
    const char* what = !u->dirOpened        ? "cannot open the destination's directory"
                       : u->kind == kCheck ? "cannot stat destination"
                       : u->replace        ? "rename into place failed"
                                           : "link into place failed";
    op.status = statusFromUv(uv_translate_sys_error(u->err), what);
  }
  if (u->kind == kCommit) {
    op.syncStatus = u->syncErr == 0 ? Status::ok() : statusFromUv(uv_translate_sys_error(u->syncErr), "directory fsync failed");
  } else if (u->createErr != 0) {
    op.createStatus = statusFromUv(uv_translate_sys_error(u->createErr), "cannot create the in-progress file");
  }
  u->~UvOp();
  op.callback->onStorageDone(op);
}

void UvStorage::rename(StorageOp& op, const char* from, const char* to) {
  UvOp* u = prepare(op, kRename);
  uv_fs_rename(loop_, &u->req, from, to, onFsThunk);
}

void UvStorage::remove(StorageOp& op, const char* path) {
  UvOp* u = prepare(op, kRemove);
  uv_fs_unlink(loop_, &u->req, path, onFsThunk);
}

void UvStorage::syncDir(StorageOp& op, const char* dirPath) {
  UvOp* u = prepare(op, kDirOpen);
  uv_fs_open(loop_, &u->req, dirPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, onFsThunk);
}

void UvStorage::closeNow(FileHandle file) {
  uv_fs_t req;
  uv_fs_close(loop_, &req, file, nullptr);  // no callback: synchronous, as documented
  uv_fs_req_cleanup(&req);
}

void UvStorage::onFs(UvOp* u) {
  StorageOp& op = *u->op;
  const int r = static_cast<int>(u->req.result);
  const ssize_t result = u->req.result;
  auto complete = [&]() {
    StorageOp* o = u->op;
    u->~UvOp();
    o->callback->onStorageDone(*o);
  };
  switch (u->kind) {
    case kCreate:
    case kOpen:
      uv_fs_req_cleanup(&u->req);
      if (r < 0) op.status = statusFromUv(r, "open failed");
      op.result = r;
      return complete();
    case kOpenRead:
      uv_fs_req_cleanup(&u->req);
      if (r < 0) {
        op.status = statusFromUv(r, "open failed");
        return complete();
      }
      u->file = r;
      u->kind = kOpenStat;
      uv_fs_fstat(loop_, &u->req, u->file, onFsThunk);
      return;
    case kOpenStat: {
      const bool regular = r == 0 && (u->req.statbuf.st_mode & S_IFMT) == S_IFREG;
      if (r < 0) {
        op.status = statusFromUv(r, "fstat failed");
        uv_fs_req_cleanup(&u->req);
        closeNow(u->file);
        return complete();
      }
      op.kind = regular ? FileKind::File : FileKind::Other;
      op.sizeBytes = static_cast<uint64_t>(u->req.statbuf.st_size);
      op.result = u->file;
      uv_fs_req_cleanup(&u->req);
      return complete();
    }
    case kRead:
      uv_fs_req_cleanup(&u->req);
      if (result < 0) {
        op.status = statusFromUv(r, "read failed");
      } else {
        op.result = result;
      }
      return complete();
    case kWrite:
      uv_fs_req_cleanup(&u->req);
      if (result >= 0) op.result = result;
      return writeDone(u, result < 0 ? r : 0);
    case kSync:
      syncs_.observe((uv_hrtime() - u->syncStartNs) / 1000);
      [[fallthrough]];
    case kTruncate:
    case kRename:
      uv_fs_req_cleanup(&u->req);
      if (r < 0) op.status = statusFromUv(r, "file operation failed");
      return complete();
    case kRemove:
      uv_fs_req_cleanup(&u->req);
      if (r < 0 && r != UV_ENOENT) op.status = statusFromUv(r, "unlink failed");
      return complete();
    case kDirOpen:
      uv_fs_req_cleanup(&u->req);
      if (r < 0) {
        op.status = statusFromUv(r, "cannot open directory");
        return complete();
      }
      u->file = r;
      u->kind = kDirSync;
      u->syncStartNs = uv_hrtime();
      uv_fs_fsync(loop_, &u->req, u->file, onFsThunk);
      return;
    case kDirSync:
      syncs_.observe((uv_hrtime() - u->syncStartNs) / 1000);
      uv_fs_req_cleanup(&u->req);
      if (r < 0) u->firstError = statusFromUv(r, "directory fsync failed");
      u->kind = kDirClose;
      uv_fs_close(loop_, &u->req, u->file, onFsThunk);
      return;
    case kDirClose:
      uv_fs_req_cleanup(&u->req);
      op.status = u->firstError;
      return complete();
  }
}

}  // namespace bitsd::platform
