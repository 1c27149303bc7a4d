// bitsclient's driver (driver.h): connections (platform Streams, TLS or not), requests and their
// bodies, the answers.
#include "tools/client/driver.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/content_range.h"
#include "core/http_head.h"
#include "core/notify.h"
#include "core/protocol.h"
#include "platform/stream.h"
#include "platform/tls.h"

namespace bitsd::client {

namespace H = bitsd::header;  // header names, shared with the server

namespace {

constexpr const char* kUserAgent = "Microsoft BITS/7.8";  // Windows 10/11 (§9)

std::string human(double bytes) { return client::humanBytes(bytes); }

}  // namespace

// One keep-alive connection. Its Stream runs TLS underneath for https.
struct Conn {
  platform::StreamOf<2> stream;  // a head, and a late write of the request before
  uv_getaddrinfo_t gai;
  uv_connect_t connect;
  Driver* d = nullptr;
  std::string key;
  bool open = false;   // connected and usable
  bool closing = false;
  bool tcpInit = false;
  char readBuf[64 * 1024];  // answers (plaintext)
};

void onClose(platform::Stream* s) { delete static_cast<Conn*>(s->data); }

Driver::~Driver() = default;

void Driver::closeConn() {
  Conn* c = conn_;
  conn_ = nullptr;
  if (c == nullptr) return;
  c->d = nullptr;  // stale callbacks see this and stop
  c->open = false;
  if (c->tcpInit && !c->closing) {
    c->closing = true;
    c->stream.close(onClose);
  } else if (!c->tcpInit) {
    // Still resolving: the getaddrinfo callback frees it.
  }
}

void Driver::onSignal(uv_signal_t* s, int) {
  Driver* d = static_cast<Driver*>(s->data);
  d->progress_.finish();
  std::fprintf(stderr, "bitsclient: interrupted at byte %llu; carry on with: bitsclient resume %s\n",
               static_cast<unsigned long long>(d->job_.offset()), d->o_.statePath.c_str());
  std::exit(130);
}

void Driver::onResize(uv_signal_t* s, int) {
  Driver* d = static_cast<Driver*>(s->data);
  uv_update_time(d->loop_);
  d->progress_.resized(d->job_, uv_now(d->loop_));
}

void Driver::onTick(uv_timer_t* t) {
  Driver* d = static_cast<Driver*>(t->data);
  d->progress_.tick(d->job_, uv_now(d->loop_));
}

void Driver::finish(int code) {
  if (finished_) return;
  finished_ = true;
  exitCode_ = code;
  closeConn();
  uv_close(reinterpret_cast<uv_handle_t*>(&timeout_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&wait_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&pause_), nullptr);
  if (interactive_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  }
  if (ticking_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigwinch_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
  }
  if (onFinish_) onFinish_(*this);
}

void drainEvents(Driver* d) {
  bool save = false;
  for (const Event& e : d->job_.takeEvents()) {
    d->progress_.event(e, d->job_, uv_now(d->loop_));
    if (d->stats_ != nullptr) {
      BenchStats& st = *d->stats_;
      st.retries += e.type == Event::Type::Retry;
      st.restarts += e.type == Event::Type::Restart;
      st.resyncs += e.type == Event::Type::Resync;
      st.shrinks += e.type == Event::Type::Shrunk;
      st.fallbacks += e.type == Event::Type::Fallback;
    }
    save = save || e.type == Event::Type::SessionCreated || e.type == Event::Type::Acked ||
           e.type == Event::Type::Resync || e.type == Event::Type::Restart || e.type == Event::Type::HostId ||
           e.type == Event::Type::Fallback || e.type == Event::Type::Shrunk;
  }
  if (save && !d->o_.statePath.empty()) {
    std::string err;
    if (!writeState(d->o_, d->job_, &err)) {
      std::fprintf(stderr, "bitsclient: %s (the job cannot be resumed if bitsclient dies)\n", err.c_str());
      d->o_.statePath.clear();
    }
  }
}

void onWait(uv_timer_t* t) { static_cast<Driver*>(t->data)->step(); }

void Driver::step() {
  if (finished_) return;
  uv_update_time(loop_);
  Request r;
  uint64_t until = 0;
  Job::Next n = job_.next(uv_now(loop_), &r, &until);
  drainEvents(this);
  switch (n) {
    case Job::Next::Send: return send(r);
    case Job::Next::Wait:
      uv_timer_start(&wait_, onWait, until - uv_now(loop_), 0);
      return;
    case Job::Next::Done:
      progress_.finish();
      if (!o_.json && !o_.quiet) {
        double secs = progress_.seconds();
        std::fprintf(stderr, "bitsclient: %s %llu bytes to %s in %.2f s (%s/s)%s%s\n",
                     o_.command == "cancel" ? "cancelled the job of" : "uploaded",
                     static_cast<unsigned long long>(job_.totalBytes()), o_.url.c_str(), secs,
                     human(secs > 0 ? static_cast<double>(job_.totalBytes()) / secs : 0).c_str(),
                     o_.replyOut.empty() ? "" : "; reply in ", o_.replyOut.c_str());
      }
      if (!o_.statePath.empty()) ::unlink(o_.statePath.c_str());
      return finish(client::kExitOk);
    case Job::Next::Failed: {
      progress_.finish();
      // A job with a session can be resumed or cancelled later; one refused before it had a
      // session has nothing to keep.
      bool keep = !o_.statePath.empty() && (!job_.sessionId().empty() || job_.exitCode() == client::kExitRetries);
      if (!keep && !o_.statePath.empty()) ::unlink(o_.statePath.c_str());
      if (interactive_) {
        std::fprintf(stderr, "bitsclient: %s%s%s\n", job_.failure().c_str(), keep ? "; the job is kept in " : "",
                     keep ? o_.statePath.c_str() : "");
      }
      return finish(job_.exitCode());
    }
  }
}

void onTimeout(uv_timer_t* t) {
  Driver* d = static_cast<Driver*>(t->data);
  d->fail("no answer within " + std::to_string(d->o_.timeoutMs) + " ms");
}

// A transport failure of the request in flight: close the connection, status 0 to the job.
void Driver::fail(const std::string& why) {
  if (!inFlight_) return;
  Response r;
  r.transportError = why;
  closeConn();
  complete(r);
}

void Driver::complete(Response r) {
  inFlight_ = false;
  uv_timer_stop(&timeout_);
  uv_timer_stop(&pause_);
  paused_ = false;
  if (stats_ != nullptr && cur_.kind == Kind::Fragment && r.status == 200) {
    stats_->fragmentMs.push_back(static_cast<double>(uv_hrtime() - sentAt_) / 1e6);
  }
  if (r.status == 0 || closeAfter_ || !bodyDone_) closeConn();
  uv_update_time(loop_);
  job_.onResponse(r, uv_now(loop_));
  step();
}

void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  Conn* c = static_cast<Conn*>(req->data);
  Driver* d = c->d;
  if (d == nullptr) {  // abandoned while resolving
    if (res != nullptr) uv_freeaddrinfo(res);
    delete c;
    return;
  }
  if (status < 0 || res == nullptr) {
    d->conn_ = nullptr;
    delete c;
    if (res != nullptr) uv_freeaddrinfo(res);
    return d->fail(std::string("cannot resolve the host: ") + uv_strerror(status));
  }
  c->stream.init(d->loop_);
  c->stream.data = c;
  c->tcpInit = true;
  uv_tcp_nodelay(c->stream.tcp(), 1);
  int rc = c->stream.connect(&c->connect, res->ai_addr, [](platform::Stream* s, int st) {
    Conn* cc = static_cast<Conn*>(s->data);
    if (cc->d != nullptr) cc->d->connected(cc, st);
  });
  uv_freeaddrinfo(res);
  if (rc < 0) d->fail(std::string("cannot connect: ") + uv_strerror(rc));
}

