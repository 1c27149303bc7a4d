// bitsclient's job state machine on a fake clock (issue 6): the request sequence of the Windows
// client, Received-Content-Range adoption on 200 and 416, fragment shrinking on 413, restart after
// session loss, the retry policy's backoff and budget, BITS-Host-Id with its fallback, and the
// reply download.
#include <gtest/gtest.h>

#include "core/protocol.h"
#include "tools/client/job.h"

namespace bitsd::client {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// Drives a Job with a fake clock: `now` only moves when a test moves it.
struct Harness {
  explicit Harness(JobConfig c) : job(c) {}
  Job job;
  uint64_t now = 1000;
  Request req;
  // The next request; fails the test if the job wants to wait or has ended.
  Request expectSend() {
    uint64_t until = 0;
    Job::Next n = job.next(now, &req, &until);
    EXPECT_EQ(n, Job::Next::Send) << "wait until " << until;
    return req;
  }
  uint64_t expectWait() {
    uint64_t until = 0;
    Request r;
    EXPECT_EQ(job.next(now, &r, &until), Job::Next::Wait);
    return until;
  }
  // When the job waits: the time it waits for; otherwise now.
  uint64_t expectWaitOrNow() {
    uint64_t until = 0;
    Request r;
    return job.next(now, &r, &until) == Job::Next::Wait ? until : now;
  }
  Job::Next peek() {
    uint64_t until = 0;
    Request r;
    return job.next(now, &r, &until);
  }
  void answer(int status) {
    Response r;
    r.status = status;
    job.onResponse(r, now);
  }
  void answer(const Response& r) { job.onResponse(r, now); }
  void ack(uint64_t received, int status = 200) {
    Response r;
    r.status = status;
    r.hasReceived = true;
    r.received = received;
    job.onResponse(r, now);
  }
  void created(const std::string& id = "{S}") {
    Response r;
    r.status = 200;
    r.sessionId = id;
    job.onResponse(r, now);
  }
  void error(int status, uint32_t code) {
    Response r;
    r.status = status;
    r.hasErrorCode = true;
    r.errorCode = code;
    r.errorContext = 5;
    job.onResponse(r, now);
  }
  void transport() {
    Response r;
    r.transportError = "connection refused";
    job.onResponse(r, now);
  }
  std::vector<Event::Type> eventTypes() {
    std::vector<Event::Type> t;
    for (const Event& e : job.takeEvents()) t.push_back(e.type);
    return t;
  }
};

JobConfig config(uint64_t bytes, uint64_t fragment = kMiB) {
  JobConfig c;
  c.fileBytes = bytes;
  c.fragmentBytes = fragment;
  return c;
}

TEST(ClientJob, PingCreateFragmentsInOrderThenClose) {
  Harness h(config(2 * kMiB + 10));
  EXPECT_EQ(h.expectSend().kind, Kind::Ping);
  h.answer(200);
  EXPECT_EQ(h.expectSend().kind, Kind::CreateSession);
  h.created("{A}");
  EXPECT_EQ(h.job.sessionId(), "{A}");
  for (uint64_t off : {uint64_t{0}, kMiB, 2 * kMiB}) {
    Request r = h.expectSend();
    EXPECT_EQ(r.kind, Kind::Fragment);
    EXPECT_EQ(r.begin, off);
    EXPECT_EQ(r.end, std::min(off + kMiB, 2 * kMiB + 10));
    EXPECT_FALSE(r.toHostId);
    h.ack(r.end);
  }
  EXPECT_EQ(h.expectSend().kind, Kind::CloseSession);
  h.answer(200);
  EXPECT_EQ(h.peek(), Job::Next::Done);
  EXPECT_EQ(h.job.exitCode(), kExitOk);
  std::vector<Event::Type> want = {Event::Type::SessionCreated, Event::Type::Acked, Event::Type::Acked,
                                   Event::Type::Acked, Event::Type::Done};
  EXPECT_EQ(h.eventTypes(), want);
}

TEST(ClientJob, AZeroByteFileIsOneEmptyFragment) {
  Harness h(config(0));
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  Request r = h.expectSend();
  EXPECT_EQ(r.kind, Kind::Fragment);
  EXPECT_EQ(r.begin, 0u);
  EXPECT_EQ(r.end, 0u);
  h.ack(0);
  EXPECT_EQ(h.expectSend().kind, Kind::CloseSession);
}

TEST(ClientJob, AdoptsTheServersOffsetOn200AndOn416) {
  Harness h(config(10 * kMiB));
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  Request r = h.expectSend();
  // The server holds more than this fragment (an earlier attempt got through): 200 with a bigger offset.
  h.ack(3 * kMiB);
  r = h.expectSend();
  EXPECT_EQ(r.begin, 3 * kMiB);
  // The server holds less (a gap): 416 tells where to go on from.
  h.ack(2 * kMiB, 416);
  r = h.expectSend();
  EXPECT_EQ(r.begin, 2 * kMiB);
  std::vector<Event> ev = h.job.takeEvents();
  int resyncs = 0;
  for (const Event& e : ev) resyncs += e.type == Event::Type::Resync;
  EXPECT_EQ(resyncs, 2);
}

TEST(ClientJob, A416ThatMovesNothingCountsAsAFailure) {
  JobConfig c = config(4 * kMiB);
  c.retry.maxFailures = 3;
  Harness h(c);
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  for (int i = 0; i < 3; ++i) {
    h.now = h.expectWaitOrNow();
    h.expectSend();
    h.ack(0, 416);
  }
  EXPECT_EQ(h.peek(), Job::Next::Failed);
  EXPECT_EQ(h.job.exitCode(), kExitRetries);
}

TEST(ClientJob, A413HalvesTheFragmentDownToFiveKilobytes) {
  Harness h(config(kMiB, kMiB));
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  std::vector<uint64_t> sizes;
  for (int i = 0; i < 20 && h.peek() == Job::Next::Send; ++i) {
    Request r = h.expectSend();
    sizes.push_back(r.end - r.begin);
    h.answer(413);
  }
  ASSERT_GE(sizes.size(), 2u);
  EXPECT_EQ(sizes[0], kMiB);
  EXPECT_EQ(sizes[1], kMiB / 2);
  EXPECT_EQ(sizes.back(), kMinFragmentBytes);
  for (uint64_t s : sizes) EXPECT_GE(s, kMinFragmentBytes);
  EXPECT_EQ(h.peek(), Job::Next::Failed);
  EXPECT_EQ(h.job.exitCode(), kExitFatal);
  EXPECT_NE(h.job.failure().find("413"), std::string::npos);
}

TEST(ClientJob, SessionNotFoundStartsOverWithANewSessionAndIsBounded) {
  JobConfig c = config(3 * kMiB);
  c.maxRestarts = 2;
  Harness h(c);
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created("{1}");
  h.expectSend();
  h.ack(kMiB);
  h.expectSend();
  h.error(500, hresult::kSessionNotFound);
  EXPECT_EQ(h.expectSend().kind, Kind::CreateSession);
  EXPECT_EQ(h.job.offset(), 0u);
  h.created("{2}");
  Request r = h.expectSend();
  EXPECT_EQ(r.begin, 0u);
  h.error(500, hresult::kSessionNotFound);
  h.expectSend();
  h.created("{3}");
  h.expectSend();
  h.error(500, hresult::kSessionNotFound);
  EXPECT_EQ(h.peek(), Job::Next::Failed);
  EXPECT_EQ(h.job.exitCode(), kExitSessionLost);
}

TEST(ClientJob, TransientAnswersBackOffExponentiallyAndHonourRetryAfter) {
  JobConfig c = config(kMiB);
  c.retry.firstDelayMs = 1000;
  c.retry.maxDelayMs = 5000;
  c.retry.maxFailures = 6;
  Harness h(c);
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  std::vector<uint64_t> delays;
  for (int i = 0; i < 4; ++i) {
    h.expectSend();
    h.transport();
    uint64_t until = h.expectWait();
    delays.push_back(until - h.now);
    h.now = until - 1;
    h.expectWait();  // not a millisecond early
    h.now = until;
  }
  EXPECT_EQ(delays, (std::vector<uint64_t>{1000, 2000, 4000, 5000}));
  // Retry-After asks for longer than the backoff: honoured (up to the cap).
  h.expectSend();
  Response busy;
  busy.status = 503;
  busy.hasErrorCode = true;
  busy.errorCode = hresult::kBusy;
  busy.retryAfterSeconds = 3;
  busy.hasReceived = false;
  h.answer(busy);
  EXPECT_EQ(h.expectWait() - h.now, 5000u);
  h.now += 5000;
  // Progress resets the budget.
  h.expectSend();
  h.ack(kMiB);
  EXPECT_EQ(h.expectSend().kind, Kind::CloseSession);
}

TEST(ClientJob, TheRetryBudgetEndsTheJob) {
  JobConfig c = config(kMiB);
  c.retry.maxFailures = 3;
  c.retry.firstDelayMs = 10;
  Harness h(c);
  for (int i = 0; i < 3; ++i) {
    h.now = h.expectWaitOrNow();
    EXPECT_EQ(h.expectSend().kind, Kind::Ping);
    h.answer(503);
  }
  EXPECT_EQ(h.peek(), Job::Next::Failed);
  EXPECT_EQ(h.job.exitCode(), kExitRetries);
  EXPECT_NE(h.job.failure().find("503"), std::string::npos) << h.job.failure();
}

TEST(ClientJob, FatalAnswersStopAtOnceWithTheirCode) {
  struct Case {
    int status;
    uint32_t code;
    int exit;
  } cases[] = {
      {403, hresult::kAccessDenied, kExitFatal},   {404, hresult::kPathNotFound, kExitFatal},
      {400, hresult::kInvalidArg, kExitFatal},     {500, hresult::kTooLarge, kExitFatal},
      {501, hresult::kAccessDenied, kExitFatal},   {505, hresult::kInsufficientHttp, kExitFatal},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.status);
    Harness h(config(kMiB));
    h.expectSend();
    h.answer(200);
    h.expectSend();
    h.error(k.status, k.code);
    EXPECT_EQ(h.peek(), Job::Next::Failed);
    EXPECT_EQ(h.job.exitCode(), k.exit);
    EXPECT_NE(h.job.failure().find(std::to_string(k.status)), std::string::npos) << h.job.failure();
  }
}

