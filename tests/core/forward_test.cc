// ForwardFlow (core/flow_forward.cc): in farm mode, a Fragment, Close/Cancel-Session or reply
// download for a session this node's table does not have asks the farm who owns it, and decides:
// a live other node -> forward (Exchange::forwardTo() names its peer URL, no answer formatted);
// unknown, gone or this node -> BG_E_SESSION_NOT_FOUND (404 for a reply); the farm unavailable or
// this node not live -> 503 + Retry-After, BG_E busy. The farm is a lookup-only test double.
#include <gtest/gtest.h>

#include "tests/support/engine_driver.h"
#include "tests/support/fake_farm_lookup.h"

namespace bitsd::testing {
namespace {

constexpr const char* kId = "{0E6C6D3C-1A2B-4C5D-8E9F-0123456789AB}";
constexpr const char* kPeer = "http://127.0.0.2:8080";

std::string key(const std::string& text) {
  SessionId id;
  EXPECT_TRUE(parseSessionId(text, &id));
  char out[kSessionIdTextBytes];
  formatSessionId(id, out);
  return std::string(out, sizeof out);
}

// Drives one request head through the engine the way the platform does, with the farm's
// completions run by the test.
class Probe final : public ExchangeHost {
 public:
  explicit Probe(EngineDriver& d) : d_(d), parser_(8192) { ex_.setHost(this); }
  ~Probe() { d_.engine.finish(ex_); }

  // Feeds the request up to its head; runs the farm's completions; true when the engine is done
  // with the head (Continue, or exactly one onExchangeReady after Wait).
  bool head(const std::string& request, FakeFarmLookup& farm) {
    parser_.reset();
    size_t used = 0;
    ParseEvent ev = parser_.execute(request.data(), request.size(), &used);
    EXPECT_EQ(ev, ParseEvent::HeadersComplete);
    Flow f = d_.engine.onHeaders(ex_, parser_.head());
    if (f == Flow::Continue) return true;
    EXPECT_EQ(ready, 0) << "ready from inside onHeaders";
    farm.runAll();
    return ready == 1;
  }
  Reply answer() const { return parseReply(std::string(ex_.response())); }
  Exchange& ex() { return ex_; }
  int ready = 0;

 private:
  void onExchangeReady(Exchange&) override { ++ready; }
  void abandonExchange(Exchange& e) override { d_.engine.finish(e); }
  EngineDriver& d_;
  RequestParser parser_;
  Exchange ex_;
};

std::string fragment(const std::string& id, std::map<std::string, std::string> extra = {}) {
  extra["BITS-Session-Id"] = id;
  extra["Content-Range"] = "bytes 0-9/100";
  return bitsRequest("/up.bin", "Fragment", extra, std::string(10, 'x'));
}

struct Farmed {
  Farmed() { d.engine.setFarm(&farm); }
  EngineDriver d;
  FakeFarmLookup farm;
};

TEST(Forward, AFragmentForASessionALivePeerOwnsIsForwardedToIt) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  EXPECT_EQ(w.farm.lookups, 1);
  EXPECT_EQ(key(kId), [&] {
    char t[kSessionIdTextBytes];
    formatSessionId(w.farm.lastLookup, t);
    return std::string(t, sizeof t);
  }());
  EXPECT_EQ(p.ex().forwardTo(), kPeer);
  EXPECT_TRUE(p.ex().response().empty());  // the owner answers
  EXPECT_FALSE(p.ex().respondNow());
  EXPECT_EQ(w.d.engine.stats().forwarded, 1u);
}

TEST(Forward, CloseAndCancelSessionAreForwardedToo) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  for (const char* type : {"Close-Session", "Cancel-Session"}) {
    Probe p(w.d);
    ASSERT_TRUE(p.head(bitsRequest("/up.bin", type, {{"BITS-Session-Id", kId}}), w.farm)) << type;
    EXPECT_EQ(p.ex().forwardTo(), kPeer) << type;
  }
  EXPECT_EQ(w.d.engine.stats().forwarded, 2u);
}

void expectNotFound(Probe& p) {
  EXPECT_TRUE(p.ex().forwardTo().empty());
  Reply r = p.answer();
  EXPECT_EQ(r.status, 500) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x8020001F") << r.raw;
}

void expectBusy(Probe& p) {
  EXPECT_TRUE(p.ex().forwardTo().empty());
  Reply r = p.answer();
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x800700AA") << r.raw;
  EXPECT_TRUE(r.has("Retry-After")) << r.raw;
}

TEST(Forward, ASessionTheFarmDoesNotKnowIsNotFound) {
  Farmed w;
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  EXPECT_EQ(w.farm.lookups, 1);
  expectNotFound(p);
  EXPECT_EQ(w.d.engine.stats().forwarded, 0u);
}

