// Owns the etcd gateway's HTTP client: connections, failover, deadlines (platform/etcd_client.h).
#include "platform/etcd_client.h"

#include <cjson/cJSON.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/http_head.h"
#include "core/log.h"
#include "core/response_parser.h"
#include "platform/stream.h"
#include "platform/tls.h"

namespace bitsd::platform {

namespace {
constexpr size_t kReadBytes = 16 * 1024;
constexpr size_t kMaxBodyBytes = 8 * 1024 * 1024;  // far above any answer the farm asks for
constexpr size_t kMaxIdlePerEndpoint = 4;
constexpr uint64_t kRoundPauseMs = 100;     // after every endpoint failed in a row
constexpr uint64_t kMinAttemptMs = 300;
constexpr size_t kTlsInBytes = 17 * 1024 + 512;

// etcd errors that one member gives and another may not: try the next endpoint.
bool isMemberTrouble(std::string_view e) {
  static const char* const kWords[] = {"no leader", "timed out", "leader changed", "too many requests", "stopped",
                                       "not capable", "unhealthy", "timeout", "unavailable", "not started",
                                       "lost leader", "unexpected EOF"};
  for (const char* w : kWords) {
    if (e.find(w) != std::string_view::npos) return true;
  }
  return false;
}
}  // namespace

bool parseEtcdEndpoint(std::string_view url, EtcdEndpoint* out, std::string* error) {
  EtcdEndpoint e;
  std::string_view rest;
  if (url.substr(0, 7) == "http://") {
    rest = url.substr(7);
  } else if (url.substr(0, 8) == "https://") {
    e.tls = true;
    rest = url.substr(8);
  } else {
    *error = "etcd endpoint '" + std::string(url) + "' is not an http:// or https:// URL";
    return false;
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos || rest.empty()) {
    *error = "etcd endpoint '" + std::string(url) + "' must be scheme://host[:port] with no path";
    return false;
  }
  std::string_view host = rest, port = "2379";
  if (rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      *error = "etcd endpoint '" + std::string(url) + "': unclosed '['";
      return false;
    }
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        *error = "etcd endpoint '" + std::string(url) + "': junk after the address";
        return false;
      }
      port = after.substr(1);
    }
  } else if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  unsigned long p = 0;
  bool digits = !port.empty() && port.size() <= 5;
  for (char ch : port) {
    if (ch < '0' || ch > '9') digits = false;
    else p = p * 10 + static_cast<unsigned long>(ch - '0');
  }
  if (!digits || p == 0 || p > 65535 || host.empty()) {
    *error = "etcd endpoint '" + std::string(url) + "': bad host or port";
    return false;
  }
  e.host = std::string(host);
  e.port = std::string(port);
  std::string_view u = url;
  while (!u.empty() && u.back() == '/') u.remove_suffix(1);
  e.url = std::string(u);
  *out = std::move(e);
  return true;
}

// One call: its request, its deadline, where it is.
struct EtcdClient::Call {
  std::string path, body;
  DoneFn done = nullptr;
  void* user = nullptr;
  uint64_t deadline = 0;   // uv_now
  uint64_t wakeAt = 0;     // while waiting
  int endpoint = 0;        // of the current (or next) attempt
  int failedInRow = 0;     // endpoints that failed since the last pause
  bool retriedStale = false;
  Conn* conn = nullptr;
  std::string lastError;
};

// One keep-alive connection to one endpoint.
struct EtcdClient::Conn {
  enum class State : uint8_t { Resolving, Connecting, Handshaking, Busy, Idle, Closing };
  EtcdClient* client = nullptr;
  int endpoint = 0;
  State state = State::Resolving;
  Call* call = nullptr;
  bool reused = false;
  bool gotBytes = false;
  bool resolving = false;
  bool streamOpen = false;
  bool timerOpen = false;
  uint64_t attemptMs = 0;
  uv_getaddrinfo_t gai;
  uv_connect_t connectReq;
  uv_timer_t timer;
  StreamOf<1> stream;
  ResponseParser parser;
  std::string head;
  std::string body;
  char readBuf[kReadBytes];
};

