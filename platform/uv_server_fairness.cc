// Who gets a place, a request slot and a read buffer when they run short (issue 20): accepting and
// the connection cap (making room, refusing), slow request heads and their eviction, the wait
// queues, and the lingering close after an answer that ends a connection. See DESIGN.md "Memory".
#include "platform/uv_server.h"
#include "platform/uv_connection.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/log.h"
#include "core/response.h"
#include "platform/access_log_writer.h"
#include "platform/uv_storage.h"

namespace bitsd::platform {

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
  c->stream.init(loop_, tls_);
  c->stream.data = c;
  c->sinceMs = uv_now(loop_);
  ++stats_.active;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), reinterpret_cast<uv_stream_t*>(c->stream.tcp())) != 0) {
    closeConnection(c);
    return;
  }
  ++stats_.accepted;
  {
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(c->stream.tcp(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
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
      c->stream.readStart([](Stream*, uv_buf_t* buf) { *buf = uv_buf_init(nullptr, 0); }, onAdmitReadThunk);
      return;
    }
  }
  admit(c);
}

void UvServer::onAdmitReadThunk(Stream* s, ssize_t nread, const uv_buf_t*) {
  // No buffer was given, so nothing was read: UV_ENOBUFS says bytes (or EOF) are there to look at.
  // (The stream is not started: a TLS one reads nothing here either.)
  Connection* c = static_cast<Connection*>(s->data);
  if (nread == 0) return;
  s->readStop();
  c->server->decideAdmission(c);
}

void UvServer::decideAdmission(Connection* c) {
  c->admitting = false;
  disarm(c);
  bool nothingYet = false;
  if (serving_ < settings_.maxConnections || makeRoom(newcomerReady(c, &nothingYet))) return admit(c);
  refuse(c);
}

void UvServer::refuse(Connection* c) {
  // Over the limit: a one-shot 503 from a reserve slot, then close (§7: transient for the client).
  // A stream that needs a handshake first (TLS) has no way to say it: just close.
  ++stats_.rejected;
  c->reject = true;
  if (!c->stream.established()) {
    logLimited(LogLevel::Warn, "max-connections close", "connection closed: max-connections (%u) reached", settings_.maxConnections);
    closeConnection(c);
    return;
  }
  char text[kMaxAckBytes];
  (void)c->stream.writeNow(text, formatServerBusy(text));
  logLimited(LogLevel::Warn, "max-connections 503", "connection refused with 503: max-connections (%u) reached", settings_.maxConnections);
  closeConnection(c);
}

void UvServer::admit(Connection* c) {
  ++serving_;
  c->serving = true;
  uv_tcp_nodelay(c->stream.tcp(), 1);
  if (!c->stream.start(onStreamEventThunk, settings_.tlsBufferBytes)) {
    logf(LogLevel::Warn, "TLS: out of memory for a connection");
    closeConnection(c);
    return;
  }
  // A handshake (TLS) first gets tls-handshake-timeout-ms; then the idle timeout (onStreamEvent).
  arm(c, c->stream.established() ? settings_.idleTimeoutMs : settings_.tlsHandshakeTimeoutMs);
  startReading(c);
}

// ---------------------------------------------------------------------------------------------------
// Pools and waiting

bool UvServer::acquireSlot(Connection* c) {
  if (freeSlotCount_ == 0) return false;
  uint32_t i = freeSlots_[--freeSlotCount_];
  if (!slotBuilt_[i]) {
    new (&slots_[i]) RequestSlot(settings_.maxHeaderBytes, settings_.transactionHeader);
    slotBuilt_[i] = true;
  }
  c->slot = &slots_[i];
  c->slot->owner = c;
  c->slot->exchange.setHost(c);
  c->stream.lend(&c->slot->write);
  c->slot->exchange.setPeer(c->peer);
  c->slot->parser.reset();
  return true;
}

