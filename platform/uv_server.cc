#include "platform/uv_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/log.h"
#include "core/response.h"
#include "platform/access_log_writer.h"
#include "platform/tls.h"
#include "platform/uv_storage.h"

namespace bitsd::platform {

namespace {
constexpr int kWaitBuffer = 0;
constexpr int kWaitSlot = 1;      // a slot, with a whole request head waiting to be read
constexpr int kWaitSlotSlow = 2;  // a slot, the head not all there yet (or unknown)
constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr size_t kFileChunkBytes = 64 * 1024;
constexpr int kGotPlain = 0, kNeedCipher = 1, kParked = 2;
// Lingering close: at most this long in all, this long without data, and this many bytes discarded.
constexpr uint32_t kLingerMs = 2000;
constexpr uint32_t kLingerIdleMs = 500;
constexpr uint64_t kLingerMaxBytes = 16u << 20;
constexpr size_t kDiscardBytes = 32 * 1024;  // one buffer for the whole server
// At the connection cap, how long a newcomer that has sent nothing yet may take to show its head.
constexpr uint32_t kAdmitGraceMs = 250;

enum class Phase : uint8_t {
  Parsing,       // reading and parsing client bytes
  WaitHeaders,   // engine works on the request head (Create-Session disk checks, file open)
  WaitBody,      // engine writes body bytes from our read buffer
  WaitComplete,  // engine syncs/commits before the Ack
  Writing,       // the Ack is being written
  Lingering,     // answered and shut for writing: discarding what the client still sends
};
}  // namespace

struct RequestSlot {
  RequestSlot(size_t maxHeaderBytes, std::string_view transactionHeader) : parser(maxHeaderBytes, transactionHeader) {}
  RequestParser parser;
  Exchange exchange;
  uv_write_t writeReq;
  Connection* owner = nullptr;
};

// A connection's TLS state. mbedTLS keeps its own record buffers (16 KiB in and out with Debian's
// build); `in` only holds what the socket gave and mbedTLS has not taken yet.
struct TlsConn {
  explicit TlsConn(size_t cap) : in(new (std::nothrow) char[cap]), inCap(in != nullptr ? cap : 0) {}
  ~TlsConn() { delete[] in; }
  TlsConn(const TlsConn&) = delete;
  TlsConn& operator=(const TlsConn&) = delete;
  TlsSession session;
  // Ciphertext from the socket, tls-buffer-bytes long (board-sized): 64 KiB takes several records
  // per read on a fast link; a small board can go down to 1 KiB, and mbedTLS assembles each record
  // from as many reads as it takes.
  char* in;
  size_t inCap;
  size_t inPos = 0, inLen = 0;
  std::string out;                  // ciphertext mbedTLS produced, not yet handed to libuv
  bool handshakeDone = false;
};

// One write of ciphertext; `notify`: the write completes a response or a file chunk (onWrite).
struct TlsWrite {
  uv_write_t req;
  Connection* c = nullptr;
  bool notify = false;
  std::string bytes;
};

struct Connection final : public ExchangeHost {
  uv_tcp_t tcp;
  TlsConn* tls = nullptr;
  uv_timer_t timer;
  UvServer* server = nullptr;
  RequestSlot* slot = nullptr;
  uint32_t slotIndex = 0;
  char* rbuf = nullptr;       // read buffer holding unparsed bytes (or bytes being written)
  uint32_t rbufIndex = 0;
  size_t rpos = 0;
  size_t rlen = 0;
  Phase phase = Phase::Parsing;
  bool reading = false;
  bool closing = false;
  bool reject = false;
  bool serving = false;  // counted in UvServer::serving_ (accepted and not refused)
  uint8_t pendingCloses = 0;
  ClientAddress peer;  // the client's address, for max-sessions-per-user without authentication
  int waitingFor = -1;
  Connection* waitNext = nullptr;
  // The request head being read: when its slot was taken and how many head bytes came since.
  uint64_t headStartMs = 0;
  uint32_t headBytes = 0;
  size_t sent408 = 0;      // bytes of a 408 just sent (not the Exchange's answer)
  bool readyHead = false;  // its last try for a slot saw a whole head waiting
  // The access log: when the request's first byte came (its slot was taken), the body bytes read,
  // and whether its line is written.
  uint64_t startNs = 0;
  uint64_t bodyIn = 0;
  bool logged = true;
  uint32_t index = 0;
  // Connection cap: since when it waits for its next request (accept, or the end of its last answer),
  // and whether it had an answer yet (an idle keep-alive connection has).
  uint64_t sinceMs = 0;
  bool answered = false;
  bool admitting = false;  // at the cap, waiting for its first bytes (not serving yet)
  uint64_t lingerStartMs = 0;
  uint64_t lingerBytes = 0;
  // Reply download in progress (Exchange::sendsFile).
  bool fileStarted = false;
  bool fileBusy = false;  // an fs request on fileReq is in flight
  uv_file fileFd = -1;
  uint64_t fileOffset = 0;
  uint64_t fileLeft = 0;
  char* fileBuf = nullptr;
  uv_fs_t fileReq;
  // Password checks (issue 20): failed checks are charged to `peer`; a read buffer kept (body bytes
  // already read) while a slow check runs; not read from until the timer fires, after a throttled
  // check was refused.
  bool authHold = false;
  bool heldOff = false;

  size_t clientAddress(uint8_t out[16]) const override {
    size_t n = peer.family == 4 ? 4 : peer.family == 6 ? 16 : 0;
    std::memcpy(out, peer.bytes, n);
    return n;
  }

  void onExchangeReady(Exchange&) override { server->onExchangeReady(this); }
  // Nothing is in flight, so closeConnection finishes the exchange before it returns.
  void abandonExchange(Exchange&) override { server->closeConnection(this); }
};

namespace {

// "HOST:PORT" or "[V6]:PORT" into a socket address; a one-line error naming --listen otherwise.
bool parseListenAddress(const std::string& listen, sockaddr_storage* addr, std::string* error) {
  std::string host = listen;
  size_t colon = host.rfind(':');
  if (colon == std::string::npos) {
    *error = "--listen '" + listen + "': expected ADDR:PORT";
    return false;
  }
  std::string portText = host.substr(colon + 1);
  host = host.substr(0, colon);
  char* end = nullptr;
  long port = std::strtol(portText.c_str(), &end, 10);
  if (portText.empty() || *end != '\0' || port < 0 || port > 65535) {
    *error = "--listen '" + listen + "': bad port";
    return false;
  }
  bool v6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (v6) host = host.substr(1, host.size() - 2);
  std::memset(addr, 0, sizeof *addr);
  int rc = v6 ? uv_ip6_addr(host.c_str(), static_cast<int>(port), reinterpret_cast<sockaddr_in6*>(addr))
              : uv_ip4_addr(host.c_str(), static_cast<int>(port), reinterpret_cast<sockaddr_in*>(addr));
  if (rc != 0) {
    *error = "--listen '" + listen + "': not an IP address";
    return false;
  }
  return true;
}

}  // namespace

int bindListenSocket(const std::string& listen, std::string* error) {
  sockaddr_storage addr;
  if (!parseListenAddress(listen, &addr, error)) return -1;
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "cannot listen on " + listen + ": " + uv_strerror(uv_translate_sys_error(errno));
    return -1;
  }
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // as uv_tcp_bind does
  socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    *error = "cannot listen on " + listen + ": " + uv_strerror(uv_translate_sys_error(errno));
    ::close(fd);
    return -1;
  }
  return fd;
}

UvServer::UvServer(uv_loop_t* loop, const Settings& settings, UploadEngine& engine)
    : loop_(loop), settings_(settings), engine_(engine) {}

UvServer::~UvServer() {
  if (listenFd_ >= 0) ::close(listenFd_);
  if (slots_ != nullptr) {
    for (uint32_t i = 0; i < settings_.requestSlots; ++i) {
      if (slotBuilt_[i]) slots_[i].~RequestSlot();
    }
  }
  std::free(conns_);
  std::free(connUsed_);
  std::free(freeConns_);
  std::free(slots_);
  std::free(slotBuilt_);
  std::free(freeSlots_);
  std::free(buffers_);
  std::free(freeBuffers_);
  std::free(peekBuf_);
  std::free(discardBuf_);
  std::free(accessLine_);
}

