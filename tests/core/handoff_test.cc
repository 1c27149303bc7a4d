// The hand-off to the server application (BITS-UPLOAD.md §5, §8, issue 5) on fake storage and a fake
// application: every answer class, the journal's two delivery records, exactly-once across repeats,
// restarts and new sessions with the same transaction id, and reply downloads.
#include <gtest/gtest.h>

#include "core/http_reply.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

constexpr const char* kProto = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

Settings notifySettings(const char* type = "reference") {
  Settings s = EngineDriver::defaultSettings();
  s.notifyType = type;
  s.notifyUrl = "app/notify";
  return s;
}

// One whole upload in one fragment; returns the final Ack. `txid` empty: no transaction header.
struct Upload {
  std::string id;
  Reply ack;
};

Reply finalFragment(EngineDriver& d, const std::string& path, const std::string& id, const std::string& body,
                    const std::string& txid) {
  std::map<std::string, std::string> h = {{"BITS-Session-Id", id},
                                          {"Content-Range", "bytes 0-" + std::to_string(body.size() - 1) + "/" +
                                                                std::to_string(body.size())}};
  if (!txid.empty()) h["BITS-Transaction-Id"] = txid;
  return d.send(bitsRequest(path, "Fragment", h, body));
}

Upload upload(EngineDriver& d, const std::string& path, const std::string& body, const std::string& txid) {
  Upload u;
  u.id = d.createSession(path);
  EXPECT_FALSE(u.id.empty());
  u.ack = finalFragment(d, path, u.id, body, txid);
  return u;
}

void expectAppError(const Reply& r, int status, const char* code, const char* ctx) {
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), code) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), ctx) << r.raw;
  EXPECT_FALSE(r.has("BITS-Reply-URL")) << r.raw;
}

int countRecords(EngineDriver& d, RecordType type) {
  struct Counter : ReplaySink {
    RecordType t;
    int n = 0;
    void onRecord(const JournalRecord& r, uint64_t, uint64_t) override { n += r.type == t; }
  } c;
  c.t = type;
  d.settle();
  const std::string& bytes = d.storage.contents(EngineDriver::kJournalPath);
  replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &c);
  return c.n;
}

TEST(HandOff, ByReferencePostsOnceAndTheFinalAckCarriesAnAbsoluteReplyUrl) {
  EngineDriver d(notifySettings());
  d.storage.addDir("/root/in");
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "thanks";
  Upload u = upload(d, "/in/a.bin?account=7", "hello world", "order-1");
  ASSERT_EQ(u.ack.status, 200) << u.ack.raw;
  EXPECT_EQ(u.ack.get("BITS-Received-Content-Range"), "11");
  std::string inner = u.id.substr(1, 36);
  EXPECT_EQ(u.ack.get("BITS-Reply-URL"),
            "http://appliance/in/BITS-Sessions/Replies/%7B" + inner + "%7D/responsefile.bin");
  ASSERT_EQ(d.notifier.posts.size(), 1u);
  const FakeNotifier::Post& p = d.notifier.posts[0];
  EXPECT_EQ(p.url, "http://appliance/in/app/notify?account=7");
  EXPECT_EQ(p.originalUrl, "http://appliance/in/a.bin");
  EXPECT_EQ(p.txid, "order-1");
  EXPECT_EQ(p.sessionId, u.id);
  EXPECT_FALSE(p.byValue);
  EXPECT_EQ(p.contentBytes, 11u);
  EXPECT_TRUE(p.hasDigest);
  EXPECT_EQ(p.requestFile, d.partialPath(u.id));
  EXPECT_EQ(p.replyFile, d.replyPath(u.id));
  d.settle();
  // Without BITS-Copy-File-To-Destination the destination stays untouched, and the request file is
  // gone once the application has answered.
  EXPECT_FALSE(d.storage.exists("/root/in/a.bin"));
  EXPECT_FALSE(d.storage.exists(d.partialPath(u.id)));
  EXPECT_EQ(countRecords(d, RecordType::DeliveryBegan), 1);
  EXPECT_EQ(countRecords(d, RecordType::DeliveryEnded), 1);
  EXPECT_EQ(d.engine.stats().notifications, 1u);
}

TEST(HandOff, WithoutATransactionHeaderTheSessionIdIsTheTransactionId) {
  EngineDriver d(notifySettings("value"));
  Upload u = upload(d, "/b.bin", "data", "");
  ASSERT_EQ(u.ack.status, 200) << u.ack.raw;
  ASSERT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(d.notifier.posts[0].txid, u.id);
  EXPECT_TRUE(d.notifier.posts[0].byValue);
  EXPECT_EQ(d.notifier.posts[0].url, "http://appliance/app/notify");
}

