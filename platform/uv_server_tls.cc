// The TLS record layer of a UvServer connection: ciphertext in and out, decrypting into pool buffers
// for the parser, encrypting answers and reply chunks. See DESIGN.md "TLS and authentication".
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
#include "platform/tls.h"
#include "platform/uv_storage.h"

namespace bitsd::platform {

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

}  // namespace bitsd::platform
