// UvServer's request path: the listener and its start-up, a connection's reads, parsing and the
// engine's turns (onExchangeReady), answers and reply downloads, the timers, the access-log line of
// each request, closing, and shutdown. Who gets a place, a slot or a buffer under pressure is in
// uv_server_fairness.cc; the TLS record layer in uv_server_tls.cc; what a connection holds in
// uv_connection.h.
#include "platform/uv_server.h"
#include "platform/uv_connection.h"

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
      // EOF or reset. The slot taken for this read holds nothing yet (an idle keep-alive connection
      // closing): it goes back now, not after the close callbacks, so that many connections
      // closing at once reuse one slot instead of touching one each (~23 KiB of RSS apiece).
      if (c->phase == Phase::Parsing && c->slot != nullptr && !c->slot->parser.started()) self->releaseSlot(c);
      self->closeConnection(c);
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
    if (c->file != nullptr && c->file->left > 0) return readFileChunk(c);
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

// Reply bodies are rare and small next to uploads, so each download gets its ReplyFile (a 64 KiB
// buffer and its fs request) from the heap for its duration rather than a pool of its own.
void UvServer::startFile(Connection* c) {
  Exchange& ex = c->slot->exchange;
  c->fileStarted = true;
  c->file = new (std::nothrow) ReplyFile;
  if (c->file == nullptr) return closeConnection(c);
  c->file->offset = ex.fileOffset();
  c->file->left = ex.fileLength();
  c->file->req.data = c;
  c->fileBusy = true;
  if (uv_fs_open(loop_, &c->file->req, ex.filePath(), O_RDONLY | O_CLOEXEC, 0, onFileOpenThunk) < 0) {
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
  if (fd >= 0) c->file->fd = static_cast<uv_file>(fd);
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
  ReplyFile& f = *c->file;
  size_t n = f.left < kFileChunkBytes ? static_cast<size_t>(f.left) : kFileChunkBytes;
  uv_buf_t b = uv_buf_init(f.buf, static_cast<unsigned>(n));
  f.req.data = c;
  c->fileBusy = true;
  if (uv_fs_read(loop_, &f.req, f.fd, &b, 1, static_cast<int64_t>(f.offset), onFileReadThunk) < 0) {
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
  c->file->offset += static_cast<uint64_t>(n);
  c->file->left -= static_cast<uint64_t>(n);
  if (c->tls != nullptr) {
    if (!self->tlsSend(c, c->file->buf, static_cast<size_t>(n), true)) self->closeConnection(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->file->buf, static_cast<unsigned>(n));
  if (uv_write(&c->slot->writeReq, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, onWriteThunk) != 0) {
    self->closeConnection(c);
  }
}

void UvServer::endFile(Connection* c) {
  if (c->file != nullptr && c->file->fd >= 0) {
    uv_fs_t req;
    uv_fs_close(loop_, &req, c->file->fd, nullptr);
    uv_fs_req_cleanup(&req);
  }
  delete c->file;
  c->file = nullptr;
  c->fileStarted = false;
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
    if (ex.sendsFile()) r.bytesOut += ex.fileLength() - (c->file != nullptr ? c->file->left : 0);
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
