// Owns the farm's records in etcd: the node's lease, claims, ends, session owners (platform/uv_farm.h).
#include "platform/uv_farm.h"

#include <cjson/cJSON.h>
#include <fcntl.h>

#include <algorithm>
#include <ctime>

#include "core/journal_format.h"
#include "core/log.h"
#include "core/protocol.h"

namespace bitsd::platform {

extern const bool kFarmBuilt = true;

namespace {
constexpr uint64_t kRetentionReuseMs = 3600 * 1000;
constexpr uint64_t kNodeListMaxAgeMs = 1000;
constexpr size_t kMaxCachedOwners = 16384;
enum LeaseStep { kGrant = 0, kPutNode = 1, kKeepAlive = 2, kRevoke = 3 };
enum OpKind { kRecordSession, kClaim, kTakeOver, kEnd, kLookup };

uint64_t unixNow() { return static_cast<uint64_t>(std::time(nullptr)); }

std::string sessionText(const SessionId& id) {
  char t[kSessionIdTextBytes];
  formatSessionId(id, t);
  return std::string(t, kSessionIdTextBytes);
}

// JSON builders for the gateway's requests (keys and values base64, int64s as strings).
cJSON* rangeOf(const std::string& key, const std::string* end = nullptr) {
  cJSON* r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "key", farmB64(key).c_str());
  if (end != nullptr) cJSON_AddStringToObject(r, "range_end", farmB64(*end).c_str());
  cJSON* w = cJSON_CreateObject();
  cJSON_AddItemToObject(w, "request_range", r);
  return w;
}

cJSON* putOf(const std::string& key, const std::string& value, int64_t lease) {
  cJSON* r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "key", farmB64(key).c_str());
  cJSON_AddStringToObject(r, "value", farmB64(value).c_str());
  if (lease != 0) cJSON_AddStringToObject(r, "lease", std::to_string(lease).c_str());
  return r;
}

std::string printed(cJSON* o) { return farmPrinted(o); }

bool leaseNotFound(const EtcdReply& r) {
  return r.kind == EtcdReply::Kind::Refused && r.error.find("lease not found") != std::string::npos;
}

// The i-th response of a txn answer, of kind `what` ("response_range"), or null.
const cJSON* txnResponse(const cJSON* answer, int i, const char* what) {
  const cJSON* rs = cJSON_GetObjectItemCaseSensitive(answer, "responses");
  const cJSON* r = cJSON_IsArray(rs) ? cJSON_GetArrayItem(rs, i) : nullptr;
  return r != nullptr ? cJSON_GetObjectItemCaseSensitive(r, what) : nullptr;
}
}  // namespace

struct UvFarm::Op {
  UvFarm* farm = nullptr;
  FarmOp* op = nullptr;
  int kind = kClaim;
  std::string txid, token;
  SessionId session{};
  int64_t expect = 0;
  // end()
  FarmEnded ended;
  std::string staticUrl, replyPath;
  std::string reply;
  bool replyInline = false;
  uv_fs_t fs;
  uv_file fd = -1;
  // retries
  bool leaseRetried = false;
  uint64_t sentAt = 0;
};

std::unique_ptr<UvFarm> UvFarm::create(uv_loop_t* loop, const UvFarmConfig& config, std::string* error) {
  if (config.node.empty()) {
    *error = "farm: the node needs a name (host-id)";
    return nullptr;
  }
  if (config.leaseSeconds < 2) {
    *error = "farm: the lease must be at least 2 s";
    return nullptr;
  }
  std::unique_ptr<UvFarm> f(new UvFarm(loop, config));
  EtcdClientConfig ec;
  ec.endpoints = config.endpoints;
  ec.caFile = config.caFile;
  ec.certFile = config.certFile;
  ec.keyFile = config.keyFile;
  ec.timeoutMs = config.callTimeoutMs;
  f->etcd_ = EtcdClient::create(loop, ec, error);
  if (!f->etcd_) return nullptr;
  f->prefix_ = "/bitsd/" + config.farmName + "/";
  uv_timer_init(loop, &f->leaseTimer_);
  f->leaseTimer_.data = f.get();
  uv_timer_init(loop, &f->defer_);
  f->defer_.data = f.get();
  f->handlesOpen_ = 2;
  return f;
}

