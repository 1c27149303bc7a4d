// Owns the hand-off's HTTP client on libuv: connect, POST on a Stream, the application's answer,
// reply files (platform/uv_notifier.h).
#include "platform/uv_notifier.h"

#include <fcntl.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/protocol.h"
#include "core/response_parser.h"
#include "platform/stream.h"

namespace bitsd::platform {

namespace {
constexpr size_t kChunkBytes = 64 * 1024;
constexpr size_t kMaxResponseHeaderBytes = 16 * 1024;
}  // namespace

// One POST. A client is done when `done` is set, every started libuv request has called back
// (`pending` is zero) and its handles are closed; only then does the engine hear of it.
// The reply file goes through the Storage seam (replyOp); the request file and the socket are its own.
struct UvNotifier::Client final : public StorageCallback {
  enum class ReplyStep : uint8_t { None, Create, Write, Sync, OpenApp };
  void onStorageDone(StorageOp& op) override;

  UvNotifier* owner = nullptr;
  NotifyOp* op = nullptr;
  bool inUse = false;
  bool done = false;
  int pending = 0;       // getaddrinfo, connect, writes, fs requests in flight
  int openHandles = 0;   // timer, stream
  bool tcpInit = false;
  bool resolving = false;
  bool reading = false;
  bool byValue = false;
  uint64_t contentBytes = 0;
  uint64_t sentBytes = 0;
  uint64_t readOffset = 0;
  uv_file requestFd = -1;
  FileHandle replyFile = kNoFile;
  StorageOp replyOp;   // reply file: create / write / sync, or open the application's (by reference)
  ReplyStep replyStep = ReplyStep::None;
  uint64_t replyOffset = 0;
  bool replyOpening = false;

  std::string host, port, head, requestPath, replyPath;
  uv_getaddrinfo_t gai;
  uv_connect_t connect;
  StreamOf<2> stream;  // the connection to the application: the head and a chunk in flight at once
  uv_timer_t timer;
  uv_fs_t fsRequest;  // request file: open / read

  // Response.
  ResponseParser parser{kMaxResponseHeaderBytes};
  bool messageComplete = false;
  bool responseHandled = false;
  std::vector<char> readBuf;    // socket reads
  std::vector<char> chunk;      // request file chunks being sent
  std::vector<char> body;       // by value: response body bytes waiting to be written
  size_t bodyLen = 0;
  bool bodyWriting = false;
  bool badHeader = false;

