// Farm mode, "any node takes any packet": UvServer's proxy for a request whose session another node
// owns (core's ForwardFlow decided, Exchange::forwardTo() names the owner's peer URL). The request
// streams to the owner and the owner's answer streams back to the client unchanged, through one
// ForwardLink per forwarded request (docs/DESIGN.md, "Forwarding in a farm").
//
// Memory is bounded by the board's pools, never by the body:
//   - links: at most request-slots of them (one per request slot; made on the first forward, kept);
//   - the request's body goes to the peer straight from the client's read buffer (c->rbuf), one
//     parsed Body piece per write; the client is not read while that write is in flight (as the
//     fragment path waits on its disk writes);
//   - the answer comes into one read buffer from the server's pool (the link's abuf), which is
//     written to the client as it came; the peer is not read while that write is in flight.
// Buffer ownership: c->rbuf is the connection's, as always; the link only writes from it, and the
// link's peer socket is closed (synchronously, ending any write from it) before c->rbuf can go back
// to the pool (endForward comes first in finishClose, lingerClose and releaseSlot). abuf is the
// link's until its peer socket's close callback, which comes after the client's socket was closed
// or the client's write of it completed.
//
// The request head is rebuilt from the parsed RequestHead with core's HeadWriter: method (BITS_POST
// too), target, every header the parser keeps except Expect (this node answered 100-continue
// itself) and BITS-Farm-Forwarded, Content-Length, and `BITS-Farm-Forwarded: <this node>` (so the
// owner never forwards it again). The peer connection is closed after each answer.
//
// Failures: the peer unreachable, refusing, timing out (body-timeout-ms) or resetting before any
// answer byte reached the client -> 503 + Retry-After, BG_E busy, and the client connection closes;
// after answer bytes were sent -> the client connection closes (it sees a cut answer and retries).
#include <netdb.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/http_head.h"
#include "core/log.h"
#include "core/response.h"
#include "core/response_parser.h"
#include "platform/tls.h"
#include "platform/uv_connection.h"
#include "platform/uv_server.h"

namespace bitsd::platform {

struct ForwardLink {
  UvServer* server = nullptr;
  Connection* conn = nullptr;  // null once detached (the request ended or its connection went)
  StreamOf<1> peer;            // one write in flight at a time: the head, or one body piece
  uv_connect_t connectReq;
  uv_getaddrinfo_t gai;
  ResponseParser answer{kMaxAckBytes + 1024};  // the owner's heads are Acks (kMaxAckBytes) or reply heads
  char* head = nullptr;        // the rebuilt request head (made on first use, kept)
  size_t headCap = 0;
  size_t headLen = 0;
  char* abuf = nullptr;        // the answer's read buffer, from the server's pool
  uint32_t abufLen = 0;        // bytes of abuf being written to the client
  uint32_t abufCap = 0;        // read-buffer-bytes
  char host[256];
  char port[8];
  int status = 0;              // the owner's answer status (for the access log)
  uint8_t pending = 0;         // getaddrinfo or the stream's close still to call back
  bool inUse = false;
  bool https = false;
  bool streamOpen = false;     // peer.init ran: it must be closed
  bool connected = false;      // the head may be written (TLS: the handshake is done)
  bool headSent = false;
  bool peerWriting = false;
  bool clientWriting = false;
  bool kick = true;            // run the request parser once more even without input
  bool requestDone = false;    // the client's request is all sent to the peer
  bool answerStarted = false;  // answer bytes were handed to the client
  bool answerDone = false;
  bool answerKeepAlive = false;
};

namespace {

constexpr size_t kPeerTlsInBytes = 17 * 1024;  // one whole TLS record

std::string_view methodName(HttpMethod m) {
  switch (m) {
    case HttpMethod::BitsPost: return "BITS_POST";
    case HttpMethod::Get: return "GET";
    case HttpMethod::Head: return "HEAD";
    case HttpMethod::Other: break;
  }
  return {};
}

// "http://host[:port][/...]", "https://[v6]:port": host and port into the link. False if unusable.
bool parsePeerUrl(std::string_view url, ForwardLink* l) {
  std::string_view rest;
  if (url.substr(0, 7) == "http://") {
    rest = url.substr(7);
    l->https = false;
  } else if (url.substr(0, 8) == "https://") {
    rest = url.substr(8);
    l->https = true;
  } else {
    return false;
  }
  rest = rest.substr(0, rest.find_first_of("/?#"));
  std::string_view host = rest, port = l->https ? "443" : "80";
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return false;
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return false;
      port = rest.substr(close + 2);
    }
  } else if (size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty() || host.size() >= sizeof l->host || port.empty() || port.size() >= sizeof l->port) return false;
  unsigned long number = 0;
  for (char ch : port) {
    if (ch < '0' || ch > '9') return false;
    number = number * 10 + static_cast<unsigned long>(ch - '0');
  }
  if (number == 0 || number > 65535) return false;
  std::memcpy(l->host, host.data(), host.size());
  l->host[host.size()] = '\0';
  std::memcpy(l->port, port.data(), port.size());
  l->port[port.size()] = '\0';
  return true;
}

