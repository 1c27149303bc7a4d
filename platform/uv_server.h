// The network side of bitsd: one libuv loop, a TCP listener, and a fixed pool of connections, each an
// explicit state machine (STYLE.md §6) that feeds the RequestParser and the UploadEngine.
//
// Memory is bounded and allocated at start-up (STYLE.md §5): connection slots, request slots (parser +
// exchange, held only while a request is being read or answered) and read buffers (held only while
// their bytes are parsed or written to disk) come from pools sized by the board. An idle keep-alive
// connection holds no request slot and no read buffer. While body bytes are being written to the file
// straight from a read buffer, that connection stops reading: memory per connection does not depend on
// the fragment size. An empty pool is an expected event: the connection waits for a free slot or
// buffer (reading stopped). At max-connections a newcomer takes the place of an idle or slow
// connection, if there is one past header-budget-ms; otherwise it gets 503 and is closed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"
#include "core/access_log.h"
#include "core/settings.h"
#include "core/upload_engine.h"
#include "platform/stream.h"
#include "platform/system.h"
#include "platform/uv_notifier.h"

namespace bitsd::platform {

struct Connection;
struct RequestSlot;
struct ForwardLink;
class TlsContext;
class AccessLogWriter;

struct ServerStats {
  uint64_t accepted = 0;
  uint64_t rejected = 0;     // 503 beyond max-connections
  uint64_t timeouts = 0;
  uint64_t protocolErrors = 0;
  uint64_t tlsHandshakes = 0;
  uint64_t tlsFailures = 0;   // handshakes that failed or timed out
  uint64_t readAheadBytes = 0;  // body bytes read while the write before them ran (readAhead)
  uint64_t forwarded = 0;     // farm mode: requests streamed to their session's owner node
  uint64_t forwardFailures = 0;  // ... of which the owner could not be reached (503) or broke off
  uint32_t active = 0;
};

// Binds a TCP socket to `listen` ("ADDR:PORT", "[V6]:PORT") without listening yet: bitsd binds
// before it creates any directory, so a bad or busy address leaves nothing behind. The descriptor,
// or -1 with a one-line reason.
Outcome bindListenSocket(const std::string& listen, int* fd);

class UvServer {
 public:
  UvServer(uv_loop_t* loop, const Settings& settings, UploadEngine& engine);
  ~UvServer();
  UvServer(const UvServer&) = delete;
  UvServer& operator=(const UvServer&) = delete;

  // Allocates the pools, binds and listens. On success `url` is "http://ADDR:PORT" (https with
  // tls-cert) with the real port. A bad certificate or key is a one-line error.
  Outcome start(std::string* url);
  // A socket from bindListenSocket for start() to listen on (instead of binding itself).
  void setListenSocket(int fd) { listenFd_ = fd; }

  // SIGHUP, between loop callbacks: takes the settings that change live (isLiveSetting: timeouts,
  // the header budget, the sweep period...) from `next`, and `tls` (when not null, and serving
  // https) as the certificate for new connections. Pools keep their start-up sizes.
  void applyLive(const Settings& next, std::shared_ptr<TlsContext> tls);
  bool https() const { return tls_ != nullptr; }

  // SIGHUP: loads tls-cert and tls-key again. New connections get the new certificate; live ones go
  // on with the one they were accepted with. On failure the old one stays and *error says why.
  bool reloadTls(std::string* error);

  // Stops accepting, lets in-flight requests finish (up to shutdown-grace-ms, then aborts them),
  // and closes every handle it owns so uv_run returns. Idempotent.
  void shutdown();

  const ServerStats& stats() const { return stats_; }
  // Pool use, for /metrics.
  uint32_t slotsInUse() const { return settings_.requestSlots - freeSlotCount_; }
  uint32_t buffersInUse() const { return settings_.readBuffers - freeBufferCount_; }
  // Request slots not held by any connection (request-slots when idle); for tests.
  uint32_t freeRequestSlots() const { return freeSlotCount_; }

  // The journal to drain at shutdown, and its scheduler to close once it is idle.
  void setJournal(Journal* journal, UvFlushScheduler* scheduler) {
    journal_ = journal;
    scheduler_ = scheduler;
  }
  // The application client: aborted when the shutdown grace period ends, closed with the loop.
  void setNotifier(UvNotifier* notifier) { notifier_ = notifier; }
  // Farm mode: the client configuration for https peers (verifying their certificates with the
  // farm's CA file). Null: an https peer is treated as unreachable (503).
  void setFarmPeerTls(std::shared_ptr<TlsContext> tls) { peerTls_ = std::move(tls); }
  // The name this node sends in BITS-Farm-Forwarded (default: the engine's farm's node()).
  void setNodeName(std::string name) { nodeName_ = std::move(name); }
  // The access log (null: off). Refusals go to the error log either way.
  void setAccessLog(AccessLogWriter* log, AccessLogFormat format) {
    accessLog_ = log;
    accessFormat_ = format;
  }