UvFarm::~UvFarm() = default;

std::string UvFarm::key(std::string_view kind, std::string_view rest) const {
  std::string k = prefix_;
  k += kind;
  k += '/';
  k += rest;
  return k;
}

// --- The liveness lease ------------------------------------------------------------------------------

void UvFarm::start() {
  if (started_) return;
  started_ = true;
  startedUnix_ = unixNow();
  scheduleLease(0);
}

bool UvFarm::live() const {
  if (leaseId_ == 0 || !nodeKeyPut_ || stopping_) return false;
  return uv_now(loop_) - confirmedAt_ < cfg_.leaseSeconds * 1000;
}

void UvFarm::scheduleLease(uint64_t ms) {
  if (stopping_) return;
  uv_timer_start(&leaseTimer_, [](uv_timer_t* t) { static_cast<UvFarm*>(t->data)->leaseTick(); }, ms, 0);
}

namespace {
struct LeaseCall {
  UvFarm* farm;
  int step;
  uint64_t sentAt;
};
void onLeaseDone(void* user, const EtcdReply& r) {
  LeaseCall* c = static_cast<LeaseCall*>(user);
  UvFarm* f = c->farm;
  int step = c->step;
  uint64_t sentAt = c->sentAt;
  delete c;
  f->onLeaseAnswer(step, sentAt, r);
}
}  // namespace

void UvFarm::leaseTick() {
  if (stopping_ || leaseBusy_) return;
  uint64_t ttlMs = cfg_.leaseSeconds * 1000;
  uint64_t timeout = std::clamp<uint64_t>(ttlMs / 2, 500, cfg_.callTimeoutMs);
  LeaseCall* c = new LeaseCall{this, kGrant, uv_now(loop_)};
  cJSON* o = cJSON_CreateObject();
  const char* path = "/v3/lease/grant";
  if (leaseId_ == 0) {
    cJSON_AddStringToObject(o, "TTL", std::to_string(cfg_.leaseSeconds).c_str());
  } else if (!nodeKeyPut_) {
    c->step = kPutNode;
    path = "/v3/kv/put";
    cJSON_Delete(o);
    o = putOf(key("node", cfg_.node), farmEncodeNode(cfg_.peerUrl, startedUnix_), leaseId_);
    cJSON_AddBoolToObject(o, "prev_kv", 1);  // an earlier life's key names its lease (below)
  } else {
    c->step = kKeepAlive;
    path = "/v3/lease/keepalive";
    cJSON_AddStringToObject(o, "ID", std::to_string(leaseId_).c_str());
  }
  leaseBusy_ = true;
  etcd_->call(path, printed(o), onLeaseDone, c, timeout);
}