bool UvServer::start(std::string* url, std::string* error) {
  if (!settings_.tlsCert.empty()) {
    tls_ = TlsContext::load(settings_.tlsCert, settings_.tlsKey, error, settings_.tlsRecordBytes);
    if (!tls_) return false;
    logf(LogLevel::Info, "https with %s (TLS 1.2, ECDHE with ChaCha20-Poly1305 or AES-GCM)", tls_->subject().c_str());
  }
  // Pools. calloc'ed so that pages stay out of RSS until a slot is first used.
  connCapacity_ = settings_.maxConnections + kRejectConnectionSlots;
  conns_ = static_cast<Connection*>(std::calloc(connCapacity_, sizeof(Connection)));
  connUsed_ = static_cast<bool*>(std::calloc(connCapacity_, sizeof(bool)));
  freeConns_ = static_cast<uint32_t*>(std::malloc(connCapacity_ * sizeof(uint32_t)));
  slots_ = static_cast<RequestSlot*>(std::calloc(settings_.requestSlots, sizeof(RequestSlot)));
  slotBuilt_ = static_cast<bool*>(std::calloc(settings_.requestSlots, sizeof(bool)));
  freeSlots_ = static_cast<uint32_t*>(std::malloc(settings_.requestSlots * sizeof(uint32_t)));
  buffers_ = static_cast<char*>(std::calloc(settings_.readBuffers, settings_.readBufferBytes));
  freeBuffers_ = static_cast<uint32_t*>(std::malloc(settings_.readBuffers * sizeof(uint32_t)));
  peekBuf_ = static_cast<char*>(std::malloc(settings_.maxHeaderBytes));
  discardBuf_ = static_cast<char*>(std::malloc(kDiscardBytes));
  accessLine_ = static_cast<char*>(std::malloc(kMaxAccessLineBytes));
  slotReserve_ = settings_.requestSlots / 4;
  if (!conns_ || !connUsed_ || !freeConns_ || !slots_ || !slotBuilt_ || !freeSlots_ || !buffers_ || !freeBuffers_ ||
      !peekBuf_ || !discardBuf_ || !accessLine_) {
    *error = "out of memory allocating connection pools (lower max-connections, request-slots or read-buffers)";
    return false;
  }
  // Free lists hand out low indices first, so a quiet server touches few pages.
  for (uint32_t i = 0; i < connCapacity_; ++i) freeConns_[i] = connCapacity_ - 1 - i;
  freeConnCount_ = connCapacity_;
  for (uint32_t i = 0; i < settings_.requestSlots; ++i) freeSlots_[i] = settings_.requestSlots - 1 - i;
  freeSlotCount_ = settings_.requestSlots;
  for (uint32_t i = 0; i < settings_.readBuffers; ++i) freeBuffers_[i] = settings_.readBuffers - 1 - i;
  freeBufferCount_ = settings_.readBuffers;

  if (listenFd_ >= 0) {
    uv_tcp_init(loop_, &listener_);
    listener_.data = this;
    int rc = uv_tcp_open(&listener_, listenFd_);
    listenFd_ = -1;  // the handle owns it now
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, onConnectionThunk);
    if (rc != 0) {
      *error = "cannot listen on " + settings_.listen + ": " + uv_strerror(rc);
      uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
      return false;
    }
  } else {
    sockaddr_storage addr;
    if (!parseListenAddress(settings_.listen, &addr, error)) return false;
    uv_tcp_init(loop_, &listener_);
    listener_.data = this;
    int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, onConnectionThunk);
    if (rc != 0) {
      *error = "cannot listen on " + settings_.listen + ": " + uv_strerror(rc);
      uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
      return false;
    }
  }
  listening_ = true;
  sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  char ip[64] = {0};
  int boundPort = 0;
  if (bound.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&bound);
    uv_ip6_name(a, ip, sizeof ip);
    boundPort = ntohs(a->sin6_port);
    *url = std::string(tls_ ? "https://[" : "http://[") + ip + "]:" + std::to_string(boundPort);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&bound);
    uv_ip4_name(a, ip, sizeof ip);
    boundPort = ntohs(a->sin_port);
    *url = std::string(tls_ ? "https://" : "http://") + ip + ":" + std::to_string(boundPort);
  }

  uint64_t period = sweepPeriod(settings_);
  uv_timer_init(loop_, &sweepTimer_);
  sweepTimer_.data = this;
  uv_timer_start(&sweepTimer_, onSweepThunk, period, period);
  sweepPeriodMs_ = period;
  uv_timer_init(loop_, &graceTimer_);
  graceTimer_.data = this;
  return true;
}

// Session expiry: sweep often enough that expired data goes within a few seconds (§10.1).
uint64_t UvServer::sweepPeriod(const Settings& s) {
  uint64_t period = s.sweepIntervalMs;
  uint64_t timeoutMs = s.sessionTimeoutSeconds * 1000;
  if (timeoutMs / 2 < period) period = timeoutMs / 2 > 100 ? timeoutMs / 2 : 100;
  return period;
}

void UvServer::applyLive(const Settings& next, std::shared_ptr<TlsContext> tls) {
  copyLiveSettings(next, &settings_);
  if (tls && tls_) tls_ = std::move(tls);
  uint64_t period = sweepPeriod(settings_);
  if (period != sweepPeriodMs_ && !shuttingDown_) {
    uv_timer_start(&sweepTimer_, onSweepThunk, period, period);
    sweepPeriodMs_ = period;
  }
}

bool UvServer::reloadTls(std::string* error) {
  if (!tls_) {
    *error = "not serving https (no tls-cert)";
    return false;
  }
  std::shared_ptr<TlsContext> next = TlsContext::load(settings_.tlsCert, settings_.tlsKey, error, settings_.tlsRecordBytes);
  if (!next) return false;
  tls_ = std::move(next);
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Accepting

void UvServer::onConnectionThunk(uv_stream_t* server, int status) {
  UvServer* self = static_cast<UvServer*>(server->data);
  if (status < 0) {
    logf(LogLevel::Warn, "accept: %s", uv_strerror(status));
    return;
  }
  self->acceptPending();
}

void UvServer::acceptPending() {
  if (shuttingDown_) return;
  if (freeConnCount_ == 0) {
    // Not even a slot to answer 503 from: leave the connection in the kernel's backlog. libuv stops
    // watching the listener until uv_accept is called, which we do when a slot frees. A lingering
    // close is cut short for it: its close callback accepts.
    acceptPaused_ = true;
    Connection* oldest = nullptr;
    for (uint32_t i = 0; i < connCapacity_; ++i) {
      Connection* o = &conns_[i];
      if (!connUsed_[i] || o->closing || o->phase != Phase::Lingering) continue;
      if (oldest == nullptr || o->lingerStartMs < oldest->lingerStartMs) oldest = o;
    }
    if (oldest != nullptr) closeConnection(oldest);
    return;
  }
  acceptPaused_ = false;
  uint32_t idx = freeConns_[--freeConnCount_];
  Connection* c = new (&conns_[idx]) Connection();
  connUsed_[idx] = true;
  c->server = this;
  c->index = idx;
  uv_tcp_init(loop_, &c->tcp);
  uv_timer_init(loop_, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->sinceMs = uv_now(loop_);
  ++stats_.active;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    closeConnection(c);
    return;
  }
  ++stats_.accepted;
  {
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      if (ss.ss_family == AF_INET) {
        c->peer.family = 4;
        std::memcpy(c->peer.bytes, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, 4);
      } else if (ss.ss_family == AF_INET6) {
        c->peer.family = 6;
        std::memcpy(c->peer.bytes, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, 16);
      }
    }
  }
  // Connections refused with 503 are still closing for a loop iteration or so; they hold reserve
  // slots, not places under max-connections, so a burst of refusals never delays a real client.
  if (serving_ >= settings_.maxConnections) {
    bool nothingYet = false;
    if (!makeRoom(newcomerReady(c, &nothingYet))) {
      if (!nothingYet) return refuse(c);
      // Its first bytes may be a moment behind the accept: wait for them (briefly, from a reserve
      // slot, reading nothing) before deciding.
      c->admitting = true;
      arm(c, kAdmitGraceMs);
      uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp),
                    [](uv_handle_t*, size_t, uv_buf_t* buf) { *buf = uv_buf_init(nullptr, 0); }, onAdmitReadThunk);
      return;
    }
  }
  admit(c);
}