TEST(ClientJob, HostIdIsPingedAndUsedThenFallsBackAfterItsTimeout) {
  Harness h(config(3 * kMiB));
  h.expectSend();
  h.answer(200);
  h.expectSend();
  Response c;
  c.status = 200;
  c.sessionId = "{H}";
  c.hostId = "node7:8080";
  c.hasFallback = true;
  c.fallbackSeconds = 60;
  h.answer(c);
  Request r = h.expectSend();
  EXPECT_EQ(r.kind, Kind::Ping);
  EXPECT_TRUE(r.toHostId);
  h.answer(200);
  r = h.expectSend();
  EXPECT_EQ(r.kind, Kind::Fragment);
  EXPECT_TRUE(r.toHostId);
  h.ack(kMiB);
  // The host-id server goes away: retried there until the fallback timeout has passed.
  uint64_t firstFailure = h.now;
  while (h.now - firstFailure < 60000) {
    r = h.expectSend();
    EXPECT_TRUE(r.toHostId);
    h.transport();
    if (h.peek() != Job::Next::Wait) break;
    h.now = std::min(h.expectWait(), firstFailure + 60000);
  }
  // The first failure after the timeout falls back, at once, to the URL's own host.
  h.now = h.expectWaitOrNow();
  r = h.expectSend();
  EXPECT_TRUE(r.toHostId);
  h.transport();
  r = h.expectSend();
  EXPECT_FALSE(r.toHostId) << "still on the host-id after the fallback timeout";
  EXPECT_EQ(r.kind, Kind::Fragment);
  EXPECT_EQ(r.begin, kMiB);
  bool fellBack = false;
  for (const Event& e : h.job.takeEvents()) fellBack = fellBack || e.type == Event::Type::Fallback;
  EXPECT_TRUE(fellBack);
}

