// One byte stream over one TCP socket, with or without TLS underneath (issue 16): the server's
// connections and the notifier's POSTs read plaintext and write plaintext through it and never ask
// which. As h2o's socket layer does for its HTTP/1 code, the TLS backend (stream_tls.cc: handshake,
// records, close_notify, the plaintext peek) sits behind the same calls as plain TCP (stream.cc).
//
// Reading is libuv's model: the user gives a buffer (AllocFn) and gets bytes in it (ReadFn), so
// plaintext lands straight in the user's pool buffers; over TLS the ciphertext goes to the stream's
// own buffer and is decrypted into the user's. ReadFn gets n > 0 bytes; 0: nothing after all (the
// buffer, if any, comes back); UV_ENOBUFS: the AllocFn gave no buffer (the user stops reading and
// waits); another negative value: EOF (UV_EOF; after a TLS close_notify lastError() says so) or an
// error (lastError()).
// Over TLS a read may be delivered from inside readStart() (records mbedTLS already holds).
//
// Writing: write() queues buffers on one of the stream's preallocated write requests (no allocation
// per write; over TLS the ciphertext goes to a buffer that keeps its capacity), and calls WriteFn
// when they are sent. A user declares how many writes it has in flight at once: StreamOf<N> embeds
// N requests (the notifier and bitsclient 2). A server connection's stream (LentStream) has none of
// its own, so that an idle keep-alive connection does not carry one (issue 18): the server lends
// it the request slot's while the connection holds a slot (lend()), and a TLS stream writes on the
// one its TLS state holds (handshake records come before any slot). Over TLS, records that find no
// free request (handshake records, and one user write) wait behind the writes in flight. Without a
// WriteFn: plain TCP writes at once, all or nothing (uv_try_write); TLS queues the records, and a
// later failure raises Event::Failed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace bitsd::platform {

class TlsContext;
struct StreamTls;

class Stream {
 public:
  using AllocFn = void (*)(Stream* s, uv_buf_t* buf);
  using ReadFn = void (*)(Stream* s, ssize_t nread, const uv_buf_t* buf);
  using WriteFn = void (*)(Stream* s, int status, uint64_t tag);
  using ConnectFn = void (*)(Stream* s, int status);
  using CloseFn = void (*)(Stream* s);
  enum class Event : uint8_t {
    Ready,            // the handshake is done: plaintext flows (detail() names the suite)
    HandshakeFailed,  // the handshake failed (`why`, or null after a socket error)
    Failed,           // a write without a WriteFn failed, or handshake records could not be sent
  };
  using EventFn = void (*)(Stream* s, Event e, const char* why);
  // What peek() saw: no byte yet; bytes, but not yet a whole TLS record (or no whole record in
  // mbedTLS); plaintext in *out; a whole TLS record before the handshake is done (no plaintext);
  // EOF, an error, an alert or close_notify (the next read reports it).
  enum class Peek : uint8_t { Nothing, Partial, Data, Record, End };
  struct WriteReq {
    uv_write_t req;
    Stream* stream = nullptr;
    WriteFn cb = nullptr;
    uint64_t tag = 0;
    bool busy = false;
    std::string bytes;  // TLS: the ciphertext being written (capacity kept)
  };

  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void* data = nullptr;  // the user's

  // Sets up the socket handle on `loop`; `tls` (may be null: plain TCP) is used by start() and
  // known before it (writeNow and peek look at TLS records, not plaintext, until the handshake).
  void init(uv_loop_t* loop, std::shared_ptr<TlsContext> tls = nullptr);
  uv_tcp_t* tcp() { return &tcp_; }  // for uv_accept, uv_tcp_getpeername, uv_tcp_nodelay
  // TLS over it after all (a client that sets up its configuration once connected); before start().
  void setTls(std::shared_ptr<TlsContext> tls);
  // Begins the stream, accepted or connected (TLS: its state, `inBytes` of ciphertext buffer, and
  // the handshake: a client's first message now, the rest as reads come; `hostname` is the name a
  // client checks the server's certificate against). False when out of memory.
  bool start(EventFn onEvent, size_t inBytes, const char* hostname = nullptr);
  // Client streams: connects; `req` is the caller's (it lives until `cb`). Then start().
  int connect(uv_connect_t* req, const struct sockaddr* addr, ConnectFn cb);