TEST(Forward, ASessionWhoseOwnerLostItsLeaseIsNotFound) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, false};
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  expectNotFound(p);
}

TEST(Forward, ASessionTheFarmSaysIsOursButTheTableLacksIsNotFound) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n1", "http://127.0.0.1:8080", true};  // n1 is this node
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  expectNotFound(p);
}

TEST(Forward, TheFarmUnavailableAnswers503WithRetryAfter) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  w.farm.unavailable = true;
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  EXPECT_EQ(w.farm.lookups, 1);
  expectBusy(p);
}

TEST(Forward, ANodeWithoutALiveLeaseAnswers503WithoutAsking) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  w.farm.live_ = false;
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  EXPECT_EQ(w.farm.lookups, 0);
  EXPECT_EQ(p.ready, 0);  // answered at once
  expectBusy(p);
}

TEST(Forward, AForwardedRequestIsNeverForwardedAgain) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId, {{"BITS-Farm-Forwarded", "n3"}}), w.farm));
  EXPECT_EQ(w.farm.lookups, 0);
  expectNotFound(p);
}

TEST(Forward, ASessionThisNodeHasIsNeverLookedUp) {
  // The session is created before the farm is attached: this fake does not record owners (the
  // hand-off tests' FakeFarm does), and what matters here is the packet's path.
  Farmed w;
  w.d.engine.setFarm(nullptr);
  std::string id = w.d.createSession("/up.bin");
  ASSERT_FALSE(id.empty());
  w.d.engine.setFarm(&w.farm);
  w.farm.owners[key(id)] = {"n2", kPeer, true};
  Reply r = w.d.fragment("/up.bin", id, 0, std::string(10, 'x'), 100);
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(w.farm.lookups, 0);
  EXPECT_EQ(w.d.engine.stats().forwarded, 0u);
}

TEST(Forward, WithoutAFarmAnUnknownSessionIsNotFoundAsBefore) {
  EngineDriver d;
  FakeFarmLookup farm;  // not attached
  farm.owners[key(kId)] = {"n2", kPeer, true};
  Probe p(d);
  ASSERT_TRUE(p.head(fragment(kId), farm));
  EXPECT_EQ(farm.lookups, 0);
  expectNotFound(p);
}

TEST(Forward, Expect100ContinueIsAnsweredByTheForwardingNode) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId, {{"Expect", "100-continue"}}), w.farm));
  EXPECT_EQ(p.ex().forwardTo(), kPeer);
  EXPECT_FALSE(p.ex().respondNow());
  EXPECT_TRUE(p.ex().expectContinue());
}

TEST(Forward, Expect100ContinueWithAFarmMissIsRefusedBeforeTheBody) {
  Farmed w;
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId, {{"Expect", "100-continue"}}), w.farm));
  EXPECT_TRUE(p.ex().respondNow());
  EXPECT_TRUE(p.ex().closeAfterResponse());
  expectNotFound(p);
}

std::string replyGet(const std::string& id) {
  return EngineDriver::httpRequest("GET", "/BITS-Sessions/Replies/" + id + "/responsefile.bin");
}

TEST(Forward, AReplyDownloadForAnotherNodesSessionIsForwarded) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  Probe p(w.d);
  ASSERT_TRUE(p.head(replyGet(kId), w.farm));
  EXPECT_EQ(w.farm.lookups, 1);
  EXPECT_EQ(p.ex().forwardTo(), kPeer);
  EXPECT_FALSE(p.ex().sendsFile());
  EXPECT_EQ(w.d.engine.stats().replies, 0u);  // not answered here
}

TEST(Forward, AReplyDownloadTheFarmDoesNotKnowIs404) {
  Farmed w;
  Probe p(w.d);
  ASSERT_TRUE(p.head(replyGet(kId), w.farm));
  EXPECT_EQ(w.farm.lookups, 1);
  EXPECT_TRUE(p.ex().forwardTo().empty());
  EXPECT_EQ(p.answer().status, 404) << p.answer().raw;
}

TEST(Forward, AReplyDownloadWithTheFarmUnavailableIs503) {
  Farmed w;
  w.farm.unavailable = true;
  Probe p(w.d);
  ASSERT_TRUE(p.head(replyGet(kId), w.farm));
  expectBusy(p);
}

TEST(Forward, AForwardFailureIsA503ThatCloses) {
  Farmed w;
  w.farm.owners[key(kId)] = {"n2", kPeer, true};
  Probe p(w.d);
  ASSERT_TRUE(p.head(fragment(kId), w.farm));
  ASSERT_EQ(p.ex().forwardTo(), kPeer);
  w.d.engine.formatForwardFailure(p.ex());
  expectBusy(p);
  EXPECT_TRUE(p.ex().closeAfterResponse());
}

}  // namespace
}  // namespace bitsd::testing
