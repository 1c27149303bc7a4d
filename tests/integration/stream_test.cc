// platform Stream (issue 16) on real sockets on 127.0.0.1, both ends on one libuv loop in this
// process: a TLS server stream with one write request (its own, or, as bitsd's connections have it,
// the one in its TLS state: LentStream) and a TLS client stream. Writes that find the request busy
// wait behind it and go out in order, the user's callback fires once they are sent, and
// shutdownWrite's close_notify reaches the client as EOF. Plain TCP: a LentStream writes with a
// callback only on a request lent to it (issue 18).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <string>

#include "platform/stream.h"
#include "platform/tls.h"
#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

using platform::Stream;
using platform::LentStream;
using platform::StreamOf;
using platform::TlsContext;

template <class ServerStream>
struct Ends {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t deadline;
  uv_connect_t connectReq;
  ServerStream server;
  StreamOf<2> client;
  std::shared_ptr<TlsContext> serverTls, clientTls;
  char serverBuf[4096];
  char clientBuf[4096];
  std::string clientGot;
  int clientEnd = 0;         // the client's read status that ended its reads (UV_EOF expected)
  int writeCallbacks = 0;    // server: callbacks of notified writes
  int writeStatus = 1;
  bool serverReady = false, clientReady = false, secondQueued = false;
  bool accepted = false, over = false;
  std::string clientEndText;
  int closed = 0;
};

template <class E>
void closeAll(E* e) {
  if (e->over) return;
  e->over = true;
  auto done = [](Stream* s) { ++static_cast<E*>(s->data)->closed; };
  if (e->accepted) e->server.close(done);
  e->client.close(done);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->deadline), nullptr);
}

template <class E>
void onServerEvent(Stream* s, Stream::Event ev, const char* why) {
  E* e = static_cast<E*>(s->data);
  ASSERT_EQ(ev, Stream::Event::Ready) << (why != nullptr ? why : "");
  e->serverReady = true;
  // Three writes at once on one request: the first takes it, the others wait behind it in order.
  static char a[] = "one ", b[] = "two ", c[] = "three";
  uv_buf_t ba = uv_buf_init(a, 4), bb = uv_buf_init(b, 4), bc = uv_buf_init(c, 5);
  ASSERT_TRUE(s->write(&ba, 1, nullptr));
  ASSERT_TRUE(s->write(&bb, 1, nullptr));
  e->secondQueued = s->write(&bc, 1, [](Stream* st, int status, uint64_t tag) {
    E* en = static_cast<E*>(st->data);
    ++en->writeCallbacks;
    en->writeStatus = status;
    EXPECT_EQ(tag, 7u);
    EXPECT_TRUE(st->shutdownWrite());  // close_notify, then FIN
  }, 7);
}

template <class E>
void onClientEvent(Stream* s, Stream::Event ev, const char* why) {
  E* e = static_cast<E*>(s->data);
  ASSERT_EQ(ev, Stream::Event::Ready) << (why != nullptr ? why : "");
  e->clientReady = true;
}

