// Stream (stream.h): the handle, reads and writes of plain TCP, and the dispatch to the TLS backend
// (stream_tls.cc) while TLS runs. Owns the socket handle and the preallocated write requests.
#include "platform/stream.h"

#include <sys/socket.h>

#include <cerrno>

namespace bitsd::platform {

Stream::~Stream() { tlsFree(); }

void Stream::init(uv_loop_t* loop, std::shared_ptr<TlsContext> tls) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
  setTls(std::move(tls));
  reading_ = closing_ = delivering_ = false;
  alloc_ = nullptr;
  read_ = nullptr;
  event_ = nullptr;
  lent_ = nullptr;
  for (int i = 0; i < writeCount_; ++i) {
    WriteReq& w = writes_[i];
    w.stream = this;
    w.req.data = &w;
    w.busy = false;
    w.cb = nullptr;
  }
}

void Stream::setTls(std::shared_ptr<TlsContext> tls) {
  ctx_ = std::move(tls);
  mode_ = ctx_ ? Mode::TlsPending : Mode::Plain;
}

bool Stream::start(EventFn onEvent, size_t inBytes, const char* hostname) {
  event_ = onEvent;
  if (mode_ != Mode::TlsPending) return true;
  return tlsStart(inBytes, hostname);
}

int Stream::connect(uv_connect_t* req, const struct sockaddr* addr, ConnectFn cb) {
  connectCb_ = cb;
  req->data = this;
  return uv_tcp_connect(req, &tcp_, addr, [](uv_connect_t* r, int status) {
    Stream* s = static_cast<Stream*>(r->data);
    s->connectCb_(s, status);
  });
}

// --- Reading ------------------------------------------------------------------------------------------

void Stream::setReading(bool on) {
  if (on == reading_) return;
  reading_ = on;
  if (on) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onUvAlloc, onUvRead);
  } else {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  }
}

void Stream::readStart(AllocFn alloc, ReadFn read) {
  if (closing_) return;
  alloc_ = alloc;
  read_ = read;
  setReading(true);
  // Records mbedTLS holds already are not in the socket: hand them over now.
  if (mode_ == Mode::Tls && tlsDone()) tlsDeliver();
}

void Stream::readStop() { setReading(false); }

void Stream::onUvAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  Stream* s = static_cast<Stream*>(h->data);
  if (s->mode_ == Mode::Tls) return s->tlsAlloc(buf);
  s->alloc_(s, buf);
}

void Stream::onUvRead(uv_stream_t* h, ssize_t nread, const uv_buf_t* buf) {
  Stream* s = static_cast<Stream*>(h->data);
  if (s->mode_ == Mode::Tls) return s->tlsRead(nread);
  s->read_(s, nread, buf);
}

Stream::Peek Stream::peek(char* scratch, size_t cap, std::string_view* out) {
  if (mode_ == Mode::Tls && tlsDone()) return tlsPeek(out);
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0) return Peek::End;
  ssize_t n = ::recv(fd, scratch, cap, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? Peek::Nothing : Peek::End;
  if (n == 0) return Peek::End;
  size_t got = static_cast<size_t>(n);
  if (mode_ == Mode::TlsPending || mode_ == Mode::Tls) {
    // A TLS record: type, version (2), length (2), then the fragment.
    if (got < 5) return Peek::Partial;
    size_t len = (static_cast<size_t>(static_cast<unsigned char>(scratch[3])) << 8) |
                 static_cast<unsigned char>(scratch[4]);
    return got >= 5 + len || got >= cap ? Peek::Record : Peek::Partial;
  }
  *out = std::string_view(scratch, got);
  return Peek::Data;
}

// --- Writing ------------------------------------------------------------------------------------------

Stream::WriteReq* Stream::freeRequest() {
  for (int i = 0; i < writeCount_; ++i) {
    if (!writes_[i].busy) return &writes_[i];
  }
  if (writeCount_ > 0) return nullptr;
  // None of its own: over TLS the TLS state's, else the one lent while the user holds one.
  WriteReq* w = tls_ != nullptr ? tlsRequest() : lent_;
  return w != nullptr && !w->busy ? w : nullptr;
}

void Stream::lend(WriteReq* w) {
  lent_ = w;
  if (w == nullptr) return;
  w->stream = this;
  w->req.data = w;
  w->busy = false;
  w->cb = nullptr;
}

bool Stream::writing() const {
  for (int i = 0; i < writeCount_; ++i) {
    if (writes_[i].busy) return true;
  }
  return (lent_ != nullptr && lent_->busy) || tlsWriting();
}

bool Stream::write(const uv_buf_t* bufs, unsigned n, WriteFn cb, uint64_t tag) {
  if (closing_ || !established() || mode_ == Mode::Ended) return false;
  if (mode_ == Mode::Tls) return tlsWrite(bufs, n, cb, tag);
  if (cb == nullptr) {  // at once, all of it, or it failed
    size_t total = 0;
    for (unsigned i = 0; i < n; ++i) total += bufs[i].len;
    return uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n) == static_cast<int>(total);
  }
  WriteReq* w = freeRequest();
  if (w == nullptr) return false;
  w->busy = true;
  w->cb = cb;
  w->tag = tag;
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n, onUvWrite) != 0) {
    w->busy = false;
    return false;
  }
  return true;
}

void Stream::onUvWrite(uv_write_t* req, int status) {
  WriteReq* w = static_cast<WriteReq*>(req->data);
  Stream* s = w->stream;
  WriteFn cb = w->cb;
  uint64_t tag = w->tag;
  w->busy = false;
  w->cb = nullptr;
  w->bytes.clear();  // keeps its capacity for the next record
  // Shut while the TLS state's own request was in flight: the state waited for it (shutdownWrite).
  if (s->mode_ == Mode::Ended && !s->tlsWriting()) s->tlsFree();  // `w` may be gone now
  if (s->mode_ == Mode::Tls && !s->closing_) s->tlsAfterWrite();
  if (cb != nullptr) {
    cb(s, status, tag);
  } else if (status < 0 && !s->closing_ && s->event_ != nullptr) {
    s->event_(s, Event::Failed, "write failed");
  }
}

bool Stream::writeNow(const char* bytes, size_t len) {
  if (closing_ || !established() || mode_ == Mode::Ended) return false;
  if (mode_ == Mode::Tls) return tlsWriteNow(bytes, len);
  uv_buf_t b = uv_buf_init(const_cast<char*>(bytes), static_cast<unsigned>(len));
  (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
  return true;
}

bool Stream::shutdownWrite() {
  uv_os_fd_t fd;
  if (closing_ || uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0) return false;
  if (mode_ == Mode::Tls && tlsDone()) tlsCloseNotify();
  if (::shutdown(fd, SHUT_WR) != 0) return false;
  // What still comes is thrown away unread: the TLS state can go now, or once its own write request
  // is done (onUvWrite).
  if (!tlsWriting()) tlsFree();
  mode_ = Mode::Ended;
  return true;
}

void Stream::close(CloseFn cb) {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  closeCb_ = cb;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onUvClose);
}

void Stream::onUvClose(uv_handle_t* h) {
  Stream* s = static_cast<Stream*>(h->data);
  // Cancelled writes called back before this: nothing refers to the TLS state any more.
  s->tlsFree();
  if (s->closeCb_ != nullptr) s->closeCb_(s);
}

}  // namespace bitsd::platform