TEST(HandOff, TheTransactionHeaderNameIsConfigurable) {
  Settings s = notifySettings();
  s.transactionHeader = "X-Order";
  EngineDriver d(s);
  std::string id = d.createSession("/c.bin");
  Reply r = d.send(bitsRequest("/c.bin", "Fragment",
                               {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-2/3"}, {"X-Order", "po-9"}},
                               "abc"));
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(d.notifier.posts[0].txid, "po-9");
}

TEST(HandOff, ARepeatedFinalFragmentGetsTheSameAckWithoutAnotherPostAcrossARestart) {
  EngineDriver d(notifySettings());
  d.notifier.answer.writeReply = true;
  Upload u = upload(d, "/r.bin", "payload", "tx-r");
  ASSERT_EQ(u.ack.status, 200);
  Reply again = finalFragment(d, "/r.bin", u.id, "payload", "tx-r");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.get("BITS-Reply-URL"), u.ack.get("BITS-Reply-URL"));
  EXPECT_EQ(d.notifier.posts.size(), 1u);

  EngineDriver after(notifySettings());
  after.restartFrom(d);
  Reply replay = finalFragment(after, "/r.bin", u.id, "payload", "tx-r");
  EXPECT_EQ(replay.status, 200) << replay.raw;
  EXPECT_EQ(replay.get("BITS-Reply-URL"), u.ack.get("BITS-Reply-URL"));
  EXPECT_EQ(after.notifier.posts.size(), 0u);
}

TEST(HandOff, ANewSessionWithADeliveredTransactionIdIsNotPostedAndReplaysTheStoredReply) {
  EngineDriver d(notifySettings());
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "receipt-1";
  Upload first = upload(d, "/o.bin", "order", "order-77");
  ASSERT_EQ(first.ack.status, 200);
  // The client lost its session (or failed over) and uploads the same transaction again.
  Upload second = upload(d, "/o.bin", "order", "order-77");
  ASSERT_EQ(second.ack.status, 200) << second.ack.raw;
  EXPECT_NE(second.id, first.id);
  // Its own reply URL, which serves the first session's reply (the reply of record): the first
  // session's URL ends with that session.
  const std::string firstUrl = first.ack.get("BITS-Reply-URL"), secondUrl = second.ack.get("BITS-Reply-URL");
  EXPECT_NE(secondUrl, firstUrl);
  EXPECT_NE(secondUrl.find(second.id.substr(1, 36)), std::string::npos) << secondUrl;
  EXPECT_EQ(second.ack.get("BITS-Session-Id"), second.id);
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  EXPECT_EQ(d.engine.stats().deliveriesReplayed, 1u);
  d.settle();
  EXPECT_FALSE(d.storage.exists(d.partialPath(second.id)));
  EXPECT_FALSE(d.storage.exists(d.replyPath(second.id)));  // no copy: one file per delivery
  const std::string host = "http://appliance";
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", secondUrl.substr(host.size()))).body, "receipt-1");
  // The first session is still open: its own URL still serves the reply.
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", firstUrl.substr(host.size()))).body, "receipt-1");
  // The same after a restart, for a third session.
  EngineDriver after(notifySettings());
  after.restartFrom(d);
  uint8_t burn[64];  // the fake generator restarts at its seed: skip the ids already used
  after.random.fill(burn, sizeof burn);
  Upload third = upload(after, "/o.bin", "order", "order-77");
  EXPECT_EQ(third.ack.status, 200);
  const std::string thirdUrl = third.ack.get("BITS-Reply-URL");
  EXPECT_NE(thirdUrl.find(third.id.substr(1, 36)), std::string::npos) << thirdUrl;
  EXPECT_EQ(after.send(EngineDriver::httpRequest("GET", thirdUrl.substr(host.size()))).body, "receipt-1");
  EXPECT_EQ(after.notifier.posts.size(), 0u);
}

