// Owns the admin listener's connections: parse, authenticate, route to /, /metrics, /status.json
// (platform/admin_server.h).
#include "platform/admin_server.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/log.h"
#include "core/request_parser.h"
#include "platform/uv_server.h"
#include "platform/uv_storage.h"

namespace bitsd::platform {

namespace {
enum class State : uint8_t { Free, Reading, Auth, Writing, Closing };
enum class Body : uint8_t { None, Status, Done };
}  // namespace

struct AdminServer::Conn final : public AuthCallback {
  explicit Conn(size_t outBytes) : parser(4096), out(static_cast<char*>(std::malloc(outBytes))), outCap(outBytes) {}
  ~Conn() { std::free(out); }
  void onAuthDone(AuthOp& op) override { owner->onAuthDoneFor(this, op); }

  AdminServer* owner = nullptr;
  uv_tcp_t tcp;
  uv_write_t wr;
  State state = State::Free;
  Body body = Body::None;
  bool head = false;         // HEAD: no body
  bool closed = true;        // tcp handle closed (or never opened)
  bool authBusy = false;     // an AuthOp is with the authenticator (the Conn must stay put)
  uint64_t deadlineMs = 0;
  uint32_t cursor = 0;       // /status.json: next session slot
  bool firstRow = true;
  RequestParser parser;
  AuthOp auth;
  char in[kReadBytes];
  char* out;
  size_t outCap;
  uint8_t peer[16] = {};
  uint8_t peerLen = 0;
};

}  // namespace bitsd::platform

namespace bitsd::platform {

AdminServer::AdminServer(uv_loop_t* loop, const Settings& settings, Sources sources)
    : loop_(loop), settings_(settings), src_(sources) {
  std::string_view rest = settings.adminUsers;
  while (!rest.empty()) {
    size_t sp = rest.find(' ');
    std::string_view name = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    if (!name.empty()) adminUsers_.emplace_back(name);
  }
}

AdminServer::~AdminServer() {
  if (conns_ != nullptr) {
    for (uint32_t i = 0; i < kConnections; ++i) conns_[i].~Conn();
    ::operator delete(static_cast<void*>(conns_));
  }
}

Outcome AdminServer::start(std::string* url) {
  std::string error;
  std::string where = adminListenAddress(settings_);
  std::string host = where;
  size_t colon = host.rfind(':');
  std::string portText = host.substr(colon + 1);
  host = host.substr(0, colon);
  int port = std::atoi(portText.c_str());
  bool v6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (v6) host = host.substr(1, host.size() - 2);
  sockaddr_storage addr;
  int rc = v6 ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr))
              : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) {
    error = "--admin-listen '" + settings_.adminListen + "': not an IP address";
    return Outcome::fail(Code::Io, error);
  }
  // A row of /status.json holds a path escaped up to 6 bytes per byte: one must always fit.
  outBytes_ = 32768;
  if (outBytes_ < 6ull * settings_.maxPathBytes + 1024) outBytes_ = 6ull * settings_.maxPathBytes + 1024;
  conns_ = static_cast<Conn*>(::operator new(sizeof(Conn) * kConnections));
  for (uint32_t i = 0; i < kConnections; ++i) {
    new (&conns_[i]) Conn(outBytes_);
    conns_[i].owner = this;
    if (conns_[i].out == nullptr) {
      error = "admin listener: out of memory";
      return Outcome::fail(Code::Io, error);
    }
  }
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 16, onConnectionThunk);
  if (rc != 0) {
    error = "cannot listen on --admin-listen " + where + ": " + uv_strerror(rc);
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    return Outcome::fail(Code::Io, error);
  }
  listening_ = true;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_timer_start(&timer_, onTimerThunk, 1000, 1000);
  startMs_ = uv_now(loop_);
  sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  char ip[64] = {0};
  if (bound.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&bound);
    uv_ip6_name(a, ip, sizeof ip);
    *url = std::string("http://[") + ip + "]:" + std::to_string(ntohs(a->sin6_port));
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&bound);
    uv_ip4_name(a, ip, sizeof ip);
    *url = std::string("http://") + ip + ":" + std::to_string(ntohs(a->sin_port));
  }
  return Outcome::ok();
}

void AdminServer::shutdown() {
  if (shut_ || !listening_) return;
  shut_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  for (uint32_t i = 0; i < kConnections; ++i) {
    if (conns_[i].state != State::Free) closeConn(&conns_[i]);
  }
}

void AdminServer::onConnectionThunk(uv_stream_t* s, int status) {
  auto* self = static_cast<AdminServer*>(s->data);
  if (status < 0 || self->shut_) return;
  self->pendingAccept_ = true;
  self->acceptOne();
}

