// Owns the journal writer: group commit, the read-back of each append, compaction and replay
// (core/journal.h).
#include "core/journal.h"

#include <algorithm>
#include <cstring>

#include "core/log.h"

namespace bitsd {

namespace {
constexpr uint64_t kCompactionFloorBytes = 64 * 1024;

// Rewrites the sequence numbers and CRCs of the encoded records in `buf` for a new salt, starting at
// `*seq`. Payloads do not change.
void renumber(uint8_t* buf, size_t len, uint32_t salt, uint64_t* seq) {
  size_t off = 0;
  while (off < len) {
    size_t n = restampRecord(buf + off, len - off, salt, *seq);
    if (n == 0) break;  // cannot happen: the buffer holds whole records only
    ++*seq;
    off += n;
  }
}
}  // namespace

Journal::Journal(Storage& storage, FlushScheduler& scheduler, Random& random)
    : storage_(storage), scheduler_(scheduler), random_(random) {
  op_.callback = this;
}

Status Journal::init(size_t bufferBytes, uint32_t maxWaiters, uint64_t maxBytes, std::string path) {
  path_ = std::move(path);
  tmpPath_ = path_ + ".tmp";
  size_t slash = path_.rfind('/');
  dirPath_ = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
  // Room for the records plus the Pad that closes the last block.
  pending_.assign(bufferBytes + 2 * kJournalBlockBytes, 0);
  flushing_.assign(bufferBytes + 2 * kJournalBlockBytes, 0);
  pendingWaiters_.reserve(maxWaiters);
  flushingWaiters_.reserve(maxWaiters);
  maxWaiters_ = maxWaiters;
  maxBytes_ = maxBytes;
  readBack_.assign(kReadBackChunkBytes, 0);
  return Status::ok();
}

void Journal::attach(FileHandle file, uint32_t salt, uint64_t nextSeq, uint64_t endOffset, uint64_t liveBytes) {
  file_ = file;
  salt_ = salt;
  nextSeq_ = nextSeq;
  endOffset_ = endOffset;
  liveBytes_ = liveBytes;
}

Status Journal::append(const JournalRecord& r, JournalWaiter* waiter) {
  if (waiter != nullptr && pendingWaiters_.size() >= maxWaiters_) {
    return Status(Code::Exhausted, "journal waiter list full");
  }
  size_t room = pending_.size() - 2 * kJournalBlockBytes - pendingLen_;
  size_t n = encodeRecord(r, salt_, nextSeq_, pending_.data() + pendingLen_, room);
  if (n == 0) return Status(Code::Exhausted, "journal buffer full");
  pendingLen_ += n;
  ++nextSeq_;
  ++stats_.records;
  if (waiter != nullptr) pendingWaiters_.push_back(Waiter{waiter, nextSeq_ - 1});
  if (!flushRequested_) {
    flushRequested_ = true;
    scheduler_.requestFlush();
  }
  return Status::ok();
}

void Journal::flush() {
  flushRequested_ = false;
  if (op_.busy || compacting_) return;  // finishFlush/finishCompaction look again
  if (pendingLen_ == 0) {
    if (wantsCompaction() && source_ != nullptr) startCompaction();
    return;
  }
  // Close the batch with a Pad so the write covers whole blocks and the next batch starts aligned.
  uint64_t end = endOffset_ + pendingLen_;
  size_t pad = encodePad(end, salt_, nextSeq_, pending_.data() + pendingLen_, 2 * kJournalBlockBytes);
  if (pad > 0) ++nextSeq_;
  pendingLen_ += pad;
  std::swap(pending_, flushing_);
  flushingLen_ = pendingLen_;
  pendingLen_ = 0;
  std::swap(pendingWaiters_, flushingWaiters_);
  pendingWaiters_.clear();
  step_ = Step::Write;
  writeMore(std::span<const uint8_t>(flushing_.data(), flushingLen_), endOffset_);
}

void Journal::writeMore(std::span<const uint8_t> rest, uint64_t offset) {
  writeRest_ = rest;
  writeOffset_ = offset;
  op_.busy = true;
  FileHandle f = (step_ == Step::CompactWrite) ? tmpFile_ : file_;
  storage_.write(op_, f, offset, std::span<const char>(reinterpret_cast<const char*>(rest.data()), rest.size()));
}

void Journal::startReadBack(Step step, std::span<const uint8_t> written, uint64_t offset) {
  step_ = step;
  readBackWritten_ = written;
  readBackOffset_ = offset;
  readBackDone_ = 0;
  readBackMore();
}

void Journal::readBackMore() {
  const size_t left = readBackWritten_.size() - readBackDone_;
  const size_t n = left < readBack_.size() ? left : readBack_.size();
  op_.busy = true;
  FileHandle f = (step_ == Step::CompactVerify) ? tmpFile_ : file_;
  storage_.read(op_, f, readBackOffset_ + readBackDone_, std::span<char>(readBack_.data(), n));
}

Status Journal::checkReadBack(const StorageOp& op, bool* more) {
  *more = false;
  if (!op.status.isOk()) return op.status;
  const size_t asked = std::min(readBack_.size(), readBackWritten_.size() - readBackDone_);
  const size_t got = op.result > 0 ? static_cast<size_t>(op.result) : 0;
  const uint64_t at = readBackOffset_ + readBackDone_;
  if (got == 0 || got > asked) {
    ++stats_.readBackMismatches;
    logf(LogLevel::Error, "journal: reading back %zu bytes written at offset %llu returned %lld: the file is shorter than written",
         asked, static_cast<unsigned long long>(at), static_cast<long long>(op.result));
    return Status(Code::Io, "journal read-back came up short");
  }
  if (std::memcmp(readBack_.data(), readBackWritten_.data() + readBackDone_, got) != 0) {
    ++stats_.readBackMismatches;
    logf(LogLevel::Error, "journal: the %zu bytes read back at offset %llu differ from what was written (%s)", got,
         static_cast<unsigned long long>(at), path_.c_str());
    return Status(Code::Io, "journal read-back mismatch");
  }
  readBackDone_ += got;
  if (readBackDone_ < readBackWritten_.size()) {
    *more = true;
    readBackMore();
  }
  return Status::ok();
}

void Journal::finishFlush(const Status& st) {
  step_ = Step::Idle;
  if (st.isOk()) {
    endOffset_ += flushingLen_;
    stats_.bytesWritten += flushingLen_;
    ++stats_.flushes;
  } else {
    // The batch is lost; the next one is written at the same aligned offset, over whatever part of
    // this one reached the disk. The waiters hear the error and answer their clients with it.
    ++stats_.failures;
    logf(LogLevel::Error, "journal write failed: %s (%d)", st.message(), st.sysCode());
    // Its sequence numbers were never durable: give them to the records still pending, or replay
    // would stop at the gap.
    uint64_t seq = 0;
    if (!recordSequence(std::span<const uint8_t>(flushing_.data(), flushingLen_), &seq)) seq = nextSeq_;
    renumber(pending_.data(), pendingLen_, salt_, &seq);
    nextSeq_ = seq;
  }
  flushingLen_ = 0;
  // Waiters may append from their callbacks; appends only touch the pending list, and nothing here
  // starts a flush synchronously, so this list is stable while we walk it. clear() keeps its
  // capacity: no allocation per flush.
  for (const Waiter& w : flushingWaiters_) w.waiter->onJournalDurable(st);
  flushingWaiters_.clear();
  if (pendingLen_ > 0) {
    flushRequested_ = true;
    scheduler_.requestFlush();
  } else if (wantsCompaction() && source_ != nullptr) {
    startCompaction();
  }
}

void Journal::compactSoon() {
  compactSoon_ = true;
  if (!flushRequested_) {
    flushRequested_ = true;
    scheduler_.requestFlush();
  }
}

bool Journal::wantsCompaction() const {
  if (compactSoon_) return true;
  const uint64_t floor = kCompactionFloorBytes < maxBytes_ / 4 ? kCompactionFloorBytes : maxBytes_ / 4;
  return endOffset_ > floor && endOffset_ > 2 * (liveBytes_ + kJournalBlockBytes) &&
         (endOffset_ > maxBytes_ / 2 || endOffset_ > 8 * (liveBytes_ + kJournalBlockBytes));
}

void Journal::startCompaction() {
  compacting_ = true;
  compactSoon_ = false;  // once: a failure leaves it to the size rule
  JournalState state;
  source_->snapshot(&state);
  uint8_t rnd[4];
  if (!random_.fill(rnd, sizeof rnd)) {
    finishCompaction(Status(Code::Io, "random generator failed"));
    return;
  }
  newSalt_ = static_cast<uint32_t>(getLe(rnd, 4));
  JournalHeader h;
  h.salt = newSalt_;
  h.firstSeq = 1;
  snapshot_.assign(kJournalBlockBytes, 0);
  encodeJournalHeader(h, snapshot_.data());
  newNextSeq_ = 1;
  uint64_t offset = kJournalBlockBytes;
  encodeSnapshot(state, newSalt_, &newNextSeq_, &offset, &snapshot_);
  step_ = Step::CompactRemoveTmp;
  op_.busy = true;
  storage_.remove(op_, tmpPath_.c_str());
}

void Journal::finishCompaction(const Status& st) {
  step_ = Step::Idle;
  compacting_ = false;
  if (st.isOk()) {
    storage_.closeNow(file_);
    file_ = tmpFile_;
    salt_ = newSalt_;
    endOffset_ = snapshot_.size();
    liveBytes_ = snapshot_.size();
    // Records appended during the compaction now belong to the new file.
    uint64_t seq = newNextSeq_;
    renumber(pending_.data(), pendingLen_, salt_, &seq);
    nextSeq_ = seq;
    ++stats_.compactions;
    logLimited(LogLevel::Info, "journal compacted", "journal compacted to %llu bytes", static_cast<unsigned long long>(endOffset_));
  } else {
    if (tmpFile_ != kNoFile) storage_.closeNow(tmpFile_);
    // Do not try again until the journal has grown by another live size.
    liveBytes_ = endOffset_;
    logf(LogLevel::Warn, "journal compaction failed: %s (%d); the old journal stays", st.message(), st.sysCode());
  }
  tmpFile_ = kNoFile;
  std::vector<uint8_t>().swap(snapshot_);
  if (pendingLen_ > 0) {
    flushRequested_ = true;
    scheduler_.requestFlush();
  }
}

void Journal::onStorageDone(StorageOp& op) {
  op.busy = false;
  const Status st = op.status;
  switch (step_) {
    case Step::Write:
    case Step::CompactWrite: {
      if (!st.isOk() || op.result <= 0) {
        Status e = st.isOk() ? Status(Code::Io, "short journal write") : st;
        return step_ == Step::Write ? finishFlush(e) : finishCompaction(e);
      }
      size_t n = static_cast<size_t>(op.result);
      if (n < writeRest_.size()) return writeMore(writeRest_.subspan(n), writeOffset_ + n);
      if (step_ == Step::Write && !syncEnabled_) {
        return startReadBack(Step::Verify, std::span<const uint8_t>(flushing_.data(), flushingLen_), endOffset_);
      }
      op_.busy = true;
      if (step_ == Step::Write) {
        step_ = Step::Sync;
        storage_.syncData(op_, file_);
      } else {
        step_ = Step::CompactSync;
        storage_.syncData(op_, tmpFile_);
      }
      return;
    }
    case Step::Sync:
      if (!st.isOk()) return finishFlush(st);
      // Durable as far as the device says; read it back before anyone is told so.
      return startReadBack(Step::Verify, std::span<const uint8_t>(flushing_.data(), flushingLen_), endOffset_);
    case Step::Verify: {
      bool more = false;
      Status v = checkReadBack(op, &more);
      if (more) return;
      return finishFlush(v);
    }
    case Step::CompactRemoveTmp:
      if (!st.isOk()) return finishCompaction(st);
      step_ = Step::CompactCreate;
      op_.busy = true;
      storage_.createExclusive(op_, tmpPath_.c_str());
      return;
    case Step::CompactCreate:
      if (!st.isOk()) return finishCompaction(st);
      tmpFile_ = static_cast<FileHandle>(op.result);
      step_ = Step::CompactWrite;
      return writeMore(std::span<const uint8_t>(snapshot_.data(), snapshot_.size()), 0);
    case Step::CompactSync:
      if (!st.isOk()) return finishCompaction(st);
      // The new file replaces the journal only once it reads back as written.
      return startReadBack(Step::CompactVerify, std::span<const uint8_t>(snapshot_.data(), snapshot_.size()), 0);
    case Step::CompactVerify: {
      bool more = false;
      Status v = checkReadBack(op, &more);
      if (more) return;
      if (!v.isOk()) return finishCompaction(v);
      step_ = Step::CompactRename;
      op_.busy = true;
      storage_.rename(op_, tmpPath_.c_str(), path_.c_str());
      return;
    }
    case Step::CompactRename:
      if (!st.isOk()) return finishCompaction(st);
      step_ = Step::CompactSyncDir;
      op_.busy = true;
      storage_.syncDir(op_, dirPath_.c_str());
      return;
    case Step::CompactSyncDir:
      // The rename is done: the new file is the journal even if the directory sync failed.
      if (!st.isOk()) logf(LogLevel::Warn, "journal directory sync failed: %s", st.message());
      return finishCompaction(Status::ok());
    case Step::Idle: break;
  }
  BITS_CHECK(false && "journal completion without a step");
}

}  // namespace bitsd