// The case that used to end in 404: the first session downloaded its reply and closed, then the
// client (a new job) uploads the same transaction again. Not posted again, and its reply URL works:
// the closed session's reply file was kept as the delivery's reply of record, and the new session
// serves it at its own URL, across a restart too. The file goes with the delivery.
TEST(HandOff, AReplayAfterTheFirstSessionClosedStillGetsTheReply) {
  EngineDriver d(notifySettings("value"));
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "receipt-9";
  const std::string host = "http://appliance";
  Upload first = upload(d, "/q.bin", "order", "order-9");
  ASSERT_EQ(first.ack.status, 200);
  const std::string firstUrl = first.ack.get("BITS-Reply-URL");
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", firstUrl.substr(host.size()))).body, "receipt-9");
  EXPECT_EQ(d.close("/q.bin", first.id).status, 200);
  d.settle();
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", firstUrl.substr(host.size()))).status, 404);
  EXPECT_TRUE(d.storage.exists(d.replyPath(first.id))) << "the reply of record went with its session";

  Upload second = upload(d, "/q.bin", "order", "order-9");
  ASSERT_EQ(second.ack.status, 200) << second.ack.raw;
  EXPECT_EQ(d.notifier.posts.size(), 1u);
  const std::string secondUrl = second.ack.get("BITS-Reply-URL");
  Reply got = d.send(EngineDriver::httpRequest("GET", secondUrl.substr(host.size())));
  EXPECT_EQ(got.status, 200) << got.raw;
  EXPECT_EQ(got.body, "receipt-9");
  EXPECT_NE(secondUrl.find(second.id.substr(1, 36)), std::string::npos) << secondUrl;
  // A repeat of its final fragment names the same URL (the cached final Ack).
  Reply repeat = finalFragment(d, "/q.bin", second.id, "order", "order-9");
  EXPECT_EQ(repeat.get("BITS-Reply-URL"), secondUrl);

  // Closed too, then a restart: the reply of record is still there, and a third session gets it.
  EXPECT_EQ(d.close("/q.bin", second.id).status, 200);
  d.settle();
  EXPECT_TRUE(d.storage.exists(d.replyPath(first.id)));
  EngineDriver after(notifySettings("value"));
  after.restartFrom(d);
  uint8_t burn[64];
  after.random.fill(burn, sizeof burn);
  Upload third = upload(after, "/q.bin", "order", "order-9");
  ASSERT_EQ(third.ack.status, 200) << third.ack.raw;
  EXPECT_EQ(after.notifier.posts.size(), 0u);
  EXPECT_EQ(after.send(EngineDriver::httpRequest("GET", third.ack.get("BITS-Reply-URL").substr(host.size()))).body,
            "receipt-9");
}

// A session answered from a delivery keeps the reply of record alive past delivered-retention, even
// when the posting session is gone; the file goes once no session keeps its reply any more.
TEST(HandOff, TheReplyOfRecordStaysWhileAReplayedSessionKeepsItsReply) {
  Settings s = notifySettings("value");
  s.deliveredRetentionSeconds = 60;
  EngineDriver d(s);
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "kept";
  Upload first = upload(d, "/k2.bin", "x", "tx-k2");
  ASSERT_EQ(first.ack.status, 200);
  EXPECT_EQ(d.close("/k2.bin", first.id).status, 200);
  Upload second = upload(d, "/k2.bin", "x", "tx-k2");
  ASSERT_EQ(second.ack.status, 200);
  const std::string target = second.ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  d.clock.advanceMs(120 * 1000);  // past the retention, the second session still open
  d.engine.sweep();
  d.settle();
  EXPECT_NE(d.engine.findDelivery("tx-k2"), nullptr);
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", target)).body, "kept");
  EXPECT_EQ(d.close("/k2.bin", second.id).status, 200);
  d.engine.sweep();
  d.settle();
  EXPECT_EQ(d.engine.findDelivery("tx-k2"), nullptr);
  EXPECT_FALSE(d.storage.exists(d.replyPath(first.id)));
  EXPECT_EQ(d.notifier.posts.size(), 1u);
}

TEST(HandOff, TransientApplicationStatusIsRetriedOnTheNextAttemptWithTheSameId) {
  EngineDriver d(notifySettings());
  d.notifier.answer.status = 503;
  Upload u = upload(d, "/t.bin", "retry me", "tx-t");
  expectAppError(u.ack, 503, "0x801901F7", "0x7");
  EXPECT_EQ(countRecords(d, RecordType::DeliveryEnded), 0);
  EXPECT_TRUE(d.storage.exists(d.partialPath(u.id)));  // kept for the retry
  d.notifier.answer.status = 200;
  Reply retry = finalFragment(d, "/t.bin", u.id, "retry me", "tx-t");
  EXPECT_EQ(retry.status, 200) << retry.raw;
  ASSERT_EQ(d.notifier.posts.size(), 2u);
  EXPECT_EQ(d.notifier.posts[1].txid, "tx-t");
  EXPECT_EQ(countRecords(d, RecordType::DeliveryEnded), 1);
}

