// ForwardFlow: farm mode, a request for a session this node's table does not have (docs/FARMS.md,
// "Forwarding"; docs/DESIGN.md, "Forwarding in a farm"). One lookup of the session's owner in the
// farm's record, then one decision; the proxying itself is the host's (platform/uv_forward.cc).
#include <cstring>

#include "core/http_reply.h"
#include "core/log.h"
#include "core/upload_engine.h"

namespace bitsd {

bool ForwardFlow::applies(const UploadEngine& e, const RequestHead& head) {
  // (A chunked body is never forwarded: BITS_POST refuses one before, and a GET has no business
  // with one. Only Content-Length bodies are streamed through, as they came.)
  return e.farm_ != nullptr && !head.has(HeaderId::FarmForwarded) && !head.has(HeaderId::TransferEncoding);
}

Flow ForwardFlow::start(UploadEngine& e, Exchange& ex, const SessionId& id, bool reply) {
  ForwardFlow& f = ex.flow_.emplace<ForwardFlow>();
  f.reply_ = reply;
  if (!e.farm_->live()) {
    // This node's view of the farm cannot be trusted (its lease is not confirmed): whether the
    // session lives elsewhere is unknown, so "not found" would be a lie. The client retries.
    ex.reason_ = "farm mode: this node holds no live lease (cannot look the session up)";
    ++e.stats_.farmUnavailable;
    return e.fail(ex, 503, hresult::kBusy);
  }
  f.waiting_ = true;
  ex.farm_.callback = &ex;
  ex.farm_.busy = true;
  ex.farm_.resetResult();
  e.farm_->lookupSession(ex.farm_, id);
  return Flow::Wait;
}

void ForwardFlow::notFound(UploadEngine& e, Exchange& ex) {
  if (!reply_) {
    (void)e.fail(ex, 500, hresult::kSessionNotFound);
    return;
  }
  ex.failed_ = true;  // as ReplyFlow's 404: no body is read into a file
  ReplyHeadSpec spec;
  spec.close = ex.close_;
  spec.status = 404;
  ex.status_ = 404;
  ex.responseLen_ = formatReplyHead(spec, ex.response_);
}

void ForwardFlow::onFarm(UploadEngine& e, Exchange& ex) {
  if (!waiting_) return e.stray(ex, "farm");
  waiting_ = false;
  const FarmOp& op = ex.farm_;
  const FarmSessionOwner& o = op.owner;
  if (op.outcome != FarmOutcome::Done) {
    ex.reason_ = "farm mode: the session's owner could not be looked up (farm unavailable)";
    ++e.stats_.farmUnavailable;
    (void)e.fail(ex, 503, hresult::kBusy);
  } else if (!o.found || !o.live || o.self) {
    // No record: nobody created it (or it expired). Its node's lease is gone: so is the session,
    // for good (its partial file lives on that node). Ours, though the table does not have it:
    // it was closed, cancelled or expired here. The client starts over, as against IIS.
    if (o.found && o.self) ex.reason_ = "farm mode: the farm names this node as the session's owner, which no longer has it";
    notFound(e, ex);
  } else if (o.peerUrl.empty() || o.peerUrl.size() >= sizeof ex.partial_) {
    logLimited(LogLevel::Warn, "forward url", "farm mode: node %.*s has an unusable peer URL (%zu bytes): answering 503",
               static_cast<int>(o.node.size() > 64 ? 64 : o.node.size()), o.node.data(), o.peerUrl.size());
    ex.reason_ = "farm mode: the session's owner has no usable peer URL";
    (void)e.fail(ex, 503, hresult::kBusy);
  } else {
    std::memcpy(ex.partial_, o.peerUrl.data(), o.peerUrl.size());
    ex.partial_[o.peerUrl.size()] = '\0';
    urlLen_ = static_cast<uint32_t>(o.peerUrl.size());
    ++e.stats_.forwarded;
    logf(LogLevel::Debug, "forwarding a %s to node %.*s at %s, the owner of its session", packetTypeName(ex.type_),
         static_cast<int>(o.node.size() > 64 ? 64 : o.node.size()), o.node.data(), ex.partial_);
    // `Expect: 100-continue` is answered here, by this node (the owner never sees the Expect header).
    if (ex.respondNow_) {
      ex.respondNow_ = false;
      ex.expectContinue_ = true;
    }
  }
  e.ready(ex);
}

}  // namespace bitsd