void Driver::send(const Request& r) {
  cur_ = r;
  resp_ = Response();
  replyBody_ = 0;
  sentAt_ = uv_hrtime();
  cutAt_ = 0;
  chaosRolled_ = false;
  inFlight_ = true;
  answered_ = false;
  closeAfter_ = false;
  bodyDone_ = r.kind != Kind::Fragment;
  // Where it goes: the reply URL, the host-id host, or the upload URL.
  std::string url = (r.kind == Kind::ReplyHead || r.kind == Kind::ReplyGet) ? job_.replyUrl() : o_.url;
  bitsd::HttpUrl u;
  std::string urlStorage;
  if (!parseUrl(url, &u, &useTls_, &urlStorage)) {
    inFlight_ = false;
    progress_.finish();
    std::fprintf(stderr, "bitsclient: cannot use URL '%s' (only http(s)://host[:port]/path)\n", url.c_str());
    return finish(client::kExitUsage);
  }
  host_ = std::string(u.host);
  port_ = u.port;
  // append() here and for the port below, not `"x" + std::string`: since the split, GCC 12 at -O3
  // (tools/package's Release build) takes that for an overlapping memcpy (a false -Wrestrict).
  target_ = u.pathAndQuery.front() == '?' ? std::string("/").append(u.pathAndQuery) : std::string(u.pathAndQuery);
  if (r.toHostId && !job_.hostId().empty()) {
    // BITS-Host-Id: a host name or address, optionally with :port; it replaces the URL's host.
    std::string h = job_.hostId();
    size_t colon = h.rfind(':');
    if (!h.empty() && h.front() == '[') {
      size_t close = h.find(']');
      host_ = h.substr(1, close == std::string::npos ? std::string::npos : close - 1);
      if (close != std::string::npos && close + 1 < h.size() && h[close + 1] == ':') {
        port_ = static_cast<uint16_t>(std::atoi(h.c_str() + close + 2));
      }
    } else if (colon != std::string::npos && h.find(':') == colon) {
      host_ = h.substr(0, colon);
      port_ = static_cast<uint16_t>(std::atoi(h.c_str() + colon + 1));
    } else {
      host_ = h;
    }
  }
  hostHeader_ = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
  if (port_ != (useTls_ ? 443 : 80)) hostHeader_.append(":").append(std::to_string(port_));
  uv_timer_start(&timeout_, onTimeout, o_.timeoutMs, 0);
  std::string key = std::string(useTls_ ? "s|" : "|") + host_ + "|" + std::to_string(port_);
  if (conn_ != nullptr && conn_->open && conn_->key == key) return startRequest();
  closeConn();
  Conn* c = new Conn();
  c->d = this;
  c->key = key;
  c->gai.data = c;
  conn_ = c;
  addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(loop_, &c->gai, onResolved, host_.c_str(), std::to_string(port_).c_str(), &hints);
  if (rc < 0) {
    conn_ = nullptr;
    delete c;
    fail(std::string("cannot resolve the host: ") + uv_strerror(rc));
  }
}