template <class ServerStream>
void tlsWritesInOrder() {
  using E = Ends<ServerStream>;
  TempDir dir;
  {
    std::vector<std::string> args = {"gen-cert", "--cn", "127.0.0.1", "--cert", dir.path() + "/s.crt", "--key",
                                     dir.path() + "/s.key"};
    int out = ::open("/dev/null", O_WRONLY);
    pid_t pid = spawnProgram(BITSCTL_BINARY, args, out, out);
    ::close(out);
    ASSERT_EQ(waitProcess(pid, 60000), 0);
  }
  auto e = std::make_unique<E>();
  std::string err;
  bool caUnreadable = false;
  e->serverTls = TlsContext::load(dir.path() + "/s.crt", dir.path() + "/s.key", &err);
  ASSERT_TRUE(e->serverTls) << err;
  e->clientTls = TlsContext::client(dir.path() + "/s.crt", false, 0, &err, &caUnreadable);
  ASSERT_TRUE(e->clientTls) << err;

  uv_loop_init(&e->loop);
  uv_tcp_init(&e->loop, &e->listener);
  e->listener.data = e.get();
  sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  ASSERT_EQ(uv_tcp_bind(&e->listener, reinterpret_cast<const sockaddr*>(&addr), 0), 0);
  ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&e->listener), 4,
                      [](uv_stream_t* l, int status) {
                        E* en = static_cast<E*>(l->data);
                        ASSERT_EQ(status, 0);
                        en->server.init(&en->loop, en->serverTls);
                        en->server.data = en;
                        en->accepted = true;
                        ASSERT_EQ(uv_accept(l, reinterpret_cast<uv_stream_t*>(en->server.tcp())), 0);
                        EXPECT_FALSE(en->server.established());
                        ASSERT_TRUE(en->server.start(onServerEvent<E>, 16384));
                        en->server.readStart(
                            [](Stream* s, uv_buf_t* buf) {
                              *buf = uv_buf_init(static_cast<E*>(s->data)->serverBuf, 4096);
                            },
                            [](Stream*, ssize_t, const uv_buf_t*) {});
                      }),
            0);
  sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&e->listener, reinterpret_cast<sockaddr*>(&bound), &len);

  e->client.init(&e->loop, e->clientTls);
  e->client.data = e.get();
  ASSERT_EQ(e->client.connect(&e->connectReq, reinterpret_cast<const sockaddr*>(&bound),
                              [](Stream* s, int status) {
                                ASSERT_EQ(status, 0);
                                ASSERT_TRUE(s->start(onClientEvent<E>, 16384, "127.0.0.1"));
                                s->readStart(
                                    [](Stream* st, uv_buf_t* buf) {
                                      *buf = uv_buf_init(static_cast<E*>(st->data)->clientBuf, 4096);
                                    },
                                    [](Stream* st, ssize_t n, const uv_buf_t* buf) {
                                      E* en = static_cast<E*>(st->data);
                                      if (n > 0) en->clientGot.append(buf->base, static_cast<size_t>(n));
                                      if (n < 0) {
                                        en->clientEnd = static_cast<int>(n);
                                        en->clientEndText = st->lastError();
                                        closeAll(en);
                                      }
                                    });
                              }),
            0);
  uv_timer_init(&e->loop, &e->deadline);
  e->deadline.data = e.get();
  uv_timer_start(&e->deadline, [](uv_timer_t* t) { closeAll(static_cast<E*>(t->data)); }, 10000, 0);
  uv_run(&e->loop, UV_RUN_DEFAULT);

  EXPECT_TRUE(e->serverReady);
  EXPECT_TRUE(e->clientReady);
  EXPECT_TRUE(e->secondQueued) << "a notified write behind a busy request was refused";
  EXPECT_EQ(e->clientGot, "one two three");
  EXPECT_EQ(e->writeCallbacks, 1);
  EXPECT_EQ(e->writeStatus, 0);
  EXPECT_EQ(e->clientEnd, UV_EOF);
  EXPECT_EQ(e->clientEndText, "TLS close_notify") << "the server's FIN came without a close_notify";
  EXPECT_EQ(e->closed, 2);
  EXPECT_EQ(uv_loop_close(&e->loop), 0);
}

TEST(Stream, TlsWritesWaitBehindTheOneRequestInOrderAndCloseNotifyIsEof) {
  if (!platform::kTlsBuilt) GTEST_SKIP() << "built without TLS";
  tlsWritesInOrder<StreamOf<1>>();
}

// bitsd's connections: no request of their own; over TLS the one in the TLS state carries the
// handshake and the writes, and shutdownWrite right after the last write keeps the state until done.
TEST(Stream, ALentStreamOverTlsWritesOnItsTlsStatesRequest) {
  if (!platform::kTlsBuilt) GTEST_SKIP() << "built without TLS";
  tlsWritesInOrder<LentStream>();
}

struct PlainEnds {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t deadline;
  uv_connect_t connectReq;
  LentStream server;
  StreamOf<2> client;
  Stream::WriteReq lent;  // what a request slot lends
  char clientBuf[4096];
  std::string clientGot;
  int clientEnd = 0;
  bool refusedUnlent = false, queued = false, writingWhileInFlight = false, writingAfter = true;
  bool accepted = false, over = false;
  int writeCallbacks = 0;
  int closed = 0;
};