void UvServer::onAdmitReadThunk(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  // No buffer was given, so nothing was read: UV_ENOBUFS says bytes (or EOF) are there to look at.
  Connection* c = static_cast<Connection*>(s->data);
  if (nread == 0) return;
  uv_read_stop(s);
  c->server->decideAdmission(c);
}

void UvServer::decideAdmission(Connection* c) {
  c->admitting = false;
  uv_timer_stop(&c->timer);
  bool nothingYet = false;
  if (serving_ < settings_.maxConnections || makeRoom(newcomerReady(c, &nothingYet))) return admit(c);
  refuse(c);
}

void UvServer::refuse(Connection* c) {
  // Over the limit: a one-shot 503 from a reserve slot, then close (§7: transient for the client).
  // Over TLS there is no way to say it before a handshake: just close.
  ++stats_.rejected;
  c->reject = true;
  if (tls_) {
    logLimited(LogLevel::Warn, "max-connections close", "connection closed: max-connections (%u) reached", settings_.maxConnections);
    closeConnection(c);
    return;
  }
  AckSpec spec;
  spec.status = 503;
  spec.hasError = true;
  spec.errorCode = hresult::kNoSystemResources;
  spec.close = true;
  spec.retryAfterSeconds = 5;
  char text[kMaxAckBytes];
  uv_buf_t b = uv_buf_init(text, static_cast<unsigned>(formatAck(spec, text)));
  (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  logLimited(LogLevel::Warn, "max-connections 503", "connection refused with 503: max-connections (%u) reached", settings_.maxConnections);
  closeConnection(c);
}

void UvServer::admit(Connection* c) {
  ++serving_;
  c->serving = true;
  uv_tcp_nodelay(&c->tcp, 1);
  if (tls_) {
    c->tls = new (std::nothrow) TlsConn(settings_.tlsBufferBytes);
    bool ok = c->tls != nullptr && c->tls->in != nullptr &&
              c->tls->session.setup(
                  tls_, c,
                  [](void* io, const unsigned char* buf, size_t len) -> int {
                    // Collected, and handed to libuv once mbedTLS returns (flushCipher).
                    static_cast<Connection*>(io)->tls->out.append(reinterpret_cast<const char*>(buf), len);
                    return static_cast<int>(len);
                  },
                  [](void* io, unsigned char* buf, size_t len) -> int {
                    TlsConn* t = static_cast<Connection*>(io)->tls;
                    size_t have = t->inLen - t->inPos;
                    if (have == 0) return TlsSession::kWantRead;
                    size_t n = have < len ? have : len;
                    std::memcpy(buf, t->in + t->inPos, n);
                    t->inPos += n;
                    if (t->inPos == t->inLen) t->inPos = t->inLen = 0;
                    return static_cast<int>(n);
                  });
    if (!ok) {
      logf(LogLevel::Warn, "TLS: out of memory for a connection");
      closeConnection(c);
      return;
    }
    arm(c, settings_.tlsHandshakeTimeoutMs);
  } else {
    arm(c, settings_.idleTimeoutMs);
  }
  startReading(c);
}

// ---------------------------------------------------------------------------------------------------
// Pools and waiting

char* UvServer::takeBuffer() {
  if (freeBufferCount_ == 0) return nullptr;
  uint32_t i = freeBuffers_[--freeBufferCount_];
  return buffers_ + static_cast<size_t>(i) * settings_.readBufferBytes;
}

void UvServer::releaseBuffer(Connection* c) {
  if (c->rbuf == nullptr) return;
  freeBuffers_[freeBufferCount_++] =
      static_cast<uint32_t>((c->rbuf - buffers_) / settings_.readBufferBytes);
  c->rbuf = nullptr;
  c->rpos = c->rlen = 0;
  wakeWaiter(kWaitBuffer);
}

bool UvServer::acquireSlot(Connection* c) {
  if (freeSlotCount_ == 0) return false;
  uint32_t i = freeSlots_[--freeSlotCount_];
  if (!slotBuilt_[i]) {
    new (&slots_[i]) RequestSlot(settings_.maxHeaderBytes, settings_.transactionHeader);
    slotBuilt_[i] = true;
  }
  c->slot = &slots_[i];
  c->slotIndex = i;
  c->slot->owner = c;
  c->slot->exchange.setHost(c);
  c->slot->exchange.setPeer(c->peer);
  c->slot->writeReq.data = c;
  c->slot->parser.reset();
  return true;
}

void UvServer::releaseSlot(Connection* c) {
  if (c->slot == nullptr) return;
  c->slot->exchange.setHost(nullptr);
  c->slot->owner = nullptr;
  c->slot = nullptr;
  freeSlots_[freeSlotCount_++] = c->slotIndex;
  handSlot(false);
}

void UvServer::handSlot(bool swap) {
  if (freeSlotCount_ == 0) return;
  Connection* w = waitHead_[kWaitSlot];
  if (w == nullptr && (swap || freeSlotCount_ > slotReserve_)) w = waitHead_[kWaitSlotSlow];
  if (w == nullptr) return;
  // The slot goes to this waiter now, not back to whoever reads next: otherwise a burst of
  // readable connections could take it first and send the waiter to the back of the queue.
  removeWaiter(w);
  acquireSlot(w);
  startHead(w);
  pump(w);  // reads (plain) or decrypts (TLS) what is waiting
}

// ---------------------------------------------------------------------------------------------------
// Slow request heads
//
// A head's slot is taken when its first byte is read. After header-budget-ms a head that is still not
// complete and has come slower than header-min-rate on average is "slow": when some connection needs a
// slot and none is free, the oldest slow head gets a 408, is closed, and its slot goes to that
// connection. So a trickling client keeps a slot only while nobody is waiting for one, and never past
// header-timeout-ms. The last request-slots / 4 slots go only to heads that are complete when they are
// read (see headComplete), so a crowd of slow heads can never make a ready request wait at all.

void UvServer::startHead(Connection* c) {
  c->headStartMs = uv_now(loop_);
  c->startNs = uv_hrtime();
  c->bodyIn = 0;
  c->logged = false;
  c->headBytes = 0;
  armHead(c);
}

void UvServer::armHead(Connection* c) {
  // Fires at the budget, then every budget until the header timeout.
  uint64_t elapsed = uv_now(loop_) - c->headStartMs;
  uint64_t budget = settings_.headerBudgetMs;
  uint64_t timeout = settings_.headerTimeoutMs;
  uint64_t next = elapsed < budget ? budget - elapsed : budget;
  if (elapsed >= timeout) {
    next = 0;
  } else if (next > timeout - elapsed) {
    next = timeout - elapsed;
  }
  arm(c, static_cast<uint32_t>(next));
}

bool UvServer::slowHead(const Connection* c, uint64_t now) const {
  // Not one that waits for a read buffer: that wait is the server's, not the client's.
  if (c->closing || c->phase != Phase::Parsing || c->slot == nullptr || c->waitingFor >= 0) return false;
  if (c->slot->parser.headersDone()) return false;
  uint64_t elapsed = now - c->headStartMs;
  if (elapsed < settings_.headerBudgetMs) return false;
  // At header-min-rate or faster on average it may go on (0: no rate is enough, as MinRate=0).
  bool keepsUp = settings_.headerMinRate > 0 &&
                 static_cast<uint64_t>(c->headBytes) * 1000 >= static_cast<uint64_t>(settings_.headerMinRate) * elapsed;
  return !keepsUp;
}

Connection* UvServer::oldestSlowHead() {
  uint64_t now = uv_now(loop_);
  Connection* oldest = nullptr;
  for (uint32_t i = 0; i < settings_.requestSlots; ++i) {
    if (!slotBuilt_[i]) continue;
    Connection* o = slots_[i].owner;
    if (o == nullptr || !slowHead(o, now)) continue;
    if (oldest == nullptr || o->headStartMs < oldest->headStartMs) oldest = o;
  }
  return oldest;
}

void UvServer::evictSlowHead(Connection* v) {
  ++stats_.timeouts;
  logf(LogLevel::Debug, "request head too slow (%u bytes in %u ms) while a request waits: 408, slot handed over",
       v->headBytes, static_cast<unsigned>(uv_now(loop_) - v->headStartMs));
  send408(v, "request head too slow while a request waits for its slot");
  // Its head is unfinished, so the engine has not seen it and nothing writes from the slot (the 408
  // went out synchronously): the slot is free at once.
  RequestSlot* s = v->slot;
  engine_.finish(s->exchange);
  s->exchange.setHost(nullptr);
  s->owner = nullptr;
  v->slot = nullptr;
  freeSlots_[freeSlotCount_++] = v->slotIndex;
  lingerClose(v);
}

// ---------------------------------------------------------------------------------------------------
// The connection cap
//
// At max-connections a newcomer takes the place of the oldest connection that has waited
// header-budget-ms for a request without one in progress (an idle keep-alive connection, or one
// held off by the password throttle), closed quietly as the idle timeout would. Failing that, a
// newcomer whose first bytes are all there (a whole request head, or a whole TLS record) takes the
// place of the oldest slow head: a head with a slot that slowHead() calls slow, or a connection
// without a slot that has not brought a whole head (or finished its TLS handshake) within the budget
// and below header-min-rate since it was accepted or last answered. It gets a 408 (quietly closed if
// it sent nothing, or is still in its handshake). A newcomer that has sent nothing yet can only take
// an idle connection's place, so a crowd of tricklers that reconnect cannot push out each other's
// places faster than the budget, and a ready client always finds one. The victim stops counting
// against the limit at once (it closes from a reserve slot, as a refused one does).

bool UvServer::newcomerReady(Connection* c, bool* nothingYet) {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) != 0) return false;
  ssize_t n = ::recv(fd, peekBuf_, settings_.maxHeaderBytes, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) *nothingYet = true;
  if (n <= 0) return false;
  size_t got = static_cast<size_t>(n);
  if (tls_) {
    // A TLS record: type, version (2), length (2), then the fragment.
    if (got < 5) return false;
    size_t len = (static_cast<size_t>(static_cast<unsigned char>(peekBuf_[3])) << 8) |
                 static_cast<unsigned char>(peekBuf_[4]);
    return got >= 5 + len || got >= settings_.maxHeaderBytes;
  }
  return got >= settings_.maxHeaderBytes || std::string_view(peekBuf_, got).find("\r\n\r\n") != std::string_view::npos;
}