TEST(HandOff, FatalApplicationStatusEndsTheDeliveryAndIsReplayed) {
  EngineDriver d(notifySettings());
  d.notifier.answer.status = 400;
  Upload u = upload(d, "/f.bin", "bad", "tx-f");
  expectAppError(u.ack, 400, "0x80190190", "0x7");
  Reply again = finalFragment(d, "/f.bin", u.id, "bad", "tx-f");
  expectAppError(again, 400, "0x80190190", "0x7");
  EXPECT_EQ(d.notifier.posts.size(), 1u);
}

TEST(HandOff, UnreachableMalformedAndTimedOutApplicationsAreTransient) {
  struct Case {
    NotifyOutcome outcome;
    int status;
    const char* code;
  } cases[] = {{NotifyOutcome::Unreachable, 502, "0x8020001E"},
               {NotifyOutcome::Malformed, 502, "0x8020001E"},
               {NotifyOutcome::TimedOut, 408, "0x800705B4"}};
  for (const Case& c : cases) {
    EngineDriver d(notifySettings());
    d.notifier.answer.outcome = c.outcome;
    Upload u = upload(d, "/u.bin", "x", "tx-u");
    expectAppError(u.ack, c.status, c.code, "0x7");
    EXPECT_EQ(countRecords(d, RecordType::DeliveryEnded), 0);
    d.notifier.answer.outcome = NotifyOutcome::Answered;
    EXPECT_EQ(finalFragment(d, "/u.bin", u.id, "x", "tx-u").status, 200);
    EXPECT_EQ(d.notifier.posts.size(), 2u);
  }
}

TEST(HandOff, CopyFileToDestinationObeysTheOverwritePolicy) {
  EngineDriver d(notifySettings());
  d.notifier.answer.copy = true;
  Upload u = upload(d, "/copy.bin", "copied bytes", "tx-c1");
  ASSERT_EQ(u.ack.status, 200) << u.ack.raw;
  d.settle();
  ASSERT_TRUE(d.storage.exists("/root/copy.bin"));
  EXPECT_EQ(d.storage.contents("/root/copy.bin"), "copied bytes");
  EXPECT_FALSE(d.storage.exists(d.partialPath(u.id)));
  // The destination appears meanwhile; overwrites are off: 403, and the delivery still counts.
  std::string id = d.createSession("/late.bin");
  d.storage.addFile("/root/late.bin", "someone else's");
  Reply r = finalFragment(d, "/late.bin", id, "mine", "tx-c2");
  expectAppError(r, 403, "0x80070005", "0x5");
  EXPECT_EQ(d.storage.contents("/root/late.bin"), "someone else's");
  Reply again = finalFragment(d, "/late.bin", id, "mine", "tx-c2");
  expectAppError(again, 403, "0x80070005", "0x5");
  EXPECT_EQ(d.notifier.posts.size(), 2u);
}

TEST(HandOff, StaticResponseUrlBecomesTheReplyUrl) {
  EngineDriver d(notifySettings());
  d.notifier.answer.staticUrl = "http://updates.example/pkg.cab";
  Upload u = upload(d, "/s.bin", "x", "tx-s");
  EXPECT_EQ(u.ack.get("BITS-Reply-URL"), "http://updates.example/pkg.cab");
  // A static URL that is not absolute is a malformed answer.
  EngineDriver e(notifySettings());
  e.notifier.answer.staticUrl = "pkg.cab";
  Upload v = upload(e, "/s.bin", "x", "tx-s2");
  expectAppError(v.ack, 502, "0x8020001E", "0x7");
}