void UvFarm::onLeaseAnswer(int step, uint64_t sentAt, const EtcdReply& r) {
  leaseBusy_ = false;
  if (step == kRevoke) {
    etcd_->close([](void* a) { static_cast<UvFarm*>(a)->finishStop(); }, this);
    return;
  }
  if (stopping_) return;
  uint64_t ttlMs = cfg_.leaseSeconds * 1000;
  if (r.kind == EtcdReply::Kind::Unavailable) {
    if (!troubled_) {
      troubled_ = true;
      if (!everLive_) {
        logf(LogLevel::Warn, "farm: etcd at %s unreachable (%s), retrying; serving Ping meanwhile",
             etcd_->endpointList().c_str(), r.error.c_str());
      } else {
        logf(LogLevel::Warn, "farm: etcd at %s unreachable (%s); node %s stays live until its lease of %llu s lapses",
             etcd_->endpointList().c_str(), r.error.c_str(), cfg_.node.c_str(),
             static_cast<unsigned long long>(cfg_.leaseSeconds));
      }
    }
    backoffMs_ = backoffMs_ == 0 ? 250 : std::min<uint64_t>(backoffMs_ * 2, std::max<uint64_t>(ttlMs / 3, 500));
    return scheduleLease(step == kKeepAlive ? std::min<uint64_t>(backoffMs_, ttlMs / 6) : backoffMs_);
  }
  backoffMs_ = 0;
  if (r.kind == EtcdReply::Kind::Refused) {
    // A lease etcd does not know: start over with a new one.
    logf(LogLevel::Warn, "farm: etcd refused the node's lease (%s); taking a new one", r.error.c_str());
    leaseId_ = 0;
    nodeKeyPut_ = false;
    return scheduleLease(step == kGrant ? 1000 : 0);
  }
  if (troubled_ && everLive_) logf(LogLevel::Info, "farm: etcd at %s answers again", etcd_->endpointList().c_str());
  troubled_ = false;
  switch (step) {
    case kGrant: {
      int64_t id = farmJsonInt(r.json, "ID");
      int64_t ttl = farmJsonInt(r.json, "TTL");
      if (id == 0 || ttl <= 0) {
        logf(LogLevel::Warn, "farm: etcd granted no lease; retrying");
        return scheduleLease(1000);
      }
      leaseId_ = id;
      confirmedAt_ = sentAt;
      nodeKeyPut_ = false;
      return scheduleLease(0);
    }
    case kPutNode: {
      nodeKeyPut_ = true;
      // The key was there on another lease: an earlier life of this node (killed, or restarted
      // within its TTL). That lease is revoked now, so "the node that was delivering has lost its
      // lease" is true before this life takes over its unfinished hand-offs (docs/FARMS.md), and
      // the earlier life's keys go at once. The answer does not matter: a lease that is already
      // gone is what we want.
      const cJSON* prev = cJSON_GetObjectItemCaseSensitive(r.json, "prev_kv");
      int64_t old = prev != nullptr ? farmJsonInt(prev, "lease") : 0;
      if (old != 0 && old != leaseId_) {
        logf(LogLevel::Info, "farm: revoking lease %llx of an earlier life of node %s",
             static_cast<unsigned long long>(old), cfg_.node.c_str());
        cJSON* b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "ID", std::to_string(old).c_str());
        etcd_->call("/v3/lease/revoke", printed(b), [](void*, const EtcdReply&) {}, nullptr, 1000);
      }
      logf(LogLevel::Info, "farm: node %s live in farm %s through etcd at %s (lease %llx, %llu s)", cfg_.node.c_str(),
           cfg_.farmName.c_str(), etcd_->endpointList().c_str(), static_cast<unsigned long long>(leaseId_),
           static_cast<unsigned long long>(cfg_.leaseSeconds));
      everLive_ = true;
      return scheduleLease(ttlMs / 3);
    }
    case kKeepAlive: {
      const cJSON* res = cJSON_GetObjectItemCaseSensitive(r.json, "result");
      if (res == nullptr) res = r.json;
      if (farmJsonInt(res, "TTL") <= 0) {
        logf(LogLevel::Warn, "farm: etcd lost node %s's lease (cut off for longer than %llu s); taking a new one",
             cfg_.node.c_str(), static_cast<unsigned long long>(cfg_.leaseSeconds));
        leaseId_ = 0;
        nodeKeyPut_ = false;
        return scheduleLease(0);
      }
      confirmedAt_ = sentAt;
      return scheduleLease(ttlMs / 3);
    }
    default: return;
  }
}

// --- Operations --------------------------------------------------------------------------------------

UvFarm::Op* UvFarm::newOp(FarmOp& op, int kind) {
  op.resetResult();
  op.busy = true;
  Op* o = new Op();
  o->farm = this;
  o->op = &op;
  o->kind = kind;
  op.impl = o;
  ++opsInFlight_;
  return o;
}

void UvFarm::completeSoon(FarmOp& op) {
  op.busy = true;
  deferred_.push_back(&op);
  if (!handlesClosing_) {
    uv_timer_start(&defer_, [](uv_timer_t* t) { static_cast<UvFarm*>(t->data)->runDeferred(); }, 0, 0);
  }
}