void UvServer::releaseSlot(Connection* c) {
  if (c->slot == nullptr) return;
  // No answer is in flight (they end before the slot goes, or the close callbacks came first).
  BITS_CHECK(!c->slot->write.busy);
  endFile(c);  // (done already wherever a download ends)
  endForward(c);  // (likewise, wherever a forward ends)
  releaseAhead(c);  // (parsed before any request ends; this only covers a close)
  c->stream.lend(nullptr);
  c->slot->exchange.setHost(nullptr);
  c->slot->owner = nullptr;
  freeSlots_[freeSlotCount_++] = static_cast<uint32_t>(c->slot - slots_);
  c->slot = nullptr;
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
  c->slot->startNs = uv_hrtime();
  c->slot->bodyIn = 0;
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
  BITS_CHECK(!s->write.busy);
  v->stream.lend(nullptr);
  engine_.finish(s->exchange);
  s->exchange.setHost(nullptr);
  s->owner = nullptr;
  v->slot = nullptr;
  freeSlots_[freeSlotCount_++] = static_cast<uint32_t>(s - slots_);
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
  std::string_view head;
  Stream::Peek p = c->stream.peek(peekBuf_, settings_.maxHeaderBytes, &head);
  if (p == Stream::Peek::Nothing) *nothingYet = true;
  if (p == Stream::Peek::Record) return true;  // a whole TLS record (its first handshake message)
  if (p != Stream::Peek::Data) return false;
  return head.size() >= settings_.maxHeaderBytes || head.find("\r\n\r\n") != std::string_view::npos;
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
    bool handshake = !o->stream.established();
    if (!handshake && o->answered && o->waitingFor < 0) {
      if (idle == nullptr || o->sinceMs < idle->sinceMs) idle = o;
      continue;
    }
    if (!ready || (slow != nullptr && o->sinceMs >= slowSince)) continue;
    size_t n = 0;
    if (!handshake) {
      std::string_view head;
      Stream::Peek p = o->stream.peek(peekBuf_, settings_.maxHeaderBytes, &head);
      if (p == Stream::Peek::End) continue;  // EOF or an error: its read reports it
      if (p == Stream::Peek::Data) {
        n = head.size();
        if (n >= settings_.maxHeaderBytes || head.find("\r\n\r\n") != std::string_view::npos) {
          continue;  // a whole head: its read comes next
        }
        if (settings_.headerMinRate > 0 &&
            static_cast<uint64_t>(n) * 1000 >= static_cast<uint64_t>(settings_.headerMinRate) * (now - o->sinceMs)) {
          continue;  // keeps up
        }
      } else if (p == Stream::Peek::Partial) {
        n = 1;  // part of a TLS record: it has sent something
      }
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
       settings_.maxConnections, !slow->stream.established() ? "TLS handshake" : "request head",
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
  // The stream says goodbye (close_notify over TLS), shuts its side and from now on reads raw bytes.
  if (shuttingDown_ || c->reject || (c->slot != nullptr && c->slot->exchange.inFlight()) ||
      !c->stream.shutdownWrite()) {
    closeConnection(c);
    return;
  }
  stopReading(c);
  removeWaiter(c);
  endForward(c);  // before releaseBuffer: a write to the peer may be reading c->rbuf
  endFile(c);
  if (c->slot != nullptr) {
    engine_.finish(c->slot->exchange);
    releaseSlot(c);
  }
  releaseBuffer(c);
  c->heldOff = false;
  c->phase = Phase::Lingering;
  c->lingerStartMs = uv_now(loop_);
  c->lingerBytes = 0;
  if (c->serving) {
    c->serving = false;
    --serving_;
  }
  c->stream.readStart(onLingerAllocThunk, onLingerReadThunk);
  arm(c, kLingerIdleMs);
}

void UvServer::onLingerAllocThunk(Stream* s, uv_buf_t* buf) {
  // Every byte is thrown away as soon as it is read, so one buffer serves every connection.
  *buf = uv_buf_init(static_cast<Connection*>(s->data)->server->discardBuf_, kDiscardBytes);
}

void UvServer::onLingerReadThunk(Stream* s, ssize_t nread, const uv_buf_t*) {
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
  // Peeks at what waits without taking it: a whole head (or one too big, which gets its 431 at
  // once), EOF or an error all let the request through at once. Costs one recv per try (plain), and
  // only when free slots are down to the reserve. Over TLS it sees the plaintext of the next record
  // only: a head spread over several records counts as incomplete; an alert as complete.
  std::string_view head;
  switch (c->stream.peek(peekBuf_, settings_.maxHeaderBytes, &head)) {
    case Stream::Peek::End:
    case Stream::Peek::Record:
      return true;
    case Stream::Peek::Nothing:
    case Stream::Peek::Partial:
      return false;
    case Stream::Peek::Data:
      break;
  }
  return head.size() >= settings_.maxHeaderBytes || head.find("\r\n\r\n") != std::string_view::npos;
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
  if (kind == kWaitBuffer) {
    startReading(c);  // (over TLS the stream hands over what mbedTLS holds already)
  } else {
    pump(c);
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading and parsing

}  // namespace bitsd::platform