// Takes the next waiting connection if a Conn is free; else it stays in the backlog (libuv stops
// polling the listener until it is accepted).
void AdminServer::acceptOne() {
  if (!pendingAccept_ || shut_) return;
  Conn* c = nullptr;
  for (uint32_t i = 0; i < kConnections; ++i) {
    if (conns_[i].state == State::Free && conns_[i].closed && !conns_[i].authBusy) {
      c = &conns_[i];
      break;
    }
  }
  if (c == nullptr) return;
  uv_tcp_init(loop_, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), nullptr);
    return;
  }
  pendingAccept_ = false;
  c->closed = false;
  c->state = State::Reading;
  c->body = Body::None;
  c->head = false;
  c->parser.reset();
  c->deadlineMs = uv_now(loop_) + kTimeoutMs;
  c->peerLen = 0;
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_INET) {
      std::memcpy(c->peer, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, 4);
      c->peerLen = 4;
    } else if (ss.ss_family == AF_INET6) {
      std::memcpy(c->peer, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, 16);
      c->peerLen = 16;
    }
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), onAllocThunk, onReadThunk);
}

void AdminServer::onAllocThunk(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(h->data);
  *buf = uv_buf_init(c->in, sizeof c->in);
}

void AdminServer::onReadThunk(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<Conn*>(s->data);
  c->owner->onRead(c, nread);
}

void AdminServer::onRead(Conn* c, ssize_t nread) {
  if (nread == 0) return;
  if (nread < 0 || c->state != State::Reading) return closeConn(c);
  const char* p = c->in;
  size_t left = static_cast<size_t>(nread);
  while (left > 0 && c->state == State::Reading) {
    size_t used = 0;
    ParseEvent ev = c->parser.execute(p, left, &used);
    p += used;
    left -= used;
    if (ev == ParseEvent::Error) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
      int st = c->parser.errorStatus();
      return respondSimple(c, st == 405 ? 405 : st == 431 ? 431 : 400, st == 405 ? "Allow" : "", "GET, HEAD",
                           "bad request\n");
    }
    if (ev == ParseEvent::HeadersComplete) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));  // one request per connection
      return onHead(c);
    }
    if (ev == ParseEvent::NeedMore) break;
  }
}

void AdminServer::onHead(Conn* c) {
  const RequestHead& h = c->parser.head();
  if (h.method != HttpMethod::Get && h.method != HttpMethod::Head) {
    return respondSimple(c, 405, "Allow", "GET, HEAD", "only GET and HEAD\n");
  }
  c->head = h.method == HttpMethod::Head;
  if (src_.auth == nullptr) return route(c);
  std::string_view a = h.value(HeaderId::Authorization);
  if (!h.has(HeaderId::Authorization) || a.size() < 6 || !equalsIgnoreCase(a.substr(0, 6), "Basic ")) {
    return respondSimple(c, 401, "WWW-Authenticate", "Basic realm=\"bitsd admin\", charset=\"UTF-8\"",
                         "credentials needed\n");
  }
  c->state = State::Auth;
  c->authBusy = true;
  c->auth = AuthOp();
  c->auth.callback = c;
  std::memcpy(c->auth.client, c->peer, sizeof c->peer);
  c->auth.clientLen = c->peerLen;
  src_.auth->check(c->auth, trimOws(a.substr(6)));
}

void AdminServer::onAuthDoneFor(Conn* c, AuthOp& op) {
  c->authBusy = false;
  if (c->state != State::Auth) {  // closed meanwhile
    acceptOne();
    return;
  }
  if (op.user >= 0 && userAllowed(op.user)) return route(c);
  if (op.user < 0 && op.retryAfterMs > 0) {
    return respondSimple(c, 503, "Retry-After", "5", "too many password checks\n");
  }
  respondSimple(c, 401, "WWW-Authenticate", "Basic realm=\"bitsd admin\", charset=\"UTF-8\"",
                "wrong credentials, or not an admin user\n");
}

bool AdminServer::userAllowed(int32_t user) const {
  if (adminUsers_.empty()) return true;
  std::string_view name = src_.auth->userName(user);
  for (const auto& u : adminUsers_) {
    if (u == name) return true;
  }
  return false;
}

