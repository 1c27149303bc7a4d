// Sessions per client and per user (issue 20, hole 4): max-sessions-per-user by client address
// (authentication off) and by user (on), idle-session-timeout for sessions that never received a
// byte, who pays when the shared table is full, and all of it across a restart (the journal's
// SessionOwner record carries the client address as "@a.b.c.d").
#include <gtest/gtest.h>
#include <mbedtls/base64.h>

#include "core/session_table.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

constexpr const char* kProto = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

ClientAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  ClientAddress x;
  x.family = 4;
  x.bytes[0] = a;
  x.bytes[1] = b;
  x.bytes[2] = c;
  x.bytes[3] = d;
  return x;
}

ClientAddress v6(std::initializer_list<uint8_t> bytes) {
  ClientAddress x;
  x.family = 6;
  size_t i = 0;
  for (uint8_t b : bytes) x.bytes[i++] = b;
  return x;
}

Reply createReply(EngineDriver& d, const std::string& path) {
  return d.send(bitsRequest(path, "Create-Session", {{"BITS-Supported-Protocols", kProto}}));
}

void expectQuota503(const Reply& r) {
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.get("BITS-Packet-Type"), "Ack") << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x800705AA") << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), "0x5") << r.raw;
  EXPECT_TRUE(r.has("Retry-After")) << r.raw;
  EXPECT_FALSE(r.has("BITS-Session-Id")) << r.raw;
}

SessionId idSafe(const std::string& text) {
  SessionId id;
  EXPECT_TRUE(parseSessionId(text, &id)) << text;
  return id;
}

TEST(SessionQuota, PartiesAreAddressesOrSlash64Prefixes) {
  Party p = partyOfAddress(v4(127, 0, 0, 2));
  EXPECT_EQ(p.kind, Party::Ipv4);
  EXPECT_EQ(p.value, 0x7f000002u);
  char text[kMaxPartyTextBytes];
  EXPECT_EQ(std::string(text, formatPartyAddress(p, text)), "@127.0.0.2");
  // ::ffff:10.1.2.3 (a dual-stack listener) is the IPv4 client it stands for.
  EXPECT_EQ(partyOfAddress(v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3})), partyOfAddress(v4(10, 1, 2, 3)));
  // Two addresses in one /64 are one party; another /64 is another.
  Party a = partyOfAddress(v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}));
  Party b = partyOfAddress(v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0xde, 0xad, 0, 0, 0, 0, 0, 2}));
  Party c = partyOfAddress(v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1}));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(std::string(text, formatPartyAddress(a, text)), "@2001:db8:0:1::/64");
  EXPECT_FALSE(partyOfAddress(ClientAddress{}).known());
  // The journal text parses back to the same party; nothing else parses (user names never start with '@').
  for (const Party& q : {p, a, partyOfAddress(v4(255, 255, 255, 255)), partyOfAddress(v4(0, 0, 0, 0))}) {
    Party back;
    ASSERT_TRUE(parsePartyAddress(std::string_view(text, formatPartyAddress(q, text)), &back)) << text;
    EXPECT_EQ(back, q) << text;
  }
  Party junk;
  for (const char* bad : {"", "@", "alice", "127.0.0.1", "@256.0.0.1", "@1.2.3", "@1.2.3.4.5", "@1.2.3.4 ", "@1..2.3",
                          "@2001:db8:0:1::/48", "@2001:db8:0::/64", "@12345:0:0:0::/64", "@1.2.3.0004", "@G:0:0:0::/64"}) {
    EXPECT_FALSE(parsePartyAddress(bad, &junk)) << bad;
  }
}

TEST(SessionQuota, OneAddressGetsAtMostItsQuotaOfOpenSessions) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessionsPerUser = 3;
  EngineDriver d(s);
  d.setPeer(v4(192, 0, 2, 1));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(d.createSession("/a" + std::to_string(i)));
  for (const std::string& id : ids) ASSERT_FALSE(id.empty());
  expectQuota503(createReply(d, "/a3"));
  EXPECT_FALSE(d.storage.exists("/root/a3"));
  EXPECT_EQ(d.engine.stats().quotaRefusals, 1u);
  EXPECT_EQ(d.engine.sessionCount(), 3u);
  // Another address is not affected.
  d.setPeer(v4(192, 0, 2, 2));
  std::string other = d.createSession("/b");
  ASSERT_FALSE(other.empty());
  EXPECT_EQ(d.fragment("/b", other, 0, "hello", 5).status, 200);
  EXPECT_EQ(d.storage.contents("/root/b"), "hello");
  // Only open sessions count: a completed upload and a closed one free their places.
  d.setPeer(v4(192, 0, 2, 1));
  EXPECT_EQ(d.fragment("/a0", ids[0], 0, "x", 1).status, 200);  // complete (committed)
  std::string again = d.createSession("/a4");
  EXPECT_FALSE(again.empty());
  expectQuota503(createReply(d, "/a5"));
  EXPECT_EQ(d.close("/a1", ids[1], "Cancel-Session").status, 200);
  EXPECT_FALSE(d.createSession("/a5").empty());
  expectQuota503(createReply(d, "/a6"));
  EXPECT_EQ(d.engine.openSessionsOf(partyOfAddress(v4(192, 0, 2, 1))), 3u);
}