TEST(ClientJob, UploadReplyDownloadsTheReplyInRangesBeforeClosing) {
  JobConfig c = config(100);
  c.wantReply = true;
  Harness h(c);
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  h.expectSend();
  Response fin;
  fin.status = 200;
  fin.hasReceived = true;
  fin.received = 100;
  fin.replyUrl = "http://h/BITS-Sessions/Replies/x/responsefile.bin";
  h.answer(fin);
  EXPECT_EQ(h.expectSend().kind, Kind::ReplyHead);
  Response head;
  head.status = 200;
  head.hasContentLength = true;
  head.contentLength = kReplyChunkBytes + 5;
  h.answer(head);
  for (uint64_t begin : {uint64_t{0}, kReplyChunkBytes}) {
    Request r = h.expectSend();
    EXPECT_EQ(r.kind, Kind::ReplyGet);
    EXPECT_EQ(r.begin, begin);
    Response part;
    part.status = 206;
    part.hasContentRange = true;
    part.rangeBegin = r.begin;
    part.rangeEnd = r.end;
    part.rangeTotal = kReplyChunkBytes + 5;
    h.answer(part);
  }
  EXPECT_EQ(h.expectSend().kind, Kind::CloseSession);
}

TEST(ClientJob, AReplyAnswered200ToARangeOrMissingIsFatal) {
  {
    JobConfig c = config(1);
    c.wantReply = true;
    Harness h(c);
    h.expectSend();
    h.answer(200);
    h.expectSend();
    h.created();
    h.expectSend();
    h.ack(1);  // no BITS-Reply-URL
    EXPECT_EQ(h.peek(), Job::Next::Failed);
    EXPECT_NE(h.job.failure().find("BITS-Reply-URL"), std::string::npos);
  }
  {
    JobConfig c = config(1);
    c.wantReply = true;
    Harness h(c);
    h.expectSend();
    h.answer(200);
    h.expectSend();
    h.created();
    h.expectSend();
    Response fin;
    fin.status = 200;
    fin.hasReceived = true;
    fin.received = 1;
    fin.replyUrl = "http://h/r";
    h.answer(fin);
    h.expectSend();
    Response head;
    head.status = 200;
    head.hasContentLength = true;
    head.contentLength = 10;
    h.answer(head);
    h.expectSend();
    h.answer(200);
    EXPECT_EQ(h.peek(), Job::Next::Failed);
    EXPECT_NE(h.job.failure().find("200 to a Range"), std::string::npos);
  }
}