TEST(HandOff, ACrashBetweenBeganAndEndedPostsOnceMoreWithTheSameId) {
  EngineDriver d(notifySettings());
  std::string id = d.createSession("/k.bin");
  // The final fragment reaches the application, then the process dies before the answer is
  // journaled: drive the request by hand and stop at the POST.
  d.notifier.answer.status = 200;
  std::string req = bitsRequest("/k.bin", "Fragment",
                                {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-3/4"},
                                 {"BITS-Transaction-Id", "tx-k"}},
                                "kkkk");
  RequestParser p(8192);
  Exchange ex;
  ex.setHost(nullptr);
  size_t used = 0;
  ASSERT_EQ(p.execute(req.data(), req.size(), &used), ParseEvent::HeadersComplete);
  struct Host : ExchangeHost {
    int ready = 0;
    void onExchangeReady(Exchange&) override { ++ready; }
    void abandonExchange(Exchange&) override {}
  } host;
  ex.setHost(&host);
  Flow f = d.engine.onHeaders(ex, p.head());
  while (f == Flow::Wait && host.ready == 0) {
    d.storage.runAll();
  }
  size_t pos = used;
  ParseEvent ev = p.execute(req.data() + pos, req.size() - pos, &used);
  ASSERT_EQ(ev, ParseEvent::Body);
  host.ready = 0;
  f = d.engine.onBody(ex, p.body());
  while (f == Flow::Wait && host.ready == 0) d.storage.runAll();
  pos += used;
  ev = p.execute(req.data() + pos, req.size() - pos, &used);
  ASSERT_EQ(ev, ParseEvent::MessageComplete);
  host.ready = 0;
  f = d.engine.onMessageComplete(ex);
  ASSERT_EQ(f, Flow::Wait);
  for (int i = 0; i < 1000 && d.notifier.posts.empty(); ++i) {
    if (d.scheduler.requested) {
      d.scheduler.requested = false;
      d.journal.flush();
    }
    d.storage.runAll();
  }
  ASSERT_EQ(d.notifier.posts.size(), 1u);
  d.notifier.forget();  // the application got it; bitsd never hears back
  EXPECT_EQ(countRecords(d, RecordType::DeliveryBegan), 1);
  EXPECT_EQ(countRecords(d, RecordType::DeliveryEnded), 0);

  EngineDriver after(notifySettings());
  after.restartFrom(d);
  Reply r = finalFragment(after, "/k.bin", id, "kkkk", "tx-k");
  EXPECT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(after.notifier.posts.size(), 1u);
  EXPECT_EQ(after.notifier.posts[0].txid, "tx-k");
  Reply again = finalFragment(after, "/k.bin", id, "kkkk", "tx-k");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(after.notifier.posts.size(), 1u);
  // The abandoned exchange in the dead process is never finished; the old driver is discarded.
  d.notifier.forget();
}

