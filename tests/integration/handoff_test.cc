// The hand-off to a real application over real sockets (issue 5): bitsd posts each finished upload to
// TestApp (an HTTP server in this process that counts POSTs), in both modes, with every answer class;
// reply downloads; exactly-once across restarts and new sessions; and SIGKILL at each step of the
// hand-off with the POST counts checked.
#include <gtest/gtest.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha256.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "tests/integration/bitsd_process.h"
#include "tests/integration/test_app.h"

namespace bitsd::testing {
namespace {

std::string reprDigest(const std::string& bytes) {
  unsigned char sum[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), sum, 0);
  unsigned char b64[64];
  size_t n = 0;
  mbedtls_base64_encode(b64, sizeof b64, &n, sum, 32);
  return "sha-256=:" + std::string(reinterpret_cast<char*>(b64), n) + ":";
}

std::string finalRequest(const std::string& path, const std::string& id, uint64_t first, const std::string& bytes,
                         uint64_t total, const std::string& txid) {
  return fragmentRequest(path, id, first, bytes, total, txid);
}

// Uploads `data` in fragments of `fragment` bytes (the transaction id on every packet, as
// Start-BitsTransfer -CustomHeaders does) and returns the final Ack.
Reply uploadAll(int port, const std::string& path, const std::string& data, const std::string& txid,
                std::string* sessionId, size_t fragment = 100000) {
  Client c;
  if (!c.connect(port)) return Reply();
  std::string id = createSession(c, path);
  if (sessionId != nullptr) *sessionId = id;
  if (id.empty()) return Reply();
  Reply last;
  for (size_t off = 0; off < data.size(); off += fragment) {
    std::string part = data.substr(off, fragment);
    last = c.roundTrip(finalRequest(path, id, off, part, data.size(), txid), 20000);
    if (last.status != 200) return last;
  }
  return last;
}

std::string replyTarget(const Reply& ack) {
  std::string url = ack.get("BITS-Reply-URL");
  size_t slash = url.find('/', std::string("http://").size());
  return slash == std::string::npos ? std::string() : url.substr(slash);
}

Reply get(int port, const std::string& method, const std::string& target,
          const std::map<std::string, std::string>& headers = {}) {
  Client c;
  if (!c.connect(port)) return Reply();
  return c.roundTrip(EngineDriver::httpRequest(method, target, headers));
}

class HandOff : public ::testing::Test {
 protected:
  std::unique_ptr<BitsdProcess> startBitsd(const char* type, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--notify-type", type, "--notify-url", app.url("/app")};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = std::make_unique<BitsdProcess>(args);
    EXPECT_TRUE(p->start()) << p->stderrText();
    return p;
  }
  TestApp app;
};

TEST_F(HandOff, ByValueStreamsTheFileAndTheReplyComesBackWithRanges) {
  TestApp::Behaviour b;
  b.reply = randomBytes(150000, 7);  // bigger than one 64 KiB chunk each way
  app.set(b);
  auto bitsd = startBitsd("value");
  std::string data = randomBytes(300000, 3);
  std::string id;
  Reply ack = uploadAll(bitsd->port(), "/in.bin?acct=5", data, "order-1", &id);
  ASSERT_EQ(ack.status, 200) << ack.raw << bitsd->stderrText();
  ASSERT_EQ(app.count(), 1u);
  TestApp::Seen s = app.seen()[0];
  EXPECT_EQ(s.target, "/app?acct=5");
  EXPECT_TRUE(s.content == data) << "the POST body differs from the upload";
  EXPECT_EQ(s.header("bits-transaction-id"), "order-1");
  EXPECT_EQ(s.header("bits-session-id"), id);
  EXPECT_EQ(s.header("repr-digest"), reprDigest(data));
  EXPECT_EQ(s.header("bits-original-request-url"), "http://appliance/in.bin");
  EXPECT_EQ(s.header("bits-request-datafile-name"), "");
  EXPECT_EQ(s.header("content-length"), "300000");
  // Plain uploads commit to the destination; a hand-off does not unless the application asks.
  EXPECT_FALSE(fileExists(bitsd->root() + "/in.bin"));

  std::string target = replyTarget(ack);
  ASSERT_FALSE(target.empty()) << ack.raw;
  Reply head = get(bitsd->port(), "HEAD", target);
  EXPECT_EQ(head.status, 200) << head.raw;
  EXPECT_EQ(head.get("Content-Length"), "150000");
  Reply whole = get(bitsd->port(), "GET", target);
  EXPECT_EQ(whole.status, 200);
  EXPECT_TRUE(whole.body == b.reply) << "reply body differs";
  Reply part = get(bitsd->port(), "GET", target, {{"Range", "bytes=70000-139999"}});
  EXPECT_EQ(part.status, 206) << part.raw;
  EXPECT_EQ(part.get("Content-Range"), "bytes 70000-139999/150000");
  EXPECT_TRUE(part.body == b.reply.substr(70000, 70000));
  // Several ranges, across the server's 64 KiB read chunks: multipart/byteranges in ascending order.
  Reply multi = get(bitsd->port(), "GET", target, {{"Range", "bytes=140000-149999, 10-20,60000-80000"}});
  ASSERT_EQ(multi.status, 206) << multi.raw.substr(0, 400);
  const std::string type = multi.get("Content-Type"), prefix = "multipart/byteranges; boundary=";
  ASSERT_EQ(type.substr(0, prefix.size()), prefix);
  const std::string boundary = type.substr(prefix.size());
  std::string expected;
  for (auto [first, last] : {std::pair<size_t, size_t>{10, 20}, {60000, 80000}, {140000, 149999}}) {
    expected += (expected.empty() ? "--" : "\r\n--") + boundary +
                "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " + std::to_string(first) + "-" +
                std::to_string(last) + "/150000\r\n\r\n" + b.reply.substr(first, last - first + 1);
  }
  expected += "\r\n--" + boundary + "--\r\n";
  EXPECT_EQ(multi.get("Content-Length"), std::to_string(expected.size()));
  EXPECT_TRUE(multi.body == expected) << "multipart body differs (" << multi.body.size() << " bytes, expected "
                                      << expected.size() << ")";
  EXPECT_EQ(get(bitsd->port(), "GET", target, {{"Range", "bytes=9-3"}}).status, 416);
  Reply put = get(bitsd->port(), "PUT", target);
  EXPECT_EQ(put.status, 405);
  EXPECT_EQ(put.get("Allow"), "BITS_POST, GET, HEAD");
  Reply stale = get(bitsd->port(), "GET", target, {{"If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"}});
  EXPECT_EQ(stale.status, 412);

  // Close-Session deletes the reply.
  Client c;
  ASSERT_TRUE(c.connect(bitsd->port()));
  EXPECT_EQ(c.roundTrip(bitsRequest("/in.bin?acct=5", "Close-Session", {{"BITS-Session-Id", id}})).status, 200);
  EXPECT_EQ(get(bitsd->port(), "GET", target).status, 404);
  // The file stays as the delivery's reply of record: a later session of the same transaction
  // serves it at its own URL (until delivered-retention).
  EXPECT_EQ(listDir(bitsd->state() + "/replies").size(), 1u);
  EXPECT_TRUE(listDir(bitsd->state() + "/partial").empty());
}

TEST_F(HandOff, ByReferenceNamesTheFilesAndCopiesToTheDestinationWhenAsked) {
  TestApp::Behaviour b;
  b.reply = "receipt #1";
  b.copyToDestination = true;
  app.set(b);
  auto bitsd = startBitsd("reference");
  std::string data = randomBytes(5000, 9);
  Reply ack = uploadAll(bitsd->port(), "/ref.bin", data, "tx-ref", nullptr);
  ASSERT_EQ(ack.status, 200) << ack.raw << bitsd->stderrText();
  ASSERT_EQ(app.count(), 1u);
  TestApp::Seen s = app.seen()[0];
  EXPECT_TRUE(s.content == data) << "the referenced file did not hold the upload when the application read it";
  EXPECT_EQ(s.header("content-length"), "0");
  EXPECT_NE(s.header("bits-response-datafile-name"), "");
  std::string copied;
  ASSERT_TRUE(readFile(bitsd->root() + "/ref.bin", &copied));
  EXPECT_TRUE(copied == data);
  EXPECT_FALSE(fileExists(s.header("bits-request-datafile-name")));  // deleted once answered
  Reply r = get(bitsd->port(), "GET", replyTarget(ack));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "receipt #1");
}

