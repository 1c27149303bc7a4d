// Fakes for core/ unit tests: in-memory storage with queued completions and fault injection, a
// simulated clock, and a deterministic random source.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/auth.h"
#include "core/farm.h"
#include "core/journal.h"
#include "core/notify.h"
#include "core/ports.h"

namespace bitsd::testing {

class FakeClock final : public Clock {
 public:
  uint64_t nowMs() override { return nowMs_; }
  uint64_t wallSeconds() override { return wallBase_ + nowMs_ / 1000; }
  void advanceMs(uint64_t ms) { nowMs_ += ms; }

 private:
  uint64_t nowMs_ = 1000000;
  uint64_t wallBase_ = 1700000000;
};

// Records flush requests; the test (or EngineDriver) runs Journal::flush() when it likes.
class FakeScheduler final : public FlushScheduler {
 public:
  void requestFlush() override { requested = true; }
  bool requested = false;
};

class FakeRandom final : public Random {
 public:
  bool fill(uint8_t* out, size_t len) override {
    if (fail) return false;
    for (size_t i = 0; i < len; ++i) {
      state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
      out[i] = static_cast<uint8_t>(state_ >> 56);
    }
    return true;
  }
  bool fail = false;

 private:
  uint64_t state_ = 42;
};

// Files live in a map from path to contents. Directories are a set of known paths: a path's parent
// "exists" if it and every directory between it and the base were added with addDir(). A name added
// with addSymlink() is a symlink (to anywhere): the destination operations refuse to pass through
// it, as the platform does. Operations complete only when the test calls runAll() (or runOne()),
// never inside the call, as the Storage contract requires.
class FakeStorage final : public Storage {
 public:
  void addDir(const std::string& path) { dirs_[path] = true; }
  // `mv dir dir.old; ln -s elsewhere dir`, as seen from below the base: `path` becomes a symlink.
  void swapDirForSymlink(const std::string& path) {
    dirs_.erase(path);
    symlinks_.insert(path);
  }
  void addSymlink(const std::string& path) { symlinks_.insert(path); }
  void removeSymlink(const std::string& path) { symlinks_.erase(path); }
  bool isSymlink(const std::string& path) const { return symlinks_.count(path) != 0; }
  // The directories and symlinks of `other` (a restart finds the same tree).
  void copyTreeFrom(const FakeStorage& other) {
    dirs_.insert(other.dirs_.begin(), other.dirs_.end());
    symlinks_.insert(other.symlinks_.begin(), other.symlinks_.end());
  }
  uint64_t commitCalls = 0;
  // A commit that may not replace links the file and leaves `from` to the caller (a file system
  // without renameat2's RENAME_NOREPLACE), instead of renaming it.
  bool linkCommits = false;
  // Create-Session's in-progress file cannot be created (checkDestination with `create`): NoSpace.
  bool failCreate = false;
  uint64_t removeCalls = 0;
  void addFile(const std::string& path, std::string contents = "") {
    durable_[path] = contents;
    files_[path] = std::move(contents);
  }
  bool exists(const std::string& path) const { return files_.count(path) != 0; }
  const std::string& contents(const std::string& path) const { return files_.at(path); }
  size_t fileCount() const { return files_.size(); }
  const std::map<std::string, std::string>& files() const { return files_; }
  size_t pending() const { return queue_.size(); }
  // Open handles, data writes and syncs exclude the file named `journalPath` (counted apart).
  int openHandles() const {
    int n = 0;
    for (auto& [h, p] : handles_) n += p != journalPath;
    return n;
  }
  std::string journalPath;
  uint64_t journalSyncs = 0;
  uint64_t journalWrites = 0;
  uint64_t journalReads = 0;

  // Faults.
  uint64_t spaceLeftBytes = UINT64_MAX;  // writes beyond it fail with NoSpace (after a short write)
  bool failSync = false;
  size_t maxWriteBytes = SIZE_MAX;       // short writes
  // Writes to the journal (and to the compaction's `journal.tmp`) report success but store their
  // bytes with one bit flipped (a device that corrupts what it was given): the read-back must
  // catch it.
  bool corruptJournalWrites = false;
  uint64_t writeCalls = 0;
  uint64_t syncCalls = 0;
  uint64_t bytesWritten = 0;

  bool isJournal(FileHandle f) const {
    auto it = handles_.find(f);
    return it != handles_.end() && it->second == journalPath;
  }
  // --- Power loss (STYLE.md §8) ----------------------------------------------------------------
  // Writes are volatile until their file is synced. When the operation numbered `crashAtOp`
  // (1-based, counting every operation as it executes) comes, the device goes dead: that operation
  // and every later one fail with Io and change nothing. Directory operations (create, link, rename,
  // unlink, truncate) are durable at once, as on a journaling file system.
  uint64_t crashAtOp = 0;
  uint64_t opsExecuted = 0;
  bool dead() const { return dead_; }
  // What a reboot finds: the synced contents, plus each unsynced write kept, dropped or torn (a
  // random prefix of it lands), chosen by `seed`. mode 0: all kept, 1: all dropped, 2: random.
  std::map<std::string, std::string> rebootImage(uint32_t seed, int mode) const;