TEST(ClientJob, CloseIsResentOn5xxButNotAfterSessionNotFound) {
  Harness h(config(1));
  h.expectSend();
  h.answer(200);
  h.expectSend();
  h.created();
  h.expectSend();
  h.ack(1);
  EXPECT_EQ(h.expectSend().kind, Kind::CloseSession);
  h.answer(503);
  h.now = h.expectWait();
  EXPECT_EQ(h.expectSend().kind, Kind::CloseSession);
  h.error(500, hresult::kSessionNotFound);
  EXPECT_EQ(h.peek(), Job::Next::Done);
}

TEST(ClientJob, ResumePingsThenSendsFromTheSavedOffsetAndCancelSendsCancel) {
  Harness h(config(3 * kMiB));
  h.job.resume("{R}", kMiB, "", 0);
  EXPECT_EQ(h.expectSend().kind, Kind::Ping);
  h.answer(200);
  Request r = h.expectSend();
  EXPECT_EQ(r.kind, Kind::Fragment);
  EXPECT_EQ(r.begin, kMiB);
  Harness c(config(3 * kMiB));
  c.job.resume("{R}", kMiB, "", 0);
  c.job.cancel();
  EXPECT_EQ(c.expectSend().kind, Kind::CancelSession);
  c.answer(200);
  EXPECT_EQ(c.peek(), Job::Next::Done);
}