TEST_F(HandOff, AnAnswerWithoutContentLengthIsReadToEof) {
  TestApp::Behaviour b;
  b.mode = TestApp::Mode::NoLength;
  b.reply = "until the end";
  app.set(b);
  auto bitsd = startBitsd("value");
  Reply ack = uploadAll(bitsd->port(), "/eof.bin", "x", "tx-eof", nullptr);
  ASSERT_EQ(ack.status, 200) << ack.raw << bitsd->stderrText();
  EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(ack)).body, "until the end");
}

TEST_F(HandOff, StaticResponseUrl) {
  TestApp::Behaviour b;
  b.staticUrl = "http://updates.example/pkg.cab";
  app.set(b);
  auto bitsd = startBitsd("value");
  Reply ack = uploadAll(bitsd->port(), "/st.bin", "x", "tx-st", nullptr);
  EXPECT_EQ(ack.get("BITS-Reply-URL"), "http://updates.example/pkg.cab") << ack.raw;
}

TEST_F(HandOff, EveryErrorClassReachesTheFinalAckAndTheServerKeepsServing) {
  auto bitsd = startBitsd("value", {"--notify-timeout", "1"});
  struct Case {
    TestApp::Mode mode;
    int appStatus;
    int status;
    const char* code;
    bool transient;
  } cases[] = {
      {TestApp::Mode::Answer, 503, 503, "0x801901F7", true},
      {TestApp::Mode::Answer, 500, 500, "0x801901F4", true},
      {TestApp::Mode::Answer, 404, 404, "0x80190194", false},
      {TestApp::Mode::Answer, 403, 403, "0x80190193", false},
      {TestApp::Mode::Garbage, 0, 502, "0x8020001E", true},
      {TestApp::Mode::CloseAtOnce, 0, 502, "0x8020001E", true},
      {TestApp::Mode::Hold, 0, 408, "0x800705B4", true},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string("case ") + std::to_string(n));
    TestApp::Behaviour b;
    b.mode = c.mode;
    b.status = c.appStatus;
    app.set(b);
    std::string txid = "err-" + std::to_string(n++);
    std::string id;
    size_t before = app.count();
    Reply ack = uploadAll(bitsd->port(), "/e" + std::to_string(n) + ".bin", "data", txid, &id);
    EXPECT_EQ(ack.status, c.status) << ack.raw;
    EXPECT_EQ(ack.get("BITS-Error-Code"), c.code) << ack.raw;
    EXPECT_EQ(ack.get("BITS-Error-Context"), "0x7") << ack.raw;
    EXPECT_EQ(app.count(), before + 1);
    app.release();
    // The client's retry of the final fragment: posted again only for transient errors.
    TestApp::Behaviour ok;
    app.set(ok);
    Client retry;
    ASSERT_TRUE(retry.connect(bitsd->port()));
    Reply again = retry.roundTrip(finalRequest("/e" + std::to_string(n) + ".bin", id, 0, "data", 4, txid));
    if (c.transient) {
      EXPECT_EQ(again.status, 200) << again.raw;
      EXPECT_EQ(app.countFor(txid), 2u);
    } else {
      EXPECT_EQ(again.status, c.status) << again.raw;
      EXPECT_EQ(app.countFor(txid), 1u);
    }
  }
  Client c;
  ASSERT_TRUE(c.connect(bitsd->port()));
  EXPECT_EQ(c.roundTrip(bitsRequest("/x", "Ping")).status, 200);
}