  void readStart(AllocFn alloc, ReadFn read);
  void readStop();
  bool reading() const { return reading_; }
  // Looks at what waits to be read without taking it: the socket's bytes (plain, or TLS records
  // before the handshake, in `scratch`), or the plaintext of mbedTLS's next whole record.
  Peek peek(char* scratch, size_t cap, std::string_view* out);

  // Queues `n` buffers (they stay valid until `cb`, which gets `tag`). False when it cannot (the
  // caller closes).
  bool write(const uv_buf_t* bufs, unsigned n, WriteFn cb, uint64_t tag = 0);
  // Best effort, at once (uv_try_write): a last word before closing. False if the stream cannot
  // carry plaintext yet (a TLS handshake not done).
  bool writeNow(const char* bytes, size_t len);
  // Ends our side: TLS close_notify, then FIN. The TLS state goes; later reads give raw bytes (to
  // discard). False if the socket could not be shut.
  bool shutdownWrite();
  void close(CloseFn cb);

  // Carries plaintext now (plain TCP always; TLS once the handshake is done).
  bool established() const { return mode_ == Mode::Plain || mode_ == Mode::Ended || (mode_ == Mode::Tls && tlsDone()); }
  const char* detail() const;        // the TLS suite, or ""
  const char* lastError() const;     // the TLS error or close_notify a read reported, or ""
  // A stream without requests of its own (LentStream): plain TCP writes with a WriteFn on `w`, the
  // user's, until lend(nullptr); the user takes it back only while writing() is false.
  void lend(WriteReq* w);
  // A write with a WriteFn is in flight on a request of this stream's, or on the lent one.
  bool writing() const;
  // A TLS client's handshake failed on the server's certificate: why ("" otherwise).
  std::string certificateProblem() const;

 protected:
  Stream(WriteReq* requests, int count) : writeCount_(count), writes_(requests) {}

 private:
  enum class Mode : uint8_t { Plain, TlsPending, Tls, Ended };

  static void onUvAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onUvRead(uv_stream_t* h, ssize_t nread, const uv_buf_t* buf);
  static void onUvWrite(uv_write_t* req, int status);
  static void onUvClose(uv_handle_t* h);
  WriteReq* freeRequest();
  void setReading(bool on);
  // TLS backend (stream_tls.cc).
  bool tlsDone() const;
  bool tlsStart(size_t inBytes, const char* hostname);
  void tlsFree();
  void tlsAlloc(uv_buf_t* buf);
  void tlsRead(ssize_t nread);
  bool tlsHandshake();
  void tlsDeliver();
  bool tlsWrite(const uv_buf_t* bufs, unsigned n, WriteFn cb, uint64_t tag);
  bool tlsFlush(WriteFn cb, uint64_t tag = 0);
  bool tlsWriteNow(const char* bytes, size_t len);
  void tlsCloseNotify();
  Peek tlsPeek(std::string_view* out);
  void tlsAfterWrite();
  WriteReq* tlsRequest();  // the TLS state's own request (a stream with none of its own), or null
  bool tlsWriting() const;

  uv_tcp_t tcp_;
  Mode mode_ = Mode::Plain;
  bool reading_ = false;
  bool closing_ = false;
  bool delivering_ = false;  // inside tlsDeliver: a nested readStart lets the loop go on
  int writeCount_;           // (here, where it fills the padding after the flags)
  AllocFn alloc_ = nullptr;
  ReadFn read_ = nullptr;
  EventFn event_ = nullptr;
  CloseFn closeCb_ = nullptr;
  ConnectFn connectCb_ = nullptr;
  std::shared_ptr<TlsContext> ctx_;
  StreamTls* tls_ = nullptr;
  WriteReq* writes_;  // the StreamOf's
  WriteReq* lent_ = nullptr;  // LentStream: the user's, while it lends one
};

// A Stream with N write requests of its own: N writes (with a WriteFn) in flight at once.
template <int N>
class StreamOf final : public Stream {
 public:
  StreamOf() : Stream(requests_, N) {}

 private:
  WriteReq requests_[N];
};

// A Stream without write requests of its own (a server connection): see lend().
class LentStream final : public Stream {
 public:
  LentStream() : Stream(nullptr, 0) {}
};

}  // namespace bitsd::platform
