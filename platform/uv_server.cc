// UvServer's request path: a connection's reads, parsing and the engine's turns (onExchangeReady),
// answers and reply downloads, the timers, the access-log line of each request, and closing. The
// listener, the pools, reload and shutdown are in uv_server_lifecycle.cc; who gets a place, a slot
// or a buffer under pressure in uv_server_fairness.cc; what a connection holds in uv_connection.h. It reads and writes plaintext
// through each connection's Stream (stream.h), which hides whether TLS runs underneath.
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

// ---------------------------------------------------------------------------------------------------
// Accepting

char* UvServer::takeBuffer() {
  if (freeBufferCount_ == 0) return nullptr;
  uint32_t i = freeBuffers_[--freeBufferCount_];
  return buffers_ + static_cast<size_t>(i) * settings_.readBufferBytes;
}

void UvServer::releaseBuffer(Connection* c) {
  if (c->rbuf == nullptr) return;
  char* b = c->rbuf;
  c->rbuf = nullptr;
  c->rpos = c->rlen = 0;
  giveBackBuffer(b);
}

// A body write runs from c->rbuf (WaitBody). Without read-ahead the connection would read nothing
// until it completes, so the socket, the write and the hash would take turns; with it, the next
// body bytes arrive meanwhile. Only body bytes of this request that are still to come from the
// socket (Content-Length less what was parsed and what waits unparsed in rbuf), at most one
// buffer, and only when no connection waits for a buffer and more than a quarter of the pool is
// free: a second buffer per upload must never keep another connection from reading at all.
bool UvServer::readAhead(Connection* c) {
  RequestSlot& rs = *c->slot;
  if (rs.ahead == nullptr) {
    const RequestHead& h = rs.parser.head();
    if (!h.hasContentLength || h.contentLength <= rs.bodyIn) return false;
    uint64_t unparsed = c->rlen - c->rpos;
    uint64_t toCome = h.contentLength - rs.bodyIn;
    if (toCome <= unparsed) return false;
    toCome -= unparsed;
    if (waitHead_[kWaitBuffer] != nullptr || freeBufferCount_ <= settings_.readBuffers / 4) return false;
    rs.ahead = takeBuffer();
    rs.aheadLen = 0;
    rs.aheadCap = static_cast<uint32_t>(toCome < settings_.readBufferBytes ? toCome : settings_.readBufferBytes);
  }
  if (rs.aheadLen == rs.aheadCap) return false;
  startReading(c);  // (no-op when the read that brought these bytes is still on)
  return !c->closing;
}

// The rbuf is used up: the bytes read ahead become the rbuf. Reading stops first, because
// onAllocThunk only gives a connection in Parsing a buffer when it holds none.
bool UvServer::takeAhead(Connection* c) {
  if (c->slot == nullptr || c->slot->ahead == nullptr) return false;
  RequestSlot& rs = *c->slot;
  stopReading(c);
  if (rs.aheadLen == 0) {
    releaseAhead(c);
    return false;
  }
  c->rbuf = rs.ahead;
  c->rpos = 0;
  c->rlen = rs.aheadLen;
  rs.ahead = nullptr;
  rs.aheadLen = rs.aheadCap = 0;
  return true;
}

void UvServer::releaseAhead(Connection* c) {
  if (c->slot == nullptr || c->slot->ahead == nullptr) return;
  char* b = c->slot->ahead;
  c->slot->ahead = nullptr;
  c->slot->aheadLen = c->slot->aheadCap = 0;
  giveBackBuffer(b);
}

// A read while the body write runs: it went into the read-ahead buffer.
void UvServer::onReadAhead(Connection* c, ssize_t nread) {
  RequestSlot& rs = *c->slot;
  if (nread == UV_ENOBUFS || nread == 0) {  // (full: not asked for; 0: nothing after all)
    if (nread == UV_ENOBUFS) stopReading(c);
    return;
  }
  if (nread < 0) {
    // The client went away (or TLS failed) in the middle of the body: the fragment cannot be
    // completed, as when this is found after the write (onReadThunk).
    if (nread != UV_EOF && c->stream.lastError()[0] != '\0') {
      logLimited(LogLevel::Info, "stream read failed", "%s", c->stream.lastError());
    }
    closeConnection(c);
    return;
  }
  rs.aheadLen += static_cast<uint32_t>(nread);
  stats_.readAheadBytes += static_cast<uint64_t>(nread);
  if (rs.aheadLen == rs.aheadCap) stopReading(c);
}