void onAlloc(platform::Stream* s, uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(s->data);
  *buf = uv_buf_init(c->readBuf, sizeof c->readBuf);
}

void onRead(platform::Stream* s, ssize_t n, const uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(s->data);
  if (c->d == nullptr) return;
  c->d->readData(c, n, buf);
}

void onStreamEvent(platform::Stream* s, platform::Stream::Event e, const char* why) {
  Conn* c = static_cast<Conn*>(s->data);
  if (c->d != nullptr) c->d->streamEvent(c, static_cast<int>(e), why);
}

void Driver::connected(Conn* c, int status) {
  if (c != conn_) return;
  if (status < 0) return fail(std::string("cannot connect to ") + host_ + ":" + std::to_string(port_) + ": " +
                              uv_strerror(status));
  if (useTls_) {
    if (!tls_ && !setupTls()) return;
    c->stream.setTls(tls_);
  }
  if (!c->stream.start(onStreamEvent, sizeof c->readBuf, host_.c_str())) return fail("TLS setup failed");
  c->stream.readStart(onAlloc, onRead);
  if (!c->stream.established()) return;  // the TLS handshake runs; streamEvent goes on
  c->open = true;
  startRequest();
}

// The TLS handshake's end: sends the request once it is done.
void Driver::streamEvent(Conn* c, int event, const char* why) {
  if (c != conn_) return;
  switch (static_cast<platform::Stream::Event>(event)) {
    case platform::Stream::Event::Ready:
      c->open = true;
      return startRequest();
    case platform::Stream::Event::HandshakeFailed: {
      std::string w = c->stream.certificateProblem();
      if (!w.empty()) {
        return fatal(client::kExitFatal, "the server's certificate is not trusted (" + w + "); --cacert FILE or --insecure");
      }
      return fail(std::string("TLS handshake failed: ") + (why != nullptr ? why : "connection lost"));
    }
    case platform::Stream::Event::Failed:
      return fail(std::string("cannot send: ") + (why != nullptr ? why : ""));
  }
}