TEST(HandOff, ReplyDownloadsSupportHeadRangesAndIfUnmodifiedSince) {
  EngineDriver d(notifySettings("value"));
  d.storage.addDir("/root/dir");
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "0123456789";
  Upload u = upload(d, "/dir/x.bin", "up", "tx-x");
  ASSERT_EQ(u.ack.status, 200);
  std::string url = u.ack.get("BITS-Reply-URL");
  std::string target = url.substr(std::string("http://appliance").size());

  Reply head = d.send(EngineDriver::httpRequest("HEAD", target));
  EXPECT_EQ(head.status, 200) << head.raw;
  EXPECT_EQ(head.get("Content-Length"), "10");
  EXPECT_TRUE(head.body.empty());
  std::string lastModified = head.get("Last-Modified");
  EXPECT_EQ(lastModified.size(), kHttpDateBytes);

  Reply whole = d.send(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(whole.status, 200);
  EXPECT_EQ(whole.body, "0123456789");

  Reply part = d.send(EngineDriver::httpRequest("GET", target, {{"Range", "bytes=2-5"}}));
  EXPECT_EQ(part.status, 206) << part.raw;
  EXPECT_EQ(part.get("Content-Range"), "bytes 2-5/10");
  EXPECT_EQ(part.get("Content-Length"), "4");
  EXPECT_EQ(part.body, "2345");

  Reply tail = d.send(EngineDriver::httpRequest("GET", target, {{"Range", "bytes=-3"}}));
  EXPECT_EQ(tail.body, "789");
  Reply open = d.send(EngineDriver::httpRequest("GET", target, {{"Range", "bytes=7-"}}));
  EXPECT_EQ(open.body, "789");

  Reply beyond = d.send(EngineDriver::httpRequest("GET", target, {{"Range", "bytes=10-20"}}));
  EXPECT_EQ(beyond.status, 416);
  EXPECT_EQ(beyond.get("Content-Range"), "bytes */10");
  // Never 200 to a Range request (§10.1): a range that is not a bytes range set is 416 too.
  for (const char* bad : {"bytes=5-2", "items=0-1", "bytes=x-"}) {
    Reply r = d.send(EngineDriver::httpRequest("GET", target, {{"Range", bad}}));
    EXPECT_EQ(r.status, 416) << bad << "\n" << r.raw;
    EXPECT_EQ(r.get("Content-Range"), "bytes */10") << bad;
    EXPECT_TRUE(r.body.empty()) << bad;
  }

  // Several ranges: 206 multipart/byteranges, in ascending order, each part with its Content-Range.
  Reply multi = d.send(EngineDriver::httpRequest("GET", target, {{"Range", "bytes=7-8, 0-1"}}));
  ASSERT_EQ(multi.status, 206) << multi.raw;
  const std::string type = multi.get("Content-Type");
  const std::string prefix = "multipart/byteranges; boundary=";
  ASSERT_EQ(type.substr(0, prefix.size()), prefix) << multi.raw;
  const std::string boundary = type.substr(prefix.size());
  EXPECT_FALSE(boundary.empty());
  EXPECT_EQ(multi.get("Content-Range"), "");
  const std::string expected = "--" + boundary +
                               "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/10\r\n\r\n01"
                               "\r\n--" + boundary +
                               "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 7-8/10\r\n\r\n78"
                               "\r\n--" + boundary + "--\r\n";
  EXPECT_EQ(multi.body, expected);
  EXPECT_EQ(multi.get("Content-Length"), std::to_string(expected.size()));
  Reply multiHead = d.send(EngineDriver::httpRequest("HEAD", target, {{"Range", "bytes=7-8, 0-1"}}));
  EXPECT_EQ(multiHead.status, 206);
  EXPECT_EQ(multiHead.get("Content-Length"), std::to_string(expected.size()));
  EXPECT_EQ(multiHead.get("Content-Type"), type);
  EXPECT_TRUE(multiHead.body.empty());

  // Other methods on a reply URL: 405, and Allow names GET and HEAD too (§10.1).
  for (const char* method : {"PUT", "DELETE", "POST"}) {
    Reply r = d.send(EngineDriver::httpRequest(method, target));
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_EQ(r.get("Allow"), "BITS_POST, GET, HEAD") << method;
  }

  Reply same = d.send(EngineDriver::httpRequest("GET", target, {{"If-Unmodified-Since", lastModified}}));
  EXPECT_EQ(same.status, 200);
  Reply older = d.send(EngineDriver::httpRequest("GET", target, {{"If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"}}));
  EXPECT_EQ(older.status, 412);

  // An unknown id and a malformed one reveal nothing.
  Reply unknown = d.send(EngineDriver::httpRequest(
      "GET", "/dir/BITS-Sessions/Replies/%7B00000000-0000-0000-0000-000000000000%7D/responsefile.bin"));
  EXPECT_EQ(unknown.status, 404);
  Reply junk = d.send(EngineDriver::httpRequest("GET", "/dir/BITS-Sessions/Replies/zz/responsefile.bin"));
  EXPECT_EQ(junk.status, 404);

  // Close-Session ends the reply URL (the file stays as the delivery's reply of record).
  EXPECT_EQ(d.close("/dir/x.bin", u.id).status, 200);
  d.settle();
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", target)).status, 404);
}

// Cancel-Session and the session timeout end the reply URL; the file stays as the delivery's reply
// of record until the delivery is forgotten (delivered-retention), then goes.
TEST(HandOff, CancelSessionAndTheSessionTimeoutDeleteTheReply) {
  Settings s = notifySettings("value");
  s.sessionTimeoutSeconds = 60;
  s.deliveredRetentionSeconds = 120;
  EngineDriver d(s);
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "kept until the client is done";
  Upload cancelled = upload(d, "/c1.bin", "x", "tx-c1");
  Upload expired = upload(d, "/c2.bin", "y", "tx-c2");
  ASSERT_EQ(cancelled.ack.status, 200);
  ASSERT_EQ(expired.ack.status, 200);
  d.settle();
  ASSERT_TRUE(d.storage.exists(d.replyPath(cancelled.id)));
  ASSERT_TRUE(d.storage.exists(d.replyPath(expired.id)));

  std::string cancelledUrl = cancelled.ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  EXPECT_EQ(d.close("/c1.bin", cancelled.id, "Cancel-Session").status, 200);
  d.settle();
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", cancelledUrl)).status, 404);
  EXPECT_TRUE(d.storage.exists(d.replyPath(cancelled.id)));  // the reply of record
  EXPECT_TRUE(d.storage.exists(d.replyPath(expired.id)));

  std::string target = expired.ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  d.clock.advanceMs(59 * 1000);
  d.engine.sweep();
  d.settle();
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", target)).status, 200);  // not yet
  d.clock.advanceMs(2 * 1000);
  d.engine.sweep();
  d.settle();
  EXPECT_EQ(d.send(EngineDriver::httpRequest("GET", target)).status, 404);
  EXPECT_TRUE(d.storage.exists(d.replyPath(expired.id)));  // the reply of record

  // Past delivered-retention, both deliveries are forgotten and their files go.
  d.clock.advanceMs(60 * 1000);
  d.engine.sweep();
  d.settle();
  EXPECT_EQ(d.engine.findDelivery("tx-c1"), nullptr);
  EXPECT_EQ(d.engine.findDelivery("tx-c2"), nullptr);
  EXPECT_FALSE(d.storage.exists(d.replyPath(cancelled.id)));
  EXPECT_FALSE(d.storage.exists(d.replyPath(expired.id)));
}

TEST(HandOff, AnApplicationWithNoReplyGetsAnEmptyReplyResource) {
  EngineDriver d(notifySettings());
  Upload u = upload(d, "/e.bin", "x", "tx-e");
  ASSERT_EQ(u.ack.status, 200);
  std::string target = u.ack.get("BITS-Reply-URL").substr(std::string("http://appliance").size());
  Reply r = d.send(EngineDriver::httpRequest("GET", target));
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.get("Content-Length"), "0");
}