 private:
  friend struct Connection;

  static void onConnectionThunk(uv_stream_t* server, int status);
  static void onAllocThunk(Stream* s, uv_buf_t* buf);
  static void onReadThunk(Stream* s, ssize_t nread, const uv_buf_t* buf);
  static void onWriteThunk(Stream* s, int status, uint64_t tag);
  // The stream's handshake and background failures (TLS): counted, logged, closed.
  static void onStreamEventThunk(Stream* s, Stream::Event event, const char* why);
  static void onTimerThunk(uv_timer_t* t);
  static void onStreamClosedThunk(Stream* s);
  static void onSweepThunk(uv_timer_t* t);
  static void onGraceThunk(uv_timer_t* t);

  void acceptPending();
  void pump(Connection* c);
  void afterHeaders(Connection* c);
  void holdForPasswordCheck(Connection* c);
  void sendResponse(Connection* c);
  void onWrite(Connection* c, int status);
  void nextRequest(Connection* c, bool close, uint32_t holdOff);
  // Farm mode (uv_forward.cc): a request whose session another node owns (Exchange::forwardTo())
  // streams there through a ForwardLink, and the owner's answer streams back unchanged.
  void startForward(Connection* c);
  void forwardPump(Connection* c);                    // client body bytes -> the peer
  void forwardClientWritten(Connection* c, int status);  // answer bytes reached the client
  void forwardTimeout(Connection* c);
  void forwardFail(Connection* c, const char* why);   // 503 before any answer byte, else close
  void forwardMaybeDone(Connection* c);
  void endForward(Connection* c);                     // detaches and closes the link, if any
  void peerConnected(ForwardLink* l, int status);
  void peerReady(ForwardLink* l);
  void peerWritten(ForwardLink* l, int status);
  void peerRead(ForwardLink* l, ssize_t nread);
  void readPeer(ForwardLink* l);
  void linkClosed(ForwardLink* l);
  ForwardLink* takeLink();
  void freeLinks();
  void giveBackBuffer(char* b);
  // Reply downloads: the file body after the response head, 64 KiB at a time.
  void onFileChunk(Connection* c);
  void startFile(Connection* c);
  void readFileChunk(Connection* c);
  void endFile(Connection* c);
  void onTimer(Connection* c);
  void closeConnection(Connection* c);
  void finishClose(Connection* c);
  void onHandleClosed(Connection* c);
  void onExchangeReady(Connection* c);
  void startReading(Connection* c);
  void stopReading(Connection* c);
  // Connection timeouts: one timer for all (an idle connection carries no uv_timer_t, issue 18).
  // Each armed connection has a deadline in a min-heap (timerHeap_); connTimer_ fires for the
  // earliest, and onTimer runs for every connection due. arm() replaces a pending deadline.
  void arm(Connection* c, uint32_t ms);
  void disarm(Connection* c);
  void scheduleTimer();
  void onConnTimer();
  void heapSwap(uint32_t a, uint32_t b);
  void heapFix(uint32_t pos);
  bool acquireSlot(Connection* c);
  // A slot for a request head that is about to be read. `complete`: its whole head is waiting
  // (headComplete); only such heads may take the last slotReserve_ slots. With no slot to take,
  // a slow head past its budget gives up its own (evictSlowHead); failing that, false.
  bool acquireSlotForRead(Connection* c, bool complete);
  bool acquireSlotForRead(Connection* c);  // plain reads: peeks at the socket when it matters
  void releaseSlot(Connection* c);
  // Head timing: the budget clock starts when a request's slot is taken (its first byte is read).
  void startHead(Connection* c);
  void armHead(Connection* c);
  bool slowHead(const Connection* c, uint64_t now) const;
  bool headComplete(Connection* c);  // whole head waiting to be read (socket, or mbedTLS's next record)
  Connection* oldestSlowHead();
  void evictSlowHead(Connection* v);  // 408 and close; its slot goes back to the free list
  void send408(Connection* c);
  // Connection cap: at max-connections, makes a place for a newcomer by closing the oldest idle
  // keep-alive connection past header-budget-ms, else (only for a newcomer whose first bytes are all
  // there, `ready`) the oldest slow head or handshake. False if there is none.
  bool makeRoom(bool ready);
  // A whole head (plain) or TLS record waiting; *nothingYet if no byte has come yet.
  bool newcomerReady(Connection* c, bool* nothingYet);
  void admit(Connection* c);   // counts it against max-connections and starts reading
  void refuse(Connection* c);  // 503 (plain) and close, from a reserve slot
  // At the cap: decides on a newcomer that had sent nothing when accepted, once it has (or not).
  void decideAdmission(Connection* c);
  static void onAdmitReadThunk(Stream* s, ssize_t nread, const uv_buf_t* buf);
  // Lingering close (as nginx's lingering_close): after an answer that closes, shut our side (FIN),
  // free the slot and buffer, and discard what the client still sends for a while before closing,
  // so that a RST cannot destroy the answer. Falls back to closeConnection.
  void lingerClose(Connection* c);
  static void onLingerAllocThunk(Stream* s, uv_buf_t* buf);
  static void onLingerReadThunk(Stream* s, ssize_t nread, const uv_buf_t* buf);
  void send408(Connection* c, const char* reason);
  // The request on `c` is over (answered with `status`, or 0: the connection closed first): one
  // access log line, and the error log's line if it was refused. Once per request.
  void logRequest(Connection* c, int status, const char* reason);
  // Gives a free slot to the first connection waiting for one: complete heads first, then the
  // others, but those only beyond the reserve unless `swap` (the slot comes from an evicted head).
  void handSlot(bool swap);
  char* takeBuffer();
  void releaseBuffer(Connection* c);
  // Read-ahead while a body write runs (RequestSlot::ahead): readAhead takes the second buffer
  // and keeps reading into it; takeAhead makes it the rbuf; releaseAhead gives it back unused.
  bool readAhead(Connection* c);
  bool takeAhead(Connection* c);
  void releaseAhead(Connection* c);
  void onReadAhead(Connection* c, ssize_t nread);
  void enqueueWaiter(Connection* c, int kind);
  void removeWaiter(Connection* c);
  void wakeWaiter(int kind);
  void maybeFinishShutdown();
  static uint64_t sweepPeriod(const Settings& s);
  uv_loop_t* loop_;
  Settings settings_;
  UploadEngine& engine_;
  uv_tcp_t listener_;
  uv_timer_t sweepTimer_;
  uv_timer_t graceTimer_;
  uv_timer_t connTimer_;
  Connection** timerHeap_ = nullptr;  // connCapacity_ long; the armed connections, earliest first
  uint32_t timerCount_ = 0;
  uint64_t timerDue_ = UINT64_MAX;  // when connTimer_ fires (UINT64_MAX: stopped)
  bool inTimers_ = false;           // in onConnTimer: it reschedules once done
  int listenFd_ = -1;
  uint64_t sweepPeriodMs_ = 0;
  bool listening_ = false;
  bool acceptPaused_ = false;
  bool shuttingDown_ = false;
  bool handlesClosed_ = false;
  bool graceExpired_ = false;
  uint64_t shutdownStartMs_ = 0;
  Journal* journal_ = nullptr;
  UvFlushScheduler* scheduler_ = nullptr;
  UvNotifier* notifier_ = nullptr;
  AccessLogWriter* accessLog_ = nullptr;
  AccessLogFormat accessFormat_ = AccessLogFormat::Text;
  char* accessLine_ = nullptr;  // kMaxAccessLineBytes, formatted into for every request
  std::shared_ptr<TlsContext> tls_;
  ServerStats stats_;
  // Farm mode: forward links, request-slots of them made on the first forward; the free ones.
  std::shared_ptr<TlsContext> peerTls_;
  std::string nodeName_;
  ForwardLink* links_ = nullptr;
  uint32_t* freeLinks_ = nullptr;
  uint32_t freeLinkCount_ = 0;