bool UvServer::makeRoom(bool ready) {
  uint64_t now = uv_now(loop_);
  uint64_t budget = settings_.headerBudgetMs;
  Connection* idle = nullptr;
  Connection* slow = nullptr;
  uint64_t slowSince = 0;
  size_t slowBytes = 0;
  for (uint32_t i = 0; i < connCapacity_; ++i) {
    Connection* o = &conns_[i];
    if (!connUsed_[i] || !o->serving || o->closing || o->phase != Phase::Parsing) continue;
    if (o->slot != nullptr) {
      if (ready && slowHead(o, now) && (slow == nullptr || o->headStartMs < slowSince)) {
        slow = o;
        slowSince = o->headStartMs;
      }
      continue;
    }
    if (now - o->sinceMs < budget || o->waitingFor == kWaitSlot) continue;  // young, or a whole head waits
    bool handshake = o->tls != nullptr && !o->tls->handshakeDone;
    if (!handshake && o->answered && o->waitingFor < 0) {
      if (idle == nullptr || o->sinceMs < idle->sinceMs) idle = o;
      continue;
    }
    if (!ready || (slow != nullptr && o->sinceMs >= slowSince)) continue;
    size_t n = 0;
    if (o->tls == nullptr) {
      uv_os_fd_t fd;
      if (uv_fileno(reinterpret_cast<uv_handle_t*>(&o->tcp), &fd) != 0) continue;
      ssize_t got = ::recv(fd, peekBuf_, settings_.maxHeaderBytes, MSG_PEEK | MSG_DONTWAIT);
      if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) continue;  // its read reports the error
      n = got > 0 ? static_cast<size_t>(got) : 0;
      if (got == 0 || n >= settings_.maxHeaderBytes ||
          std::string_view(peekBuf_, n).find("\r\n\r\n") != std::string_view::npos) {
        continue;  // EOF, or a whole head: its read comes next
      }
      if (settings_.headerMinRate > 0 &&
          static_cast<uint64_t>(n) * 1000 >= static_cast<uint64_t>(settings_.headerMinRate) * (now - o->sinceMs)) {
        continue;  // keeps up
      }
    } else if (!handshake) {
      n = 1;  // waiting for a slot with a head in mbedTLS: it has sent something
    }
    slow = o;
    slowSince = o->sinceMs;
    slowBytes = n;
  }
  if (idle != nullptr) {
    logLimited(LogLevel::Info, "max-connections idle close", "max-connections (%u) reached: closing a connection idle for %u ms", settings_.maxConnections,
         static_cast<unsigned>(now - idle->sinceMs));
    idle->serving = false;
    --serving_;
    closeConnection(idle);
    return true;
  }
  if (slow == nullptr) return false;
  slow->serving = false;
  --serving_;
  if (slow->slot != nullptr) {
    evictSlowHead(slow);
    handSlot(false);
    return true;
  }
  ++stats_.timeouts;
  logLimited(LogLevel::Info, "max-connections slow close", "max-connections (%u) reached: closing a connection without a whole %s after %u ms",
       settings_.maxConnections, slowBytes == 0 && slow->tls != nullptr ? "TLS handshake" : "request head",
       static_cast<unsigned>(now - slow->sinceMs));
  if (slowBytes == 0) return closeConnection(slow), true;
  send408(slow, "request head too slow at max-connections");
  lingerClose(slow);
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Lingering close
//
// Closing a socket with unread bytes makes the kernel send a RST, which can destroy an answer the
// client has not read yet (a 413 before the body, a 411, a 408). So after an answer that closes, the
// write done, bitsd shuts its side (the client sees EOF at once), gives back the slot and the read
// buffer, and reads and throws away what still comes into one server-wide buffer until EOF, an
// error, kLingerIdleMs without data, kLingerMs in all or kLingerMaxBytes; then it closes. It no
// longer counts against max-connections, and when the connection pool runs out the oldest lingering
// close is cut short. Not during shutdown, and not for connections refused at the cap.

void UvServer::lingerClose(Connection* c) {
  if (c->closing || c->phase == Phase::Lingering) return;
  uv_os_fd_t fd;
  if (shuttingDown_ || c->reject || c->fileBusy || (c->slot != nullptr && c->slot->exchange.inFlight()) ||
      uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) != 0 || ::shutdown(fd, SHUT_WR) != 0) {
    closeConnection(c);
    return;
  }
  stopReading(c);
  removeWaiter(c);
  endFile(c);
  if (c->slot != nullptr) {
    engine_.finish(c->slot->exchange);
    releaseSlot(c);
  }
  releaseBuffer(c);
  // Over TLS the rest is ciphertext, thrown away unread: mbedTLS's state can go now.
  delete c->tls;
  c->tls = nullptr;
  c->heldOff = false;
  c->phase = Phase::Lingering;
  c->lingerStartMs = uv_now(loop_);
  c->lingerBytes = 0;
  if (c->serving) {
    c->serving = false;
    --serving_;
  }
  c->reading = true;
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), onLingerAllocThunk, onLingerReadThunk);
  arm(c, kLingerIdleMs);
}

void UvServer::onLingerAllocThunk(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // Every byte is thrown away as soon as it is read, so one buffer serves every connection.
  *buf = uv_buf_init(static_cast<Connection*>(h->data)->server->discardBuf_, kDiscardBytes);
}