void UvFarm::runDeferred() {
  std::vector<FarmOp*> ops;
  ops.swap(deferred_);
  for (FarmOp* op : ops) {
    op->busy = false;
    op->impl = nullptr;
    op->callback->onFarmDone(*op);
  }
}

void UvFarm::complete(Op* o) {
  FarmOp* op = o->op;
  --opsInFlight_;
  delete o;
  op->impl = nullptr;
  op->busy = false;
  op->callback->onFarmDone(*op);
  if (stopping_ && opsInFlight_ == 0 && etcdClosed_) finishStop();
}

void UvFarm::recordSession(FarmOp& op, const SessionId& id) {
  if (!live()) {
    op.resetResult();
    return completeSoon(op);
  }
  Op* o = newOp(op, kRecordSession);
  o->session = id;
  withRetention(o);
}

void UvFarm::claim(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session) {
  if (!live()) {
    op.resetResult();
    return completeSoon(op);
  }
  Op* o = newOp(op, kClaim);
  o->txid = txid;
  o->token = token;
  o->session = session;
  withRetention(o);
}

void UvFarm::takeOver(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session,
                      int64_t expectRevision) {
  if (!live()) {
    op.resetResult();
    return completeSoon(op);
  }
  Op* o = newOp(op, kTakeOver);
  o->txid = txid;
  o->token = token;
  o->session = session;
  o->expect = expectRevision;
  withRetention(o);
}

namespace {
void onReplyRead(uv_fs_t* req);
void onReplyClosed(uv_fs_t* req) {
  UvFarm::Op* o = static_cast<UvFarm::Op*>(req->data);
  uv_fs_req_cleanup(req);
  o->fd = -1;
  o->farm->afterReplyRead(o);
}
void closeReply(UvFarm::Op* o, uv_loop_t* loop) {
  if (o->fd < 0 || uv_fs_close(loop, &o->fs, o->fd, onReplyClosed) < 0) {
    o->fd = -1;
    o->farm->afterReplyRead(o);
  }
}
void onReplyOpen(uv_fs_t* req) {
  UvFarm::Op* o = static_cast<UvFarm::Op*>(req->data);
  ssize_t fd = req->result;
  uv_loop_t* loop = req->loop;
  uv_fs_req_cleanup(req);
  if (fd < 0) {
    logf(LogLevel::Warn, "farm: cannot open the reply %s for the shared record (%s); it stays on this node",
         o->replyPath.c_str(), uv_strerror(static_cast<int>(fd)));
    return o->farm->afterReplyRead(o);
  }
  o->fd = static_cast<uv_file>(fd);
  // One byte more than expected: a file that grew is not copied.
  o->reply.assign(static_cast<size_t>(o->ended.replyBytes) + 1, '\0');
  uv_buf_t b = uv_buf_init(o->reply.data(), static_cast<unsigned>(o->reply.size()));
  o->fs.data = o;
  if (uv_fs_read(loop, &o->fs, o->fd, &b, 1, 0, onReplyRead) < 0) closeReply(o, loop);
}
void onReplyRead(uv_fs_t* req) {
  UvFarm::Op* o = static_cast<UvFarm::Op*>(req->data);
  ssize_t n = req->result;
  uv_loop_t* loop = req->loop;
  uv_fs_req_cleanup(req);
  // One read: a regular file of at most 64 KiB comes whole (a short read just means no inline copy).
  if (n >= 0 && static_cast<uint64_t>(n) == o->ended.replyBytes) {
    o->reply.resize(static_cast<size_t>(n));
    o->replyInline = true;
  } else {
    logf(LogLevel::Warn, "farm: the reply %s is not the %llu bytes recorded; it stays on this node", o->replyPath.c_str(),
         static_cast<unsigned long long>(o->ended.replyBytes));
  }
  o->fs.data = o;
  closeReply(o, loop);
}
}  // namespace