namespace {

using Call = EtcdClient::Call;
using Conn = EtcdClient::Conn;

void closeConn(Conn* k);

void onTimerClosed(uv_handle_t* h) {
  Conn* k = static_cast<Conn*>(h->data);
  k->timerOpen = false;
  if (!k->streamOpen && !k->resolving) k->client->connGone(k);
}

void onStreamClosed(Stream* s) {
  Conn* k = static_cast<Conn*>(s->data);
  k->streamOpen = false;
  if (!k->timerOpen && !k->resolving) k->client->connGone(k);
}

// Closes the connection; a call on it is detached first (the caller decides what becomes of it).
void closeConn(Conn* k) {
  if (k->state == Conn::State::Closing) return;
  k->state = Conn::State::Closing;
  k->call = nullptr;
  if (k->resolving) uv_cancel(reinterpret_cast<uv_req_t*>(&k->gai));
  if (k->timerOpen) {
    uv_timer_stop(&k->timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&k->timer), onTimerClosed);
  }
  if (k->streamOpen) k->stream.close(onStreamClosed);
  if (!k->timerOpen && !k->streamOpen && !k->resolving) k->client->connGone(k);
}

// The attempt on `k` failed: the connection goes, the call tries again elsewhere.
void failAttempt(Conn* k, const std::string& why) {
  Call* c = k->call;
  bool stale = k->reused && !k->gotBytes;
  closeConn(k);
  if (c != nullptr) {
    c->conn = nullptr;
    k->client->attemptFailed(c, why, stale);
  }
}

void onAttemptTimeout(uv_timer_t* t) {
  Conn* k = static_cast<Conn*>(t->data);
  if (k->call == nullptr) return;
  failAttempt(k, "no answer within " + std::to_string(k->attemptMs) + " ms");
}

void onAlloc(Stream* s, uv_buf_t* buf) {
  Conn* k = static_cast<Conn*>(s->data);
  *buf = uv_buf_init(k->readBuf, sizeof k->readBuf);
}

// A whole answer: what it says decides between done, refused and the next endpoint.
void answered(Conn* k) {
  Call* c = k->call;
  EtcdClient* client = k->client;
  int status = k->parser.head().status;
  bool keep = k->parser.head().keepAlive;
  cJSON* json = cJSON_ParseWithLength(k->body.data(), k->body.size());
  std::string err;
  int code = 0;
  if (json != nullptr && cJSON_IsObject(json)) {
    const cJSON* e = cJSON_GetObjectItemCaseSensitive(json, "error");
    if (cJSON_IsString(e)) err = e->valuestring;
    const cJSON* cd = cJSON_GetObjectItemCaseSensitive(json, "code");
    if (cJSON_IsNumber(cd)) code = cd->valueint;
  }
  // The connection is done with this exchange either way.
  k->call = nullptr;
  c->conn = nullptr;
  uv_timer_stop(&k->timer);
  if (keep) {
    client->connIdle(k);
  } else {
    closeConn(k);
  }
  if (status >= 500 || (!err.empty() && isMemberTrouble(err)) || json == nullptr || !cJSON_IsObject(json)) {
    std::string why = "HTTP " + std::to_string(status);
    if (!err.empty()) why += ": " + err;
    else if (json == nullptr || !cJSON_IsObject(json)) why += ": the answer is not a JSON object";
    cJSON_Delete(json);
    client->attemptFailed(c, why, false);
    return;
  }
  EtcdReply r;
  if (status == 200 && err.empty()) {
    r.kind = EtcdReply::Kind::Ok;
    r.json = json;
  } else {
    r.kind = EtcdReply::Kind::Refused;
    r.code = code;
    r.error = err.empty() ? "HTTP " + std::to_string(status) : err;
  }
  client->callDone(c, r);
  cJSON_Delete(json);
}

void onRead(Stream* s, ssize_t nread, const uv_buf_t*) {
  Conn* k = static_cast<Conn*>(s->data);
  if (nread == 0 || k->state == Conn::State::Closing) return;
  if (k->call == nullptr) {  // idle: the member closed it (or sent something nobody asked for)
    closeConn(k);
    return;
  }
  if (nread < 0) {
    if (nread == UV_EOF && k->parser.finish() == ResponseEvent::MessageComplete) return answered(k);
    return failAttempt(k, nread == UV_EOF ? "connection closed" : uv_strerror(static_cast<int>(nread)));
  }
  k->gotBytes = true;
  const char* data = k->readBuf;
  size_t len = static_cast<size_t>(nread), pos = 0;
  for (;;) {
    size_t used = 0;
    ResponseEvent e = k->parser.execute(data + pos, len - pos, &used);
    pos += used;
    switch (e) {
      case ResponseEvent::NeedMore: return;
      case ResponseEvent::Header:
      case ResponseEvent::HeadersComplete: break;
      case ResponseEvent::Body:
        if (k->body.size() + k->parser.body().size() > kMaxBodyBytes) return failAttempt(k, "answer too large");
        k->body.append(k->parser.body().data(), k->parser.body().size());
        break;
      case ResponseEvent::MessageComplete: return answered(k);
      case ResponseEvent::Error: return failAttempt(k, std::string("bad HTTP answer: ") + k->parser.errorText());
    }
  }
}