TEST_F(HandOff, UnreachableApplicationIsTransient) {
  int deadPort;
  {
    TestApp gone;  // bind a port, then close it: nothing listens there
    deadPort = gone.port();
  }
  BitsdProcess bitsd({"--notify-type", "value", "--notify-url", "http://127.0.0.1:" + std::to_string(deadPort) + "/app"});
  ASSERT_TRUE(bitsd.start()) << bitsd.stderrText();
  Reply ack = uploadAll(bitsd.port(), "/u.bin", "x", "tx-u", nullptr);
  EXPECT_EQ(ack.status, 502) << ack.raw;
  EXPECT_EQ(ack.get("BITS-Error-Code"), "0x8020001E");
  EXPECT_EQ(ack.get("BITS-Error-Context"), "0x7");
}

TEST_F(HandOff, ExactlyOnceAcrossRestartsAndNewSessionsWithTheSameTransactionId) {
  TestApp::Behaviour b;
  b.reply = "once";
  app.set(b);
  auto bitsd = startBitsd("value");
  std::string id;
  Reply ack = uploadAll(bitsd->port(), "/once.bin", "payload", "tx-once", &id);
  ASSERT_EQ(ack.status, 200) << ack.raw;
  ASSERT_EQ(bitsd->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  // The client never got the Ack and retries the final fragment.
  Client c;
  ASSERT_TRUE(c.connect(bitsd->port()));
  Reply again = c.roundTrip(finalRequest("/once.bin", id, 0, "payload", 7, "tx-once"));
  EXPECT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(again.get("BITS-Reply-URL"), ack.get("BITS-Reply-URL"));
  EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(again)).body, "once");
  // The client lost its session and uploads the same transaction again.
  Reply fresh = uploadAll(bitsd->port(), "/once.bin", "payload", "tx-once", nullptr);
  EXPECT_EQ(fresh.status, 200) << fresh.raw;
  EXPECT_NE(fresh.get("BITS-Reply-URL"), ack.get("BITS-Reply-URL"));  // its own URL, the same reply
  EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(fresh)).body, "once");
  EXPECT_EQ(app.countFor("tx-once"), 1u);
}