void UvFarm::end(FarmOp& op, std::string_view txid, int64_t ourRevision, const FarmEnded& ended) {
  if (stopping_ || etcd_ == nullptr) {
    op.resetResult();
    return completeSoon(op);
  }
  Op* o = newOp(op, kEnd);
  o->txid = txid;
  o->expect = ourRevision;
  o->ended = ended;
  o->staticUrl = ended.staticUrl;
  o->ended.staticUrl = o->staticUrl;
  o->ended.replyFile = nullptr;
  if ((ended.flags & kDeliveryHasReplyFile) != 0 && ended.replyBytes <= kFarmInlineReplyBytes &&
      ended.replyFile != nullptr) {
    o->replyPath = ended.replyFile;
    o->fs.data = o;
    if (uv_fs_open(loop_, &o->fs, o->replyPath.c_str(), O_RDONLY | O_CLOEXEC, 0, onReplyOpen) == 0) return;
  }
  withRetention(o);
}

void UvFarm::afterReplyRead(Op* o) {
  if (!o->replyInline) o->reply.clear();
  withRetention(o);
}

void UvFarm::lookupSession(FarmOp& op, const SessionId& id) {
  uint64_t now = uv_now(loop_);
  auto it = owners_.find(id);
  if (it != owners_.end() && haveNodes_ && now - nodesAt_ <= kNodeListMaxAgeMs && !stopping_) {
    op.resetResult();
    FarmSessionOwner& w = op.owner;
    w.found = true;
    w.node = it->second;
    w.self = w.node == cfg_.node;
    auto n = nodes_.find(w.node);
    w.live = w.self ? live() : n != nodes_.end();
    if (n != nodes_.end()) w.peerUrl = n->second;
    op.outcome = FarmOutcome::Done;
    return completeSoon(op);
  }
  if (stopping_) {
    op.resetResult();
    return completeSoon(op);
  }
  Op* o = newOp(op, kLookup);
  o->session = id;
  sendOp(o);
}

// --- The retention lease ---------------------------------------------------------------------------

namespace {
struct RetentionCall {
  UvFarm* farm;
  uint64_t sentAt;
};
void onOpDone(void* user, const EtcdReply& r) {
  UvFarm::Op* o = static_cast<UvFarm::Op*>(user);
  o->farm->onOpAnswer(o, r);
}
}  // namespace

void UvFarm::withRetention(Op* o) {
  if (stopping_) return complete(o);  // Unavailable
  if (o->kind == kLookup) return sendOp(o);
  uint64_t now = uv_now(loop_);
  if (retentionId_ != 0 && now - retentionAt_ < kRetentionReuseMs) return sendOp(o);
  retentionWaiters_.push_back(o);
  if (retentionBusy_) return;
  retentionBusy_ = true;
  cJSON* b = cJSON_CreateObject();
  cJSON_AddStringToObject(b, "TTL", std::to_string(cfg_.retentionSeconds + 3600).c_str());
  RetentionCall* c = new RetentionCall{this, now};
  etcd_->call("/v3/lease/grant", printed(b), [](void* user, const EtcdReply& r) {
    RetentionCall* rc = static_cast<RetentionCall*>(user);
    UvFarm* f = rc->farm;
    uint64_t at = rc->sentAt;
    delete rc;
    f->onRetentionGranted(at, r);
  }, c);
}

void UvFarm::onRetentionGranted(uint64_t sentAt, const EtcdReply& r) {
  retentionBusy_ = false;
  std::vector<Op*> waiters;
  waiters.swap(retentionWaiters_);
  int64_t id = r.kind == EtcdReply::Kind::Ok ? farmJsonInt(r.json, "ID") : 0;
  if (id != 0) {
    retentionId_ = id;
    retentionAt_ = sentAt;
  }
  for (Op* o : waiters) {
    if (id == 0 || stopping_) {
      complete(o);  // Unavailable
    } else {
      sendOp(o);
    }
  }
}

// --- Requests and answers ------------------------------------------------------------------------------