void onWrite(Stream* s, int status, uint64_t) {
  Conn* k = static_cast<Conn*>(s->data);
  if (status < 0 && k->call != nullptr && k->state != Conn::State::Closing) {
    failAttempt(k, std::string("cannot send: ") + uv_strerror(status));
  }
}

// Sends the call's request on a connection that carries plaintext.
void send(Conn* k) {
  Call* c = k->call;
  const EtcdEndpoint& ep = k->client->endpoint(k->endpoint);
  k->state = Conn::State::Busy;
  k->parser.reset();
  k->body.clear();
  k->gotBytes = false;
  k->head.resize(512 + ep.host.size() + c->path.size());
  HeadWriter w(k->head.data(), k->head.size());
  std::string host = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]:" + ep.port : ep.host + ":" + ep.port;
  w.requestLine("POST", c->path).header("Host", host).header("Content-Type", "application/json")
      .headerNumber("Content-Length", c->body.size());
  k->head.resize(w.end());
  uv_buf_t bufs[2] = {uv_buf_init(k->head.data(), static_cast<unsigned>(k->head.size())),
                      uv_buf_init(c->body.data(), static_cast<unsigned>(c->body.size()))};
  if (!k->stream.write(bufs, 2, onWrite)) return failAttempt(k, "cannot send");
  if (!k->stream.reading()) k->stream.readStart(onAlloc, onRead);
}

void onStreamEvent(Stream* s, Stream::Event e, const char* why) {
  Conn* k = static_cast<Conn*>(s->data);
  if (k->state == Conn::State::Closing) return;
  switch (e) {
    case Stream::Event::Ready:
      if (k->state == Conn::State::Handshaking && k->call != nullptr) send(k);
      return;
    case Stream::Event::HandshakeFailed: {
      std::string w = k->stream.certificateProblem();
      return failAttempt(k, "TLS handshake failed: " + (!w.empty() ? "the certificate is not trusted (" + w + ")"
                                                                   : std::string(why != nullptr ? why : "connection lost")));
    }
    case Stream::Event::Failed: return failAttempt(k, std::string("TLS: ") + (why != nullptr ? why : "write failed"));
  }
}

void onConnect(Stream* s, int status) {
  Conn* k = static_cast<Conn*>(s->data);
  if (k->state == Conn::State::Closing) return;
  if (status < 0) return failAttempt(k, std::string("cannot connect: ") + uv_strerror(status));
  uv_tcp_nodelay(k->stream.tcp(), 1);
  const EtcdEndpoint& ep = k->client->endpoint(k->endpoint);
  if (!k->stream.start(onStreamEvent, kTlsInBytes, ep.host.c_str())) return failAttempt(k, "TLS setup failed");
  if (k->stream.established()) return send(k);
  k->state = Conn::State::Handshaking;
  k->stream.readStart(onAlloc, onRead);  // the handshake runs on reads
}

void connectTo(Conn* k, const struct sockaddr* addr) {
  EtcdClient* client = k->client;
  k->stream.init(client->loop(), client->endpoint(k->endpoint).tls ? client->tls() : nullptr);
  k->stream.data = k;
  k->streamOpen = true;
  k->state = Conn::State::Connecting;
  int rc = k->stream.connect(&k->connectReq, addr, onConnect);
  if (rc < 0) failAttempt(k, std::string("cannot connect: ") + uv_strerror(rc));
}

void onResolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
  Conn* k = static_cast<Conn*>(req->data);
  k->resolving = false;
  if (k->state == Conn::State::Closing) {
    if (res != nullptr) uv_freeaddrinfo(res);
    if (!k->timerOpen && !k->streamOpen) k->client->connGone(k);
    return;
  }
  if (status < 0 || res == nullptr) {
    if (res != nullptr) uv_freeaddrinfo(res);
    return failAttempt(k, std::string("cannot resolve ") + k->client->endpoint(k->endpoint).host + ": " +
                              uv_strerror(status));
  }
  connectTo(k, res->ai_addr);
  uv_freeaddrinfo(res);
}

}  // namespace

