#include "tests/support/fakes.h"

#include <cstring>

namespace bitsd::testing {

void FakeStorage::enqueue(StorageOp& op, std::function<void(StorageOp&)> work) {
  op.status = Status::ok();
  op.result = 0;
  queue_.emplace_back(&op, std::move(work));
}

void FakeStorage::runOne() {
  auto [op, work] = std::move(queue_.front());
  queue_.pop_front();
  ++opsExecuted;
  if (crashAtOp != 0 && opsExecuted >= crashAtOp) dead_ = true;
  if (dead_) {
    op->status = Status(Code::Io, "device is dead", 5);
  } else {
    work(*op);
  }
  op->callback->onStorageDone(*op);
}

std::map<std::string, std::string> FakeStorage::rebootImage(uint32_t seed, int mode) const {
  std::map<std::string, std::string> image = durable_;
  uint64_t x = seed * 2654435761u + 1;
  auto next = [&]() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (const auto& [path, writes] : unsynced_) {
    if (!image.count(path)) continue;  // removed since
    std::string& f = image[path];
    for (const Unsynced& w : writes) {
      int fate = mode == 0 ? 0 : mode == 1 ? 1 : static_cast<int>(next() % 3);
      if (fate == 1) continue;  // dropped
      size_t n = w.bytes.size();
      if (fate == 2) n = static_cast<size_t>(next() % (w.bytes.size() + 1));  // torn
      if (f.size() < w.offset + n) f.resize(w.offset + n, '\0');
      std::memcpy(f.data() + w.offset, w.bytes.data(), n);
    }
  }
  return image;
}

void FakeStorage::createExclusive(StorageOp& op, const char* path) {
  std::string p = path;
  enqueue(op, [this, p](StorageOp& o) {
    if (files_.count(p)) {
      o.status = Status(Code::AlreadyExists, "exists");
      return;
    }
    files_[p] = "";
    durable_[p] = "";
    unsynced_.erase(p);
    handles_[nextHandle_] = p;
    o.result = nextHandle_++;
  });
}

void FakeStorage::openWrite(StorageOp& op, const char* path) {
  std::string p = path;
  enqueue(op, [this, p](StorageOp& o) {
    if (!files_.count(p)) {
      o.status = Status(Code::NotFound, "missing");
      return;
    }
    handles_[nextHandle_] = p;
    o.result = nextHandle_++;
  });
}

void FakeStorage::write(StorageOp& op, FileHandle file, uint64_t offset, std::span<const char> data,
                        Sha256State* hash) {
  bool journal = isJournal(file);
  if (journal) {
    ++journalWrites;
  } else {
    ++writeCalls;
  }
  // Capture the bytes now: the real platform writes from the caller's buffer before completing, and
  // the caller keeps it alive until then, so reading at completion would be equally valid.
  std::string bytes(data.data(), data.size());
  enqueue(op, [this, file, offset, bytes, journal, hash](StorageOp& o) {
    // Like the platform: the whole span is hashed, whatever the write does.
    if (hash != nullptr && sha != nullptr) sha->update(*hash, std::span<const char>(bytes.data(), bytes.size()));
    auto h = handles_.find(file);
    if (h == handles_.end()) {
      o.status = Status(Code::Io, "bad handle");
      return;
    }
    std::string& f = files_[h->second];
    size_t n = std::min(bytes.size(), maxWriteBytes);
    if (n > spaceLeftBytes) {
      if (spaceLeftBytes == 0) {
        o.status = Status(Code::NoSpace, "no space", 28);
        return;
      }
      n = static_cast<size_t>(spaceLeftBytes);
    }
    if (f.size() < offset + n) f.resize(offset + n, '\0');
    std::memcpy(f.data() + offset, bytes.data(), n);
    unsynced_[h->second].push_back(Unsynced{offset, bytes.substr(0, n)});
    if (spaceLeftBytes != UINT64_MAX) spaceLeftBytes -= n;
    if (!journal) bytesWritten += n;
    o.result = static_cast<int64_t>(n);
  });
}

void FakeStorage::syncData(StorageOp& op, FileHandle file) {
  if (isJournal(file)) {
    ++journalSyncs;
  } else {
    ++syncCalls;
  }
  enqueue(op, [this, file](StorageOp& o) {
    if (failSync) {
      o.status = Status(Code::Io, "sync failed", 5);
      return;
    }
    auto h = handles_.find(file);
    if (h == handles_.end()) return;
    durable_[h->second] = files_[h->second];
    unsynced_.erase(h->second);
  });
}

void FakeStorage::truncate(StorageOp& op, FileHandle file, uint64_t size) {
  enqueue(op, [this, file, size](StorageOp& o) {
    auto h = handles_.find(file);
    if (h == handles_.end()) {
      o.status = Status(Code::Io, "bad handle");
      return;
    }
    files_[h->second].resize(size);
    if (durable_.count(h->second) && durable_[h->second].size() > size) durable_[h->second].resize(size);
    for (Unsynced& w : unsynced_[h->second]) {
      if (w.offset >= size) {
        w.bytes.clear();
      } else if (w.offset + w.bytes.size() > size) {
        w.bytes.resize(size - w.offset);
      }
    }
  });
}

void FakeStorage::checkDestination(StorageOp& op, const char* path, const char* parentDir, const char* base) {
  std::string p = path, parent = parentDir, b = base;
  enqueue(op, [this, p, parent, b](StorageOp& o) {
    if (!dirs_.count(parent)) {
      o.status = Status(Code::NotFound, "no parent");
      return;
    }
    // No symlinks here: inside means below `base` by name.
    if (parent != b && parent.compare(0, b.size() + 1, b + "/") != 0) {
      o.status = Status(Code::AccessDenied, "outside the base");
      return;
    }
    o.kind = dirs_.count(p) ? FileKind::Directory : files_.count(p) ? FileKind::File : FileKind::Missing;
  });
}

void FakeStorage::linkNoReplace(StorageOp& op, const char* from, const char* to) {
  std::string f = from, t = to;
  enqueue(op, [this, f, t](StorageOp& o) {
    if (files_.count(t)) {
      o.status = Status(Code::AlreadyExists, "exists");
      return;
    }
    if (!files_.count(f)) {
      o.status = Status(Code::NotFound, "missing");
      return;
    }
    files_[t] = files_[f];
    durable_[t] = durable_.count(f) ? durable_[f] : files_[f];
    if (unsynced_.count(f)) unsynced_[t] = unsynced_[f];
  });
}

void FakeStorage::rename(StorageOp& op, const char* from, const char* to) {
  std::string f = from, t = to;
  enqueue(op, [this, f, t](StorageOp& o) {
    if (!files_.count(f)) {
      o.status = Status(Code::NotFound, "missing");
      return;
    }
    files_[t] = files_[f];
    files_.erase(f);
    durable_[t] = durable_.count(f) ? durable_[f] : "";
    durable_.erase(f);
    if (unsynced_.count(f)) {
      unsynced_[t] = unsynced_[f];
      unsynced_.erase(f);
    } else {
      unsynced_.erase(t);
    }
    for (auto& [h, p] : handles_) {
      if (p == f) p = t;  // an open handle follows its file
    }
  });
}

void FakeStorage::remove(StorageOp& op, const char* path) {
  std::string p = path;
  enqueue(op, [this, p](StorageOp&) {
    files_.erase(p);
    durable_.erase(p);
    unsynced_.erase(p);
  });
}

void FakeStorage::syncDir(StorageOp& op, const char*) {
  enqueue(op, [](StorageOp&) {});
}

}  // namespace bitsd::testing
