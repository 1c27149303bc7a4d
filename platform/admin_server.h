// The admin listener (--admin-listen, issue 19): /metrics (Prometheus text), /status.json (live
// sessions and totals) and / (the status page), on a second TCP listener of the same loop.
//
// Plain HTTP/1.1, GET and HEAD only (405 for other methods, 404 for other paths), one request per
// connection (answers end with Connection: close, bodies are delimited by the close). It is built
// to stay out of the upload path's way: kConnections connections at most (more wait in the
// kernel's backlog), each with a fixed read buffer, a RequestParser and an output buffer allocated
// at start-up; /status.json is written in chunks of that buffer, each chunk formatted in one loop
// turn after the previous one was sent, so 4096 sessions never hold the loop for long and never
// need a buffer sized for all of them. Idle or slow admin clients are closed after kTimeoutMs.
//
// With users-file set, every request needs Basic credentials of a user of that file (of one of
// admin-users, when set), checked by the same Authenticator (and throttle) as uploads; 401 else.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/admin.h"
#include "core/auth.h"
#include "core/journal.h"
#include "core/settings.h"
#include "core/upload_engine.h"

namespace bitsd::platform {

class UvServer;
class UvStorage;

class AdminServer {
 public:
  static constexpr uint32_t kConnections = 8;
  static constexpr uint32_t kReadBytes = 2048;
  static constexpr uint32_t kTimeoutMs = 10000;

  struct Sources {
    UploadEngine* engine = nullptr;
    UvServer* server = nullptr;
    Journal* journal = nullptr;
    UvStorage* storage = nullptr;
    Authenticator* auth = nullptr;  // null: no credentials asked
  };

  AdminServer(uv_loop_t* loop, const Settings& settings, Sources sources);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds adminListenAddress(settings); `url` gets "http://ADDR:PORT" with the real port.
  Outcome start(std::string* url);
  // Closes the listener and every connection (so uv_run can return). Idempotent.
  void shutdown();

  struct Conn;

 private:
  static void onConnectionThunk(uv_stream_t* s, int status);
  static void onAllocThunk(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onReadThunk(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onWriteThunk(uv_write_t* w, int status);
  static void onCloseThunk(uv_handle_t* h);
  static void onTimerThunk(uv_timer_t* t);

  void acceptOne();
  void onRead(Conn* c, ssize_t nread);
  void onHead(Conn* c);
  void route(Conn* c);
  void respondSimple(Conn* c, int status, const char* extraName, const char* extraValue, const char* body);
  void startStatus(Conn* c, bool head);
  void nextStatusChunk(Conn* c);
  void send(Conn* c, const char* a, size_t alen, const char* b, size_t blen);
  void onWrite(Conn* c, int status);
  void closeConn(Conn* c);
  void onAuthDoneFor(Conn* c, AuthOp& op);
  void fillMetrics(MetricsSnapshot* m, uint64_t* requestsTotal);
  bool userAllowed(int32_t user) const;
  friend struct Conn;

  uv_loop_t* loop_;
  Settings settings_;
  Sources src_;
  std::vector<std::string> adminUsers_;
  uv_tcp_t listener_;
  uv_timer_t timer_;
  bool listening_ = false;
  bool pendingAccept_ = false;
  bool shut_ = false;
  uint64_t startMs_ = 0;
  size_t outBytes_ = 0;
  Conn* conns_ = nullptr;  // kConnections, built at start()
};

}  // namespace bitsd::platform