// A client that downloaded its reply and closed its session, then (a new job) uploads the same
// transaction again after a restart of bitsd: no second POST, and the reply URL in its final Ack
// serves the application's reply (start-up kept the closed session's reply file as the delivery's
// reply of record). It used to answer 404.
TEST_F(HandOff, AReplayAfterCloseAndRestartServesTheReplyAtItsOwnUrl) {
  TestApp::Behaviour b;
  b.reply = "receipt after close";
  app.set(b);
  auto bitsd = startBitsd("value");
  std::string id;
  Reply ack = uploadAll(bitsd->port(), "/closed.bin", "payload", "tx-closed", &id);
  ASSERT_EQ(ack.status, 200) << ack.raw << bitsd->stderrText();
  EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(ack)).body, "receipt after close");
  Client c;
  ASSERT_TRUE(c.connect(bitsd->port()));
  EXPECT_EQ(c.roundTrip(bitsRequest("/closed.bin", "Close-Session", {{"BITS-Session-Id", id}})).status, 200);
  EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(ack)).status, 404);
  ASSERT_EQ(bitsd->stop(), 0);
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  EXPECT_EQ(listDir(bitsd->state() + "/replies").size(), 1u) << "start-up deleted the reply of record";

  Reply again = uploadAll(bitsd->port(), "/closed.bin", "payload", "tx-closed", nullptr);
  ASSERT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(app.countFor("tx-closed"), 1u);
  Reply reply = get(bitsd->port(), "GET", replyTarget(again));
  EXPECT_EQ(reply.status, 200) << reply.raw;
  EXPECT_EQ(reply.body, "receipt after close");
}

