// Storage on libuv's asynchronous fs calls (threadpool-backed), so no file operation blocks the loop.
// Writes pass the caller's buffer to uv_fs_write as-is: body bytes go from the socket read buffer to
// the file with no copy, and (one buffer, no path) no allocation per fragment.
#pragma once

#include <uv.h>

#include <string>

#include "core/admin.h"
#include "core/ports.h"

namespace bitsd::platform {

class UvStorage final : public Storage {
 public:
  // `sha` computes upload digests on the thread pool (must be safe to call from several threads
  // on different states, as mbedTLS's SHA-256 is).
  UvStorage(uv_loop_t* loop, Sha256& sha) : loop_(loop), sha_(sha) {}

  void createExclusive(StorageOp& op, const char* path) override;
  void openWrite(StorageOp& op, const char* path) override;
  void write(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<const char> data,
             Sha256State* hash) override;
  void createTruncate(StorageOp& op, const char* path) override;
  void openRead(StorageOp& op, const char* path) override;
  void read(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<char> data) override;
  void syncData(StorageOp& op, FileHandle file) override;
  void truncate(StorageOp& op, FileHandle file, uint64_t sizeBytes) override;
  void checkDestination(StorageOp& op, const char* base, const char* below, const char* create,
                        bool mayReplace) override;
  void commitBeneath(StorageOp& op, const char* from, const char* base, const char* below, bool replace) override;
  void rename(StorageOp& op, const char* from, const char* to) override;
  void remove(StorageOp& op, const char* path) override;
  void syncDir(StorageOp& op, const char* dirPath) override;
  void closeNow(FileHandle file) override;
  // Early writeback: with `bytes` > 0, every write also starts the kernel's writeback of each whole
  // `bytes`-aligned unit it completes (sync_file_range), so the data is already on its way to the
  // device when the fdatasync before the Ack comes. For bitsd with fdatasync on; 0 (the default)
  // leaves writeback to the kernel.
  void setWritebackBytes(uint64_t bytes) { writebackBytes_ = bytes; }
  // Durations of the fdatasync and directory fsync calls, from issue to completion on the loop
  // (thread-pool queueing included: what a request waits). For /metrics.
  const SyncHistogram& syncHistogram() const { return syncs_; }
  // Off (bitsd with fdatasync off): a commit's link or rename is not followed by a directory
  // fsync either, so that "fdatasync off" syncs nothing per upload (issue 18: small uploads).
  void setSyncDirs(bool on) { syncDirs_ = on; }

 // Platform request object placed in StorageOp::impl (public so its size can be checked).
  struct UvOp;

 private:
  UvOp* prepare(StorageOp& op, int kind);
  static void onFsThunk(uv_fs_t* req);
  static void writeWorkThunk(uv_work_t* w);
  static void writeDoneThunk(uv_work_t* w, int status);
  void writeDone(UvOp* u, int err);
  static void hashWorkThunk(uv_work_t* w);
  static void hashDoneThunk(uv_work_t* w, int status);
  static void beneathWorkThunk(uv_work_t* w);
  static void beneathDoneThunk(uv_work_t* w, int status);
  void onFs(UvOp* u);

  uv_loop_t* loop_;
  Sha256& sha_;
  SyncHistogram syncs_;
  uint64_t writebackBytes_ = 0;
  bool syncDirs_ = true;
};

// libuv error number -> core Status (the number is kept for the log).
Status statusFromUv(int uvErr, const char* what);

}  // namespace bitsd::platform