ForwardLink* linkOf(Stream* s) { return static_cast<ForwardLink*>(s->data); }


}  // namespace

// ---------------------------------------------------------------------------------------------------
// Links

// Reads the answer into the link's abuf, which is free whenever the peer is read (reading stops
// while its bytes are written to the client).
void UvServer::readPeer(ForwardLink* l) {
  l->peer.readStart(
      [](Stream* s, uv_buf_t* buf) { *buf = uv_buf_init(linkOf(s)->abuf, linkOf(s)->abufCap); },
      [](Stream* s, ssize_t nread, const uv_buf_t*) { linkOf(s)->server->peerRead(linkOf(s), nread); });
}

ForwardLink* UvServer::takeLink() {
  if (links_ == nullptr) {
    // The first forward: request-slots links (each request slot forwards at most one request).
    links_ = new (std::nothrow) ForwardLink[settings_.requestSlots];
    freeLinks_ = static_cast<uint32_t*>(std::malloc(sizeof(uint32_t) * settings_.requestSlots));
    if (links_ == nullptr || freeLinks_ == nullptr) {
      delete[] links_;
      std::free(freeLinks_);
      links_ = nullptr;
      freeLinks_ = nullptr;
      return nullptr;
    }
    for (uint32_t i = 0; i < settings_.requestSlots; ++i) freeLinks_[i] = settings_.requestSlots - 1 - i;
    freeLinkCount_ = settings_.requestSlots;
  }
  if (freeLinkCount_ == 0) return nullptr;  // every link is still closing its last peer connection
  ForwardLink* l = &links_[freeLinks_[--freeLinkCount_]];
  size_t cap = settings_.maxHeaderBytes + 512;
  if (l->headCap < cap) {
    delete[] l->head;
    l->head = new (std::nothrow) char[cap];
    l->headCap = l->head != nullptr ? cap : 0;
    if (l->head == nullptr) {
      freeLinks_[freeLinkCount_++] = static_cast<uint32_t>(l - links_);
      return nullptr;
    }
  }
  l->server = this;
  l->inUse = true;
  l->conn = nullptr;
  l->headLen = 0;
  l->abuf = nullptr;
  l->abufLen = 0;
  l->status = 0;
  l->pending = 0;
  l->streamOpen = l->connected = l->headSent = l->peerWriting = l->clientWriting = false;
  l->kick = true;
  l->requestDone = l->answerStarted = l->answerDone = l->answerKeepAlive = false;
  return l;
}

void UvServer::freeLinks() {
  if (links_ != nullptr) {
    for (uint32_t i = 0; i < settings_.requestSlots; ++i) delete[] links_[i].head;
  }
  delete[] links_;
  std::free(freeLinks_);
  links_ = nullptr;
  freeLinks_ = nullptr;
}

void UvServer::giveBackBuffer(char* b) {
  freeBuffers_[freeBufferCount_++] = static_cast<uint32_t>((b - buffers_) / settings_.readBufferBytes);
  wakeWaiter(kWaitBuffer);
}

// The link goes back once nothing of libuv refers to it any more.
void UvServer::linkClosed(ForwardLink* l) {
  if (l->pending > 0) return;
  if (l->abuf != nullptr) {
    giveBackBuffer(l->abuf);
    l->abuf = nullptr;
  }
  l->inUse = false;
  freeLinks_[freeLinkCount_++] = static_cast<uint32_t>(l - links_);
}