  NotifyResult& result() { return op->result; }
};

namespace {

using Client = UvNotifier::Client;

void maybeComplete(Client* c);
void finish(Client* c, NotifyOutcome outcome);
void startReading(Client* c);
void onResponseDone(Client* c);
void sendNextChunk(Client* c);

void onHandleClosed(uv_handle_t* h) {
  Client* c = static_cast<Client*>(h->data);
  --c->openHandles;
  maybeComplete(c);
}

void onStreamClosed(Stream* s) {
  Client* c = static_cast<Client*>(s->data);
  --c->openHandles;
  maybeComplete(c);
}

void closeFdNow(uv_loop_t* loop, uv_file* fd) {
  if (*fd < 0) return;
  uv_fs_t req;
  uv_fs_close(loop, &req, *fd, nullptr);  // close(2) of a regular file: does not wait on the device
  uv_fs_req_cleanup(&req);
  *fd = -1;
}

void maybeComplete(Client* c) {
  if (!c->done || c->pending > 0 || c->openHandles > 0 || !c->inUse) return;
  uv_loop_t* loop = c->timer.loop;
  closeFdNow(loop, &c->requestFd);
  if (c->replyFile != kNoFile) c->owner->storage().closeNow(c->replyFile);
  c->replyFile = kNoFile;
  NotifyOp* op = c->op;
  c->inUse = false;
  c->op = nullptr;
  c->owner->clientReleased();
  op->callback->onNotifyDone(*op);
}

void finish(Client* c, NotifyOutcome outcome) {
  if (c->done) return;
  c->done = true;
  c->result().outcome = outcome;
  uv_timer_stop(&c->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), onHandleClosed);
  if (c->resolving) uv_cancel(reinterpret_cast<uv_req_t*>(&c->gai));  // a lookup still running
  if (c->tcpInit) {
    c->tcpInit = false;
    c->reading = false;
    c->stream.close(onStreamClosed);  // cancels connect and writes
  }
  maybeComplete(c);
}

void onTimeout(uv_timer_t* t) { finish(static_cast<Client*>(t->data), NotifyOutcome::TimedOut); }

// --- Response parsing (core's ResponseParser; the headers are read by core's takeNotifyHeader) -------

// By value, the body of a 200 is the reply: it is kept for writing. The buffer holds at least one
// whole socket read, and is written out before the next read.
bool takeBody(Client* c, std::span<const char> b) {
  if (!c->byValue || c->result().status != 200) return true;  // by reference, or an error: discarded
  if (c->bodyLen + b.size() > c->body.size()) return false;
  std::memcpy(c->body.data() + c->bodyLen, b.data(), b.size());
  c->bodyLen += b.size();
  return true;
}

// Runs one socket read through the parser. Returns null, or why the answer is not valid HTTP.
const char* parseRead(Client* c, const char* data, size_t len) {
  size_t pos = 0;
  for (;;) {
    size_t used = 0;
    ResponseEvent e = c->parser.execute(data + pos, len - pos, &used);
    pos += used;
    switch (e) {
      case ResponseEvent::NeedMore: return nullptr;
      case ResponseEvent::Header:
        if (!takeNotifyHeader(c->parser.headerName(), c->parser.headerValue(), &c->result())) c->badHeader = true;
        break;
      case ResponseEvent::HeadersComplete: c->result().status = c->parser.head().status; break;
      case ResponseEvent::Body:
        if (!takeBody(c, c->parser.body())) return "body larger than a read";
        break;
      case ResponseEvent::MessageComplete: c->messageComplete = true; return nullptr;  // nothing after it matters
      case ResponseEvent::Error: return c->parser.errorText();
    }
  }
}

// --- Writing the reply body (by value) ------------------------------------------------------------

void afterBodyWritten(Client* c);

void onReplyWrite(Client* c, const StorageOp& op) {
  c->bodyWriting = false;
  if (c->done) return maybeComplete(c);
  if (!op.status.isOk() || static_cast<size_t>(op.result) != c->bodyLen) {
    logf(LogLevel::Warn, "notification: writing the reply to %s failed: %s", c->replyPath.c_str(),
         !op.status.isOk() ? op.status.message() : "short write");
    return finish(c, NotifyOutcome::LocalError);
  }
  c->replyOffset += static_cast<uint64_t>(op.result);
  c->bodyLen = 0;
  afterBodyWritten(c);
}

// Starts one operation on the reply file through Storage; it completes in Client::onStorageDone.
Storage& replyStart(Client* c, Client::ReplyStep step) {
  ++c->pending;
  c->replyStep = step;
  c->replyOp.callback = c;
  c->replyOp.busy = true;
  return c->owner->storage();
}

void writeBody(Client* c) {
  c->bodyWriting = true;
  replyStart(c, Client::ReplyStep::Write)
      .write(c->replyOp, c->replyFile, c->replyOffset, std::span<const char>(c->body.data(), c->bodyLen));
}

void onReplyOpen(Client* c, const StorageOp& op) {
  c->replyOpening = false;
  if (op.status.isOk()) c->replyFile = static_cast<FileHandle>(op.result);
  if (c->done) return maybeComplete(c);
  if (!op.status.isOk()) {
    logf(LogLevel::Warn, "notification: cannot create the reply file %s: %s", c->replyPath.c_str(),
         op.status.message());
    return finish(c, NotifyOutcome::LocalError);
  }
  writeBody(c);
}

// After a socket read was parsed: write what body it carried, then read on or finish.
void afterParse(Client* c) {
  if (c->bodyLen > 0) {
    if (c->replyFile == kNoFile) {
      c->replyOpening = true;
      replyStart(c, Client::ReplyStep::Create).createTruncate(c->replyOp, c->replyPath.c_str());
      return;
    }
    writeBody(c);
    return;
  }
  afterBodyWritten(c);
}

void afterBodyWritten(Client* c) {
  if (c->messageComplete) return onResponseDone(c);
  startReading(c);
}

// --- The answer is complete: sync the reply file, then report -------------------------------------

void onReplySync(Client* c, const StorageOp& op) {
  if (c->done) return maybeComplete(c);
  if (!op.status.isOk()) {
    logf(LogLevel::Warn, "notification: syncing the reply file %s failed: %s", c->replyPath.c_str(),
         op.status.message());
    return finish(c, NotifyOutcome::LocalError);
  }
  finish(c, NotifyOutcome::Answered);
}

void syncReply(Client* c) { replyStart(c, Client::ReplyStep::Sync).syncData(c->replyOp, c->replyFile); }

void onAppReplyOpen(Client* c, const StorageOp& op) {
  if (op.status.isOk()) c->replyFile = static_cast<FileHandle>(op.result);
  if (c->done) return maybeComplete(c);
  if (!op.status.isOk()) return finish(c, NotifyOutcome::Answered);  // the application wrote no reply
  if (op.kind != FileKind::File) {
    logf(LogLevel::Warn, "notification: the reply %s is not a regular file; answering with no reply",
         c->replyPath.c_str());
    return finish(c, NotifyOutcome::Answered);
  }
  c->result().hasReplyFile = true;
  c->result().replyBytes = op.sizeBytes;
  syncReply(c);
}

void onResponseDone(Client* c) {
  if (c->responseHandled || c->done) return;
  c->responseHandled = true;
  if (c->reading) {
    c->stream.readStop();
    c->reading = false;
  }
  NotifyResult& r = c->result();
  if (c->badHeader) return finish(c, NotifyOutcome::Malformed);
  if (r.status != 200) return finish(c, NotifyOutcome::Answered);
  if (c->byValue) {
    if (c->replyFile == kNoFile) return finish(c, NotifyOutcome::Answered);  // no body: no reply file
    r.hasReplyFile = true;
    r.replyBytes = c->replyOffset;
    return syncReply(c);
  }
  if (r.staticUrlLen > 0) return finish(c, NotifyOutcome::Answered);
  replyStart(c, Client::ReplyStep::OpenApp).openRead(c->replyOp, c->replyPath.c_str());
}

// --- Socket reads -----------------------------------------------------------------------------------

void onAlloc(Stream* s, uv_buf_t* buf) {
  Client* c = static_cast<Client*>(s->data);
  *buf = uv_buf_init(c->readBuf.data(), static_cast<unsigned>(c->readBuf.size()));
}

void onRead(Stream* s, ssize_t nread, const uv_buf_t*) {
  Client* c = static_cast<Client*>(s->data);
  if (c->done || nread == 0) return;
  // One read at a time: its body bytes are written before the next read.
  s->readStop();
  c->reading = false;
  if (nread < 0) {
    // EOF ends a response that has no Content-Length (read to EOF, §5.3).
    if (nread == UV_EOF && c->parser.finish() == ResponseEvent::MessageComplete) {
      c->messageComplete = true;
      return afterParse(c);
    }
    return finish(c, c->messageComplete ? NotifyOutcome::Answered : NotifyOutcome::Unreachable);
  }
  if (const char* err = parseRead(c, c->readBuf.data(), static_cast<size_t>(nread))) {
    logf(LogLevel::Warn, "notification: the application's answer is not valid HTTP (%s)", err);
    return finish(c, NotifyOutcome::Malformed);
  }
  afterParse(c);
}

void startReading(Client* c) {
  if (c->reading || c->done || !c->tcpInit) return;
  c->reading = true;
  c->stream.readStart(onAlloc, onRead);
}

// --- Sending ----------------------------------------------------------------------------------------

void onBodyWrite(Stream* s, int status, uint64_t) {
  Client* c = static_cast<Client*>(s->data);
  --c->pending;
  if (c->done) return maybeComplete(c);
  if (status < 0) {
    if (c->messageComplete) return;  // the application answered before taking the whole body
    return finish(c, NotifyOutcome::Unreachable);
  }
  sendNextChunk(c);
}

void onChunkRead(uv_fs_t* req) {
  Client* c = static_cast<Client*>(req->data);
  --c->pending;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  if (c->done) return maybeComplete(c);
  if (n <= 0) {
    logf(LogLevel::Warn, "notification: reading the upload %s failed at byte %llu: %s", c->requestPath.c_str(),
         static_cast<unsigned long long>(c->readOffset), n < 0 ? uv_strerror(static_cast<int>(n)) : "file is short");
    return finish(c, NotifyOutcome::LocalError);
  }
  c->readOffset += static_cast<uint64_t>(n);
  uv_buf_t b = uv_buf_init(c->chunk.data(), static_cast<unsigned>(n));
  ++c->pending;
  if (!c->stream.write(&b, 1, onBodyWrite)) {
    --c->pending;
    finish(c, NotifyOutcome::Unreachable);
  }
}

void sendNextChunk(Client* c) {
  if (c->readOffset >= c->contentBytes || c->messageComplete) return;
  uint64_t left = c->contentBytes - c->readOffset;
  uv_buf_t b = uv_buf_init(c->chunk.data(), static_cast<unsigned>(left < kChunkBytes ? left : kChunkBytes));
  ++c->pending;
  c->fsRequest.data = c;
  if (uv_fs_read(c->timer.loop, &c->fsRequest, c->requestFd, &b, 1, static_cast<int64_t>(c->readOffset),
                 onChunkRead) < 0) {
    --c->pending;
    finish(c, NotifyOutcome::LocalError);
  }
}

void onRequestOpen(uv_fs_t* req) {
  Client* c = static_cast<Client*>(req->data);
  --c->pending;
  ssize_t fd = req->result;
  uv_fs_req_cleanup(req);
  if (fd >= 0) c->requestFd = static_cast<uv_file>(fd);
  if (c->done) return maybeComplete(c);
  if (fd < 0) {
    logf(LogLevel::Warn, "notification: cannot open the upload %s: %s", c->requestPath.c_str(),
         uv_strerror(static_cast<int>(fd)));
    return finish(c, NotifyOutcome::LocalError);
  }
  sendNextChunk(c);
}

void onHeadWrite(Stream* s, int status, uint64_t) {
  Client* c = static_cast<Client*>(s->data);
  --c->pending;
  if (c->done) return maybeComplete(c);
  if (status < 0 && !c->messageComplete) finish(c, NotifyOutcome::Unreachable);
}

void onConnect(Stream* s, int status) {
  Client* c = static_cast<Client*>(s->data);
  --c->pending;
  if (c->done) return maybeComplete(c);
  if (status < 0) {
    logf(LogLevel::Warn, "notification: cannot connect to %s:%s: %s", c->host.c_str(), c->port.c_str(),
         uv_strerror(status));
    return finish(c, NotifyOutcome::Unreachable);
  }
  uv_buf_t b = uv_buf_init(c->head.data(), static_cast<unsigned>(c->head.size()));
  ++c->pending;
  if (!c->stream.write(&b, 1, onHeadWrite)) {
    --c->pending;
    return finish(c, NotifyOutcome::Unreachable);
  }
  startReading(c);
  if (c->byValue && c->contentBytes > 0) {
    ++c->pending;
    c->fsRequest.data = c;
    if (uv_fs_open(c->timer.loop, &c->fsRequest, c->requestPath.c_str(), O_RDONLY | O_CLOEXEC, 0, onRequestOpen) < 0) {
      --c->pending;
      finish(c, NotifyOutcome::LocalError);
    }
  }
}

void onResolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
  Client* c = static_cast<Client*>(req->data);
  --c->pending;
  c->resolving = false;
  if (c->done || status < 0) {
    if (res != nullptr) uv_freeaddrinfo(res);
    if (!c->done) {
      logf(LogLevel::Warn, "notification: cannot resolve %s: %s", c->host.c_str(), uv_strerror(status));
      return finish(c, NotifyOutcome::Unreachable);
    }
    return maybeComplete(c);
  }
  c->stream.init(c->timer.loop);
  c->stream.data = c;
  c->tcpInit = true;
  ++c->openHandles;
  uv_tcp_nodelay(c->stream.tcp(), 1);
  ++c->pending;
  int rc = c->stream.connect(&c->connect, res->ai_addr, onConnect);
  uv_freeaddrinfo(res);
  if (rc < 0) {
    --c->pending;
    logf(LogLevel::Warn, "notification: cannot connect to %s:%s: %s", c->host.c_str(), c->port.c_str(), uv_strerror(rc));
    finish(c, NotifyOutcome::Unreachable);
  }
}


}  // namespace