void closePlain(PlainEnds* e) {
  if (e->over) return;
  e->over = true;
  auto done = [](Stream* s) { ++static_cast<PlainEnds*>(s->data)->closed; };
  if (e->accepted) e->server.close(done);
  e->client.close(done);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->deadline), nullptr);
}

TEST(Stream, APlainLentStreamWritesWithACallbackOnlyOnALentRequest) {
  auto e = std::make_unique<PlainEnds>();
  uv_loop_init(&e->loop);
  uv_tcp_init(&e->loop, &e->listener);
  e->listener.data = e.get();
  sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  ASSERT_EQ(uv_tcp_bind(&e->listener, reinterpret_cast<const sockaddr*>(&addr), 0), 0);
  ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&e->listener), 4,
                      [](uv_stream_t* l, int status) {
                        PlainEnds* en = static_cast<PlainEnds*>(l->data);
                        ASSERT_EQ(status, 0);
                        en->server.init(&en->loop);
                        en->server.data = en;
                        en->accepted = true;
                        ASSERT_EQ(uv_accept(l, reinterpret_cast<uv_stream_t*>(en->server.tcp())), 0);
                        ASSERT_TRUE(en->server.start(nullptr, 0));
                        static char hello[] = "hello";
                        uv_buf_t b = uv_buf_init(hello, 5);
                        auto cb = [](Stream* st, int written, uint64_t) {
                          PlainEnds* x = static_cast<PlainEnds*>(st->data);
                          EXPECT_EQ(written, 0);
                          ++x->writeCallbacks;
                          x->writingAfter = st->writing();
                          static_cast<LentStream*>(st)->lend(nullptr);  // the slot goes back
                          EXPECT_TRUE(st->shutdownWrite());
                        };
                        // Nothing lent (an idle connection without a slot): no request to write on.
                        en->refusedUnlent = !en->server.write(&b, 1, cb);
                        en->server.lend(&en->lent);
                        en->queued = en->server.write(&b, 1, cb);
                        en->writingWhileInFlight = en->server.writing();
                      }),
            0);
  sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&e->listener, reinterpret_cast<sockaddr*>(&bound), &len);
  e->client.init(&e->loop);
  e->client.data = e.get();
  ASSERT_EQ(e->client.connect(&e->connectReq, reinterpret_cast<const sockaddr*>(&bound),
                              [](Stream* s, int status) {
                                ASSERT_EQ(status, 0);
                                ASSERT_TRUE(s->start(nullptr, 0));
                                s->readStart(
                                    [](Stream* st, uv_buf_t* buf) {
                                      *buf = uv_buf_init(static_cast<PlainEnds*>(st->data)->clientBuf, 4096);
                                    },
                                    [](Stream* st, ssize_t n, const uv_buf_t* buf) {
                                      PlainEnds* en = static_cast<PlainEnds*>(st->data);
                                      if (n > 0) en->clientGot.append(buf->base, static_cast<size_t>(n));
                                      if (n < 0) {
                                        en->clientEnd = static_cast<int>(n);
                                        closePlain(en);
                                      }
                                    });
                              }),
            0);
  uv_timer_init(&e->loop, &e->deadline);
  e->deadline.data = e.get();
  uv_timer_start(&e->deadline, [](uv_timer_t* t) { closePlain(static_cast<PlainEnds*>(t->data)); }, 10000, 0);
  uv_run(&e->loop, UV_RUN_DEFAULT);

  EXPECT_TRUE(e->refusedUnlent) << "a write with a callback went out without a request";
  EXPECT_TRUE(e->queued);
  EXPECT_TRUE(e->writingWhileInFlight);
  EXPECT_FALSE(e->writingAfter);
  EXPECT_EQ(e->writeCallbacks, 1);
  EXPECT_EQ(e->clientGot, "hello");
  EXPECT_EQ(e->clientEnd, UV_EOF);
  EXPECT_EQ(e->closed, 2);
  EXPECT_EQ(uv_loop_close(&e->loop), 0);
}

}  // namespace
}  // namespace bitsd::testing