bool Driver::setupTls() {
  std::string ca = o_.cacert.empty() ? "/etc/ssl/certs/ca-certificates.crt" : o_.cacert;
  std::string err;
  bool caUnreadable = false;
  tls_ = platform::TlsContext::client(ca, o_.insecure, o_.tlsSuite, &err, &caUnreadable);
  if (tls_) return true;
  if (caUnreadable) {
    fatal(client::kExitUsage, "cannot read the CA certificate(s) in " + ca + " (--cacert FILE, or --insecure)");
  } else {
    fatal(client::kExitLocal, "TLS setup failed");
  }
  return false;
}

void Driver::fatal(int code, const std::string& why) {
  inFlight_ = false;
  progress_.finish();
  std::fprintf(stderr, "bitsclient: %s\n", why.c_str());
  finish(code);
}

void Driver::startRequest() {
  parser_.reset(cur_.kind == Kind::ReplyHead);  // a HEAD answer has no body whatever its Content-Length says
  const char* method = cur_.kind == Kind::ReplyHead ? "HEAD" : cur_.kind == Kind::ReplyGet ? "GET" : "BITS_POST";
  // The head is written with the wire layer's HeadWriter (core/http_head.h) into head_'s bytes.
  size_t cap = 16384;
  for (const std::string& h : o_.headers) cap += h.size() + 4;
  head_.resize(cap);
  HeadWriter w(head_.data(), head_.size());
  w.requestLine(method, target_);
  auto add = [&](std::string_view n, std::string_view v) { w.header(n, v); };
  add(std::string(H::kHost), hostHeader_);
  add("User-Agent", kUserAgent);
  add("Accept", "*/*");
  add("Connection", "Keep-Alive");
  uint64_t bodyBytes = 0;
  switch (cur_.kind) {
    case Kind::Ping: add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::Ping)); break;
    case Kind::CreateSession:
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::CreateSession));
      add(std::string(H::kSupportedProtocols), std::string(bitsd::kUploadProtocolGuid));
      break;
    case Kind::Fragment: {
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::Fragment));
      add(std::string(H::kSessionId), job_.sessionId());
      std::string name = o_.file.substr(o_.file.find_last_of('/') + 1);
      add(std::string(H::kContentName), name);
      bodyBytes = cur_.end - cur_.begin;
      if (job_.totalBytes() == 0) {
        add(std::string(H::kContentRange), "bytes */0");
      } else {
        add(std::string(H::kContentRange), "bytes " + std::to_string(cur_.begin) + "-" + std::to_string(cur_.end - 1) + "/" +
                                 std::to_string(job_.totalBytes()));
      }
      break;
    }
    case Kind::CloseSession:
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::CloseSession));
      add(std::string(H::kSessionId), job_.sessionId());
      break;
    case Kind::CancelSession:
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::CancelSession));
      add(std::string(H::kSessionId), job_.sessionId());
      break;
    case Kind::ReplyHead: add("Accept-Encoding", "identity"); break;
    case Kind::ReplyGet:
      add("Accept-Encoding", "identity");
      add("Range", "bytes=" + std::to_string(cur_.begin) + "-" + std::to_string(cur_.end - 1));
      break;
  }
  if (!authorization_.empty()) add("Authorization", authorization_);
  if (cur_.kind != Kind::ReplyHead && cur_.kind != Kind::ReplyGet) {
    for (const std::string& h : o_.headers) {  // "Name: value" (options.cc checked the colon)
      size_t colon = h.find(':');
      add(bitsd::trimOws(std::string_view(h).substr(0, colon)), bitsd::trimOws(std::string_view(h).substr(colon + 1)));
    }
    w.headerNumber(H::kContentLength, bodyBytes);
  }
  size_t len = w.end();
  if (w.truncated()) {
    std::string why("the request head does not fit in ");
    why.append(std::to_string(cap)).append(" bytes");
    return fatal(2, why);
  }
  head_.resize(len);
  bodyNext_ = cur_.begin;
  ++gen_;
  // The head keeps its bytes until the next but one request: the answer can arrive, and the next
  // request start on this connection, before libuv has called back for this write.
  std::string& h = sent_[gen_ & 1];
  h.swap(head_);
  queueWrite(conn_, h.data(), h.size());
}