  Connection* conns_ = nullptr;
  bool* connUsed_ = nullptr;
  uint32_t connCapacity_ = 0;
  uint32_t serving_ = 0;  // accepted connections not refused for max-connections
  uint32_t* freeConns_ = nullptr;
  uint32_t freeConnCount_ = 0;

  RequestSlot* slots_ = nullptr;   // raw storage; constructed on first use
  bool* slotBuilt_ = nullptr;
  uint32_t* freeSlots_ = nullptr;
  uint32_t freeSlotCount_ = 0;

  char* buffers_ = nullptr;
  uint32_t* freeBuffers_ = nullptr;
  uint32_t freeBufferCount_ = 0;

  uint32_t slotReserve_ = 0;  // slots only a complete head may take (request-slots / 4)
  char* peekBuf_ = nullptr;   // max-header-bytes, for Stream::peek (headComplete, the connection cap)
  char* discardBuf_ = nullptr;  // lingering closes read into it and throw the bytes away

  // Waiting connections: for a read buffer, for a slot with a complete head, for a slot otherwise.
  Connection* waitHead_[3] = {nullptr, nullptr, nullptr};
  Connection* waitTail_[3] = {nullptr, nullptr, nullptr};
  uint32_t authHolders_ = 0;  // connections keeping a read buffer through a slow password check
};

}  // namespace bitsd::platform