void UvNotifier::Client::onStorageDone(StorageOp& completed) {
  completed.busy = false;
  --pending;
  ReplyStep step = replyStep;
  replyStep = ReplyStep::None;
  switch (step) {
    case ReplyStep::Create: return onReplyOpen(this, completed);
    case ReplyStep::Write: return onReplyWrite(this, completed);
    case ReplyStep::Sync: return onReplySync(this, completed);
    case ReplyStep::OpenApp: return onAppReplyOpen(this, completed);
    case ReplyStep::None: break;
  }
  logf(LogLevel::Error, "notification: a reply file completion nobody waits for: ignored");
}

UvNotifier::UvNotifier(uv_loop_t* loop, uint32_t maxClients, Storage& storage)
    : loop_(loop), storage_(storage), capacity_(maxClients) {
  clients_ = new Client[capacity_];
  uv_timer_init(loop_, &defer_);
  defer_.data = this;
}

UvNotifier::~UvNotifier() { delete[] clients_; }

void UvNotifier::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&defer_), nullptr);
}

void UvNotifier::abortAll() {
  for (uint32_t i = 0; i < capacity_; ++i) {
    if (clients_[i].inUse && !clients_[i].done) finish(&clients_[i], NotifyOutcome::Unreachable);
  }
}

void UvNotifier::onDeferThunk(uv_timer_t* t) {
  UvNotifier* self = static_cast<UvNotifier*>(t->data);
  std::vector<NotifyOp*> ops;
  ops.swap(self->deferred_);
  for (NotifyOp* op : ops) op->callback->onNotifyDone(*op);
}

