// The TLS backend of Stream (stream.h): ciphertext from the socket into the stream's own buffer, the
// handshake, records decrypted into the user's buffers, plaintext encrypted into the preallocated
// write requests, the plaintext peek for the server's slot reserve, and close_notify. Every mbedTLS
// call is in TlsSession (tls.cc; tls_off.cc in a build without TLS). See DESIGN.md "Transport".
#include <cstring>
#include <new>

#include "core/log.h"
#include "platform/stream.h"
#include "platform/tls.h"

namespace bitsd::platform {

// mbedTLS keeps its own record buffers (16 KiB in and out with Debian's build); `in` only holds what
// the socket gave and mbedTLS has not taken yet.
struct StreamTls {
  explicit StreamTls(size_t cap) : in(new (std::nothrow) char[cap]), inCap(in != nullptr ? cap : 0) {}
  ~StreamTls() { delete[] in; }
  StreamTls(const StreamTls&) = delete;
  StreamTls& operator=(const StreamTls&) = delete;
  TlsSession session;
  // Ciphertext from the socket, tls-buffer-bytes long (board-sized): 64 KiB takes several records
  // per read on a fast link; a small board can go down to 1 KiB, and mbedTLS assembles each record
  // from as many reads as it takes.
  char* in;
  size_t inCap;
  size_t inPos = 0, inLen = 0;
  std::string out;  // ciphertext mbedTLS produced, not yet on a write request (capacity kept)
  bool handshakeDone = false;
  // A close_notify or an error met after plaintext that went to the user: reported next, as mbedTLS
  // does not say it twice.
  TlsSession::Result end = TlsSession::Result::Done;
  std::string endWhy;
  bool outWaits = false;             // `out` waits for a free write request
  Stream::WriteFn outCb = nullptr;   // ... and the user's callback for it
  uint64_t outTag = 0;
  std::string error;  // what lastError() says
  // The write request of a stream with none of its own (a server connection's LentStream): its
  // handshake records come before it holds a slot to borrow one from.
  Stream::WriteReq req;
};

bool Stream::tlsDone() const { return tls_ != nullptr && tls_->handshakeDone; }

const char* Stream::lastError() const { return tls_ != nullptr ? tls_->error.c_str() : ""; }

Stream::WriteReq* Stream::tlsRequest() { return writeCount_ == 0 && tls_ != nullptr ? &tls_->req : nullptr; }

bool Stream::tlsWriting() const { return tls_ != nullptr && tls_->req.busy; }

void Stream::tlsFree() {
  delete tls_;
  tls_ = nullptr;
}

bool Stream::tlsStart(size_t inBytes, const char* hostname) {
  tls_ = new (std::nothrow) StreamTls(inBytes);
  if (tls_ != nullptr) {
    tls_->req.stream = this;
    tls_->req.req.data = &tls_->req;
  }
  bool ok = tls_ != nullptr && tls_->in != nullptr &&
            tls_->session.setup(
                ctx_, this,
                [](void* io, const unsigned char* buf, size_t len) -> int {
                  // Collected, and put on a write request once mbedTLS returns (tlsFlush). Grown in
                  // whole KiB, so that an answer a byte longer than the last (a longer range) fits.
                  std::string& out = static_cast<Stream*>(io)->tls_->out;
                  size_t need = out.size() + len;
                  if (need > out.capacity()) out.reserve((need + 1023) & ~size_t{1023});
                  out.append(reinterpret_cast<const char*>(buf), len);
                  return static_cast<int>(len);
                },
                [](void* io, unsigned char* buf, size_t len) -> int {
                  StreamTls* t = static_cast<Stream*>(io)->tls_;
                  size_t have = t->inLen - t->inPos;
                  if (have == 0) return TlsSession::kWantRead;
                  size_t n = have < len ? have : len;
                  std::memcpy(buf, t->in + t->inPos, n);
                  t->inPos += n;
                  if (t->inPos == t->inLen) t->inPos = t->inLen = 0;
                  return static_cast<int>(n);
                },
                hostname);
  if (!ok) {
    tlsFree();
    return false;
  }
  mode_ = Mode::Tls;
  if (ctx_->isClient()) tlsHandshake();  // the client speaks first
  return true;
}

std::string Stream::certificateProblem() const { return tls_ != nullptr ? tls_->session.certificateProblem() : ""; }

// One step of the handshake on what has come; false once it failed (the user has heard).
bool Stream::tlsHandshake() {
  std::string why;
  TlsSession::Result hs = tls_->session.handshake(&why);
  if (!tlsFlush(nullptr)) {
    if (event_ != nullptr) event_(this, Event::Failed, "cannot send");
    return false;
  }
  if (hs == TlsSession::Result::WantMore) return false;
  if (hs != TlsSession::Result::Done) {
    if (event_ != nullptr) event_(this, Event::HandshakeFailed, why.c_str());
    return false;
  }
  tls_->handshakeDone = true;
  if (event_ != nullptr) event_(this, Event::Ready, nullptr);
  return true;
}

const char* Stream::detail() const { return tls_ != nullptr ? tls_->session.suite() : ""; }

void Stream::tlsAlloc(uv_buf_t* buf) {
  // mbedTLS takes what it needs of `in` before we read again, so there is room unless a record is
  // still being assembled; then read into what is left.
  *buf = uv_buf_init(tls_->in + tls_->inLen, static_cast<unsigned>(tls_->inCap - tls_->inLen));
}

void Stream::tlsRead(ssize_t nread) {
  if (nread == 0) return;
  uv_buf_t none = uv_buf_init(nullptr, 0);
  if (nread == UV_ENOBUFS) {  // `in` full and mbedTLS not taking it: cannot happen while we read
    logf(LogLevel::Warn, "TLS: input buffer full; connection closed");
    return read_(this, UV_EPROTO, &none);
  }
  if (nread < 0) {
    if (!tls_->handshakeDone && nread != UV_EOF && event_ != nullptr) event_(this, Event::HandshakeFailed, nullptr);
    if (!closing_) read_(this, nread, &none);
    return;
  }
  tls_->inLen += static_cast<size_t>(nread);
  if (!tls_->handshakeDone && !tlsHandshake()) return;
  if (reading_ && !closing_ && mode_ == Mode::Tls) tlsDeliver();
}

// Decrypts into the user's buffers while the user reads and whole records are there. Each buffer
// takes every record the ciphertext holds, so a fragment's bytes reach the disk in writes as large
// as on a plain read, not one 16 KiB record at a time.
void Stream::tlsDeliver() {
  if (delivering_) return;  // called back from inside the loop below: it goes on by itself
  delivering_ = true;
  while (reading_ && !closing_ && mode_ == Mode::Tls) {
    StreamTls* t = tls_;
    const char* plain = nullptr;
    size_t n = 0;
    uv_buf_t b = uv_buf_init(nullptr, 0);
    if (t->end != TlsSession::Result::Done) {
      t->error = t->end == TlsSession::Result::Closed ? "TLS close_notify" : "TLS read failed: " + t->endWhy;
      read_(this, t->end == TlsSession::Result::Closed ? UV_EOF : UV_EPROTO, &b);
      break;
    }
    TlsSession::Result pr = t->session.peek(&plain, &n);
    if (pr == TlsSession::Result::Closed) {  // close_notify: a clean end
      t->error = "TLS close_notify";
      read_(this, UV_EOF, &b);
      break;
    }
    if (pr == TlsSession::Result::WantMore) {
      // No whole record yet: nothing to read; say so (the user gives back what it took for it).
      if (!tlsFlush(nullptr)) {
        t->error = "TLS: cannot send";
        read_(this, UV_EPROTO, &b);
        break;
      }
      read_(this, 0, &b);
      break;
    }
    alloc_(this, &b);
    if (b.base == nullptr || b.len == 0) {
      read_(this, UV_ENOBUFS, &b);
      break;
    }
    if (mode_ != Mode::Tls || closing_) break;  // the user's alloc ended the stream
    size_t got = 0;
    TlsSession::Result r = TlsSession::Result::Done;
    std::string why;
    while (got < b.len) {
      size_t k = t->session.read(b.base + got, b.len - got, &r, &why);
      if (k == 0) break;
      got += k;
    }
    if (got > 0) {  // an error or close_notify after these bytes shows on the next turn
      if (r == TlsSession::Result::Closed || r == TlsSession::Result::Failed) {
        t->end = r;
        t->endWhy = why;
      }
      read_(this, static_cast<ssize_t>(got), &b);
      continue;
    }
    if (!tlsFlush(nullptr)) {
      r = TlsSession::Result::Failed;
      why = "cannot send";
    }
    if (r == TlsSession::Result::WantMore) {
      read_(this, 0, &b);
      break;
    }
    if (r == TlsSession::Result::Failed) t->error = "TLS read failed: " + why;
    if (r == TlsSession::Result::Closed) t->error = "TLS close_notify";  // a clean end, not a cut
    read_(this, r == TlsSession::Result::Closed ? UV_EOF : UV_EPROTO, &b);
    break;
  }
  delivering_ = false;
}

Stream::Peek Stream::tlsPeek(std::string_view* out) {
  if (tls_->end != TlsSession::Result::Done) return Peek::End;
  const char* plain = nullptr;
  size_t n = 0;
  TlsSession::Result r = tls_->session.peek(&plain, &n);
  if (r == TlsSession::Result::WantMore) return Peek::Partial;
  if (r != TlsSession::Result::Done) return Peek::End;
  *out = std::string_view(plain, n);
  return Peek::Data;
}

bool Stream::tlsWrite(const uv_buf_t* bufs, unsigned n, WriteFn cb, uint64_t tag) {
  std::string why;
  for (unsigned i = 0; i < n; ++i) {
    if (!tls_->session.write(bufs[i].base, bufs[i].len, &why)) {
      logf(LogLevel::Info, "TLS write failed: %s", why.c_str());
      tls_->out.clear();
      return false;
    }
  }
  return tlsFlush(cb, tag);
}

// Puts what mbedTLS produced on a free write request; with none free it waits in `out` (behind the
// writes in flight, so the order holds) until one is.
bool Stream::tlsFlush(WriteFn cb, uint64_t tag) {
  StreamTls* t = tls_;
  if (t->out.empty()) {
    if (cb != nullptr) cb(this, 0, tag);
    return true;
  }
  WriteReq* w = freeRequest();
  if (w == nullptr) {
    if (cb != nullptr) {
      if (t->outCb != nullptr) return false;  // more writes than requests: the caller closes
      t->outCb = cb;
      t->outTag = tag;
    }
    t->outWaits = true;
    return true;
  }
  w->busy = true;
  w->cb = cb;
  w->tag = tag;
  w->bytes.swap(t->out);  // both keep their capacity: no allocation once warm
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, onUvWrite) != 0) {
    w->busy = false;
    w->cb = nullptr;
    w->bytes.clear();
    return false;
  }
  return true;
}

void Stream::tlsAfterWrite() {
  StreamTls* t = tls_;
  if (t == nullptr || !t->outWaits) return;
  t->outWaits = false;
  WriteFn cb = t->outCb;
  t->outCb = nullptr;
  if (!tlsFlush(cb, t->outTag) && event_ != nullptr) event_(this, Event::Failed, "cannot send");
}

bool Stream::tlsWriteNow(const char* bytes, size_t len) {
  StreamTls* t = tls_;
  std::string why;
  if (!t->session.write(bytes, len, &why)) {
    logf(LogLevel::Info, "TLS write failed: %s", why.c_str());
    t->out.clear();
    return true;
  }
  uv_buf_t b = uv_buf_init(t->out.data(), static_cast<unsigned>(t->out.size()));
  (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
  t->out.clear();
  t->outWaits = false;
  return true;
}

void Stream::tlsCloseNotify() {
  StreamTls* t = tls_;
  t->session.closeNotify();
  if (t->out.empty()) return;
  uv_buf_t b = uv_buf_init(t->out.data(), static_cast<unsigned>(t->out.size()));
  (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
  t->out.clear();
}

}  // namespace bitsd::platform