void onWriteDone(platform::Stream* s, int status, uint64_t gen) {
  Conn* c = static_cast<Conn*>(s->data);
  // Only the write of the request in flight moves it on; a late callback of an earlier request's
  // write (answered already) or of a closed connection is ignored.
  if (c->d != nullptr && c->d->gen_ == gen) c->d->bodyWritten(c, status);
}

// Over TLS the bytes are encrypted at once (the plaintext may be reused); plain, they stay in use
// until onWriteDone.
void Driver::queueWrite(Conn* c, char* data, size_t len) {
  uv_buf_t b = uv_buf_init(data, static_cast<unsigned>(len));
  if (!c->stream.write(&b, 1, onWriteDone, gen_)) fail("cannot send");
}

// After the head, and after each body chunk: the next chunk of the fragment, read from the file.
void Driver::bodyWritten(Conn* c, int status) {
  if (c != conn_ || !inFlight_) return;
  if (status < 0) {
    if (answered_) return;  // the server answered before taking the whole body
    return fail(std::string("connection lost while sending: ") + uv_strerror(status));
  }
  if (cur_.kind != Kind::Fragment || answered_ || paused_) return;
  if (bodyNext_ >= cur_.end) {
    bodyDone_ = true;
    return;
  }
  if (chaos_ != nullptr && cur_.end - cur_.begin >= 2) {
    if (bodyNext_ == cur_.begin && !chaosRolled_) {
      chaosRolled_ = true;
      // A broken link: this fragment's connection is cut halfway through its body.
      if (chaos_->cuts < chaos_->maxCuts && chaos_->roll(chaos_->cutChance)) {
        ++chaos_->cuts;
        cutAt_ = cur_.begin + (cur_.end - cur_.begin) / 2;
      }
      // A slow client: it stops after the head for a while.
      if (chaos_->pauses < chaos_->maxPauses && chaos_->roll(chaos_->pauseChance)) {
        ++chaos_->pauses;
        paused_ = true;
        uv_timer_start(&pause_, [](uv_timer_t* t) {
          Driver* d = static_cast<Driver*>(t->data);
          d->paused_ = false;
          if (d->conn_ != nullptr && d->inFlight_) d->bodyWritten(d->conn_, 0);
        }, chaos_->pauseMs, 0);
        return;
      }
    }
    if (cutAt_ != 0 && bodyNext_ >= cutAt_) return fail("connection cut mid-fragment (chaos)");
  }
  uint64_t stop = cutAt_ != 0 ? cutAt_ : cur_.end;
  size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_.size(), stop - bodyNext_));
  ssize_t got = ::pread(fileFd_, chunk_.data(), n, static_cast<off_t>(bodyNext_));
  if (got <= 0) {
    progress_.finish();
    std::fprintf(stderr, "bitsclient: reading %s at byte %llu failed: %s\n", o_.file.c_str(),
                 static_cast<unsigned long long>(bodyNext_), got < 0 ? std::strerror(errno) : "the file is shorter");
    return finish(client::kExitLocal);
  }
  bodyNext_ += static_cast<uint64_t>(got);
  // One body write at a time per request, from chunk_; a request answered before its body was sent
  // closes its connection (complete()), so the buffer is never reused under a live write.
  queueWrite(c, chunk_.data(), static_cast<size_t>(got));
}

void Driver::readData(Conn* c, ssize_t n, const uv_buf_t* buf) {
  if (c != conn_) return;
  if (n == 0) return;
  if (n < 0) {
    // EOF, or the server's TLS close_notify.
    if (inFlight_) {
      return fail(n == UV_EOF ? "the server closed the connection"
                              : n == UV_EPROTO ? "TLS read failed" : uv_strerror(static_cast<int>(n)));
    }
    closeConn();  // an idle keep-alive connection went away: reconnect next time
    return;
  }
  if (!c->open) return;  // (not before the handshake is done)
  if (!inFlight_) {
    closeConn();  // bytes nobody asked for
    return;
  }
  parsePlain(buf->base, static_cast<size_t>(n));
}