// Over TLS the stream may hand over records it already holds from inside readStart.
void UvServer::startReading(Connection* c) {
  if (c->stream.reading() || c->closing) return;
  c->stream.readStart(onAllocThunk, onReadThunk);
}

void UvServer::stopReading(Connection* c) { c->stream.readStop(); }

void UvServer::arm(Connection* c, uint32_t ms) {
  if (c->closing) return;  // its timeouts are over (onTimer would ignore it)
  // At least 1 ms: a deadline of now re-armed from inside onConnTimer would be due at once again.
  c->deadline = uv_now(loop_) + (ms > 0 ? ms : 1);
  if (c->heapPos == kNotArmed) {
    c->heapPos = timerCount_;
    timerHeap_[timerCount_++] = c;
  }
  heapFix(c->heapPos);
  scheduleTimer();
}

void UvServer::disarm(Connection* c) {
  if (c->heapPos == kNotArmed) return;
  uint32_t pos = c->heapPos;
  c->heapPos = kNotArmed;
  Connection* last = timerHeap_[--timerCount_];
  if (pos < timerCount_) {
    timerHeap_[pos] = last;
    last->heapPos = pos;
    heapFix(pos);
  }
  scheduleTimer();
}

void UvServer::heapSwap(uint32_t a, uint32_t b) {
  Connection* t = timerHeap_[a];
  timerHeap_[a] = timerHeap_[b];
  timerHeap_[b] = t;
  timerHeap_[a]->heapPos = a;
  timerHeap_[b]->heapPos = b;
}

// Moves the entry at `pos` up or down to where its deadline belongs.
void UvServer::heapFix(uint32_t pos) {
  while (pos > 0 && timerHeap_[pos]->deadline < timerHeap_[(pos - 1) / 2]->deadline) {
    heapSwap(pos, (pos - 1) / 2);
    pos = (pos - 1) / 2;
  }
  for (;;) {
    uint32_t least = pos;
    uint32_t l = 2 * pos + 1, r = l + 1;
    if (l < timerCount_ && timerHeap_[l]->deadline < timerHeap_[least]->deadline) least = l;
    if (r < timerCount_ && timerHeap_[r]->deadline < timerHeap_[least]->deadline) least = r;
    if (least == pos) return;
    heapSwap(pos, least);
    pos = least;
  }
}

void UvServer::scheduleTimer() {
  if (inTimers_ || handlesClosed_) return;
  if (timerCount_ == 0) {
    if (timerDue_ != UINT64_MAX) uv_timer_stop(&connTimer_);
    timerDue_ = UINT64_MAX;
    return;
  }
  uint64_t due = timerHeap_[0]->deadline;
  if (due == timerDue_) return;
  timerDue_ = due;
  uint64_t now = uv_now(loop_);
  uv_timer_start(&connTimer_, onTimerThunk, due > now ? due - now : 0, 0);
}