void AdminServer::route(Conn* c) {
  std::string_view t = c->parser.head().target;
  size_t q = t.find('?');
  if (q != std::string_view::npos) t = t.substr(0, q);
  char* o = c->out;
  if (t == "/" || t == "/index.html") {
    std::string_view page = statusPageHtml();
    int n = std::snprintf(o, c->outCap,
                          "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n"
                          "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                          "Content-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; "
                          "style-src 'unsafe-inline'\r\nConnection: close\r\n\r\n",
                          page.size());
    c->state = State::Writing;
    c->body = Body::Done;
    return send(c, o, static_cast<size_t>(n), c->head ? nullptr : page.data(), c->head ? 0 : page.size());
  }
  if (t == "/metrics") {
    static constexpr size_t kHeadRoom = 200;
    MetricsSnapshot m;
    uint64_t total = 0;
    fillMetrics(&m, &total);
    AdminWriter w(o + kHeadRoom, c->outCap - kHeadRoom);
    if (!formatMetrics(m, w)) {
      return respondSimple(c, 500, "", "", "metrics did not fit the buffer\n");
    }
    char hdr[kHeadRoom];
    int n = std::snprintf(hdr, sizeof hdr,
                          "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          w.size());
    char* start = o + kHeadRoom - n;
    std::memcpy(start, hdr, static_cast<size_t>(n));
    c->state = State::Writing;
    c->body = Body::Done;
    return send(c, start, static_cast<size_t>(n) + (c->head ? 0 : w.size()), nullptr, 0);
  }
  if (t == "/status.json") return startStatus(c, c->head);
  respondSimple(c, 404, "", "", "not found: try /, /metrics or /status.json\n");
}

void AdminServer::respondSimple(Conn* c, int status, const char* extraName, const char* extraValue,
                                const char* body) {
  size_t n = formatAdminAnswer(c->out, c->outCap, status, extraName, extraValue, body, c->head);
  c->state = State::Writing;
  c->body = Body::Done;
  send(c, c->out, n, nullptr, 0);
}

void AdminServer::fillMetrics(MetricsSnapshot* m, uint64_t* requestsTotal) {
  const EngineStats& es = src_.engine->stats();
  m->requests = es.requests;
  uint64_t total = 0;
  for (const auto& row : es.requests) {
    for (uint64_t v : row) total += v;
  }
  *requestsTotal = total;
  m->bytesReceived = es.bytesReceived;
  m->bytesWritten = es.bytesWritten;
  const SessionTable& t = src_.engine->sessionTable();
  uint64_t live = 0;
  for (uint32_t i = 0; i < src_.engine->highWater(); ++i) live += sessionIsLive(t.slotAt(i)) ? 1 : 0;
  m->sessionsOpen = live;
  m->sessionsHeld = t.size();
  m->sessionsCapacity = t.capacity();
  m->sessionsCreated = es.sessionsCreated;
  m->sessionsExpired = es.sessionsExpired;
  m->sessionsEvicted = es.sessionsEvicted;
  m->uploadsCommitted = es.commits;
  m->handoffsStarted = es.notifications;
  m->handoffsDelivered = es.deliveriesEnded;
  m->handoffsReplayed = es.deliveriesReplayed;
  m->handoffsRefused = es.notificationsRefused;
  m->handoffsFailed = es.notifyFailures;
  if (src_.journal != nullptr) {
    m->journalBytes = src_.journal->sizeBytes();
    m->journalCompactions = src_.journal->stats().compactions;
    m->journalFlushes = src_.journal->stats().flushes;
    m->journalFailures = src_.journal->stats().failures;
  }
  m->journalRefusals = es.journalRefusals;
  m->diskFull = es.diskFull;
  m->quotaRefusals = es.quotaRefusals;
  m->takeovers = es.takeovers;
  m->farmLive = src_.engine->farm() != nullptr && src_.engine->farm()->live() ? 1 : 0;
  m->farmClaims = es.farmClaims;
  m->farmReplays = es.farmReplays;
  m->farmTakeovers = es.farmTakeovers;
  m->farmUnavailable = es.farmUnavailable;
  if (src_.storage != nullptr) m->syncs = &src_.storage->syncHistogram();
  if (src_.server != nullptr) {
    const ServerStats& ss = src_.server->stats();
    m->connectionsActive = ss.active;
    m->connectionsAccepted = ss.accepted;
    m->connectionsRefused = ss.rejected;
    m->connectionTimeouts = ss.timeouts;
    m->protocolErrors = ss.protocolErrors;
    m->tlsHandshakes = ss.tlsHandshakes;
    m->tlsFailures = ss.tlsFailures;
    m->readAheadBytes = ss.readAheadBytes;
    m->forwarded = ss.forwarded;
    m->forwardFailures = ss.forwardFailures;
    m->slotsUsed = src_.server->slotsInUse();
    m->buffersUsed = src_.server->buffersInUse();
  }
  m->slotsTotal = settings_.requestSlots;
  m->buffersTotal = settings_.readBuffers;
  m->openFiles = src_.engine->openFiles();
  m->openFilesMax = settings_.maxOpenFiles;
  m->uptimeSeconds = (uv_now(loop_) - startMs_) / 1000;
}

void AdminServer::startStatus(Conn* c, bool head) {
  MetricsSnapshot m;
  uint64_t requests = 0;
  fillMetrics(&m, &requests);
  AdminWriter w(c->out, c->outCap);
  w.put("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
  if (!head) {
    w.put("{\"server\":{\"uptime_seconds\":");
    w.putU64(m.uptimeSeconds);
    w.put(",\"sessions_open\":");
    w.putU64(m.sessionsOpen);
    w.put(",\"sessions_held\":");
    w.putU64(m.sessionsHeld);
    w.put(",\"sessions_capacity\":");
    w.putU64(m.sessionsCapacity);
    w.put(",\"uploads_committed\":");
    w.putU64(m.uploadsCommitted);
    w.put(",\"bytes_received\":");
    w.putU64(m.bytesReceived);
    w.put(",\"requests\":");
    w.putU64(requests);
    w.put(",\"connections_active\":");
    w.putU64(m.connectionsActive);
    w.put(",\"journal_bytes\":");
    w.putU64(m.journalBytes);
    w.put("},\"sessions\":[");
  }
  c->state = State::Writing;
  c->body = head ? Body::Done : Body::Status;
  c->cursor = 0;
  c->firstRow = true;
  send(c, c->out, w.size(), nullptr, 0);
}

// One chunk of the session list: as many rows as fit the output buffer, from the slot after the
// last one sent. Sessions may change between chunks (the list is not one atomic snapshot).
void AdminServer::nextStatusChunk(Conn* c) {
  AdminWriter w(c->out, c->outCap);
  const SessionTable& t = src_.engine->sessionTable();
  uint32_t end = src_.engine->highWater();
  uint64_t now = src_.engine->nowMs();
  const Authenticator* auth = src_.engine->authenticator();
  while (c->cursor < end) {
    const Session& s = t.slotAt(c->cursor);
    if (!sessionIsLive(s)) {
      ++c->cursor;
      continue;
    }
    size_t mark = w.size();
    if (!c->firstRow) w.put(",");
    std::string_view user = auth != nullptr && s.owner >= 0 ? auth->userName(s.owner) : std::string_view();
    if (!w.ok() || !formatSessionJson(s, t.path(s), user, now, w)) {
      w.rollback(mark);
      if (mark == 0) ++c->cursor;  // cannot happen (a row always fits an empty buffer); never loop
      break;
    }
    c->firstRow = false;
    ++c->cursor;
  }
  if (c->cursor >= end) {
    size_t mark = w.size();
    w.put("]}\n");
    if (w.ok()) {
      c->body = Body::Done;
    } else {
      w.rollback(mark);
    }
  }
  send(c, c->out, w.size(), nullptr, 0);
}

void AdminServer::send(Conn* c, const char* a, size_t alen, const char* b, size_t blen) {
  uv_buf_t bufs[2] = {uv_buf_init(const_cast<char*>(a), static_cast<unsigned>(alen)),
                      uv_buf_init(const_cast<char*>(b), static_cast<unsigned>(blen))};
  c->wr.data = c;
  c->deadlineMs = uv_now(loop_) + kTimeoutMs;
  int rc = uv_write(&c->wr, reinterpret_cast<uv_stream_t*>(&c->tcp), bufs, blen > 0 ? 2 : 1, onWriteThunk);
  if (rc != 0) closeConn(c);
}

void AdminServer::onWriteThunk(uv_write_t* w, int status) {
  auto* c = static_cast<Conn*>(w->data);
  c->owner->onWrite(c, status);
}

void AdminServer::onWrite(Conn* c, int status) {
  if (c->state != State::Writing) return;  // closed meanwhile
  if (status < 0 || c->body == Body::Done) return closeConn(c);
  nextStatusChunk(c);
}

void AdminServer::closeConn(Conn* c) {
  if (c->state == State::Free || c->state == State::Closing) return;
  c->state = State::Closing;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), onCloseThunk);
}

void AdminServer::onCloseThunk(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  c->state = State::Free;
  c->closed = true;
  c->owner->acceptOne();
}

void AdminServer::onTimerThunk(uv_timer_t* t) {
  auto* self = static_cast<AdminServer*>(t->data);
  uint64_t now = uv_now(self->loop_);
  for (uint32_t i = 0; i < kConnections; ++i) {
    Conn* c = &self->conns_[i];
    if ((c->state == State::Reading || c->state == State::Writing) && now >= c->deadlineMs) self->closeConn(c);
  }
}

}  // namespace bitsd::platform