void UvServer::onLingerReadThunk(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  Connection* c = static_cast<Connection*>(s->data);
  UvServer* self = c->server;
  if (nread == 0 || c->closing) return;
  if (nread < 0) return self->closeConnection(c);  // EOF or an error: done
  c->lingerBytes += static_cast<uint64_t>(nread);
  uint64_t elapsed = uv_now(self->loop_) - c->lingerStartMs;
  if (c->lingerBytes >= kLingerMaxBytes || elapsed >= kLingerMs) return self->closeConnection(c);
  uint64_t left = kLingerMs - elapsed;
  self->arm(c, static_cast<uint32_t>(left < kLingerIdleMs ? left : kLingerIdleMs));
}

bool UvServer::headComplete(Connection* c) {
  // Peeks at what the socket holds without taking it: a whole head (or one too big, which gets its
  // 431 at once), EOF or an error all let the request through at once. Costs one recv per try, and
  // only when free slots are down to the reserve.
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) != 0) return true;
  ssize_t n = ::recv(fd, peekBuf_, settings_.maxHeaderBytes, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
  if (n == 0 || static_cast<size_t>(n) >= settings_.maxHeaderBytes) return true;
  return std::string_view(peekBuf_, static_cast<size_t>(n)).find("\r\n\r\n") != std::string_view::npos;
}

void UvServer::enqueueWaiter(Connection* c, int kind) {
  if (c->waitingFor >= 0) return;
  c->waitingFor = kind;
  c->waitNext = nullptr;
  if (waitTail_[kind] != nullptr) {
    waitTail_[kind]->waitNext = c;
  } else {
    waitHead_[kind] = c;
  }
  waitTail_[kind] = c;
}

void UvServer::removeWaiter(Connection* c) {
  if (c->waitingFor < 0) return;
  int kind = c->waitingFor;
  Connection* prev = nullptr;
  for (Connection* w = waitHead_[kind]; w != nullptr; prev = w, w = w->waitNext) {
    if (w != c) continue;
    if (prev != nullptr) {
      prev->waitNext = w->waitNext;
    } else {
      waitHead_[kind] = w->waitNext;
    }
    if (waitTail_[kind] == w) waitTail_[kind] = prev;
    break;
  }
  c->waitingFor = -1;
  c->waitNext = nullptr;
}

void UvServer::wakeWaiter(int kind) {
  Connection* c = waitHead_[kind];
  if (c == nullptr) return;
  removeWaiter(c);
  if (kind == kWaitBuffer && c->tls == nullptr) {
    startReading(c);
  } else {  // (a TLS connection may have plaintext inside mbedTLS already: pump fetches it)
    pump(c);
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading and parsing

void UvServer::startReading(Connection* c) {
  if (c->reading || c->closing) return;
  c->reading = true;
  if (c->tls != nullptr) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), onTlsAllocThunk, onTlsReadThunk);
  } else {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), onAllocThunk, onReadThunk);
  }
}

void UvServer::stopReading(Connection* c) {
  if (!c->reading) return;
  c->reading = false;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
}

void UvServer::arm(Connection* c, uint32_t ms) { uv_timer_start(&c->timer, onTimerThunk, ms, 0); }

void UvServer::onAllocThunk(uv_handle_t* h, size_t, uv_buf_t* buf) {
  Connection* c = static_cast<Connection*>(h->data);
  UvServer* self = c->server;
  // Resource order: a request slot first, then a read buffer. A connection never holds a buffer
  // while it waits for a slot; otherwise, with more requests than slots, the buffers could all sit
  // with connections waiting for slots while every slot holder waits for a buffer, and nothing
  // would move again (found by 100 uploads against 64 slots and 16 buffers).
  char* b = nullptr;
  if (c->rbuf == nullptr && (c->slot != nullptr || self->acquireSlotForRead(c))) b = self->takeBuffer();
  // No buffer: libuv reports UV_ENOBUFS to the read callback, which parks the connection.
  *buf = uv_buf_init(b, b == nullptr ? 0 : self->settings_.readBufferBytes);
}

bool UvServer::acquireSlotForRead(Connection* c) {
  return acquireSlotForRead(c, freeSlotCount_ > slotReserve_ || headComplete(c));
}

bool UvServer::acquireSlotForRead(Connection* c, bool complete) {
  c->readyHead = complete;
  bool free = freeSlotCount_ > slotReserve_ || (complete && freeSlotCount_ > 0);
  if (!free) {
    // Queued requests came first (complete heads before the rest): they get the next slot.
    if (waitHead_[kWaitSlot] != nullptr || (!complete && waitHead_[kWaitSlotSlow] != nullptr)) return false;
    Connection* v = oldestSlowHead();
    if (v == nullptr) return false;
    evictSlowHead(v);
  }
  if (!acquireSlot(c)) return false;
  startHead(c);
  return true;
}

void UvServer::onReadThunk(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  Connection* c = static_cast<Connection*>(s->data);
  UvServer* self = c->server;
  if (nread == UV_ENOBUFS) {
    self->stopReading(c);
    self->enqueueWaiter(c, c->slot != nullptr ? kWaitBuffer : c->readyHead ? kWaitSlot : kWaitSlotSlow);
    return;
  }
  if (nread <= 0) {
    if (buf->base != nullptr) {
      self->freeBuffers_[self->freeBufferCount_++] =
          static_cast<uint32_t>((buf->base - self->buffers_) / self->settings_.readBufferBytes);
    }
    if (nread < 0) {
      self->closeConnection(c);  // EOF or reset
    } else if (c->phase == Phase::Parsing && c->slot != nullptr && !c->slot->parser.started()) {
      // Nothing to read after all (EAGAIN): the slot taken for this read goes back, so an idle
      // connection holds none.
      self->releaseSlot(c);
      self->arm(c, self->settings_.idleTimeoutMs);
    }
    if (buf->base != nullptr) self->wakeWaiter(kWaitBuffer);
    return;
  }
  c->rbuf = buf->base;
  c->rpos = 0;
  c->rlen = static_cast<size_t>(nread);
  if (c->slot != nullptr && c->slot->parser.headersDone()) self->arm(c, self->settings_.bodyTimeoutMs);
  self->pump(c);
}

void UvServer::pump(Connection* c) {
  static const char kNothing[1] = {0};
  // After HeadersComplete and Body events llhttp must run once more, even on no input, to report
  // the end of a request whose body is already complete.
  bool kick = c->slot != nullptr && c->slot->parser.headersDone();
  while (!c->closing && c->phase == Phase::Parsing) {
    if (c->rpos == c->rlen && !kick) {
      releaseBuffer(c);
      if (c->tls != nullptr) {
        // Plaintext comes out of mbedTLS, which may hold more than the socket has to say.
        int got = fetchPlain(c);
        if (got == kGotPlain) continue;
        if (got == kParked) return;
      }
      startReading(c);
      return;
    }
    kick = false;
    if (c->slot == nullptr) {
      if (!acquireSlot(c)) {
        stopReading(c);
        enqueueWaiter(c, kWaitSlot);
        return;
      }
      startHead(c);
    }
    RequestSlot& rs = *c->slot;
    size_t used = 0;
    const char* in = c->rbuf != nullptr ? c->rbuf + c->rpos : kNothing;
    bool inHead = !rs.parser.headersDone();
    ParseEvent ev = rs.parser.execute(in, c->rlen - c->rpos, &used);
    c->rpos += used;
    if (inHead) c->headBytes += static_cast<uint32_t>(used);
    switch (ev) {
      case ParseEvent::NeedMore:
        break;
      case ParseEvent::HeadersComplete:
        kick = true;
        arm(c, settings_.bodyTimeoutMs);
        if (engine_.onHeaders(rs.exchange, rs.parser.head()) == Flow::Wait) {
          c->phase = Phase::WaitHeaders;
          stopReading(c);
          if (rs.exchange.waitsForPasswordCheck()) holdForPasswordCheck(c);
          return;
        }
        afterHeaders(c);
        break;
      case ParseEvent::Body:
        kick = true;
        c->bodyIn += rs.parser.body().size();
        if (engine_.onBody(rs.exchange, rs.parser.body()) == Flow::Wait) {
          // The bytes are being written straight from c->rbuf: hold it, read nothing more.
          c->phase = Phase::WaitBody;
          stopReading(c);
          return;
        }
        break;
      case ParseEvent::MessageComplete:
        if (engine_.onMessageComplete(rs.exchange) == Flow::Wait) {
          c->phase = Phase::WaitComplete;
          stopReading(c);
          return;
        }
        sendResponse(c);
        return;
      case ParseEvent::Error:
        ++stats_.protocolErrors;
        engine_.formatProtocolError(rs.exchange, rs.parser.errorStatus());
        sendResponse(c);
        return;
    }
  }
}