  void runOne();
  void runAll() {
    while (!queue_.empty()) runOne();
  }

  void createExclusive(StorageOp& op, const char* path) override;
  void openWrite(StorageOp& op, const char* path) override;
  void write(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<const char> data,
             Sha256State* hash) override;
  Sha256* sha = nullptr;  // for writes that carry a digest
  void createTruncate(StorageOp& op, const char* path) override;
  void openRead(StorageOp& op, const char* path) override;
  void read(StorageOp& op, FileHandle file, uint64_t offsetBytes, std::span<char> data) override;
  uint64_t readCalls = 0;
  void syncData(StorageOp& op, FileHandle file) override;
  void truncate(StorageOp& op, FileHandle file, uint64_t sizeBytes) override;
  void checkDestination(StorageOp& op, const char* base, const char* below, const char* create,
                        bool mayReplace) override;
  void commitBeneath(StorageOp& op, const char* from, const char* base, const char* below, bool replace) override;
  void rename(StorageOp& op, const char* from, const char* to) override;
  void remove(StorageOp& op, const char* path) override;
  void syncDir(StorageOp& op, const char* dirPath) override;
  void closeNow(FileHandle file) override { handles_.erase(file); }
  // Opens a handle on an existing (or new, empty) file without going through the queue.
  FileHandle openForTest(const std::string& path) {
    files_.try_emplace(path);
    durable_.try_emplace(path);
    handles_[nextHandle_] = path;
    return nextHandle_++;
  }
  std::string& mutableContents(const std::string& path) { return files_[path]; }

 private:
  void enqueue(StorageOp& op, std::function<void(StorageOp&)> work);
  Status createNew(const std::string& path, int64_t* handle);
  // The destination's parent walked from `base`: Ok, NotFound or AccessDenied (a symlink).
  Status walkBeneath(const std::string& base, const std::string& below) const;

  std::map<std::string, std::string> files_;
  std::map<std::string, bool> dirs_;
  std::set<std::string> symlinks_;
  std::map<FileHandle, std::string> handles_;
  struct Unsynced {
    uint64_t offset;
    std::string bytes;
  };
  std::map<std::string, std::string> durable_;
  std::map<std::string, std::vector<Unsynced>> unsynced_;
  bool dead_ = false;
  FileHandle nextHandle_ = 3;
  std::deque<std::pair<StorageOp*, std::function<void(StorageOp&)>>> queue_;
};

// The users file, faked: `credentials` (base64 of "user:password", as in the header) maps to a user
// id; every check completes only when the test (or EngineDriver::settle) runs it.
class FakeAuthenticator final : public Authenticator {
 public:
  std::vector<std::string> names;                    // id -> name
  std::map<std::string, int32_t> credentials;        // base64 credentials -> id
  int checks = 0;
  uint32_t refuseMs = 0;  // non-zero: every check is refused unchecked (throttled), with this Retry-After
  void add(const std::string& name, const std::string& base64Credentials) {
    credentials[base64Credentials] = static_cast<int32_t>(names.size());
    names.push_back(name);
  }
  void check(AuthOp& op, std::string_view creds) override {
    ++checks;
    auto it = credentials.find(std::string(creds));
    queue_.push_back({&op, it == credentials.end() ? -1 : it->second});
  }
  int32_t userId(std::string_view name) const override {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return static_cast<int32_t>(i);
    }
    return -1;
  }
  std::string_view userName(int32_t id) const override {
    return id >= 0 && static_cast<size_t>(id) < names.size() ? std::string_view(names[static_cast<size_t>(id)])
                                                             : std::string_view();
  }
  size_t pending() const { return queue_.size(); }
  void runOne() {
    auto [op, user] = queue_.front();
    queue_.pop_front();
    op->user = refuseMs > 0 ? -1 : user;
    op->retryAfterMs = refuseMs;
    op->callback->onAuthDone(*op);
  }

 private:
  std::deque<std::pair<AuthOp*, int32_t>> queue_;
};