TEST(HandOff, DeliveredIdsAreForgottenAfterTheRetentionPeriod) {
  Settings s = notifySettings();
  s.deliveredRetentionSeconds = 60;
  EngineDriver d(s);
  Upload u = upload(d, "/ret.bin", "x", "tx-ret");
  ASSERT_EQ(u.ack.status, 200);
  EXPECT_EQ(d.close("/ret.bin", u.id).status, 200);
  d.clock.advanceMs(30 * 1000);
  d.engine.sweep();
  EXPECT_NE(d.engine.findDelivery("tx-ret"), nullptr);
  d.clock.advanceMs(31 * 1000);
  d.engine.sweep();
  EXPECT_EQ(d.engine.findDelivery("tx-ret"), nullptr);
  Upload again = upload(d, "/ret.bin", "x", "tx-ret");
  EXPECT_EQ(again.ack.status, 200);
  EXPECT_EQ(d.notifier.posts.size(), 2u);
}

TEST(HandOff, CompactionKeepsDeliveriesAndWhichSessionsWereAnswered) {
  EngineDriver d(notifySettings());
  d.notifier.answer.writeReply = true;
  d.notifier.answer.replyBody = "r";
  Upload a = upload(d, "/p.bin", "x", "tx-p");
  Upload b = upload(d, "/p.bin", "x", "tx-p");  // answered from a's delivery
  ASSERT_EQ(b.ack.status, 200);
  JournalState live;
  d.engine.snapshot(&live);
  std::vector<uint8_t> bytes(kJournalBlockBytes);
  JournalHeader h;
  h.salt = 9;
  encodeJournalHeader(h, bytes.data());
  uint64_t seq = 1, off = kJournalBlockBytes;
  encodeSnapshot(live, h.salt, &seq, &off, &bytes);
  JournalState again;
  ASSERT_EQ(replayJournal(bytes, &again).status, ReplayStatus::Ok);
  ASSERT_EQ(again.delivered.count("tx-p"), 1u);
  EXPECT_TRUE(again.delivered["tx-p"].ended);
  EXPECT_EQ(again.delivered["tx-p"].replySession, live.delivered["tx-p"].replySession);
  SessionId ia, ib;
  ASSERT_TRUE(parseSessionId(a.id, &ia));
  ASSERT_TRUE(parseSessionId(b.id, &ib));
  EXPECT_TRUE(again.sessions[ia].handedOff);
  EXPECT_TRUE(again.sessions[ib].handedOff);
  EXPECT_EQ(again.sessions[ib].txid, "tx-p");
}