TEST_F(HandOff, KilledWhileTheApplicationHoldsThePostRepostsOnceWithTheSameId) {
  TestApp::Behaviour hold;
  hold.mode = TestApp::Mode::Hold;
  app.set(hold);
  auto bitsd = startBitsd("value");
  Client c;
  ASSERT_TRUE(c.connect(bitsd->port()));
  std::string id = createSession(c, "/held.bin");
  ASSERT_TRUE(c.sendAll(finalRequest("/held.bin", id, 0, "held data", 9, "tx-held")));
  ASSERT_TRUE(app.waitForPosts(1));
  ASSERT_EQ(bitsd->stop(SIGKILL), 128 + SIGKILL);  // between DeliveryBegan and DeliveryEnded
  TestApp::Behaviour ok;
  ok.reply = "done";
  app.set(ok);  // also releases the held request (its answer goes nowhere)
  app.release();
  ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
  Client again;
  ASSERT_TRUE(again.connect(bitsd->port()));
  Reply r = again.roundTrip(finalRequest("/held.bin", id, 0, "held data", 9, "tx-held"));
  EXPECT_EQ(r.status, 200) << r.raw << bitsd->stderrText();
  EXPECT_EQ(app.countFor("tx-held"), 2u);
  Reply third = again.roundTrip(finalRequest("/held.bin", id, 0, "held data", 9, "tx-held"));
  EXPECT_EQ(third.status, 200);
  EXPECT_EQ(app.countFor("tx-held"), 2u);
}

// SIGKILL at random moments of the hand-off, over many uploads (bounded): before the POST, while the
// application holds it, right after it answered, and at random delays. Over every run: each upload's
// POSTs carry one transaction id (its own), at most two of them, and once the client has its final
// 200, never another.
TEST_F(HandOff, CrashLoopKeepsAtMostTwoPostsPerIdAndNoneAfterTheAck) {
  const unsigned seed = static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto bitsd = startBitsd("value");
  constexpr int kUploads = 12;
  for (int i = 0; i < kUploads; ++i) {
    std::string txid = "crash-" + std::to_string(i);
    std::string path = "/c" + std::to_string(i) + ".bin";
    std::string data = randomBytes(2000 + i, static_cast<uint32_t>(i));
    TestApp::Behaviour b;
    b.reply = "r" + std::to_string(i);
    int step = static_cast<int>(rng() % 4);
    if (step == 1) b.mode = TestApp::Mode::Hold;
    app.set(b);
    Client c;
    ASSERT_TRUE(c.connect(bitsd->port()));
    std::string id = createSession(c, path);
    ASSERT_FALSE(id.empty());
    size_t before = app.countFor(txid);
    ASSERT_TRUE(c.sendAll(finalRequest(path, id, 0, data, data.size(), txid)));
    switch (step) {
      case 0: break;                                                        // at once
      case 1: ASSERT_TRUE(app.waitForPosts(app.count() + (before == app.countFor(txid) ? 1 : 0))); break;
      case 2: app.waitForPosts(app.count() + 1, 2000); break;               // just after it answered
      // Deliberate: the kill lands at a random moment of the hand-off (this sleep is the test).
      default: std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000)); break;
    }
    ASSERT_EQ(bitsd->stop(SIGKILL), 128 + SIGKILL);
    app.set(TestApp::Behaviour{});
    app.release();
    ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
    // The client retries until it has its final Ack (bounded).
    Reply r;
    for (int attempt = 0; attempt < 5 && r.status != 200; ++attempt) {
      Client again;
      ASSERT_TRUE(again.connect(bitsd->port()));
      r = again.roundTrip(finalRequest(path, id, 0, data, data.size(), txid));
    }
    ASSERT_EQ(r.status, 200) << r.raw << bitsd->stderrText();
    size_t afterAck = app.countFor(txid);
    EXPECT_GE(afterAck, 1u);
    EXPECT_LE(afterAck, 2u) << "step " << step;
    Client repeat;
    ASSERT_TRUE(repeat.connect(bitsd->port()));
    EXPECT_EQ(repeat.roundTrip(finalRequest(path, id, 0, data, data.size(), txid)).status, 200);
    EXPECT_EQ(app.countFor(txid), afterAck) << "a POST after the final Ack";
  }
  // Never two different ids for one upload: each POSTed content came with its own id only.
  for (const TestApp::Seen& s : app.seen()) {
    std::string txid = s.header("bits-transaction-id");
    ASSERT_EQ(txid.rfind("crash-", 0), 0u) << txid;
    int i = std::stoi(txid.substr(6));
    EXPECT_TRUE(s.content == randomBytes(2000 + i, static_cast<uint32_t>(i))) << txid;
  }
}