// A password check that is not answered from memory may wait seconds (PBKDF2 in turn, throttle
// delays): meanwhile the request keeps its slot (bounded by the authenticator's share of them) but
// not its read buffer. A Ping or Create-Session has no body, so the buffer holds nothing more after
// the head and goes back now. Body bytes read with the head (a Fragment) stay with their buffer,
// for at most a quarter of the buffers at once; beyond that the connection is closed and the
// buffer freed (the client retries; BITS clients do, and answered from memory the next time no
// check holds a buffer at all).
void UvServer::holdForPasswordCheck(Connection* c) {
  if (c->rbuf == nullptr || c->rpos == c->rlen) {
    releaseBuffer(c);
    return;
  }
  uint32_t most = settings_.readBuffers / 4 > 0 ? settings_.readBuffers / 4 : 1;
  if (authHolders_ < most) {
    c->authHold = true;
    ++authHolders_;
    return;
  }
  logLimited(LogLevel::Info, "auth body hold", "connection closed: body bytes waiting for a password check, and %u such already", most);
  closeConnection(c);  // finishes when the check answers (it holds the slot until then)
  releaseBuffer(c);
}

void UvServer::afterHeaders(Connection* c) {
  Exchange& ex = c->slot->exchange;
  if (ex.respondNow()) {
    sendResponse(c);
    return;
  }
  if (ex.expectContinue()) {
    if (c->tls != nullptr) {
      if (!tlsSend(c, kContinue, sizeof kContinue - 1, false)) closeConnection(c);
      return;
    }
    uv_buf_t b = uv_buf_init(const_cast<char*>(kContinue), sizeof kContinue - 1);
    if (uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1) != static_cast<int>(b.len)) {
      closeConnection(c);
    }
  }
}

void UvServer::onExchangeReady(Connection* c) {
  if (c->authHold) {
    c->authHold = false;
    --authHolders_;
  }
  if (c->closing) {
    if (!c->slot->exchange.inFlight()) finishClose(c);
    return;
  }
  switch (c->phase) {
    case Phase::WaitHeaders:
      c->phase = Phase::Parsing;
      afterHeaders(c);
      pump(c);
      return;
    case Phase::WaitBody:
      c->phase = Phase::Parsing;
      pump(c);
      return;
    case Phase::WaitComplete:
      sendResponse(c);
      return;
    default:
      BITS_CHECK(false && "exchange ready in an unexpected phase");
  }
}

// ---------------------------------------------------------------------------------------------------
// Answering

void UvServer::sendResponse(Connection* c) {
  if (c->closing) return;
  c->phase = Phase::Writing;
  stopReading(c);
  std::string_view r = c->slot->exchange.response();
  if (c->tls != nullptr) {
    if (!tlsSend(c, r.data(), r.size(), true)) closeConnection(c);
    return;
  }
  uv_buf_t b = uv_buf_init(const_cast<char*>(r.data()), static_cast<unsigned>(r.size()));
  int rc = uv_write(&c->slot->writeReq, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, onWriteThunk);
  if (rc != 0) closeConnection(c);
}

void UvServer::onWriteThunk(uv_write_t* req, int status) {
  Connection* c = static_cast<Connection*>(req->data);
  c->server->onWrite(c, status);
}

void UvServer::onWrite(Connection* c, int status) {
  if (c->closing || c->phase == Phase::Lingering) return;  // cancelled by uv_close; the close callback cleans up
  if (status < 0) {
    closeConnection(c);
    return;
  }
  Exchange& ex = c->slot->exchange;
  if (ex.sendsFile()) {
    if (!c->fileStarted) return startFile(c);
    if (c->fileLeft > 0) return readFileChunk(c);
    endFile(c);
  }
  bool close = ex.closeAfterResponse() || shuttingDown_;
  uint32_t holdOff = ex.holdOffMs();
  logRequest(c, ex.status(), nullptr);
  engine_.finish(ex);
  if (close) {
    releaseSlot(c);
    lingerClose(c);
    return;
  }
  c->phase = Phase::Parsing;
  c->answered = true;
  c->sinceMs = uv_now(loop_);
  if (holdOff > 0) {
    // A throttled password check was refused (503, Retry-After): nothing more is read from this
    // client until then. It holds no slot and no buffer meanwhile, only its timer. Bytes it
    // already pipelined would need a buffer held all that time: it is closed instead.
    releaseSlot(c);
    if (c->rbuf != nullptr && c->rpos < c->rlen) return closeConnection(c);
    releaseBuffer(c);
    c->heldOff = true;
    arm(c, holdOff);
    return;
  }
  if (c->rbuf != nullptr && c->rpos < c->rlen) {
    // Bytes of a pipelined next request are buffered: the slot goes straight to that request, so
    // that this buffer never waits for a slot (see onAllocThunk).
    c->slot->parser.reset();
    startHead(c);
  } else {
    releaseSlot(c);
    arm(c, settings_.idleTimeoutMs);
  }
  pump(c);
}

// Reply bodies are rare and small next to uploads, so each download gets a 64 KiB buffer from the
// heap for its duration rather than a pool of its own.
void UvServer::startFile(Connection* c) {
  Exchange& ex = c->slot->exchange;
  c->fileStarted = true;
  c->fileOffset = ex.fileOffset();
  c->fileLeft = ex.fileLength();
  c->fileBuf = static_cast<char*>(std::malloc(kFileChunkBytes));
  if (c->fileBuf == nullptr) return closeConnection(c);
  c->fileReq.data = c;
  c->fileBusy = true;
  if (uv_fs_open(loop_, &c->fileReq, ex.filePath(), O_RDONLY | O_CLOEXEC, 0, onFileOpenThunk) < 0) {
    c->fileBusy = false;
    closeConnection(c);
  }
}

void UvServer::onFileOpenThunk(uv_fs_t* req) {
  Connection* c = static_cast<Connection*>(req->data);
  UvServer* self = c->server;
  ssize_t fd = req->result;
  uv_fs_req_cleanup(req);
  c->fileBusy = false;
  if (fd >= 0) c->fileFd = static_cast<uv_file>(fd);
  if (c->closing) return self->finishClose(c);
  if (fd < 0) {
    logf(LogLevel::Warn, "reply download: cannot open %s: %s", c->slot->exchange.filePath(),
         uv_strerror(static_cast<int>(fd)));
    return self->closeConnection(c);
  }
  self->readFileChunk(c);
}

void UvServer::readFileChunk(Connection* c) {
  arm(c, settings_.bodyTimeoutMs);
  size_t n = c->fileLeft < kFileChunkBytes ? static_cast<size_t>(c->fileLeft) : kFileChunkBytes;
  uv_buf_t b = uv_buf_init(c->fileBuf, static_cast<unsigned>(n));
  c->fileReq.data = c;
  c->fileBusy = true;
  if (uv_fs_read(loop_, &c->fileReq, c->fileFd, &b, 1, static_cast<int64_t>(c->fileOffset), onFileReadThunk) < 0) {
    c->fileBusy = false;
    closeConnection(c);
  }
}

