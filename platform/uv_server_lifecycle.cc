// UvServer's life: the listening socket and start-up (the pools, the listener, the sweep timer),
// settings applied live and the TLS certificate reloaded on SIGHUP, the session sweep, and the
// shutdown with its grace period. The request path is in uv_server.cc.
#include "platform/uv_server.h"
#include "platform/uv_connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "platform/tls.h"

namespace bitsd::platform {

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

Outcome bindListenSocket(const std::string& listen, int* fdOut) {
  std::string error;
  sockaddr_storage addr;
  if (!parseListenAddress(listen, &addr, &error)) return Outcome::fail(Code::InvalidArgument, error);
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Outcome::fail(Code::Io, "cannot listen on " + listen + ": " + uv_strerror(uv_translate_sys_error(errno)));
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // as uv_tcp_bind does
  socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    Outcome o = Outcome::fail(Code::Io, "cannot listen on " + listen + ": " + uv_strerror(uv_translate_sys_error(errno)));
    ::close(fd);
    return o;
  }
  *fdOut = fd;
  return Outcome::ok();
}

UvServer::UvServer(uv_loop_t* loop, const Settings& settings, UploadEngine& engine)
    : loop_(loop), settings_(settings), engine_(engine) {}

UvServer::~UvServer() {
  if (listenFd_ >= 0) ::close(listenFd_);
  freeLinks();
  if (slots_ != nullptr) {
    for (uint32_t i = 0; i < settings_.requestSlots; ++i) {
      if (slotBuilt_[i]) slots_[i].~RequestSlot();
    }
  }
  std::free(conns_);
  std::free(timerHeap_);
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

Outcome UvServer::start(std::string* url) {
  std::string error;
  if (!settings_.tlsCert.empty()) {
    tls_ = TlsContext::load(settings_.tlsCert, settings_.tlsKey, &error, settings_.tlsRecordBytes);
    if (!tls_) return Outcome::fail(Code::Io, error);
    logf(LogLevel::Info, "https with %s (TLS 1.2, ECDHE with ChaCha20-Poly1305 or AES-GCM)", tls_->subject().c_str());
  }
  // Pools. calloc'ed so that pages stay out of RSS until a slot is first used.
  connCapacity_ = settings_.maxConnections + kRejectConnectionSlots;
  conns_ = static_cast<Connection*>(std::calloc(connCapacity_, sizeof(Connection)));
  connUsed_ = static_cast<bool*>(std::calloc(connCapacity_, sizeof(bool)));
  freeConns_ = static_cast<uint32_t*>(std::malloc(connCapacity_ * sizeof(uint32_t)));
  timerHeap_ = static_cast<Connection**>(std::malloc(connCapacity_ * sizeof(Connection*)));
  slots_ = static_cast<RequestSlot*>(std::calloc(settings_.requestSlots, sizeof(RequestSlot)));
  slotBuilt_ = static_cast<bool*>(std::calloc(settings_.requestSlots, sizeof(bool)));
  freeSlots_ = static_cast<uint32_t*>(std::malloc(settings_.requestSlots * sizeof(uint32_t)));
  buffers_ = static_cast<char*>(std::calloc(settings_.readBuffers, settings_.readBufferBytes));
  freeBuffers_ = static_cast<uint32_t*>(std::malloc(settings_.readBuffers * sizeof(uint32_t)));
  peekBuf_ = static_cast<char*>(std::malloc(settings_.maxHeaderBytes));
  discardBuf_ = static_cast<char*>(std::malloc(kDiscardBytes));
  accessLine_ = static_cast<char*>(std::malloc(kMaxAccessLineBytes));
  slotReserve_ = settings_.requestSlots / 4;
  if (!conns_ || !connUsed_ || !freeConns_ || !timerHeap_ || !slots_ || !slotBuilt_ || !freeSlots_ || !buffers_ || !freeBuffers_ ||
      !peekBuf_ || !discardBuf_ || !accessLine_) {
    error = "out of memory allocating connection pools (lower max-connections, request-slots or read-buffers)";
    return Outcome::fail(Code::Io, error);
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
      error = "cannot listen on " + settings_.listen + ": " + uv_strerror(rc);
      uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
      return Outcome::fail(Code::Io, error);
    }
  } else {
    sockaddr_storage addr;
    if (!parseListenAddress(settings_.listen, &addr, &error)) return Outcome::fail(Code::Io, error);
    uv_tcp_init(loop_, &listener_);
    listener_.data = this;
    int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, onConnectionThunk);
    if (rc != 0) {
      error = "cannot listen on " + settings_.listen + ": " + uv_strerror(rc);
      uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
      return Outcome::fail(Code::Io, error);
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
  uv_timer_init(loop_, &connTimer_);
  connTimer_.data = this;
  return Outcome::ok();
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
  uv_close(reinterpret_cast<uv_handle_t*>(&connTimer_), nullptr);
}

}  // namespace bitsd::platform