TEST(SessionQuota, ZeroMeansNoLimit) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessionsPerUser = 0;
  EngineDriver d(s);
  d.setPeer(v4(192, 0, 2, 1));
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(d.createSession("/z" + std::to_string(i)).empty()) << i;
}

std::string basic(const std::string& userPass) {
  unsigned char out[256];
  size_t n = 0;
  mbedtls_base64_encode(out, sizeof out, &n, reinterpret_cast<const unsigned char*>(userPass.data()), userPass.size());
  return std::string(reinterpret_cast<char*>(out), n);
}

TEST(SessionQuota, WithAuthenticationTheQuotaIsPerUserWhateverTheAddress) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessionsPerUser = 2;
  EngineDriver d(s);
  d.auth.add("alice", basic("alice:a"));
  d.auth.add("bob", basic("bob:b"));
  d.engine.setAuthenticator(&d.auth, {});
  auto create = [&](const std::string& path, const std::string& who) {
    return d.send(bitsRequest(path, "Create-Session",
                              {{"BITS-Supported-Protocols", kProto}, {"Authorization", "Basic " + basic(who)}}));
  };
  d.setPeer(v4(192, 0, 2, 1));
  EXPECT_EQ(create("/1", "alice:a").status, 200);
  d.setPeer(v4(192, 0, 2, 9));  // another address does not help alice
  EXPECT_EQ(create("/2", "alice:a").status, 200);
  expectQuota503(create("/3", "alice:a"));
  d.setPeer(v4(192, 0, 2, 1));  // bob from alice's address is bob
  EXPECT_EQ(create("/4", "bob:b").status, 200);
  EXPECT_EQ(create("/5", "bob:b").status, 200);
  expectQuota503(create("/6", "bob:b"));
  EXPECT_EQ(d.engine.openSessionsOf(Party{Party::User, 0}), 2u);
  // With authentication on, the journal names the user, never the address.
  JournalState st = d.replayed();
  for (const auto& [id, rs] : st.sessions) EXPECT_TRUE(rs.owner == "alice" || rs.owner == "bob") << rs.owner;
}

TEST(SessionQuota, ASessionThatNeverReceivedAByteExpiresAfterTheIdleTimeout) {
  Settings s = EngineDriver::defaultSettings();
  s.sessionTimeoutSeconds = 3600;
  s.idleSessionTimeoutSeconds = 60;
  EngineDriver d(s);
  d.setPeer(v4(192, 0, 2, 1));
  std::string idle = d.createSession("/idle");
  std::string used = d.createSession("/used");
  ASSERT_EQ(d.fragment("/used", used, 0, "abc", 10).status, 200);
  d.clock.advanceMs(59000);
  d.engine.sweep();
  EXPECT_EQ(d.engine.sessionCount(), 2u);
  d.clock.advanceMs(1000);
  d.engine.sweep();
  d.settle();
  EXPECT_EQ(d.engine.sessionCount(), 1u);
  EXPECT_EQ(d.engine.stats().sessionsExpired, 1u);
  EXPECT_FALSE(d.storage.exists(d.partialPath(idle)));
  EXPECT_TRUE(d.storage.exists(d.partialPath(used)));
  EXPECT_EQ(d.replayed().sessions.count(idSafe(idle)), 0u) << "the journal still knows the idle session";
  EXPECT_EQ(d.fragment("/idle", idle, 0, "abc", 10).status, 500);
  // The session with bytes lives on to session-timeout.
  d.clock.advanceMs(3600000 - 60000 - 1000);
  d.engine.sweep();
  EXPECT_EQ(d.engine.sessionCount(), 1u);
  d.clock.advanceMs(1000);
  d.engine.sweep();
  EXPECT_EQ(d.engine.sessionCount(), 0u);
}

TEST(SessionQuota, ANeverUsedSessionIdleTooLongWhileDownIsGoneAfterARestart) {
  Settings s = EngineDriver::defaultSettings();
  s.idleSessionTimeoutSeconds = 60;
  EngineDriver a(s);
  a.setPeer(v4(192, 0, 2, 1));
  std::string idle = a.createSession("/idle");
  std::string used = a.createSession("/used");
  ASSERT_EQ(a.fragment("/used", used, 0, "abc", 10).status, 200);
  EngineDriver b(s);
  b.clock.advanceMs(61000);  // bitsd was down for a minute
  b.restartFrom(a);
  EXPECT_EQ(b.engine.findSessionForTest(idSafe(idle)), nullptr);
  EXPECT_NE(b.engine.findSessionForTest(idSafe(used)), nullptr);
}