TEST(HandOff, NotifyUrlResolution) {
  char out[256];
  ASSERT_TRUE(resolveNotifyUrl("http://other/bag.asp", "h", "/up/file.asp?ACCOUNT=86433", out, sizeof out));
  EXPECT_STREQ(out, "http://other/bag.asp?ACCOUNT=86433");  // BITS-UPLOAD.md §5.2's example
  ASSERT_TRUE(resolveNotifyUrl("http://other/bag.asp?x=1", "h", "/f?y=2", out, sizeof out));
  EXPECT_STREQ(out, "http://other/bag.asp?x=1&y=2");
  ASSERT_TRUE(resolveNotifyUrl("/abs/app", "h:81", "/a/b/c.bin", out, sizeof out));
  EXPECT_STREQ(out, "http://h:81/abs/app");
  ASSERT_TRUE(resolveNotifyUrl("app", "h", "/a/b/c.bin", out, sizeof out));
  EXPECT_STREQ(out, "http://h/a/b/app");
  EXPECT_FALSE(resolveNotifyUrl("app", "h", "/a/b/c.bin", out, 10));
  HttpUrl u;
  ASSERT_TRUE(parseHttpUrl("http://[::1]:8081/p?q", &u));
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 8081);
  EXPECT_EQ(u.pathAndQuery, "/p?q");
  ASSERT_TRUE(parseHttpUrl("http://app", &u));
  EXPECT_EQ(u.port, 80);
  EXPECT_EQ(u.pathAndQuery, "/");
  EXPECT_FALSE(parseHttpUrl("https://app/", &u));
  EXPECT_FALSE(parseHttpUrl("http://app:0/", &u));
  EXPECT_FALSE(parseHttpUrl("http://user@app/", &u));
}

TEST(HandOff, StatusClassesFollowTheProtocolNotes) {
  for (int s : {300, 301, 305, 307, 400, 401, 403, 404, 410, 501, 505}) EXPECT_FALSE(isTransientStatus(s)) << s;
  for (int s : {306, 308, 408, 409, 500, 502, 503, 504, 299, 600}) EXPECT_TRUE(isTransientStatus(s)) << s;
}

TEST(HttpReply, DatesAndRanges) {
  char d[kHttpDateBytes];
  formatHttpDate(784111777, d);
  EXPECT_EQ(std::string(d, kHttpDateBytes), "Sun, 06 Nov 1994 08:49:37 GMT");
  uint64_t t = 0;
  ASSERT_TRUE(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT", &t));
  EXPECT_EQ(t, 784111777u);
  EXPECT_FALSE(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT", &t));
  EXPECT_FALSE(parseHttpDate("Sun, 31 Feb 1994 08:49:37 GMT", &t));
  ReplyRange r[kMaxReplyRanges];
  size_t n = 0;
  EXPECT_EQ(interpretRanges("bytes=0-0", 5, r, &n), RangeAnswer::Partial);
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(r[0].end - r[0].begin, 1u);
  // Several ranges: ascending, overlapping and adjacent ones merged, the ones past the end dropped.
  EXPECT_EQ(interpretRanges("bytes=4-, 1-2", 5, r, &n), RangeAnswer::Multipart);
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(r[0].begin, 1u);
  EXPECT_EQ(r[0].end, 3u);
  EXPECT_EQ(r[1].begin, 4u);
  EXPECT_EQ(r[1].end, 5u);
  EXPECT_EQ(interpretRanges("bytes=0-1,1-2, 3-3 ,9-", 5, r, &n), RangeAnswer::Partial);
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(r[0].begin, 0u);
  EXPECT_EQ(r[0].end, 4u);
  EXPECT_EQ(interpretRanges("bytes=-2,0-0", 5, r, &n), RangeAnswer::Multipart);
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(r[1].begin, 3u);
  // More parts than a multipart answer has: the one range that spans them all.
  EXPECT_EQ(interpretRanges("bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16,18-18", 20, r, &n), RangeAnswer::Partial);
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(r[0].begin, 0u);
  EXPECT_EQ(r[0].end, 19u);
  EXPECT_EQ(interpretRanges("bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14", 20, r, &n), RangeAnswer::Multipart);
  EXPECT_EQ(n, 8u);
  // Never 200 to a Range request (§10.1): anything that is not a satisfiable bytes range is 416.
  EXPECT_EQ(interpretRanges("bytes=9-", 5, r, &n), RangeAnswer::Unsatisfiable);
  EXPECT_EQ(interpretRanges("items=1-2", 5, r, &n), RangeAnswer::Unsatisfiable);
  EXPECT_EQ(interpretRanges("bytes=3-1", 5, r, &n), RangeAnswer::Unsatisfiable);
  EXPECT_EQ(interpretRanges("bytes=1-2,x", 5, r, &n), RangeAnswer::Unsatisfiable);
  EXPECT_EQ(interpretRanges("bytes=", 5, r, &n), RangeAnswer::Unsatisfiable);
  EXPECT_EQ(interpretRanges("bytes=0-", 0, r, &n), RangeAnswer::Unsatisfiable);
}

}  // namespace
}  // namespace bitsd::testing