void UvServer::onFileReadThunk(uv_fs_t* req) {
  Connection* c = static_cast<Connection*>(req->data);
  UvServer* self = c->server;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  c->fileBusy = false;
  if (c->closing) return self->finishClose(c);
  if (n <= 0) {
    // The head promised more bytes than the file has now: the client sees a short body and retries.
    logf(LogLevel::Warn, "reply download: reading %s failed", c->slot->exchange.filePath());
    return self->closeConnection(c);
  }
  c->fileOffset += static_cast<uint64_t>(n);
  c->fileLeft -= static_cast<uint64_t>(n);
  if (c->tls != nullptr) {
    if (!self->tlsSend(c, c->fileBuf, static_cast<size_t>(n), true)) self->closeConnection(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->fileBuf, static_cast<unsigned>(n));
  if (uv_write(&c->slot->writeReq, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, onWriteThunk) != 0) {
    self->closeConnection(c);
  }
}

void UvServer::endFile(Connection* c) {
  if (c->fileFd >= 0) {
    uv_fs_t req;
    uv_fs_close(loop_, &req, c->fileFd, nullptr);
    uv_fs_req_cleanup(&req);
    c->fileFd = -1;
  }
  std::free(c->fileBuf);
  c->fileBuf = nullptr;
  c->fileStarted = false;
  c->fileLeft = 0;
}

// ---------------------------------------------------------------------------------------------------
// Timeouts and closing

void UvServer::onTimerThunk(uv_timer_t* t) {
  Connection* c = static_cast<Connection*>(t->data);
  c->server->onTimer(c);
}

void UvServer::onTimer(Connection* c) {
  if (c->closing) return;
  if (c->phase == Phase::Lingering) return closeConnection(c);
  if (c->admitting) {  // its first bytes did not come within kAdmitGraceMs
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
    return decideAdmission(c);
  }
  if (c->heldOff) {  // the Retry-After time is over: read the next request
    c->heldOff = false;
    arm(c, settings_.idleTimeoutMs);
    pump(c);
    return;
  }
  if (c->tls != nullptr && !c->tls->handshakeDone) {
    ++stats_.tlsFailures;
    logLimited(LogLevel::Info, "tls handshake timeout", "TLS handshake not finished within %u ms: connection closed", settings_.tlsHandshakeTimeoutMs);
    closeConnection(c);
    return;
  }
  if (c->phase == Phase::WaitHeaders || c->phase == Phase::WaitBody || c->phase == Phase::WaitComplete) {
    arm(c, settings_.bodyTimeoutMs);  // our own disk is slow; the client is not to blame
    return;
  }
  if (c->phase == Phase::Parsing && c->slot != nullptr && !c->slot->parser.headersDone()) {
    uint64_t now = uv_now(loop_);
    if (now - c->headStartMs < settings_.headerTimeoutMs) {
      // Past its budget: a slow head gives its slot to a request that waits for one.
      if (slowHead(c, now) && (waitHead_[kWaitSlot] != nullptr || waitHead_[kWaitSlotSlow] != nullptr)) {
        evictSlowHead(c);
        handSlot(true);
        return;
      }
      armHead(c);
      return;
    }
  }
  if (c->phase == Phase::Parsing && c->slot != nullptr && c->slot->parser.started()) {
    // A stalled or slow request: a best-effort 408, then close.
    ++stats_.timeouts;
    send408(c, c->slot->parser.headersDone() ? "request timed out (body)" : "request timed out (headers)");
    return lingerClose(c);
  }
  closeConnection(c);
}

void UvServer::send408(Connection* c, const char* reason) {
  AckSpec spec;
  spec.status = 408;
  spec.hasError = true;
  spec.errorCode = hresult::kInvalidArg;
  spec.close = true;
  char text[kMaxAckBytes];
  size_t len = formatAck(spec, text);
  if (c->tls != nullptr) {
    (void)tlsSend(c, text, len, false, true);
  } else {
    uv_buf_t b = uv_buf_init(text, static_cast<unsigned>(len));
    (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  }
  if (c->slot != nullptr) {
    // The Exchange did not format this answer: say what was sent.
    c->sent408 = len;
    logRequest(c, 408, reason);
  }
}

void UvServer::logRequest(Connection* c, int status, const char* reason) {
  if (c->logged || c->slot == nullptr) return;
  c->logged = true;
  if (accessLog_ == nullptr && status < 400) return;  // the fragment path with the log off: nothing
  const Exchange& ex = c->slot->exchange;
  const RequestParser& parser = c->slot->parser;
  AccessRecord r;
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  r.unixMs = static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  r.client = c->peer;
  r.user = engine_.userOf(ex);
  if (parser.headersDone()) {
    const RequestHead& h = parser.head();
    r.hasRequest = true;
    r.method = h.method;
    r.target = h.target;
    r.httpMajor = h.httpMajor;
    r.httpMinor = h.httpMinor;
    if (h.has(HeaderId::ContentRange)) r.contentRange = h.value(HeaderId::ContentRange);
  }
  r.packet = ex.packetType();
  r.session = ex.sessionId();
  r.status = status;
  if (status == 408 && c->sent408 > 0) {
    r.hasError = true;
    r.errorCode = hresult::kInvalidArg;
    r.bytesOut = c->sent408;
    c->sent408 = 0;
  } else if (status != 0) {
    r.hasError = ex.hasErrorCode();
    r.errorCode = ex.errorCode();
    r.bytesOut = ex.response().size();
    if (ex.sendsFile()) r.bytesOut += ex.fileLength() - c->fileLeft;
  }
  r.bytesIn = c->bodyIn;
  r.durationUs = (uv_hrtime() - c->startNs) / 1000;
  if (status >= 400) {
    if (reason == nullptr) reason = ex.refusalReason();
    if (reason == nullptr && parser.errorStatus() != 0 && parser.errorText()[0] != '\0') reason = parser.errorText();
    logRefusal(r, reason);
  }
  if (accessLog_ != nullptr) accessLog_->append(accessLine_, formatAccessLine(accessFormat_, r, accessLine_));
}

void UvServer::closeConnection(Connection* c) {
  if (c->closing) return;
  c->closing = true;
  stopReading(c);
  removeWaiter(c);
  uv_timer_stop(&c->timer);
  if (c->slot != nullptr && c->slot->exchange.inFlight()) return;  // onExchangeReady finishes it
  if (c->fileBusy) return;  // the reply file request's callback finishes it
  finishClose(c);
}

void UvServer::finishClose(Connection* c) {
  endFile(c);
  if (c->slot != nullptr && c->slot->parser.started()) logRequest(c, 0, nullptr);  // cut off: no answer
  if (c->slot != nullptr) engine_.finish(c->slot->exchange);
  releaseBuffer(c);
  c->pendingCloses = 2;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), onCloseThunk);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), onCloseThunk);
}

void UvServer::onCloseThunk(uv_handle_t* h) {
  Connection* c = static_cast<Connection*>(h->data);
  c->server->onHandleClosed(c);
}

void UvServer::onHandleClosed(Connection* c) {
  if (--c->pendingCloses > 0) return;
  // Only now is the slot's uv_write_t surely finished with (a cancelled write calls back first).
  releaseSlot(c);
  delete c->tls;  // after every write callback (cancelled ones call back before the close callback)
  c->tls = nullptr;
  uint32_t idx = c->index;
  bool wasServing = c->serving;
  c->~Connection();
  connUsed_[idx] = false;
  freeConns_[freeConnCount_++] = idx;
  --stats_.active;
  if (wasServing) --serving_;
  if (acceptPaused_) acceptPending();
  if (shuttingDown_) maybeFinishShutdown();
}

// ---------------------------------------------------------------------------------------------------
// TLS

void UvServer::onTlsAllocThunk(uv_handle_t* h, size_t, uv_buf_t* buf) {
  TlsConn* t = static_cast<Connection*>(h->data)->tls;
  // mbedTLS takes what it needs of `in` before we read again, so there is room unless a record is
  // still being assembled; then read into what is left.
  *buf = uv_buf_init(t->in + t->inLen, static_cast<unsigned>(t->inCap - t->inLen));
}

void UvServer::onTlsReadThunk(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  Connection* c = static_cast<Connection*>(s->data);
  UvServer* self = c->server;
  if (nread == 0) return;
  if (nread == UV_ENOBUFS) {  // `in` full and mbedTLS not taking it: cannot happen while we read
    logf(LogLevel::Warn, "TLS: input buffer full; connection closed");
    self->closeConnection(c);
    return;
  }
  if (nread < 0) {
    if (!c->tls->handshakeDone && nread != UV_EOF) ++self->stats_.tlsFailures;
    self->closeConnection(c);
    return;
  }
  c->tls->inLen += static_cast<size_t>(nread);
  self->tlsInput(c);
}