// The server application, faked: every POST is recorded; it is answered only when the test runs it
// (runOne/runAll), with whatever `answer` says (default: 200, no reply). By value, a reply body
// given in `replyBody` is written to the reply file on the fake disk, as UvNotifier would.
class FakeNotifier final : public Notifier {
 public:
  struct Post {
    std::string url, originalUrl, requestFile, replyFile, txid, sessionId;
    bool byValue = false;
    uint64_t contentBytes = 0;
    bool hasDigest = false;
  };
  struct Answer {
    NotifyOutcome outcome = NotifyOutcome::Answered;
    int status = 200;
    std::string replyBody;       // by value: the body; by reference: what the app writes to the file
    bool writeReply = false;     // create the reply file (with replyBody)
    bool copy = false;
    std::string staticUrl;
  };
  explicit FakeNotifier(FakeStorage* storage) : storage_(storage) {}
  void post(NotifyOp& op, const NotifyRequest& req) override {
    Post p;
    p.url = std::string(req.url);
    p.originalUrl = std::string(req.originalUrl);
    p.requestFile = req.requestFile;
    p.replyFile = req.replyFile;
    p.txid = std::string(req.transactionId);
    p.sessionId = std::string(req.sessionId);
    p.byValue = req.byValue;
    p.contentBytes = req.contentBytes;
    p.hasDigest = req.sha256 != nullptr;
    posts.push_back(p);
    queue_.push_back({&op, p});
  }
  // hold: POSTs stay unanswered (pending() says 0) until the test clears it, so that another
  // request (or another node) can run while this one waits for the application.
  bool hold = false;
  size_t pending() const { return hold ? 0 : queue_.size(); }
  size_t held() const { return queue_.size(); }
  void runOne() {
    auto [op, p] = queue_.front();
    queue_.pop_front();
    NotifyResult& r = op->result;
    r = NotifyResult{};
    r.outcome = answer.outcome;
    r.status = answer.status;
    r.copyToDestination = answer.copy;
    r.staticUrlLen = answer.staticUrl.size();
    answer.staticUrl.copy(r.staticUrl, sizeof r.staticUrl);
    if (answer.outcome == NotifyOutcome::Answered && answer.writeReply) {
      storage_->addFile(p.replyFile, answer.replyBody);
      r.hasReplyFile = true;
      r.replyBytes = answer.replyBody.size();
    }
    op->callback->onNotifyDone(*op);
  }
  // Drops queued POSTs without answering (the process "died" mid-hand-off).
  void forget() { queue_.clear(); }
  Answer answer;
  std::vector<Post> posts;

 private:
  FakeStorage* storage_;
  std::deque<std::pair<NotifyOp*, Post>> queue_;
};

// etcd, faked: one farm's shared records (docs/FARMS.md "Key layout"), seen by every FakeFarm (node)
// on it. Revisions grow with every put, as etcd's do.
struct FakeFarmStore {
  std::map<std::string, FarmTxRecord> tx;         // by transaction id (nodeLive is filled when read)
  std::map<std::string, std::string> sessions;    // session id text -> owner node
  std::map<std::string, std::string> liveNodes;   // nodes whose liveness key exists -> peer URL
  int64_t revision = 100;
  std::vector<std::string> log;                   // every operation as applied, in order ("claim n1 tx won")
  void setLive(const std::string& node, bool live, const std::string& peerUrl = "") {
    if (live) {
      liveNodes[node] = peerUrl.empty() ? "http://" + node + ":8080" : peerUrl;
    } else {
      liveNodes.erase(node);
    }
  }
  bool isLive(const std::string& node) const { return liveNodes.count(node) != 0; }
  const FarmTxRecord* find(const std::string& txid) const {
    auto it = tx.find(txid);
    return it == tx.end() ? nullptr : &it->second;
  }
};

// One node's view of the farm (the Farm port), over a FakeFarmStore. Operations are applied to the
// store and completed only when the test (or EngineDriver) runs them, never inside the call. A new
// FakeFarm's node is live (its liveness key is put).
class FakeFarm final : public Farm {
 public:
  FakeFarm(FakeFarmStore* store, std::string node, FakeStorage* disk = nullptr);
  bool live() const override { return store_->isLive(node_); }
  std::string_view node() const override { return node_; }
  void recordSession(FarmOp& op, const SessionId& id) override;
  void claim(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session) override;
  void takeOver(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session,
                int64_t expectRevision) override;
  void end(FarmOp& op, std::string_view txid, int64_t ourRevision, const FarmEnded& ended) override;
  void lookupSession(FarmOp& op, const SessionId& id) override;

  size_t pending() const { return queue_.size(); }
  void runOne();
  void runAll() {
    while (!queue_.empty()) runOne();
  }
  // The lease: not live, this node neither claims nor posts, and the others may take over.
  void setLive(bool live) { store_->setLive(node_, live); }
  void setDisk(FakeStorage* disk) { disk_ = disk; }

  // Faults. down: every operation answers Unavailable, unapplied. unavailableNext: the next N
  // operations do. ambiguousNext: the next N operations are applied, then answered Unavailable (a
  // timeout after etcd committed it).
  bool down = false;
  int unavailableNext = 0;
  int ambiguousNext = 0;
  // Every call as made, in order ("claim tx-1", "takeOver tx-1 @105", "end tx-1 @105",
  // "recordSession {...}", "lookupSession {...}").
  std::vector<std::string> calls;
  size_t count(const std::string& prefix) const;
  // Called with "<call>" when an operation is issued and "done <call>" when it completes.
  std::function<void(const std::string&)> observer;

 private:
  void enqueue(FarmOp& op, std::string call, std::function<void(FarmOp&)> apply);
  void readRecord(const std::string& txid, FarmOp& op) const;
  void writeBegan(const std::string& txid, const std::string& token, const SessionId& session, FarmOp& o);

  FakeFarmStore* store_;
  std::string node_;
  FakeStorage* disk_;  // where end() reads the reply file for the inline copy
  struct Pending {
    FarmOp* op;
    std::string call;
    std::function<void(FarmOp&)> apply;
  };
  std::deque<Pending> queue_;
};

}  // namespace bitsd::testing
