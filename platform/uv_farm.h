// The Farm port (core/farm.h) on etcd's v3 gateway (platform/etcd_client.h), on the server's loop.
//
// Keys (prefix P = /bitsd/<farm-name>/; values are JSON, platform/farm_codec.h):
//   P node/<node>      {"peer","started"} on the node's liveness lease (TTL leaseSeconds), kept
//                      alive every TTL/3; revoked by stop()
//   P session/<{GUID}> {"node"} on a retention lease
//   P tx/<txid>        began {"state","node","token","session","at"} or ended {..., "status",
//                      "hresult","flags","replyBytes","replySession","staticUrl","reply"?, "at"}
//                      on a retention lease
// A retention lease has TTL retentionSeconds + 3600 and is reused for the keys written in the next
// hour, so etcd holds a bounded number of leases and every key outlives its retention by at most an
// hour.
//
// live(): the liveness lease was confirmed (granted, or kept alive) by a request SENT less than the
// TTL ago, and the node key was written on it. Start-up with etcd unreachable does not block: the
// grant is retried with backoff, one line is logged, and the node is simply not live meanwhile. A
// lease etcd no longer knows (the node was cut off for longer than the TTL) is replaced by a new one
// and the node key written again.
//
// Every operation is one etcd request: claim / takeOver / end are single txns whose failure branch
// ranges the tx key and the node/ prefix (the record and whether its node is live, in one round
// trip). A claim or takeOver whose answer shows a began record with this node and this token counts
// as won (its own earlier attempt was applied, e.g. on another member after a timeout). end() reads
// the reply file with uv_fs for the inline copy. lookupSession answers from a cache of session owners
// (they never change) and a node list at most 1 s old, else asks etcd. claim, takeOver and
// recordSession need live(); end and lookupSession go to etcd regardless (end is fenced by revision).
// Completions always come later on the loop.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/farm.h"
#include "core/journal_model.h"
#include "platform/etcd_client.h"
#include "platform/farm_codec.h"

namespace bitsd::platform {

// Whether this build has farm mode (cmake -DBITSD_FARM): true in uv_farm.cc, false in uv_farm_off.cc
// (where create() fails with a line saying so).
extern const bool kFarmBuilt;

struct UvFarmConfig {
  std::vector<std::string> endpoints;
  std::string caFile, certFile, keyFile;
  std::string farmName = "default";
  std::string node;     // this node's host-id
  std::string peerUrl;  // where other nodes reach this one
  uint64_t leaseSeconds = 10;
  uint64_t retentionSeconds = 0;  // how long delivered records and session owners must be kept: the longer
                                  // of delivered-retention and session-timeout (the lease adds an hour)
  uint64_t callTimeoutMs = 3000;  // per etcd call, over all endpoints
};

class UvFarm final : public Farm {
 public:
  struct Op;

  // nullptr with *error (endpoints, TLS files). start() begins the lease.
  static std::unique_ptr<UvFarm> create(uv_loop_t* loop, const UvFarmConfig& config, std::string* error);
  ~UvFarm() override;
  UvFarm(const UvFarm&) = delete;
  UvFarm& operator=(const UvFarm&) = delete;

  void start();
  // Shutdown: revokes the liveness lease (others see this node gone at once; `revoke` false leaves
  // it to expire, as a crash would), ends what is in flight as Unavailable, closes every handle,
  // then calls `done`. No operation may be started after it.
  void stop(void (*done)(void* arg), void* arg, bool revoke = true);

  bool live() const override;
  std::string_view node() const override { return cfg_.node; }
  void recordSession(FarmOp& op, const SessionId& id) override;
  void claim(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session) override;
  void takeOver(FarmOp& op, std::string_view txid, std::string_view token, const SessionId& session,
                int64_t expectRevision) override;
  void end(FarmOp& op, std::string_view txid, int64_t ourRevision, const FarmEnded& ended) override;
  void lookupSession(FarmOp& op, const SessionId& id) override;

  int64_t leaseId() const { return leaseId_; }  // tests

  // Internal (uv_farm.cc).
  void onLeaseAnswer(int step, uint64_t sentAt, const EtcdReply& r);
  void onOpAnswer(Op* o, const EtcdReply& r);
  void onRetentionGranted(uint64_t sentAt, const EtcdReply& r);
  void leaseTick();
  void runDeferred();
  void afterReplyRead(Op* o);
  void withRetention(Op* o);
  void sendOp(Op* o);
  void finishStop();

 private:
  UvFarm(uv_loop_t* loop, const UvFarmConfig& cfg) : loop_(loop), cfg_(cfg) {}
  void complete(Op* o);
  void completeSoon(FarmOp& op);
  void scheduleLease(uint64_t ms);
  void noteNodes(const std::vector<FarmKv>& kvs, uint64_t at);
  Op* newOp(FarmOp& op, int kind);
  std::string key(std::string_view kind, std::string_view rest) const;

  uv_loop_t* loop_;
  UvFarmConfig cfg_;
  std::string prefix_;
  std::unique_ptr<EtcdClient> etcd_;
  uv_timer_t leaseTimer_;
  uv_timer_t defer_;
  std::vector<FarmOp*> deferred_;
  // Liveness lease.
  int64_t leaseId_ = 0;
  bool nodeKeyPut_ = false;
  bool leaseBusy_ = false;
  uint64_t confirmedAt_ = 0;  // uv_now when the confirming request was sent
  uint64_t backoffMs_ = 0;
  bool troubled_ = false;     // etcd unreachable: logged once, until it answers again
  bool everLive_ = false;
  uint64_t startedUnix_ = 0;
  // Retention lease.
  int64_t retentionId_ = 0;
  uint64_t retentionAt_ = 0;
  bool retentionBusy_ = false;
  std::vector<Op*> retentionWaiters_;
  // lookupSession's caches.
  std::unordered_map<SessionId, std::string, SessionIdHash> owners_;
  std::unordered_map<std::string, std::string> nodes_;  // live nodes and their peer URLs
  uint64_t nodesAt_ = 0;
  bool haveNodes_ = false;
  // Shutdown.
  bool started_ = false;
  bool stopping_ = false;
  int opsInFlight_ = 0;
  int handlesOpen_ = 0;
  bool handlesClosing_ = false;
  bool etcdClosed_ = false;
  void (*stopDone_)(void*) = nullptr;
  void* stopArg_ = nullptr;
};

}  // namespace bitsd::platform