void UvFarm::sendOp(Op* o) {
  o->sentAt = uv_now(loop_);
  std::string nodeStart = prefix_ + "node/", nodeEnd = prefix_ + "node0";  // '0' follows '/'
  cJSON* b = nullptr;
  const char* path = "/v3/kv/txn";
  switch (o->kind) {
    case kRecordSession:
      path = "/v3/kv/put";
      b = putOf(key("session", sessionText(o->session)), farmEncodeSession(cfg_.node), retentionId_);
      break;
    case kClaim:
    case kTakeOver:
    case kEnd: {
      std::string k = key("tx", o->txid);
      b = cJSON_CreateObject();
      cJSON* cmp = cJSON_CreateObject();
      if (o->kind == kClaim) {
        cJSON_AddStringToObject(cmp, "target", "CREATE");
        cJSON_AddStringToObject(cmp, "key", farmB64(k).c_str());
        cJSON_AddStringToObject(cmp, "create_revision", "0");
      } else {
        cJSON_AddStringToObject(cmp, "target", "MOD");
        cJSON_AddStringToObject(cmp, "key", farmB64(k).c_str());
        cJSON_AddStringToObject(cmp, "mod_revision", std::to_string(o->expect).c_str());
      }
      cJSON* cmps = cJSON_CreateArray();
      cJSON_AddItemToArray(cmps, cmp);
      cJSON_AddItemToObject(b, "compare", cmps);
      std::string value = o->kind == kEnd
                              ? farmEncodeEnded(cfg_.node, o->ended, o->replyInline ? &o->reply : nullptr, unixNow())
                              : farmEncodeBegan(cfg_.node, o->token, o->session, unixNow());
      cJSON* put = cJSON_CreateObject();
      cJSON_AddItemToObject(put, "request_put", putOf(k, value, retentionId_));
      cJSON* success = cJSON_CreateArray();
      cJSON_AddItemToArray(success, put);
      cJSON_AddItemToObject(b, "success", success);
      cJSON* failure = cJSON_CreateArray();
      cJSON_AddItemToArray(failure, rangeOf(k));
      cJSON_AddItemToArray(failure, rangeOf(nodeStart, &nodeEnd));
      cJSON_AddItemToObject(b, "failure", failure);
      break;
    }
    case kLookup: {
      // No compare: the success branch runs, both ranges in one revision.
      b = cJSON_CreateObject();
      cJSON* success = cJSON_CreateArray();
      cJSON_AddItemToArray(success, rangeOf(key("session", sessionText(o->session))));
      cJSON_AddItemToArray(success, rangeOf(nodeStart, &nodeEnd));
      cJSON_AddItemToObject(b, "success", success);
      break;
    }
  }
  etcd_->call(path, printed(b), onOpDone, o);
}

void UvFarm::noteNodes(const std::vector<FarmKv>& kvs, uint64_t at) {
  nodes_.clear();
  std::string start = prefix_ + "node/";
  for (const FarmKv& kv : kvs) {
    std::string peer;
    if (kv.key.size() <= start.size() || !farmDecodeNode(kv.value, &peer)) continue;
    nodes_[kv.key.substr(start.size())] = peer;
  }
  nodesAt_ = at;
  haveNodes_ = true;
}