// The crash window inside the copy step: the application answered 200 with
// BITS-Copy-File-To-Destination and its reply is synced, bitsd linked (or, overwriting, renamed) the
// upload into place, and died before DeliveryEnded. The disk is set up exactly so (kill while the
// application holds the POST, then make the link or rename and the reply file by hand); recovery
// must conclude the delivery: the retry gets the reply, and the application is not asked again.
TEST_F(HandOff, ACrashAfterTheCopyBeforeTheEndIsRecoveredWithTheReply) {
  for (bool overwrite : {false, true}) {
    SCOPED_TRACE(overwrite ? "renamed (allow-overwrites)" : "linked");
    TestApp::Behaviour hold;
    hold.mode = TestApp::Mode::Hold;
    app.set(hold);
    std::vector<std::string> extra;
    if (overwrite) extra = {"--allow-overwrites"};
    auto bitsd = startBitsd("value", extra);
    std::string data = randomBytes(3000, 11);
    std::string txid = overwrite ? "tx-copy-r" : "tx-copy-l";
    Client c;
    ASSERT_TRUE(c.connect(bitsd->port()));
    std::string id = createSession(c, "/copied.bin");
    ASSERT_TRUE(c.sendAll(finalRequest("/copied.bin", id, 0, data, data.size(), txid)));
    ASSERT_TRUE(app.waitForPosts(app.count() + 1));
    ASSERT_EQ(bitsd->stop(SIGKILL), 128 + SIGKILL);
    app.set(TestApp::Behaviour{});
    app.release();
    std::string partial = bitsd->state() + "/partial/" + id + ".part";
    std::string dest = bitsd->root() + "/copied.bin";
    ::unlink(dest.c_str());
    if (overwrite) {
      ASSERT_EQ(::rename(partial.c_str(), dest.c_str()), 0);
    } else {
      ASSERT_EQ(::link(partial.c_str(), dest.c_str()), 0);
    }
    {
      std::FILE* f = std::fopen((bitsd->state() + "/replies/" + id).c_str(), "wb");
      ASSERT_NE(f, nullptr);
      std::fputs("the receipt", f);
      std::fclose(f);
    }
    size_t posts = app.countFor(txid);
    ASSERT_TRUE(bitsd->start()) << bitsd->stderrText();
    Client again;
    ASSERT_TRUE(again.connect(bitsd->port()));
    Reply r = again.roundTrip(finalRequest("/copied.bin", id, 0, data, data.size(), txid));
    ASSERT_EQ(r.status, 200) << r.raw << bitsd->stderrText();
    EXPECT_EQ(app.countFor(txid), posts) << "posted again after the copy";
    ASSERT_FALSE(r.get("BITS-Reply-URL").empty()) << r.raw;
    EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(r)).body, "the receipt");
    std::string atDest;
    ASSERT_TRUE(readFile(dest, &atDest));
    EXPECT_TRUE(atDest == data);
    EXPECT_FALSE(fileExists(partial));
  }
}