TEST(ClientPolicy, RetryDelaysAndFragmentClamp) {
  RetryPolicy p;
  p.firstDelayMs = 500;
  p.maxDelayMs = 3000;
  EXPECT_EQ(p.delayMs(1, 0), 500u);
  EXPECT_EQ(p.delayMs(2, 0), 1000u);
  EXPECT_EQ(p.delayMs(3, 0), 2000u);
  EXPECT_EQ(p.delayMs(4, 0), 3000u);
  EXPECT_EQ(p.delayMs(60, 0), 3000u);
  EXPECT_EQ(p.delayMs(1, 2500), 2500u);
  EXPECT_EQ(p.delayMs(1, 900000), 3000u);
  EXPECT_EQ(FragmentSizer(1).bytes(), kMinFragmentBytes);
  EXPECT_EQ(FragmentSizer(UINT64_MAX).bytes(), kMaxFragmentBytes);
  FragmentSizer s(12 * 1024);
  EXPECT_TRUE(s.shrink());
  EXPECT_EQ(s.bytes(), 6 * 1024u);
  EXPECT_TRUE(s.shrink());
  EXPECT_EQ(s.bytes(), kMinFragmentBytes);
  EXPECT_FALSE(s.shrink());
}

}  // namespace
}  // namespace bitsd::client

namespace bitsd::client {
namespace {

// Issue 19: while the job waits to retry, it says how long it still waits (the progress line shows
// "retrying in N s" from it), counting down on the clock, and 0 once it sends again.
TEST(ClientJobRetryWait, CountsDownOnTheClockAndEndsWhenTheRetryIsSent) {
  JobConfig c = config(kMiB);
  c.retry.firstDelayMs = 4000;
  Harness h(c);
  EXPECT_EQ(h.job.retryWaitMs(h.now), 0u);
  h.expectSend();
  h.transport();
  EXPECT_EQ(h.job.retryWaitMs(h.now), 4000u);
  h.now += 1500;
  EXPECT_EQ(h.job.retryWaitMs(h.now), 2500u);
  h.now += 2500;
  EXPECT_EQ(h.job.retryWaitMs(h.now), 0u);
  EXPECT_EQ(h.expectSend().kind, Kind::Ping);
  h.answer(200);
  EXPECT_EQ(h.job.retryWaitMs(h.now), 0u);
}

// Issue 19: the failure names the refusal in a sentence, with its status and code.
TEST(ClientJobRetryWait, RefusalsAreSentencesWithTheirCodes) {
  {
    Harness h(config(kMiB));
    h.expectSend();
    h.answer(200);
    h.expectSend();
    h.error(403, hresult::kAccessDenied);
    EXPECT_EQ(h.job.failure(),
              "Create-Session: the file exists and the server does not allow overwrites (403, 0x80070005)");
  }
  {
    JobConfig c = config(kMiB);
    c.retry.maxFailures = 1;
    Harness h(c);
    h.expectSend();
    h.error(503, hresult::kBusy);
    EXPECT_NE(h.job.failure().find("Ping: the server is busy (503, 0x800700AA)"), std::string::npos)
        << h.job.failure();
  }
}

}  // namespace
}  // namespace bitsd::client