void UvServer::endForward(Connection* c) {
  if (c->slot == nullptr || c->slot->forward == nullptr) return;
  ForwardLink* l = c->slot->forward;
  c->slot->forward = nullptr;
  l->conn = nullptr;
  if (l->streamOpen) {
    // uv_close shuts the socket now: no write of ours reads c->rbuf after this. abuf waits for the
    // close callback (a write of it to the client ends before that, or with the client's socket).
    ++l->pending;
    l->streamOpen = false;
    l->peer.close([](Stream* s) {
      ForwardLink* fl = linkOf(s);
      --fl->pending;
      fl->server->linkClosed(fl);
    });
  }
  // A name lookup in flight calls back (cancelled or not) and then lets the link go.
  if (l->pending == 0) linkClosed(l);
}

// ---------------------------------------------------------------------------------------------------
// Start: the head, the connection

void UvServer::startForward(Connection* c) {
  RequestSlot& rs = *c->slot;
  Exchange& ex = rs.exchange;
  const RequestHead& h = rs.parser.head();
  c->phase = Phase::Forwarding;
  stopReading(c);
  arm(c, settings_.bodyTimeoutMs);
  ++stats_.forwarded;
  std::string_view url = ex.forwardTo();
  ForwardLink* l = takeLink();
  if (l == nullptr) return forwardFail(c, "no forward link free");
  l->conn = c;
  rs.forward = l;
  l->abuf = takeBuffer();
  l->abufCap = static_cast<uint32_t>(settings_.readBufferBytes);
  if (l->abuf == nullptr) return forwardFail(c, "no read buffer free for the answer");
  if (!parsePeerUrl(url, l)) return forwardFail(c, "unusable peer URL");
  if (l->https && peerTls_ == nullptr) return forwardFail(c, "https peer but no TLS client configuration");
  std::string_view node = nodeName_;
  if (node.empty() && engine_.farm() != nullptr) node = engine_.farm()->node();
  HeadWriter w(l->head, l->headCap);
  w.requestLine(methodName(h.method), h.target);
  for (size_t i = 0; i < static_cast<size_t>(HeaderId::kCount); ++i) {
    HeaderId id = static_cast<HeaderId>(i);
    if (!h.has(id) || id == HeaderId::Expect || id == HeaderId::FarmForwarded) continue;
    w.header(rs.parser.headerName(id), h.value(id));
  }
  if (h.hasContentLength) w.headerNumber("Content-Length", h.contentLength);
  w.header("BITS-Farm-Forwarded", node.empty() ? std::string_view("-") : node);
  l->headLen = w.end();
  if (w.truncated()) return forwardFail(c, "request head too long to forward");
  l->answer.reset(h.method == HttpMethod::Head);

  // A literal address connects at once; a name is resolved first (uv_getaddrinfo).
  struct sockaddr_storage addr;
  bool literal = uv_ip4_addr(l->host, std::atoi(l->port), reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
                 uv_ip6_addr(l->host, std::atoi(l->port), reinterpret_cast<sockaddr_in6*>(&addr)) == 0;
  l->peer.init(loop_, l->https ? peerTls_ : nullptr);
  l->peer.data = l;
  l->streamOpen = true;
  uv_tcp_nodelay(l->peer.tcp(), 1);
  if (literal) {
    int rc = l->peer.connect(&l->connectReq, reinterpret_cast<sockaddr*>(&addr),
                             [](Stream* s, int status) { linkOf(s)->server->peerConnected(linkOf(s), status); });
    if (rc < 0) return forwardFail(c, uv_strerror(rc));
    return;
  }
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  l->gai.data = l;
  ++l->pending;
  int rc = uv_getaddrinfo(
      loop_, &l->gai,
      [](uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
        ForwardLink* fl = static_cast<ForwardLink*>(req->data);
        --fl->pending;
        UvServer* self = fl->server;
        if (fl->conn == nullptr || !fl->streamOpen) {  // the request went meanwhile
          if (res != nullptr) uv_freeaddrinfo(res);
          return self->linkClosed(fl);
        }
        if (status < 0 || res == nullptr) {
          if (res != nullptr) uv_freeaddrinfo(res);
          return self->forwardFail(fl->conn, "cannot resolve the peer's name");
        }
        int crc = fl->peer.connect(&fl->connectReq, res->ai_addr,
                                   [](Stream* s, int st) { linkOf(s)->server->peerConnected(linkOf(s), st); });
        uv_freeaddrinfo(res);
        if (crc < 0) self->forwardFail(fl->conn, uv_strerror(crc));
      },
      l->host, l->port, &hints);
  if (rc < 0) {
    --l->pending;
    return forwardFail(c, uv_strerror(rc));
  }
}

void UvServer::peerConnected(ForwardLink* l, int status) {
  if (l->conn == nullptr) return;  // cancelled by the close
  if (status < 0) return forwardFail(l->conn, uv_strerror(status));
  bool ok = l->peer.start(
      [](Stream* s, Stream::Event e, const char* why) {
        ForwardLink* fl = linkOf(s);
        if (fl->conn == nullptr) return;
        if (e == Stream::Event::Ready) return fl->server->peerReady(fl);
        fl->server->forwardFail(fl->conn, why != nullptr ? why : "TLS to the peer failed");
      },
      kPeerTlsInBytes, l->https ? l->host : nullptr);
  if (!ok) return forwardFail(l->conn, "TLS setup failed");
  // The answer is read from the start: an owner may answer before the body is all sent.
  readPeer(l);
  if (l->conn == nullptr) return;  // (TLS may deliver, and fail, from inside readStart)
  if (!l->https) peerReady(l);
}

// Plaintext flows to the peer: the head goes first.
void UvServer::peerReady(ForwardLink* l) {
  if (l->connected || l->conn == nullptr) return;
  l->connected = true;
  uv_buf_t b = uv_buf_init(l->head, static_cast<unsigned>(l->headLen));
  l->peerWriting = true;
  if (!l->peer.write(&b, 1, [](Stream* s, int st, uint64_t) { linkOf(s)->server->peerWritten(linkOf(s), st); })) {
    l->peerWriting = false;
    return forwardFail(l->conn, "cannot write to the peer");
  }
}

void UvServer::peerWritten(ForwardLink* l, int status) {
  l->peerWriting = false;
  Connection* c = l->conn;
  if (c == nullptr) return;  // cancelled by the close
  if (status < 0) {
    // The owner may have answered (and closed) already: the read side decides. A peer that did
    // not answer at all fails there (EOF, reset) or at the timeout.
    if (l->answerDone) forwardMaybeDone(c);
    return;
  }
  arm(c, settings_.bodyTimeoutMs);
  l->headSent = true;
  forwardPump(c);
}

// ---------------------------------------------------------------------------------------------------
// The request's body: client -> peer

void UvServer::forwardPump(Connection* c) {
  static const char kNothing[1] = {0};
  ForwardLink* l = c->slot != nullptr ? c->slot->forward : nullptr;
  if (l == nullptr || c->closing || !l->headSent || l->peerWriting || l->requestDone || l->answerDone) return;
  RequestSlot& rs = *c->slot;
  for (;;) {
    if (c->rpos == c->rlen && !l->kick) {
      releaseBuffer(c);  // no write of it is in flight
      startReading(c);   // onReadThunk -> pump -> here
      return;
    }
    l->kick = false;
    size_t used = 0;
    const char* in = c->rbuf != nullptr ? c->rbuf + c->rpos : kNothing;
    ParseEvent ev = rs.parser.execute(in, c->rlen - c->rpos, &used);
    c->rpos += static_cast<uint32_t>(used);
    switch (ev) {
      case ParseEvent::NeedMore:
        break;
      case ParseEvent::Body: {
        l->kick = true;
        std::span<const char> part = rs.parser.body();
        rs.bodyIn += part.size();
        stopReading(c);  // until this piece is with the peer
        uv_buf_t b = uv_buf_init(const_cast<char*>(part.data()), static_cast<unsigned>(part.size()));
        l->peerWriting = true;
        if (!l->peer.write(&b, 1, [](Stream* s, int st, uint64_t) { linkOf(s)->server->peerWritten(linkOf(s), st); })) {
          l->peerWriting = false;
          forwardFail(c, "cannot write to the peer");
        }
        return;
      }
      case ParseEvent::MessageComplete:
        // Bytes after it (a pipelined request) stay in c->rbuf for after the answer.
        l->requestDone = true;
        stopReading(c);
        return forwardMaybeDone(c);
      case ParseEvent::HeadersComplete:
      case ParseEvent::Error:
        ++stats_.protocolErrors;
        return closeConnection(c);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The answer: peer -> client

void UvServer::peerRead(ForwardLink* l, ssize_t nread) {
  Connection* c = l->conn;
  if (c == nullptr || nread == 0 || nread == UV_ENOBUFS) return;
  if (nread < 0) {
    // The peer closed or reset. A body delimited by the close ends here; anything else is cut.
    if (!l->answerDone && l->answer.started() && l->answer.finish() == ResponseEvent::MessageComplete) {
      l->answerDone = true;
      l->answerKeepAlive = false;
      return forwardMaybeDone(c);
    }
    if (l->answerDone) return;  // closed after a whole answer: nothing more to read
    return forwardFail(c, nread == UV_EOF ? "the peer closed before its answer was complete" : uv_strerror(static_cast<int>(nread)));
  }
  arm(c, settings_.bodyTimeoutMs);
  if (l->answerDone) return;  // bytes after the answer: the connection is not reused anyway
  size_t n = static_cast<size_t>(nread), at = 0;
  for (;;) {
    size_t used = 0;
    ResponseEvent ev = l->answer.execute(l->abuf + at, n - at, &used);
    at += used;
    if (ev == ResponseEvent::NeedMore) break;
    if (ev == ResponseEvent::Error) {
      logLimited(LogLevel::Warn, "forward answer", "farm mode: the owner's answer is malformed (%s)", l->answer.errorText());
      return forwardFail(c, "malformed answer");
    }
    if (ev == ResponseEvent::HeadersComplete) {
      l->status = l->answer.head().status;
      l->answerKeepAlive = l->answer.head().keepAlive;
    }
    if (ev == ResponseEvent::MessageComplete) {
      l->answerDone = true;
      break;
    }
  }
  if (at == 0) return;
  l->clientWriting = true;
  l->answerStarted = true;
  l->peer.readStop();  // until the client has these bytes
  l->abufLen = static_cast<uint32_t>(at);
  uv_buf_t b = uv_buf_init(l->abuf, static_cast<unsigned>(at));
  if (!c->stream.write(&b, 1, onWriteThunk)) {
    l->clientWriting = false;
    closeConnection(c);
  }
}

void UvServer::forwardClientWritten(Connection* c, int status) {
  ForwardLink* l = c->slot != nullptr ? c->slot->forward : nullptr;
  if (l == nullptr) return;
  l->clientWriting = false;
  l->abufLen = 0;
  if (status < 0) return closeConnection(c);
  arm(c, settings_.bodyTimeoutMs);
  if (l->answerDone) return forwardMaybeDone(c);
  readPeer(l);
}

// Both directions over: the exchange ends. An answer that came before the request's end (the owner
// refused early) ends the connection too: the rest of the body is not read.
void UvServer::forwardMaybeDone(Connection* c) {
  ForwardLink* l = c->slot != nullptr ? c->slot->forward : nullptr;
  if (l == nullptr || !l->answerDone || l->clientWriting) return;
  // (A write to the peer from c->rbuf may still be in flight: endForward closes its socket first.)
  int status = l->status;
  bool close = !l->requestDone || !l->answerKeepAlive || c->slot->exchange.closeAfterResponse() || shuttingDown_;
  endForward(c);
  Exchange& ex = c->slot->exchange;
  logRequest(c, status, nullptr);
  engine_.finish(ex);
  nextRequest(c, close, 0);
}

void UvServer::forwardFail(Connection* c, const char* why) {
  if (c == nullptr || c->closing || c->slot == nullptr) return;
  ForwardLink* l = c->slot->forward;
  ++stats_.forwardFailures;
  std::string_view url = c->slot->exchange.forwardTo();
  logLimited(LogLevel::Warn, "forward failed", "farm mode: forwarding a request to %.*s failed (%s)%s",
             static_cast<int>(url.size() > 200 ? 200 : url.size()), url.data(), why,
             l != nullptr && l->answerStarted ? ": connection closed" : ": answering 503");
  if (l != nullptr && l->answerStarted) return closeConnection(c);  // the client saw part of an answer
  endForward(c);
  engine_.formatForwardFailure(c->slot->exchange);
  sendResponse(c);  // closes after it (the body is not read)
}

void UvServer::forwardTimeout(Connection* c) {
  ForwardLink* l = c->slot != nullptr ? c->slot->forward : nullptr;
  if (l != nullptr && l->headSent && !l->peerWriting && !l->requestDone && !l->answerDone) {
    // Waiting for the client's body bytes: the client is slow, as on the fragment path.
    ++stats_.timeouts;
    endForward(c);
    send408(c, "request timed out (forwarded body)");
    return lingerClose(c);
  }
  forwardFail(c, "the peer did not answer within body-timeout-ms");
}

}  // namespace bitsd::platform
