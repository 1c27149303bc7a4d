// An asynchronous client for etcd's v3 HTTP/JSON gateway (etcd 3.4: POST /v3/kv/txn, /v3/kv/range,
// /v3/lease/grant, /v3/lease/keepalive, ...), on the server's libuv loop, for the farm
// (platform/uv_farm.h). Requests go out on core's wire layer (HeadWriter) over a platform Stream
// (plain TCP, or TLS verified against a CA file, with an optional client certificate); answers are
// read by core's ResponseParser and parsed as JSON by cJSON (Debian's libcjson; only platform/ uses
// it).
//
// Several endpoints: a call goes to the current one and fails over to the next on a connect error,
// a reset, a timeout, an HTTP 5xx, or an etcd error that another member may not repeat ("etcdserver:
// no leader", "request timed out", ...); once every endpoint failed in a row it waits a little
// before the next round. Each call has one deadline over all its attempts (3 s by default); an
// attempt gets at most the deadline's share for one endpoint, so one member that hangs leaves time
// for the others. Connections are kept alive and reused (a few idle ones per endpoint).
//
// A call's completion always runs later on the loop, never inside call(), exactly once.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct cJSON;

namespace bitsd::platform {

class TlsContext;

struct EtcdClientConfig {
  std::vector<std::string> endpoints;  // http://host[:port] or https://host[:port] (default port 2379)
  std::string caFile;                  // https: the CA the members' certificates are verified against
  std::string certFile, keyFile;       // https: optional client certificate and key
  uint64_t timeoutMs = 3000;           // per call, over all endpoints
};

struct EtcdEndpoint {
  bool tls = false;
  std::string host;  // without brackets for IPv6
  std::string port;
  std::string url;   // as given, without a trailing '/'
};

// Parses one endpoint URL; false with *error saying why.
bool parseEtcdEndpoint(std::string_view url, EtcdEndpoint* out, std::string* error);

struct EtcdReply {
  enum class Kind : uint8_t {
    Ok,           // HTTP 200 and a JSON object without "error": `json`
    Refused,      // etcd's own error that every member would repeat (a 4xx such as "requested lease
                  // not found"): `error` and `code` (its gRPC code)
    Unavailable,  // no member answered in time (`error` says what the last attempt saw)
  };
  Kind kind = Kind::Unavailable;
  const cJSON* json = nullptr;  // Ok: valid during the callback only
  int code = 0;
  std::string error;
};

class EtcdClient {
 public:
  using DoneFn = void (*)(void* user, const EtcdReply& reply);
  struct Call;
  struct Conn;

  // nullptr with *error (a bad URL, an unreadable CA file or client certificate).
  static std::unique_ptr<EtcdClient> create(uv_loop_t* loop, const EtcdClientConfig& config, std::string* error);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // POSTs the JSON `body` to `path` ("/v3/kv/txn"). `timeoutMs` 0: the configured deadline.
  void call(const char* path, std::string body, DoneFn done, void* user, uint64_t timeoutMs = 0);
  // Ends every call (Unavailable, later on the loop) and closes every connection and handle;
  // `closed` runs once all are closed. A call made after close() and before `closed` ends
  // Unavailable; none may be made after `closed` (the client's timer is gone).
  void close(void (*closed)(void* arg), void* arg);

  // "url1,url2": for log lines.
  const std::string& endpointList() const { return list_; }
  uv_loop_t* loop() const { return loop_; }

  // Internal (etcd_client.cc).
  void attemptFailed(Call* c, const std::string& why, bool staleConn);
  void callDone(Call* c, EtcdReply& reply);
  void connGone(Conn* k);
  void connIdle(Conn* k);
  void startCall(Call* c);
  void schedule(Call* c, uint64_t at);
  void onTick();
  const EtcdEndpoint& endpoint(int i) const { return endpoints_[static_cast<size_t>(i)]; }
  const std::shared_ptr<TlsContext>& tls() const { return tls_; }
  bool closing() const { return closing_; }

 private:
  EtcdClient(uv_loop_t* loop) : loop_(loop) {}
  void maybeClosed();

  uv_loop_t* loop_;
  std::vector<EtcdEndpoint> endpoints_;
  std::string list_;
  std::shared_ptr<TlsContext> tls_;
  uint64_t timeoutMs_ = 3000;
  int current_ = 0;  // the endpoint new calls go to
  uv_timer_t tick_;  // starts waiting calls (every start goes through it: never inside call())
  std::vector<Call*> waiting_;
  std::vector<Conn*> conns_;  // every open connection (busy, idle or closing)
  size_t calls_ = 0;          // calls not yet completed
  bool closing_ = false;
  bool tickClosed_ = false;
  void (*closed_)(void*) = nullptr;
  void* closedArg_ = nullptr;
};

}  // namespace bitsd::platform