void UvServer::onAllocThunk(Stream* s, uv_buf_t* buf) {
  Connection* c = static_cast<Connection*>(s->data);
  UvServer* self = c->server;
  // Resource order: a request slot first, then a read buffer. A connection never holds a buffer
  // while it waits for a slot; otherwise, with more requests than slots, the buffers could all sit
  // with connections waiting for slots while every slot holder waits for a buffer, and nothing
  // would move again (found by 100 uploads against 64 slots and 16 buffers).
  if (c->phase == Phase::WaitBody) {  // reading ahead (readAhead): the rest of the second buffer
    RequestSlot* rs = c->slot;
    bool room = rs != nullptr && rs->ahead != nullptr && rs->aheadLen < rs->aheadCap;
    *buf = room ? uv_buf_init(rs->ahead + rs->aheadLen, rs->aheadCap - rs->aheadLen) : uv_buf_init(nullptr, 0);
    return;
  }
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

void UvServer::onReadThunk(Stream* s, ssize_t nread, const uv_buf_t* buf) {
  Connection* c = static_cast<Connection*>(s->data);
  UvServer* self = c->server;
  if (c->phase == Phase::WaitBody) return self->onReadAhead(c, nread);
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
      if (nread != UV_EOF && s->lastError()[0] != '\0') {
        logLimited(LogLevel::Info, "stream read failed", "%s", s->lastError());
      }
      // EOF, reset, or a TLS error or close_notify. The slot taken for this read holds nothing yet
      // (an idle keep-alive connection closing): it goes back now, not after the close callbacks,
      // so that many connections closing at once reuse one slot instead of touching one each
      // (~23 KiB of RSS apiece).
      if (c->phase == Phase::Parsing && c->slot != nullptr && !c->slot->parser.started()) self->releaseSlot(c);
      self->closeConnection(c);
    } else if (c->phase == Phase::Parsing && c->slot != nullptr && !c->slot->parser.started()) {
      // Nothing to read after all (EAGAIN, or no whole TLS record yet): the slot taken for this
      // read goes back, so an idle connection holds none.
      self->releaseSlot(c);
      self->arm(c, self->settings_.idleTimeoutMs);
    } else if (c->phase == Phase::Parsing && c->slot != nullptr && c->slot->parser.headersDone()) {
      self->arm(c, self->settings_.bodyTimeoutMs);  // a part of a TLS record came
    }
    if (buf->base != nullptr) self->wakeWaiter(kWaitBuffer);
    return;
  }
  c->rbuf = buf->base;
  c->rpos = 0;
  c->rlen = static_cast<uint32_t>(nread);
  if (c->slot != nullptr && c->slot->parser.headersDone()) self->arm(c, self->settings_.bodyTimeoutMs);
  self->pump(c);
}