// max-notifications bounds the POSTs in flight, and one transaction is never handed over twice at
// once: the final fragment that would exceed either gets 503 + Retry-After and is posted on retry.
TEST_F(HandOff, HandOffsInFlightAreBoundedAndOneTransactionIsNeverPostedTwiceAtOnce) {
  TestApp::Behaviour hold;
  hold.mode = TestApp::Mode::Hold;
  app.set(hold);
  auto bitsd = startBitsd("value", {"--max-notifications", "1"});
  Client a;
  ASSERT_TRUE(a.connect(bitsd->port()));
  std::string idA = createSession(a, "/a.bin");
  ASSERT_TRUE(a.sendAll(finalRequest("/a.bin", idA, 0, "aaaa", 4, "tx-a")));
  ASSERT_TRUE(app.waitForPosts(1));

  // Another transaction while the only slot is taken.
  Client b;
  ASSERT_TRUE(b.connect(bitsd->port()));
  std::string idB = createSession(b, "/b.bin");
  Reply busy = b.roundTrip(finalRequest("/b.bin", idB, 0, "bbbb", 4, "tx-b"));
  EXPECT_EQ(busy.status, 503) << busy.raw;
  EXPECT_EQ(busy.get("BITS-Error-Code"), "0x800700AA");
  EXPECT_FALSE(busy.get("Retry-After").empty()) << busy.raw;
  // The same transaction from a second session (the client lost its session) while it is in flight.
  std::string idA2 = createSession(b, "/a2.bin");
  Reply same = b.roundTrip(finalRequest("/a2.bin", idA2, 0, "aaaa", 4, "tx-a"));
  EXPECT_EQ(same.status, 503) << same.raw;
  EXPECT_EQ(app.count(), 1u);

  TestApp::Behaviour ok;
  ok.reply = "fine";
  app.set(ok);
  app.release();
  Reply doneA;
  ASSERT_TRUE(a.readResponse(&doneA, 20000));
  EXPECT_EQ(doneA.status, 200) << doneA.raw;
  Reply retryB = b.roundTrip(finalRequest("/b.bin", idB, 0, "bbbb", 4, "tx-b"));
  EXPECT_EQ(retryB.status, 200) << retryB.raw;
  Reply retryA2 = b.roundTrip(finalRequest("/a2.bin", idA2, 0, "aaaa", 4, "tx-a"));
  EXPECT_EQ(retryA2.status, 200) << retryA2.raw;
  EXPECT_NE(retryA2.get("BITS-Reply-URL"), doneA.get("BITS-Reply-URL"));  // its own URL, the same reply
  EXPECT_EQ(get(bitsd->port(), "GET", replyTarget(retryA2)).body, "fine");
  EXPECT_EQ(app.countFor("tx-a"), 1u);
  EXPECT_EQ(app.countFor("tx-b"), 1u);
}

TEST_F(HandOff, BadNotifySettingsAreOneLineErrors) {
  struct Case {
    std::vector<std::string> args;
    const char* needle;
  } cases[] = {
      {{"--notify-type", "sometimes"}, "--notify-type: expected none, reference or value, got 'sometimes'"},
      {{"--notify-type", "value"}, "notify-type reference or value needs notify-url"},
      {{"--notify-type", "value", "--notify-url", "https://app/"}, "notify-url must be http://"},
      {{"--notify-timeout", "0"}, "notify-timeout must be 1..3600"},
      {{"--transaction-header", "Bad Header"}, "transaction-header must be a header name"},
  };
  for (const Case& c : cases) {
    RunResult r = runBitsd(c.args);
    EXPECT_EQ(r.exitCode, 2) << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

}  // namespace
}  // namespace bitsd::testing