std::unique_ptr<EtcdClient> EtcdClient::create(uv_loop_t* loop, const EtcdClientConfig& config, std::string* error) {
  std::unique_ptr<EtcdClient> c(new EtcdClient(loop));
  if (config.endpoints.empty()) {
    *error = "no etcd endpoint";
    return nullptr;
  }
  bool anyTls = false;
  for (const std::string& u : config.endpoints) {
    EtcdEndpoint e;
    if (!parseEtcdEndpoint(u, &e, error)) return nullptr;
    anyTls = anyTls || e.tls;
    if (!c->list_.empty()) c->list_ += ",";
    c->list_ += e.url;
    c->endpoints_.push_back(std::move(e));
  }
  if (anyTls) {
    if (config.caFile.empty()) {
      *error = "https etcd endpoints need a CA file (farm-etcd-cacert)";
      return nullptr;
    }
    bool caUnreadable = false;
    c->tls_ = TlsContext::client(config.caFile, false, 0, error, &caUnreadable);
    if (!c->tls_) return nullptr;
    if (!config.certFile.empty() || !config.keyFile.empty()) {
      if (config.certFile.empty() || config.keyFile.empty()) {
        *error = "an etcd client certificate needs both its certificate and its key file";
        return nullptr;
      }
      if (!c->tls_->setClientCertificate(config.certFile, config.keyFile, error)) return nullptr;
    }
  }
  c->timeoutMs_ = config.timeoutMs == 0 ? 3000 : config.timeoutMs;
  uv_timer_init(loop, &c->tick_);
  c->tick_.data = c.get();
  return c;
}

EtcdClient::~EtcdClient() {
  // close() must have run to the end (the handles refer to this object).
  for (Call* c : waiting_) delete c;
}

void EtcdClient::call(const char* path, std::string body, DoneFn done, void* user, uint64_t timeoutMs) {
  Call* c = new Call();
  c->path = path;
  c->body = std::move(body);
  c->done = done;
  c->user = user;
  uint64_t now = uv_now(loop_);
  c->deadline = now + (timeoutMs != 0 ? timeoutMs : timeoutMs_);
  c->endpoint = current_;
  ++calls_;
  schedule(c, now);
}

void EtcdClient::schedule(Call* c, uint64_t at) {
  c->wakeAt = at;
  waiting_.push_back(c);
  if (tickClosed_) return;
  uint64_t now = uv_now(loop_);
  uint64_t first = at;
  for (Call* w : waiting_) first = std::min(first, w->wakeAt);
  uv_timer_start(&tick_, [](uv_timer_t* t) { static_cast<EtcdClient*>(t->data)->onTick(); },
                 first > now ? first - now : 0, 0);
}

void EtcdClient::onTick() {
  uint64_t now = uv_now(loop_);
  std::vector<Call*> due;
  uint64_t next = UINT64_MAX;
  for (size_t i = 0; i < waiting_.size();) {
    if (closing_ || waiting_[i]->wakeAt <= now) {
      due.push_back(waiting_[i]);
      waiting_[i] = waiting_.back();
      waiting_.pop_back();
    } else {
      next = std::min(next, waiting_[i]->wakeAt);
      ++i;
    }
  }
  if (next != UINT64_MAX) uv_timer_start(&tick_, [](uv_timer_t* t) { static_cast<EtcdClient*>(t->data)->onTick(); },
                                         next - now, 0);
  for (Call* c : due) {
    if (closing_ || now >= c->deadline) {
      EtcdReply r;
      r.error = closing_ ? "shutting down" : c->lastError.empty() ? "timed out" : c->lastError;
      callDone(c, r);
    } else {
      startCall(c);
    }
  }
  if (closing_) maybeClosed();
}