TEST(SessionQuota, AFullTableMakesTheBiggestHolderPayWithItsOldestUnusedSession) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessions = 6;
  s.maxSessionsPerUser = 0;  // only the shared cap
  EngineDriver d(s);
  const ClientAddress abuser = v4(198, 51, 100, 66), b = v4(192, 0, 2, 2), c = v4(192, 0, 2, 3);
  d.setPeer(abuser);
  std::string a0 = d.createSession("/a0");  // the oldest, but it has bytes
  ASSERT_EQ(d.fragment("/a0", a0, 0, "abc", 10).status, 200);
  d.clock.advanceMs(1000);
  std::string a1 = d.createSession("/a1");  // the oldest that never received a byte
  d.clock.advanceMs(1000);
  std::string a2 = d.createSession("/a2");
  d.clock.advanceMs(1000);
  std::string a3 = d.createSession("/a3");
  d.clock.advanceMs(1000);
  d.setPeer(b);
  std::string b0 = d.createSession("/b0"), b1 = d.createSession("/b1");
  d.clock.advanceMs(1000);
  ASSERT_EQ(d.engine.sessionCount(), 6u);
  // A newcomer: the abuser (4 open) pays, with a1.
  d.setPeer(c);
  std::string c0 = d.createSession("/c0");
  ASSERT_FALSE(c0.empty());
  d.settle();
  EXPECT_EQ(d.engine.stats().sessionsEvicted, 1u);
  EXPECT_EQ(d.engine.findSessionForTest(idSafe(a1)), nullptr);
  EXPECT_FALSE(d.storage.exists(d.partialPath(a1)));
  EXPECT_EQ(d.replayed().sessions.count(idSafe(a1)), 0u);
  d.setPeer(abuser);
  EXPECT_EQ(d.fragment("/a1", a1, 0, "abc", 10).get("BITS-Error-Code"), "0x8020001F");
  EXPECT_EQ(d.fragment("/a0", a0, 3, "def", 10).status, 200) << "the session with bytes went instead";
  // The abuser (3 open) cannot take a place from anyone: it is the biggest holder itself.
  expectQuota503(createReply(d, "/a4"));
  // Neither can b (2): taking one of the abuser's would leave b holding as many as it (3 against 2).
  d.setPeer(b);
  expectQuota503(createReply(d, "/b2"));
  // c (1) can: the abuser pays again, with a2 (its oldest unused one now).
  d.setPeer(c);
  ASSERT_FALSE(d.createSession("/c1").empty());
  EXPECT_EQ(d.engine.findSessionForTest(idSafe(a2)), nullptr);
  EXPECT_NE(d.engine.findSessionForTest(idSafe(a3)), nullptr);
  // Now everyone holds 2. c would hold 3: no. A party with none may take the place of the oldest
  // unused session among the biggest holders (a3), which then hold no more than it.
  expectQuota503(createReply(d, "/c2"));
  d.setPeer(v4(192, 0, 2, 4));
  ASSERT_FALSE(d.createSession("/d0").empty());
  EXPECT_EQ(d.engine.findSessionForTest(idSafe(a3)), nullptr);
  EXPECT_EQ(d.engine.stats().sessionsEvicted, 3u);
  EXPECT_EQ(d.engine.sessionCount(), 6u);
  for (const std::string& id : {a0, b0, b1, c0}) EXPECT_NE(d.engine.findSessionForTest(idSafe(id)), nullptr);
}

TEST(SessionQuota, TheCountsComeBackFromTheJournalAfterARestartAndACompaction) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessionsPerUser = 2;
  EngineDriver a(s);
  a.setPeer(v4(192, 0, 2, 1));
  ASSERT_FALSE(a.createSession("/a0").empty());
  ASSERT_FALSE(a.createSession("/a1").empty());
  a.setPeer(v4(192, 0, 2, 2));
  ASSERT_FALSE(a.createSession("/b0").empty());
  // The journal names each session's client address.
  int named = 0;
  for (const auto& [id, rs] : a.replayed().sessions) named += rs.owner == "@192.0.2.1" ? 1 : 0;
  EXPECT_EQ(named, 2);

  EngineDriver b(s);
  uint8_t skip[3 * 16];
  b.random.fill(skip, sizeof skip);  // the fake generator starts over: skip the ids already given
  b.restartFrom(a);
  const Party p1 = partyOfAddress(v4(192, 0, 2, 1)), p2 = partyOfAddress(v4(192, 0, 2, 2));
  EXPECT_EQ(b.engine.openSessionsOf(p1), 2u);
  EXPECT_EQ(b.engine.openSessionsOf(p2), 1u);
  b.setPeer(v4(192, 0, 2, 1));
  expectQuota503(createReply(b, "/a2"));
  b.setPeer(v4(192, 0, 2, 2));
  EXPECT_FALSE(b.createSession("/b1").empty());
  expectQuota503(createReply(b, "/b2"));

  // A compaction snapshot keeps the addresses, so a second restart counts the same.
  JournalState snap;
  b.engine.snapshot(&snap);
  int p1Named = 0, p2Named = 0;
  for (const auto& [id, rs] : snap.sessions) {
    p1Named += rs.owner == "@192.0.2.1" ? 1 : 0;
    p2Named += rs.owner == "@192.0.2.2" ? 1 : 0;
  }
  EXPECT_EQ(p1Named, 2);
  EXPECT_EQ(p2Named, 2);
}

}  // namespace
}  // namespace bitsd::testing