void UvFarm::onOpAnswer(Op* o, const EtcdReply& r) {
  FarmOp& op = *o->op;
  if (leaseNotFound(r) && o->kind != kLookup && !o->leaseRetried && !stopping_) {
    // The retention lease is gone (revoked by hand, or etcd restored from an old snapshot): a new one.
    o->leaseRetried = true;
    if (retentionId_ != 0) retentionId_ = 0;
    return withRetention(o);
  }
  if (r.kind != EtcdReply::Kind::Ok) {
    if (r.kind == EtcdReply::Kind::Refused) {
      logf(LogLevel::Warn, "farm: etcd refused a request: %s", r.error.c_str());
    }
    return complete(o);  // Unavailable
  }
  const char* bad = nullptr;
  switch (o->kind) {
    case kRecordSession:
      op.outcome = FarmOutcome::Done;
      owners_[o->session] = cfg_.node;
      break;
    case kClaim:
    case kTakeOver:
    case kEnd: {
      if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "succeeded"))) {
        op.outcome = FarmOutcome::Done;
        op.won = true;
        op.revision = farmJsonInt(cJSON_GetObjectItemCaseSensitive(r.json, "header"), "revision");
        if (op.revision == 0) bad = "a txn answer without a revision";
        break;
      }
      std::vector<FarmKv> tx, nodes;
      if (!farmDecodeKvs(txnResponse(r.json, 0, "response_range"), &tx) ||
          !farmDecodeKvs(txnResponse(r.json, 1, "response_range"), &nodes)) {
        bad = "a txn answer that is not key-values";
        break;
      }
      noteNodes(nodes, o->sentAt);
      op.outcome = FarmOutcome::Done;
      if (tx.empty()) break;  // no record (a takeover or end of a key that expired)
      if (!farmDecodeTx(tx[0].value, &op.record)) {
        bad = "a transaction record that is not the farm's JSON";
        break;
      }
      op.record.modRevision = tx[0].modRevision;
      op.record.nodeLive = op.record.node == cfg_.node ? live() : nodes_.count(op.record.node) != 0;
      if (o->kind != kEnd && op.record.state == FarmTxRecord::State::Began && op.record.node == cfg_.node &&
          op.record.token == o->token) {
        op.won = true;  // our own attempt, applied before an answer was lost
        op.revision = op.record.modRevision;
      }
      break;
    }
    case kLookup: {
      std::vector<FarmKv> s, nodes;
      if (!farmDecodeKvs(txnResponse(r.json, 0, "response_range"), &s) ||
          !farmDecodeKvs(txnResponse(r.json, 1, "response_range"), &nodes)) {
        bad = "a lookup answer that is not key-values";
        break;
      }
      noteNodes(nodes, o->sentAt);
      op.outcome = FarmOutcome::Done;
      if (s.empty()) break;
      std::string owner;
      if (!farmDecodeSession(s[0].value, &owner)) {
        bad = "a session record that is not the farm's JSON";
        break;
      }
      if (owners_.size() >= kMaxCachedOwners) owners_.clear();
      owners_[o->session] = owner;
      FarmSessionOwner& w = op.owner;
      w.found = true;
      w.node = owner;
      w.self = owner == cfg_.node;
      auto n = nodes_.find(owner);
      w.live = w.self ? live() : n != nodes_.end();
      if (n != nodes_.end()) w.peerUrl = n->second;
      break;
    }
  }
  if (bad != nullptr) {
    logf(LogLevel::Error, "farm: etcd returned %s; answering as unavailable", bad);
    op.resetResult();
  }
  complete(o);
}

// --- Shutdown ------------------------------------------------------------------------------------------

void UvFarm::stop(void (*done)(void*), void* arg, bool revoke) {
  if (stopping_) return;
  stopping_ = true;
  stopDone_ = done;
  stopArg_ = arg;
  uv_timer_stop(&leaseTimer_);
  if (revoke && leaseId_ != 0) {
    cJSON* b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "ID", std::to_string(leaseId_).c_str());
    leaseId_ = 0;
    LeaseCall* c = new LeaseCall{this, kRevoke, uv_now(loop_)};
    etcd_->call("/v3/lease/revoke", printed(b), onLeaseDone, c, 1000);
    return;
  }
  leaseId_ = 0;
  etcd_->close([](void* a) { static_cast<UvFarm*>(a)->finishStop(); }, this);
}

void UvFarm::finishStop() {
  etcdClosed_ = true;
  if (!deferred_.empty()) runDeferred();
  if (opsInFlight_ > 0 || handlesClosing_) return;  // the last completion comes back here
  handlesClosing_ = true;
  auto closed = [](uv_handle_t* h) {
    UvFarm* f = static_cast<UvFarm*>(h->data);
    if (--f->handlesOpen_ == 0 && f->stopDone_ != nullptr) f->stopDone_(f->stopArg_);
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&leaseTimer_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&defer_), closed);
}

}  // namespace bitsd::platform