void UvServer::pump(Connection* c) {
  static const char kNothing[1] = {0};
  if (c->phase == Phase::Forwarding) return forwardPump(c);  // the body goes to the session's owner
  // After HeadersComplete and Body events llhttp must run once more, even on no input, to report
  // the end of a request whose body is already complete.
  bool kick = c->slot != nullptr && c->slot->parser.headersDone();
  while (!c->closing && c->phase == Phase::Parsing) {
    if (c->rpos == c->rlen && !kick) {
      releaseBuffer(c);
      if (takeAhead(c)) continue;
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
    c->rpos += static_cast<uint32_t>(used);
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
        rs.bodyIn += rs.parser.body().size();
        if (engine_.onBody(rs.exchange, rs.parser.body()) == Flow::Wait) {
          // The bytes are being written straight from c->rbuf: hold it; read what comes next
          // into a second buffer meanwhile, or nothing.
          c->phase = Phase::WaitBody;
          if (!readAhead(c)) stopReading(c);
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
    uv_buf_t b = uv_buf_init(const_cast<char*>(kContinue), sizeof kContinue - 1);
    if (!c->stream.write(&b, 1, nullptr)) return closeConnection(c);
  }
  if (!ex.forwardTo().empty()) startForward(c);  // farm mode: the session's owner answers (uv_forward.cc)
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
    case Phase::Writing:  // a part of a reply download was read
      onFileChunk(c);
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
  uv_buf_t b = uv_buf_init(const_cast<char*>(r.data()), static_cast<unsigned>(r.size()));
  if (!c->stream.write(&b, 1, onWriteThunk)) closeConnection(c);
}

void UvServer::onWriteThunk(Stream* s, int status, uint64_t) {
  Connection* c = static_cast<Connection*>(s->data);
  c->server->onWrite(c, status);
}

void UvServer::onWrite(Connection* c, int status) {
  if (c->closing || c->phase == Phase::Lingering) return;  // cancelled by uv_close; the close callback cleans up
  if (c->phase == Phase::Forwarding) return forwardClientWritten(c, status);
  if (status < 0) {
    closeConnection(c);
    return;
  }
  Exchange& ex = c->slot->exchange;
  if (ex.sendsFile()) {
    if (!c->slot->fileStarted) return startFile(c);
    if (c->slot->fileLeft > 0) return readFileChunk(c);
    endFile(c);
  }
  bool close = ex.closeAfterResponse() || shuttingDown_;
  uint32_t holdOff = ex.holdOffMs();
  logRequest(c, ex.status(), nullptr);
  engine_.finish(ex);
  nextRequest(c, close, holdOff);
}

// The answer is out and the exchange finished: close, or wait for (or parse) the next request.
void UvServer::nextRequest(Connection* c, bool close, uint32_t holdOff) {
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
// heap for its duration rather than a pool of its own. The engine reads the reply file into it
// through Storage (UploadEngine::readReply), one part per write.
void UvServer::startFile(Connection* c) {
  Exchange& ex = c->slot->exchange;
  c->slot->fileStarted = true;
  c->slot->fileLeft = ex.fileLength();
  c->slot->fileBuf = static_cast<char*>(std::malloc(kFileChunkBytes));
  if (c->slot->fileBuf == nullptr) return closeConnection(c);
  readFileChunk(c);
}

void UvServer::readFileChunk(Connection* c) {
  arm(c, settings_.bodyTimeoutMs);
  size_t n = c->slot->fileLeft < kFileChunkBytes ? static_cast<size_t>(c->slot->fileLeft) : kFileChunkBytes;
  // Wait: the read runs through Storage and onFileChunk follows. Continue: the engine filled the
  // buffer itself (a multipart delimiter and part head).
  if (engine_.readReply(c->slot->exchange, std::span<char>(c->slot->fileBuf, n)) == Flow::Continue) onFileChunk(c);
}

// The engine read the next part of the reply (onExchangeReady while Writing): send it.
void UvServer::onFileChunk(Connection* c) {
  std::span<const char> part = c->slot->exchange.replyChunk();
  if (part.empty()) return closeConnection(c);  // the file is gone or short: the client retries
  c->slot->fileLeft -= part.size();
  uv_buf_t b = uv_buf_init(const_cast<char*>(part.data()), static_cast<unsigned>(part.size()));
  if (!c->stream.write(&b, 1, onWriteThunk)) closeConnection(c);
}

void UvServer::endFile(Connection* c) {
  if (c->slot == nullptr) return;  // a download holds its slot until endFile (releaseSlot calls it)
  std::free(c->slot->fileBuf);
  c->slot->fileBuf = nullptr;
  c->slot->fileStarted = false;
  c->slot->fileLeft = 0;
}

// ---------------------------------------------------------------------------------------------------
// Timeouts and closing

void UvServer::onTimerThunk(uv_timer_t* t) { static_cast<UvServer*>(t->data)->onConnTimer(); }

void UvServer::onConnTimer() {
  timerDue_ = UINT64_MAX;  // it fired
  inTimers_ = true;
  uint64_t now = uv_now(loop_);
  while (timerCount_ > 0 && timerHeap_[0]->deadline <= now) {
    Connection* c = timerHeap_[0];
    disarm(c);
    onTimer(c);  // may arm, disarm or close any connection
  }
  inTimers_ = false;
  scheduleTimer();
}

void UvServer::onTimer(Connection* c) {
  if (c->closing) return;
  if (c->phase == Phase::Lingering) return closeConnection(c);
  if (c->admitting) {  // its first bytes did not come within kAdmitGraceMs
    c->stream.readStop();
    return decideAdmission(c);
  }
  if (c->heldOff) {  // the Retry-After time is over: read the next request
    c->heldOff = false;
    arm(c, settings_.idleTimeoutMs);
    pump(c);
    return;
  }
  if (!c->stream.established()) {
    ++stats_.tlsFailures;
    logLimited(LogLevel::Info, "tls handshake timeout", "TLS handshake not finished within %u ms: connection closed", settings_.tlsHandshakeTimeoutMs);
    closeConnection(c);
    return;
  }
  if (c->phase == Phase::Forwarding) return forwardTimeout(c);
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
  char text[kMaxAckBytes];
  size_t len = formatRequestTimeout(text);
  (void)c->stream.writeNow(text, len);
  if (c->slot != nullptr) {
    // The Exchange did not format this answer: say what was sent.
    c->sent408 = static_cast<uint32_t>(len);
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
  // Until its head is complete, a request has not reached the engine, and the slot's exchange still
  // describes the last request the slot served (maybe another connection's): none of it is logged.
  // (A head the parser refused is the exception: formatProtocolError cleared the exchange.)
  const bool reached = parser.headersDone();
  if (reached) r.user = engine_.userOf(ex);
  if (reached) {
    const RequestHead& h = parser.head();
    r.hasRequest = true;
    r.method = h.method;
    r.target = h.target;
    r.httpMajor = h.httpMajor;
    r.httpMinor = h.httpMinor;
    if (h.has(HeaderId::ContentRange)) r.contentRange = h.value(HeaderId::ContentRange);
  }
  r.packet = reached ? ex.packetType() : PacketType::Unknown;
  r.session = reached ? ex.sessionId() : nullptr;
  r.status = status;
  if (status == 408 && c->sent408 > 0) {
    r.hasError = true;
    r.errorCode = kRequestTimeoutErrorCode;
    r.bytesOut = c->sent408;
    c->sent408 = 0;
  } else if (status != 0) {
    r.hasError = ex.hasErrorCode();
    r.errorCode = ex.errorCode();
    r.bytesOut = ex.response().size();
    if (ex.sendsFile()) r.bytesOut += ex.fileLength() - c->slot->fileLeft;
  }
  r.bytesIn = c->slot->bodyIn;
  r.durationUs = (uv_hrtime() - c->slot->startNs) / 1000;
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
  disarm(c);
  if (c->slot != nullptr && c->slot->exchange.inFlight()) return;  // onExchangeReady finishes it
  finishClose(c);
}

void UvServer::finishClose(Connection* c) {
  // First: closing the peer's socket ends any write of ours from c->rbuf (released below).
  endForward(c);
  endFile(c);
  if (c->slot != nullptr && c->slot->parser.started()) logRequest(c, 0, nullptr);  // cut off: no answer
  if (c->slot != nullptr) engine_.finish(c->slot->exchange);
  releaseAhead(c);
  releaseBuffer(c);
  c->pendingCloses = 1;
  c->stream.close(onStreamClosedThunk);
}

void UvServer::onStreamClosedThunk(Stream* s) {
  Connection* c = static_cast<Connection*>(s->data);
  c->server->onHandleClosed(c);
}

void UvServer::onStreamEventThunk(Stream* s, Stream::Event event, const char* why) {
  Connection* c = static_cast<Connection*>(s->data);
  UvServer* self = c->server;
  switch (event) {
    case Stream::Event::Ready:
      ++self->stats_.tlsHandshakes;
      logf(LogLevel::Debug, "TLS handshake done: %s", s->detail());
      self->arm(c, self->settings_.idleTimeoutMs);
      return;
    case Stream::Event::HandshakeFailed:
      ++self->stats_.tlsFailures;
      if (why != nullptr) logLimited(LogLevel::Info, "tls handshake failed", "TLS handshake failed: %s", why);
      return self->closeConnection(c);
    case Stream::Event::Failed:
      if (!c->closing) self->closeConnection(c);
      return;
  }
}

void UvServer::onHandleClosed(Connection* c) {
  if (--c->pendingCloses > 0) return;
  // Only now are the stream's writes surely finished with (a cancelled write calls back first).
  releaseSlot(c);
  disarm(c);
  uint32_t idx = static_cast<uint32_t>(c - conns_);
  bool wasServing = c->serving;
  c->~Connection();
  connUsed_[idx] = false;
  freeConns_[freeConnCount_++] = idx;
  --stats_.active;
  if (wasServing) --serving_;
  if (acceptPaused_) acceptPending();
  if (shuttingDown_) maybeFinishShutdown();
}

}  // namespace bitsd::platform