void UvServer::tlsInput(Connection* c) {
  TlsConn* t = c->tls;
  if (!t->handshakeDone) {
    std::string why;
    TlsSession::Result hs = t->session.handshake(&why);
    if (!flushCipher(c, false)) return closeConnection(c);
    if (hs == TlsSession::Result::WantMore) return;
    if (hs != TlsSession::Result::Done) {
      ++stats_.tlsFailures;
      logLimited(LogLevel::Info, "tls handshake failed", "TLS handshake failed: %s", why.c_str());
      return closeConnection(c);
    }
    t->handshakeDone = true;
    ++stats_.tlsHandshakes;
    logf(LogLevel::Debug, "TLS handshake done: %s", t->session.suite());
    arm(c, settings_.idleTimeoutMs);
  }
  if (c->closing || c->phase != Phase::Parsing || c->heldOff) return;  // pump resumes later
  if (c->slot != nullptr && c->slot->parser.headersDone()) arm(c, settings_.bodyTimeoutMs);
  pump(c);
}

// Decrypts the next plaintext into a pool buffer, taking a request slot first as plain reads do.
int UvServer::fetchPlain(Connection* c) {
  TlsConn* t = c->tls;
  if (!t->handshakeDone) return kNeedCipher;
  if (c->slot == nullptr) {
    // Look at the next record before taking a slot: with no whole record there is nothing to parse
    // yet (no slot), and a record that holds a whole head may take the reserve. A head spread over
    // several records counts as incomplete; an alert or error counts as complete (the read says it).
    const char* plain = nullptr;
    size_t n = 0;
    TlsSession::Result pr = t->session.peek(&plain, &n);
    if (pr == TlsSession::Result::WantMore) {
      if (!flushCipher(c, false)) {
        closeConnection(c);
        return kParked;
      }
      return kNeedCipher;
    }
    bool complete = pr != TlsSession::Result::Done || n >= settings_.maxHeaderBytes ||
                    std::string_view(plain, n).find("\r\n\r\n") != std::string_view::npos;
    if (!acquireSlotForRead(c, complete)) {
      stopReading(c);
      enqueueWaiter(c, complete ? kWaitSlot : kWaitSlotSlow);
      return kParked;
    }
  }
  char* b = takeBuffer();
  if (b == nullptr) {
    stopReading(c);
    enqueueWaiter(c, kWaitBuffer);
    return kParked;
  }
  // Decrypt every record the ciphertext buffer holds into this one buffer, so that a fragment's
  // bytes reach the disk in writes as large as on a plain read, not one 16 KiB record at a time.
  size_t got = 0;
  TlsSession::Result r = TlsSession::Result::Done;
  std::string why;
  while (got < settings_.readBufferBytes) {
    size_t n = t->session.read(b + got, settings_.readBufferBytes - got, &r, &why);
    if (n == 0) break;
    got += n;
  }
  if (got > 0) {
    // The parser and the zero-copy file writes work on this buffer exactly as on a plain read. An
    // error or close_notify after these bytes shows on the next read.
    c->rbuf = b;
    c->rpos = 0;
    c->rlen = got;
    return kGotPlain;
  }
  freeBuffers_[freeBufferCount_++] = static_cast<uint32_t>((b - buffers_) / settings_.readBufferBytes);
  if (!flushCipher(c, false)) {
    r = TlsSession::Result::Failed;
    why = "cannot send";
  }
  if (r == TlsSession::Result::WantMore) {
    if (c->phase == Phase::Parsing && c->slot != nullptr && !c->slot->parser.started()) {
      releaseSlot(c);  // nothing to parse yet: an idle connection holds no slot
      arm(c, settings_.idleTimeoutMs);
    }
    wakeWaiter(kWaitBuffer);
    return kNeedCipher;
  }
  if (r == TlsSession::Result::Failed) logLimited(LogLevel::Info, "tls read failed", "TLS read failed: %s", why.c_str());
  wakeWaiter(kWaitBuffer);
  closeConnection(c);
  return kParked;
}

bool UvServer::tlsSend(Connection* c, const char* data, size_t len, bool notify, bool now) {
  TlsConn* t = c->tls;
  std::string why;
  if (!t->session.write(data, len, &why)) {
    logf(LogLevel::Info, "TLS write failed: %s", why.c_str());
    t->out.clear();
    return false;
  }
  return flushCipher(c, notify, now);
}

bool UvServer::flushCipher(Connection* c, bool notify, bool now) {
  TlsConn* t = c->tls;
  if (t->out.empty()) {
    if (notify) onWrite(c, 0);
    return true;
  }
  if (now) {
    uv_buf_t b = uv_buf_init(t->out.data(), static_cast<unsigned>(t->out.size()));
    (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
    t->out.clear();
    return true;
  }
  TlsWrite* w = new (std::nothrow) TlsWrite();
  if (w == nullptr) return false;
  w->c = c;
  w->notify = notify;
  w->bytes.swap(t->out);
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, onTlsWriteThunk) != 0) {
    delete w;
    return false;
  }
  return true;
}

void UvServer::onTlsWriteThunk(uv_write_t* req, int status) {
  TlsWrite* w = static_cast<TlsWrite*>(req->data);
  Connection* c = w->c;
  bool notify = w->notify;
  delete w;
  if (notify) {
    c->server->onWrite(c, status);
  } else if (status < 0 && !c->closing) {
    c->server->closeConnection(c);
  }
}

// ---------------------------------------------------------------------------------------------------
// Sweep and shutdown

void UvServer::onSweepThunk(uv_timer_t* t) {
  UvServer* self = static_cast<UvServer*>(t->data);
  self->engine_.sweep();
  if (self->shuttingDown_) self->maybeFinishShutdown();
}

void UvServer::onGraceThunk(uv_timer_t* t) {
  // Ticks every 50 ms during shutdown: aborts what is left once the grace period is over, and
  // finishes the shutdown as soon as connections, background deletions and the journal are idle.
  UvServer* self = static_cast<UvServer*>(t->data);
  if (!self->graceExpired_ && uv_now(self->loop_) - self->shutdownStartMs_ >= self->settings_.shutdownGraceMs) {
    self->graceExpired_ = true;
    if (self->stats_.active > 0) {
      logf(LogLevel::Info, "shutdown: grace period over, aborting %u connection(s)", self->stats_.active);
    }
    for (uint32_t i = 0; i < self->connCapacity_; ++i) {
      Connection* c = &self->conns_[i];
      if (self->connUsed_[i] && !c->closing) self->closeConnection(c);
    }
    // Hand-offs still waiting for the application end as unreachable: their DeliveryBegan is durable,
    // so the client's retry after the restart posts again with the same transaction id.
    if (self->notifier_ != nullptr && self->notifier_->active() > 0) {
      logf(LogLevel::Info, "shutdown: abandoning %u notification(s) in flight", self->notifier_->active());
      self->notifier_->abortAll();
    }
  }
  self->maybeFinishShutdown();
}

void UvServer::shutdown() {
  if (shuttingDown_) return;
  shuttingDown_ = true;
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  // Idle connections go now; requests in progress may finish (their connection closes after the
  // answer) until the grace timer aborts them.
  for (uint32_t i = 0; i < connCapacity_; ++i) {
    Connection* c = &conns_[i];
    if (!connUsed_[i] || c->closing) continue;
    bool idle = c->phase == Phase::Lingering ||
                (c->phase == Phase::Parsing && (c->slot == nullptr || !c->slot->parser.started()));
    if (idle) closeConnection(c);
  }
  shutdownStartMs_ = uv_now(loop_);
  uv_timer_start(&graceTimer_, onGraceThunk, 50, 50);
  maybeFinishShutdown();
}

void UvServer::maybeFinishShutdown() {
  if (handlesClosed_ || stats_.active > 0 || engine_.backgroundBusy()) return;
  if (journal_ != nullptr && (journal_->busy() || journal_->hasPending())) return;
  if (notifier_ != nullptr && notifier_->active() > 0) return;
  handlesClosed_ = true;
  if (notifier_ != nullptr) notifier_->close();
  if (scheduler_ != nullptr) scheduler_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&sweepTimer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&graceTimer_), nullptr);
}

}  // namespace bitsd::platform
