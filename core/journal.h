// The journal writer: appends records with group commit, and compacts the file in the background of
// the loop. The on-disk format is described in core/journal_format.h.
//
// Group commit: append() encodes a record into the pending buffer and asks the platform (through
// FlushScheduler) to call flush() once the current loop turn's callbacks have run. flush() writes
// everything pending as whole aligned blocks (a Pad record closes the last one), then fdatasyncs,
// then tells every waiter whose record was in that batch. Records appended while a flush is running
// wait for the next one. So all sessions acked in one loop turn share one fdatasync.
//
// Read-back: once a batch is written and synced, the journal reads the written range back and
// compares it with what it wrote (as littlefs's lfs_dir_commitcrc does) before it tells a waiter the
// record is durable. A device that returns other bytes fails the batch like a failed write: the
// waiters hear Io, the log says so, and the next batch is written at the same offset. A compaction
// reads its new file back the same way before the rename makes it the journal.
//
// Compaction: when the file has grown past twice the size of the live state (and past a floor), the
// journal writes a new file `journal.tmp` holding a snapshot of the live state under a new salt,
// syncs it, renames it over `journal`, and syncs the directory. Until the rename the old file is the
// journal; after it, the new one is: a crash at any step leaves one complete journal. Records that
// were appended meanwhile are renumbered in place (new salt, new sequence, new CRC) and flushed to
// the new file after the snapshot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "core/ports.h"

namespace bitsd {

class JournalWaiter {
 public:
  // Called once, on the loop, when the record is durable (status ok) or could not be written.
  virtual void onJournalDurable(const Status& status) = 0;

 protected:
  ~JournalWaiter() = default;
};

class FlushScheduler {
 public:
  // Arrange for Journal::flush() to run after the current loop turn's I/O callbacks.
  virtual void requestFlush() = 0;

 protected:
  ~FlushScheduler() = default;
};

// Provides the live state for a compaction snapshot.
class SnapshotSource {
 public:
  virtual void snapshot(JournalState* out) = 0;

 protected:
  ~SnapshotSource() = default;
};

struct JournalStats {
  uint64_t records = 0;
  uint64_t flushes = 0;      // = fdatasync calls on the journal
  uint64_t bytesWritten = 0;
  uint64_t compactions = 0;
  uint64_t failures = 0;
  uint64_t readBackMismatches = 0;  // batches (or compactions) whose read-back differed
};

class Journal final : public StorageCallback {
 public:
  Journal(Storage& storage, FlushScheduler& scheduler, Random& random);
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // `bufferBytes`: capacity of the pending and the in-flight buffers (each); `maxWaiters`: records
  // that may wait for durability at once; `maxBytes`: the board's cap on the file size.
  Status init(size_t bufferBytes, uint32_t maxWaiters, uint64_t maxBytes, std::string path);

  // Takes over an open journal file, positioned as recovery found it: records continue at `nextSeq`
  // and `endOffset` (block-aligned) under `salt`. `liveBytes` estimates the live state's size.
  void attach(FileHandle file, uint32_t salt, uint64_t nextSeq, uint64_t endOffset, uint64_t liveBytes);

  // Queues a record. `waiter` (may be null) hears once it is durable (written, synced and read back
  // intact), never from inside this call. Exhausted when the pending buffer or the waiter list is
  // full (the caller answers 503), or the record cannot be encoded (a field out of range). A record
  // that was not queued will never be in the journal: the caller must act on that.
  [[nodiscard]] Status append(const JournalRecord& r, JournalWaiter* waiter);

  // Starts a flush of what is pending, unless one (or a compaction) is running.
  void flush();

  // Compaction is wanted: the file is past twice the live size and past the floor, or compactSoon()
  // asked for one.
  bool wantsCompaction() const;
  // Compacts once at the next flush, whatever the file's size: recovery asks for it when the
  // journal holds records that must not stay (an older bitsd's digest states, with upload bytes).
  void compactSoon();
  // True when even a compacted journal would be near the cap: new sessions should be refused.
  bool nearlyFull() const { return liveBytes_ > maxBytes_ / 4 * 3; }
  void setSnapshotSource(SnapshotSource* s) { source_ = s; }
  // false only for benchmarks (`fdatasync = off`): records are written but not synced.
  void setSyncEnabled(bool on) { syncEnabled_ = on; }

  bool busy() const { return op_.busy || compacting_; }
  bool hasPending() const { return pendingLen_ > 0; }
  uint64_t sizeBytes() const { return endOffset_; }
  const JournalStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  enum class Step : uint8_t { Idle, Write, Sync, Verify, CompactRemoveTmp, CompactCreate, CompactWrite,
                              CompactSync, CompactVerify, CompactRename, CompactSyncDir };
  // The read-back reads at most this much at a time (one read for a usual batch of a few blocks).
  static constexpr size_t kReadBackChunkBytes = 8192;
  struct Waiter {
    JournalWaiter* waiter;
    uint64_t seq;
  };

  void onStorageDone(StorageOp& op) override;
  void finishFlush(const Status& st);
  void startCompaction();
  void finishCompaction(const Status& st);
  void writeMore(std::span<const uint8_t> rest, uint64_t offset);
  // Reads back `written` (at `offset` in the file of the current step) and compares.
  void startReadBack(Step step, std::span<const uint8_t> written, uint64_t offset);
  void readBackMore();
  // The read-back's completion: Ok once all of it matched, an error when it did not (or the read
  // failed); `*more` when another chunk was started.
  Status checkReadBack(const StorageOp& op, bool* more);

  Storage& storage_;
  FlushScheduler& scheduler_;
  Random& random_;
  SnapshotSource* source_ = nullptr;
  std::string path_, tmpPath_, dirPath_;
  FileHandle file_ = kNoFile;
  FileHandle tmpFile_ = kNoFile;
  uint32_t salt_ = 0;
  uint64_t nextSeq_ = 1;
  uint64_t endOffset_ = 0;
  uint64_t liveBytes_ = 0;
  uint64_t maxBytes_ = 0;
  bool flushRequested_ = false;
  bool compacting_ = false;
  bool compactSoon_ = false;
  bool syncEnabled_ = true;

  std::vector<uint8_t> pending_, flushing_;
  size_t pendingLen_ = 0, flushingLen_ = 0;
  std::vector<Waiter> pendingWaiters_, flushingWaiters_;
  size_t maxWaiters_ = 0;
  std::span<const uint8_t> writeRest_;
  uint64_t writeOffset_ = 0;
  std::vector<char> readBack_;  // kReadBackChunkBytes, allocated by init()
  std::span<const uint8_t> readBackWritten_;
  uint64_t readBackOffset_ = 0;
  size_t readBackDone_ = 0;

  // Compaction scratch (allocated while compacting only).
  std::vector<uint8_t> snapshot_;
  uint32_t newSalt_ = 0;
  uint64_t newNextSeq_ = 0;

  Step step_ = Step::Idle;
  StorageOp op_;
  JournalStats stats_;
};

}  // namespace bitsd
