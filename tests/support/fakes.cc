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

// A new empty file, open (createExclusive, and Create-Session's checkDestination).
Status FakeStorage::createNew(const std::string& p, int64_t* handle) {
  if (files_.count(p)) return Status(Code::AlreadyExists, "exists");
  files_[p] = "";
  durable_[p] = "";
  unsynced_.erase(p);
  handles_[nextHandle_] = p;
  *handle = nextHandle_++;
  return Status::ok();
}

void FakeStorage::createExclusive(StorageOp& op, const char* path) {
  std::string p = path;
  enqueue(op, [this, p](StorageOp& o) { o.status = createNew(p, &o.result); });
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

void FakeStorage::createTruncate(StorageOp& op, const char* path) {
  std::string p = path;
  enqueue(op, [this, p](StorageOp& o) {
    files_[p].clear();  // durable at once, like the other directory operations
    durable_[p].clear();
    unsynced_.erase(p);
    handles_[nextHandle_] = p;
    o.result = nextHandle_++;
  });
}

void FakeStorage::openRead(StorageOp& op, const char* path) {
  std::string p = path;
  enqueue(op, [this, p](StorageOp& o) {
    auto f = files_.find(p);
    if (f == files_.end()) {
      o.status = Status(Code::NotFound, "missing");
      return;
    }
    o.kind = FileKind::File;
    o.sizeBytes = f->second.size();
    handles_[nextHandle_] = p;
    o.result = nextHandle_++;
  });
}

// Reads what a reader of the file would see now (synced or not, as from the page cache).
void FakeStorage::read(StorageOp& op, FileHandle file, uint64_t offset, std::span<char> data) {
  ++readCalls;
  if (isJournal(file)) ++journalReads;
  enqueue(op, [this, file, offset, data](StorageOp& o) {
    auto h = handles_.find(file);
    if (h == handles_.end()) {
      o.status = Status(Code::Io, "bad handle");
      return;
    }
    const std::string& f = files_[h->second];
    size_t n = offset >= f.size() ? 0 : std::min(data.size(), static_cast<size_t>(f.size() - offset));
    if (n > 0) std::memcpy(data.data(), f.data() + offset, n);
    o.result = static_cast<int64_t>(n);
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
  if (corruptJournalWrites && !bytes.empty()) {
    auto h = handles_.find(file);
    if (h != handles_.end() && (h->second == journalPath || h->second == journalPath + ".tmp")) {
      bytes[bytes.size() / 2] ^= 0x10;
    }
  }
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

Status FakeStorage::walkBeneath(const std::string& base, const std::string& below) const {
  if (symlinks_.count(base)) return Status(Code::AccessDenied, "the base is a symlink");
  if (!dirs_.count(base)) return Status(Code::NotFound, "no base");
  std::string dir = base;
  size_t start = 0;
  for (size_t slash = below.find('/'); slash != std::string::npos; slash = below.find('/', start)) {
    dir += "/" + below.substr(start, slash - start);
    start = slash + 1;
    if (symlinks_.count(dir)) return Status(Code::AccessDenied, "a symlink in the destination's path");
    if (!dirs_.count(dir)) return Status(Code::NotFound, "no parent");
  }
  return Status::ok();
}

void FakeStorage::checkDestination(StorageOp& op, const char* base, const char* below, const char* create,
                                   bool mayReplace) {
  std::string b = base, rel = below, c = create != nullptr ? create : "";
  enqueue(op, [this, b, rel, c, mayReplace](StorageOp& o) {
    o.result = -1;
    o.createStatus = Status::ok();
    o.status = walkBeneath(b, rel);
    if (!o.status.isOk()) return;
    std::string p = b + "/" + rel;
    o.kind = dirs_.count(p)       ? FileKind::Directory
             : files_.count(p)    ? FileKind::File
             : symlinks_.count(p) ? FileKind::Other
                                  : FileKind::Missing;
    if (c.empty() || !(o.kind == FileKind::Missing || (o.kind != FileKind::Directory && mayReplace))) return;
    o.createStatus = failCreate ? Status(Code::NoSpace, "no space", 28) : createNew(c, &o.result);
  });
}

void FakeStorage::commitBeneath(StorageOp& op, const char* from, const char* base, const char* below, bool replace) {
  ++commitCalls;
  std::string f = from, b = base, rel = below;
  enqueue(op, [this, f, b, rel, replace](StorageOp& o) {
    o.syncStatus = Status::ok();
    o.status = walkBeneath(b, rel);
    if (!o.status.isOk()) return;
    std::string t = b + "/" + rel;
    if (!replace && (files_.count(t) || symlinks_.count(t) || dirs_.count(t))) {
      o.status = Status(Code::AlreadyExists, "exists");
      return;
    }
    if (!files_.count(f)) {
      o.status = Status(Code::NotFound, "missing");
      return;
    }
    if (dirs_.count(t)) {
      o.status = Status(Code::IsDirectory, "is a directory");
      return;
    }
    symlinks_.erase(t);  // a rename replaces the symlink itself
    files_[t] = files_[f];
    durable_[t] = durable_.count(f) ? durable_[f] : replace ? std::string() : files_[f];
    if (unsynced_.count(f)) {
      unsynced_[t] = unsynced_[f];
    } else {
      unsynced_.erase(t);
    }
    if (!replace && linkCommits) return;  // a link (result 0): the caller removes `from`
    o.result = 1;  // renamed (without replacing, as renameat2 RENAME_NOREPLACE, unless `replace`)
    files_.erase(f);
    durable_.erase(f);
    unsynced_.erase(f);
    for (auto& [h, p] : handles_) {
      if (p == f) p = t;  // an open handle follows its file
    }
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
  ++removeCalls;
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

// ---------------------------------------------------------------------------------------------------
// FakeFarm

namespace {
std::string idText(const SessionId& id) {
  char t[kSessionIdTextBytes];
  formatSessionId(id, t);
  return std::string(t, kSessionIdTextBytes);
}
}  // namespace

FakeFarm::FakeFarm(FakeFarmStore* store, std::string node, FakeStorage* disk)
    : store_(store), node_(std::move(node)), disk_(disk) {
  store_->setLive(node_, true);
}

size_t FakeFarm::count(const std::string& prefix) const {
  size_t n = 0;
  for (const std::string& c : calls) n += c.rfind(prefix, 0) == 0;
  return n;
}

void FakeFarm::enqueue(FarmOp& op, std::string call, std::function<void(FarmOp&)> apply) {
  calls.push_back(call);
  if (observer) observer(call);
  queue_.push_back(Pending{&op, std::move(call), std::move(apply)});
}

void FakeFarm::runOne() {
  Pending p = std::move(queue_.front());
  queue_.pop_front();
  FarmOp& op = *p.op;
  op.resetResult();
  if (down || !live()) {
    op.outcome = FarmOutcome::Unavailable;
    store_->log.push_back(p.call + " " + node_ + " unavailable");
  } else if (unavailableNext > 0) {
    --unavailableNext;
    op.outcome = FarmOutcome::Unavailable;
    store_->log.push_back(p.call + " " + node_ + " unavailable");
  } else {
    op.outcome = FarmOutcome::Done;
    p.apply(op);
    store_->log.push_back(p.call + " " + node_ + (op.won ? " won" : ""));
    if (ambiguousNext > 0) {  // applied, but the answer is lost
      --ambiguousNext;
      op.resetResult();
      op.outcome = FarmOutcome::Unavailable;
    }
  }
  if (observer) observer("done " + p.call);
  op.callback->onFarmDone(op);
}

void FakeFarm::readRecord(const std::string& txid, FarmOp& op) const {
  const FarmTxRecord* r = store_->find(txid);
  if (r == nullptr) return;
  op.record = *r;
  op.record.nodeLive = store_->isLive(r->node);
}

void FakeFarm::recordSession(FarmOp& op, const SessionId& id) {
  std::string sid = idText(id);
  enqueue(op, "recordSession " + sid, [this, sid](FarmOp&) { store_->sessions[sid] = node_; });
}

// claim and takeOver, when they win: this node's "began" record under a new revision.
void FakeFarm::writeBegan(const std::string& txid, const std::string& token, const SessionId& session, FarmOp& o) {
  FarmTxRecord r;
  r.state = FarmTxRecord::State::Began;
  r.node = node_;
  r.token = token;
  r.session = session;
  r.modRevision = ++store_->revision;
  store_->tx[txid] = r;
  o.won = true;
  o.revision = r.modRevision;
}

void FakeFarm::claim(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session) {
  std::string t(txid), tok(token);
  enqueue(op, "claim " + t, [this, t, tok, session](FarmOp& o) {
    if (store_->find(t) != nullptr) return readRecord(t, o);
    writeBegan(t, tok, session, o);
  });
}

void FakeFarm::takeOver(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session,
                        int64_t expectRevision) {
  std::string t(txid), tok(token);
  enqueue(op, "takeOver " + t + " @" + std::to_string(expectRevision),
          [this, t, tok, session, expectRevision](FarmOp& o) {
            const FarmTxRecord* cur = store_->find(t);
            if (cur == nullptr || cur->modRevision != expectRevision) return readRecord(t, o);
            writeBegan(t, tok, session, o);
          });
}

void FakeFarm::end(FarmOp& op, std::string_view txid, int64_t ourRevision, const FarmEnded& ended) {
  std::string t(txid);
  FarmTxRecord r;
  r.state = FarmTxRecord::State::Ended;
  r.node = node_;
  r.session = ended.session;
  r.status = ended.status;
  r.hresult = ended.hresult;
  r.flags = ended.flags;
  r.replyBytes = ended.replyBytes;
  r.replySession = ended.replySession;
  r.staticUrl = std::string(ended.staticUrl);
  const char* replyFile = ended.replyFile;  // read when the operation runs, as the platform does
  enqueue(op, "end " + t + " @" + std::to_string(ourRevision), [this, t, r, replyFile, ourRevision](FarmOp& o) {
    const FarmTxRecord* cur = store_->find(t);
    if (cur == nullptr || cur->modRevision != ourRevision) return readRecord(t, o);
    FarmTxRecord e = r;
    if (replyFile != nullptr && disk_ != nullptr && disk_->exists(replyFile)) {
      e.replyInline = true;
      e.reply = disk_->contents(replyFile);
    }
    e.modRevision = ++store_->revision;
    store_->tx[t] = e;
    o.won = true;
    o.revision = e.modRevision;
  });
}

void FakeFarm::lookupSession(FarmOp& op, const SessionId& id) {
  std::string sid = idText(id);
  enqueue(op, "lookupSession " + sid, [this, sid](FarmOp& o) {
    auto it = store_->sessions.find(sid);
    if (it == store_->sessions.end()) return;
    o.owner.found = true;
    o.owner.node = it->second;
    o.owner.self = it->second == node_;
    auto n = store_->liveNodes.find(it->second);
    o.owner.live = n != store_->liveNodes.end();
    if (o.owner.live) o.owner.peerUrl = n->second;
  });
}

}  // namespace bitsd::testing