void UvNotifier::post(NotifyOp& op, const NotifyRequest& req) {
  Client* c = nullptr;
  for (uint32_t i = 0; i < capacity_ && c == nullptr; ++i) {
    if (!clients_[i].inUse) c = &clients_[i];
  }
  HttpUrl url;
  bool urlOk = parseHttpUrl(req.url, &url);
  if (c == nullptr || closed_) {
    // Completes from the loop, never inside post(). At most one op per exchange waits here.
    op.result.outcome = NotifyOutcome::Busy;
    deferred_.push_back(&op);
    uv_timer_start(&defer_, onDeferThunk, 0, 0);
    return;
  }
  c->owner = this;
  c->op = &op;
  c->inUse = true;
  c->done = false;
  c->pending = 0;
  c->openHandles = 1;  // the timer
  c->tcpInit = false;
  c->resolving = false;
  c->reading = false;
  c->byValue = req.byValue;
  c->contentBytes = req.byValue ? req.contentBytes : 0;
  c->sentBytes = c->readOffset = c->replyOffset = 0;
  c->requestFd = -1;
  c->replyFile = kNoFile;
  c->replyOpening = false;
  c->parser.reset();
  c->messageComplete = c->responseHandled = c->bodyWriting = c->badHeader = false;
  c->bodyLen = 0;
  if (c->readBuf.empty()) {
    c->readBuf.resize(kChunkBytes);
    c->body.resize(kChunkBytes);
    c->chunk.resize(kChunkBytes);
  }
  ++active_;
  uv_timer_init(loop_, &c->timer);
  c->timer.data = c;
  uv_timer_start(&c->timer, onTimeout, req.timeoutMs, 0);

  if (!urlOk) {
    logf(LogLevel::Warn, "notification: '%.*s' is not an http:// URL bitsd can reach", static_cast<int>(req.url.size()),
         req.url.data());
    finish(c, NotifyOutcome::Unreachable);  // completes once the timer's close callback has run
    return;
  }
  c->host.assign(url.host);
  c->port = std::to_string(url.port);
  c->requestPath = req.requestFile;
  c->replyPath = req.replyFile;

  c->head.resize(kMaxNotifyHeadBytes);
  size_t headLen = formatNotifyHead(req, url, c->head.data(), c->head.size());
  if (headLen == 0) {
    logf(LogLevel::Warn, "notification: the request head for '%.*s' does not fit in %zu bytes",
         static_cast<int>(req.url.size()), req.url.data(), kMaxNotifyHeadBytes);
    finish(c, NotifyOutcome::LocalError);
    return;
  }
  c->head.resize(headLen);

  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  ++c->pending;
  c->resolving = true;
  c->gai.data = c;
  int rc = uv_getaddrinfo(loop_, &c->gai, onResolved, c->host.c_str(), c->port.c_str(), &hints);
  if (rc < 0) {
    --c->pending;
    c->resolving = false;
    logf(LogLevel::Warn, "notification: cannot resolve %s: %s", c->host.c_str(), uv_strerror(rc));
    finish(c, NotifyOutcome::Unreachable);
  }
}

}  // namespace bitsd::platform
