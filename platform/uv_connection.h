// What a connection of UvServer is made of (internal to platform/uv_server*.cc): its phase, its
// request slot, its Stream, and the constants the server's files share. uv_server.cc owns the
// request path (read, parse, answer, reply downloads, timers, closing); uv_server_lifecycle.cc the
// listener, start-up, reload and shutdown; uv_server_fairness.cc owns
// who gets a place, a slot and a buffer under pressure (accept and the connection cap, slow heads,
// the wait queues, lingering close). Whether TLS runs underneath is the Stream's business
// (stream.h, stream_tls.cc): the server has no TLS branches.
#pragma once

#include <uv.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "core/request_parser.h"
#include "core/upload_engine.h"
#include "platform/stream.h"
#include "platform/uv_server.h"

namespace bitsd::platform {

constexpr uint32_t kNotArmed = UINT32_MAX;  // Connection::heapPos of a connection without a timeout
constexpr int kWaitBuffer = 0;
constexpr int kWaitSlot = 1;      // a slot, with a whole request head waiting to be read
constexpr int kWaitSlotSlow = 2;  // a slot, the head not all there yet (or unknown)
constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr size_t kFileChunkBytes = 64 * 1024;
// Lingering close: at most this long in all, this long without data, and this many bytes discarded.
constexpr uint32_t kLingerMs = 2000;
constexpr uint32_t kLingerIdleMs = 500;
constexpr uint64_t kLingerMaxBytes = 16u << 20;
constexpr size_t kDiscardBytes = 32 * 1024;  // one buffer for the whole server
// At the connection cap, how long a newcomer that has sent nothing yet may take to show its head.
constexpr uint32_t kAdmitGraceMs = 250;

enum class Phase : uint8_t {
  Parsing,       // reading and parsing client bytes
  WaitHeaders,   // engine works on the request head (Create-Session disk checks, file open)
  WaitBody,      // engine writes body bytes from our read buffer
  WaitComplete,  // engine syncs/commits before the Ack
  Writing,       // the Ack is being written
  Lingering,     // answered and shut for writing: discarding what the client still sends
  Forwarding,    // farm mode: the request streams to its session's owner, the answer back (uv_forward.cc)
};

struct RequestSlot {
  RequestSlot(size_t maxHeaderBytes, std::string_view transactionHeader) : parser(maxHeaderBytes, transactionHeader) {}
  RequestParser parser;
  Exchange exchange;
  Connection* owner = nullptr;
  // The owner's request, for the access log: when its first byte came (the slot was taken) and
  // the body bytes read.
  uint64_t startNs = 0;
  uint64_t bodyIn = 0;
  // Reply download in progress (Exchange::sendsFile): the engine reads the reply file through
  // Storage (UploadEngine::readReply) into fileBuf. Here, not in Connection: only a connection
  // with a request in progress has one.
  bool fileStarted = false;
  uint64_t fileLeft = 0;
  char* fileBuf = nullptr;
  // Farm mode: the link to the session's owner while this request is forwarded (uv_forward.cc).
  ForwardLink* forward = nullptr;
  // Read-ahead (issue 18): while a write of body bytes runs from the connection's rbuf (WaitBody),
  // the next body bytes are read into this second pool buffer, so that the socket read overlaps
  // the write and its hash. It only ever holds bytes of this request's body (at most what
  // Content-Length still has to bring), so it is parsed before the request can end; pump() makes
  // it the rbuf once the rbuf is used up (UvServer::readAhead, takeAhead).
  char* ahead = nullptr;
  uint32_t aheadLen = 0;
  uint32_t aheadCap = 0;
  // Lent to the owner's stream while it holds the slot (Stream::lend): answers are only written
  // while a slot is held, so an idle connection carries no write request (issue 18).
  Stream::WriteReq write;
};

// An idle keep-alive connection costs this struct and nothing else (no slot, no buffer): keep it
// small (docs/BENCHMARKS.md measures it; issue 18 asks <= 512 bytes), and put what only a request
// or a download needs in RequestSlot or on the heap for the download's duration.
struct Connection final : public ExchangeHost {
  LentStream stream;  // the client's socket, TLS or not (stream.h); writes on its slot's request
  // Its timeout: when it is due, and its place in the server's timer heap (UvServer::arm).
  uint64_t deadline = 0;
  UvServer* server = nullptr;
  RequestSlot* slot = nullptr;
  char* rbuf = nullptr;  // read buffer holding unparsed bytes (or bytes being written)
  Connection* waitNext = nullptr;
  // The request head being read: when its slot was taken and how many head bytes came since.
  uint64_t headStartMs = 0;
  // Connection cap: since when it waits for its next request (accept, or the end of its last answer),
  // and whether it had an answer yet (an idle keep-alive connection has).
  uint64_t sinceMs = 0;
  uint64_t lingerStartMs = 0;
  uint64_t lingerBytes = 0;
  // (The fields are ordered by size, so that no padding is wasted: issue 18.)
  uint32_t heapPos = kNotArmed;
  uint32_t rpos = 0;  // within rbuf (read-buffer-bytes is 32-bit)
  uint32_t rlen = 0;
  int waitingFor = -1;
  uint32_t headBytes = 0;
  uint32_t sent408 = 0;  // bytes of a 408 just sent (not the Exchange's answer)
  ClientAddress peer;  // the client's address, for max-sessions-per-user without authentication
  Phase phase = Phase::Parsing;
  bool closing = false;
  bool reject = false;
  bool serving = false;  // counted in UvServer::serving_ (accepted and not refused)
  uint8_t pendingCloses = 0;
  bool readyHead = false;  // its last try for a slot saw a whole head waiting
  bool logged = true;  // its request's access log line is written (or it has none)
  bool answered = false;
  bool admitting = false;  // at the cap, waiting for its first bytes (not serving yet)
  // Password checks (issue 20): failed checks are charged to `peer`; a read buffer kept (body bytes
  // already read) while a slow check runs; not read from until the timer fires, after a throttled
  // check was refused.
  bool authHold = false;
  bool heldOff = false;

  size_t clientAddress(uint8_t out[16]) const override {
    size_t n = peer.family == 4 ? 4 : peer.family == 6 ? 16 : 0;
    std::memcpy(out, peer.bytes, n);
    return n;
  }

  void onExchangeReady(Exchange&) override { server->onExchangeReady(this); }
  // Nothing is in flight, so closeConnection finishes the exchange before it returns.
  void abandonExchange(Exchange&) override { server->closeConnection(this); }
};

}  // namespace bitsd::platform