// Feeds answer bytes to the response parser; false once the request is over (answered or failed).
bool Driver::parsePlain(const char* data, size_t len) {
  size_t pos = 0;
  for (;;) {
    size_t used = 0;
    ResponseEvent e = parser_.execute(data + pos, len - pos, &used);
    pos += used;
    switch (e) {
      case ResponseEvent::NeedMore: return true;
      case ResponseEvent::Header: header(parser_.headerName(), parser_.headerValue()); break;
      case ResponseEvent::HeadersComplete:
        resp_.status = parser_.head().status;
        answered_ = true;
        break;
      case ResponseEvent::Body:
        if (!takeBody(parser_.body())) {
          fail("writing the reply failed");  // finish() has set the exit code
          return false;
        }
        break;
      case ResponseEvent::MessageComplete: {
        bodyComplete();
        Response r = resp_;
        complete(r);
        return false;
      }
      case ResponseEvent::Error:
        fail(std::string("the server's answer is not valid HTTP: ") + parser_.errorText());
        return false;
    }
  }
}

void Driver::header(std::string_view name, std::string_view value) {
  std::string v(bitsd::trimOws(value));
  auto is = [&](std::string_view n) { return bitsd::equalsIgnoreCase(name, n); };
  uint64_t num = 0;
  if (is(H::kSessionId)) {
    resp_.sessionId = v;
  } else if (is(H::kReceivedContentRange)) {
    resp_.hasReceived = bitsd::parseDecimal(v, &resp_.received);
  } else if (is(H::kErrorCode)) {
    char* end = nullptr;
    unsigned long code = std::strtoul(v.c_str(), &end, 16);
    resp_.hasErrorCode = end != v.c_str() && *end == '\0';
    resp_.errorCode = static_cast<uint32_t>(code);
  } else if (is(H::kErrorContext)) {
    resp_.errorContext = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 16));
  } else if (is(H::kReplyUrl)) {
    resp_.replyUrl = v;
  } else if (is(H::kHostId)) {
    resp_.hostId = v;
  } else if (is(H::kHostIdFallbackTimeout)) {
    resp_.hasFallback = bitsd::parseDecimal(v, &resp_.fallbackSeconds);
  } else if (is("Retry-After")) {
    if (bitsd::parseDecimal(v, &num)) resp_.retryAfterSeconds = num;
  } else if (is(H::kContentLength)) {
    resp_.hasContentLength = bitsd::parseDecimal(v, &resp_.contentLength);
  } else if (is(H::kContentRange)) {
    // bytes a-b/total
    bitsd::ByteRange br;
    if (bitsd::parseContentRange(v, &br)) {
      resp_.hasContentRange = true;
      resp_.rangeBegin = br.begin;
      resp_.rangeEnd = br.end;
      resp_.rangeTotal = br.total;
    }
  } else if (is("Connection")) {
    if (bitsd::equalsIgnoreCase(v, "close")) closeAfter_ = true;
  }
}

// A reply download's body goes to the reply file at its range; false if it could not be written.
bool Driver::takeBody(std::span<const char> b) {
  const char* at = b.data();
  size_t len = b.size();
  if (cur_.kind != Kind::ReplyGet || resp_.status != 206 || !resp_.hasContentRange) return true;
  if (replyFd_ < 0) {
    replyFd_ = ::open(o_.replyOut.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (replyFd_ < 0) {
      std::fprintf(stderr, "bitsclient: cannot write the reply to %s: %s\n", o_.replyOut.c_str(), std::strerror(errno));
      finish(client::kExitLocal);
      return false;
    }
  }
  uint64_t at0 = resp_.rangeBegin + replyBody_;
  if (::pwrite(replyFd_, at, len, static_cast<off_t>(at0)) != static_cast<ssize_t>(len)) {
    std::fprintf(stderr, "bitsclient: writing the reply to %s failed: %s\n", o_.replyOut.c_str(), std::strerror(errno));
    finish(client::kExitLocal);
    return false;
  }
  replyBody_ += len;
  return true;
}

void Driver::bodyComplete() {
  if (cur_.kind == Kind::ReplyGet) {
    if (replyBody_ != resp_.rangeEnd - resp_.rangeBegin) resp_.hasContentRange = false;
    if (replyFd_ >= 0) {
      ::fsync(replyFd_);
    }
  }
}

}  // namespace bitsd::client