void EtcdClient::startCall(Call* c) {
  uint64_t now = uv_now(loop_);
  uint64_t left = c->deadline - now;
  size_t n = endpoints_.size();
  uint64_t share = std::max<uint64_t>(timeoutMs_ / n, kMinAttemptMs);
  uint64_t attemptMs = std::min(left, share);
  Conn* k = nullptr;
  for (Conn* idle : conns_) {
    if (idle->state == Conn::State::Idle && idle->endpoint == c->endpoint) {
      k = idle;
      break;
    }
  }
  if (k != nullptr) {
    k->reused = true;
  } else {
    k = new Conn();
    k->client = this;
    k->endpoint = c->endpoint;
    uv_timer_init(loop_, &k->timer);
    k->timer.data = k;
    k->timerOpen = true;
    conns_.push_back(k);
  }
  k->call = c;
  c->conn = k;
  k->attemptMs = attemptMs;
  uv_timer_start(&k->timer, onAttemptTimeout, attemptMs, 0);
  if (k->reused) return send(k);
  const EtcdEndpoint& ep = endpoints_[static_cast<size_t>(c->endpoint)];
  struct sockaddr_storage addr;
  int port = std::atoi(ep.port.c_str());
  if (uv_ip4_addr(ep.host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
      uv_ip6_addr(ep.host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0) {
    return connectTo(k, reinterpret_cast<sockaddr*>(&addr));
  }
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  k->gai.data = k;
  k->resolving = true;
  k->state = Conn::State::Resolving;
  int rc = uv_getaddrinfo(loop_, &k->gai, onResolved, ep.host.c_str(), ep.port.c_str(), &hints);
  if (rc < 0) {
    k->resolving = false;
    failAttempt(k, std::string("cannot resolve ") + ep.host + ": " + uv_strerror(rc));
  }
}

void EtcdClient::attemptFailed(Call* c, const std::string& why, bool staleConn) {
  const EtcdEndpoint& ep = endpoints_[static_cast<size_t>(c->endpoint)];
  c->lastError = ep.url + ": " + why;
  uint64_t now = uv_now(loop_);
  if (closing_ || now >= c->deadline) return schedule(c, now);  // ends it
  if (staleConn && !c->retriedStale) {
    // A kept-alive connection the member had closed: the same endpoint again, on a new one.
    c->retriedStale = true;
    return schedule(c, now);
  }
  int n = static_cast<int>(endpoints_.size());
  if (current_ == c->endpoint) current_ = (c->endpoint + 1) % n;
  c->endpoint = (c->endpoint + 1) % n;
  ++c->failedInRow;
  uint64_t at = now;
  if (c->failedInRow >= n) {
    c->failedInRow = 0;
    at = std::min(now + kRoundPauseMs, c->deadline);
  }
  schedule(c, at);
}

void EtcdClient::callDone(Call* c, EtcdReply& reply) {
  if (reply.kind == EtcdReply::Kind::Ok || reply.kind == EtcdReply::Kind::Refused) current_ = c->endpoint;
  --calls_;
  DoneFn done = c->done;
  void* user = c->user;
  delete c;
  done(user, reply);
}

void EtcdClient::connIdle(Conn* k) {
  if (closing_) return closeConn(k);
  size_t idle = 0;
  for (Conn* o : conns_) {
    if (o != k && o->state == Conn::State::Idle && o->endpoint == k->endpoint) ++idle;
  }
  if (idle >= kMaxIdlePerEndpoint) return closeConn(k);
  k->state = Conn::State::Idle;
  // Still reading: an EOF from the member closes it.
}

void EtcdClient::connGone(Conn* k) {
  conns_.erase(std::remove(conns_.begin(), conns_.end(), k), conns_.end());
  delete k;
  if (closing_) maybeClosed();
}

void EtcdClient::close(void (*closed)(void*), void* arg) {
  if (closing_) return;
  closing_ = true;
  closed_ = closed;
  closedArg_ = arg;
  std::vector<Conn*> all = conns_;
  for (Conn* k : all) {
    Call* c = k->call;
    closeConn(k);
    if (c != nullptr) {
      c->conn = nullptr;
      c->lastError = "shutting down";
      waiting_.push_back(c);
    }
  }
  uv_timer_start(&tick_, [](uv_timer_t* t) { static_cast<EtcdClient*>(t->data)->onTick(); }, 0, 0);
}

void EtcdClient::maybeClosed() {
  if (!closing_ || !waiting_.empty() || !conns_.empty() || calls_ != 0) return;
  if (!tickClosed_) {
    tickClosed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), [](uv_handle_t* h) {
      EtcdClient* c = static_cast<EtcdClient*>(h->data);
      if (c->closed_ != nullptr) c->closed_(c->closedArg_);
    });
  }
}

}  // namespace bitsd::platform
