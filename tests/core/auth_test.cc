// Authentication and authorisation in the engine (issue 7), on a fake users file: 401 with a Basic
// challenge (and the connection kept), wrong and right credentials, locations, sessions and replies
// bound to their creator (across a restart, through the journal's SessionOwner record), and the
// locations syntax.
#include <gtest/gtest.h>
#include <mbedtls/base64.h>

#include "core/auth.h"
#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

std::string basic(const std::string& userPass) {
  unsigned char out[256];
  size_t n = 0;
  mbedtls_base64_encode(out, sizeof out, &n, reinterpret_cast<const unsigned char*>(userPass.data()), userPass.size());
  return std::string(reinterpret_cast<char*>(out), n);
}

std::string request(const std::string& path, const std::string& type, std::map<std::string, std::string> headers,
                    const std::string& auth, const std::string& body = "") {
  if (!auth.empty()) headers["Authorization"] = "Basic " + basic(auth);
  return bitsRequest(path, type, headers, body);
}

struct AuthDriver {
  explicit AuthDriver(const std::string& locations = "") {
    d.auth.add("alice", basic("alice:wonderland"));
    d.auth.add("bob", basic("bob:builder"));
    std::vector<Location> locs;
    std::string error;
    EXPECT_TRUE(parseLocations(locations, &locs, &error)) << error;
    d.engine.setAuthenticator(&d.auth, locs);
  }
  std::string create(const std::string& path, const std::string& who) {
    Reply r = d.send(request(path, "Create-Session", {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)}}, who));
    return r.status == 200 ? r.get("BITS-Session-Id") : std::string();
  }
  Reply fragment(const std::string& path, const std::string& id, const std::string& bytes, uint64_t first,
                 uint64_t total, const std::string& who) {
    std::string range = "bytes " + std::to_string(first) + "-" + std::to_string(first + bytes.size() - 1) + "/" +
                        std::to_string(total);
    return d.send(request(path, "Fragment", {{"BITS-Session-Id", id}, {"Content-Range", range}}, who, bytes));
  }
  EngineDriver d;
};

TEST(Auth, NoOrWrongCredentialsGet401WithABasicChallenge) {
  AuthDriver a;
  for (const std::string& who : {std::string(), std::string("alice:wrong"), std::string("mallory:x")}) {
    Reply r = a.d.send(request("/x", "Ping", {}, who));
    EXPECT_EQ(r.status, 401) << who;
    EXPECT_EQ(r.get("WWW-Authenticate"), "Basic realm=\"bitsd\", charset=\"UTF-8\"") << r.raw;
    EXPECT_EQ(r.get("Content-Length"), "0");
    EXPECT_NE(r.get("Connection"), "close") << "a 401 must keep the connection for the retry";
  }
  // Not Basic at all (e.g. Negotiate): the same challenge, and the authenticator is not bothered.
  int before = a.d.auth.checks;
  Reply neg = a.d.send(bitsRequest("/x", "Ping", {{"Authorization", "Negotiate abc"}}));
  EXPECT_EQ(neg.status, 401);
  EXPECT_EQ(a.d.auth.checks, before);
  EXPECT_EQ(a.d.send(request("/x", "Ping", {}, "alice:wonderland")).status, 200);
}

// A Ping to any URL, `/` included, is 200 once its sender is authenticated (§2.2: "if auth
// passes"), whatever the locations say; without credentials it is still 401.
TEST(Auth, PingToAnyUrlNeedsCredentialsButNoLocation) {
  AuthDriver a("/alice/ alice");
  for (const char* target : {"/", "/alice/", "/nowhere/x", "/../x"}) {
    Reply none = a.d.send(request(target, "Ping", {}, ""));
    EXPECT_EQ(none.status, 401) << target << "\n" << none.raw;
    EXPECT_EQ(a.d.send(request(target, "Ping", {}, "bob:wrong")).status, 401) << target;
    Reply ok = a.d.send(request(target, "Ping", {}, "bob:builder"));
    EXPECT_EQ(ok.status, 200) << target << "\n" << ok.raw;
    EXPECT_FALSE(ok.has("BITS-Error-Code")) << target;
  }
}

// Issue 20: a check the authenticator refused unchecked (too many failures from this address or for
// this user) is a transient 503 with the Retry-After it gave, not a 401 (the password may be right),
// and a Fragment's bytes go nowhere.
TEST(Auth, AThrottledCheckIs503WithRetryAfterAndWritesNothing) {
  AuthDriver a;
  std::string id = a.create("/t.bin", "alice:wonderland");
  ASSERT_FALSE(id.empty());
  a.d.auth.refuseMs = 2500;
  Reply ping = a.d.send(request("/x", "Ping", {}, "alice:wonderland"));
  EXPECT_EQ(ping.status, 503) << ping.raw;
  EXPECT_EQ(ping.get("Retry-After"), "3");
  EXPECT_EQ(ping.get("BITS-Error-Code"), "0x800700AA");
  EXPECT_EQ(ping.get("WWW-Authenticate"), "");
  Reply frag = a.fragment("/t.bin", id, "secret", 0, 6, "alice:wonderland");
  EXPECT_EQ(frag.status, 503) << frag.raw;
  EXPECT_EQ(a.d.storage.contents(a.d.partialPath(id)), "");
  a.d.auth.refuseMs = 0;
  EXPECT_EQ(a.fragment("/t.bin", id, "secret", 0, 6, "alice:wonderland").status, 200);
}

TEST(Auth, AFragmentRefusedFor401LeavesNothingBehind) {
  AuthDriver a;
  std::string id = a.create("/f.bin", "alice:wonderland");
  ASSERT_FALSE(id.empty());
  Reply r = a.fragment("/f.bin", id, "secret", 0, 6, "alice:oops");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(a.d.storage.contents(a.d.partialPath(id)), "");
  EXPECT_EQ(a.fragment("/f.bin", id, "secret", 0, 6, "alice:wonderland").status, 200);
  EXPECT_EQ(a.d.storage.contents("/root/f.bin"), "secret");
}

TEST(Auth, AnotherUsersSessionIsAnsweredLikeAnUnknownOne) {
  AuthDriver a;
  std::string id = a.create("/s.bin", "alice:wonderland");
  ASSERT_FALSE(id.empty());
  Reply theirs = a.fragment("/s.bin", id, "bob was here", 0, 12, "bob:builder");
  Reply unknown = a.fragment("/s.bin", "{00000000-0000-4000-8000-000000000000}", "bob was here", 0, 12, "bob:builder");
  EXPECT_EQ(theirs.status, 500);
  EXPECT_EQ(theirs.get("BITS-Error-Code"), "0x8020001F");
  EXPECT_EQ(theirs.get("BITS-Error-Code"), unknown.get("BITS-Error-Code"));
  Reply cancel = a.d.send(request("/s.bin", "Cancel-Session", {{"BITS-Session-Id", id}}, "bob:builder"));
  EXPECT_EQ(cancel.status, 500);
  // Alice's upload is untouched.
  EXPECT_EQ(a.fragment("/s.bin", id, "hello", 0, 5, "alice:wonderland").status, 200);
  EXPECT_EQ(a.d.storage.contents("/root/s.bin"), "hello");
}

TEST(Auth, TheOwnerOutlivesARestartThroughTheJournal) {
  AuthDriver a;
  std::string id = a.create("/o.bin", "alice:wonderland");
  ASSERT_EQ(a.fragment("/o.bin", id, "abc", 0, 6, "alice:wonderland").status, 200);
  AuthDriver b;
  b.d.restartFrom(a.d);
  EXPECT_EQ(b.fragment("/o.bin", id, "def", 3, 6, "bob:builder").status, 500);
  EXPECT_EQ(b.fragment("/o.bin", id, "def", 3, 6, "alice:wonderland").status, 200);
  EXPECT_EQ(b.d.storage.contents("/root/o.bin"), "abcdef");
  JournalState st = b.d.replayed();
  bool found = false;
  for (const auto& [sid, s] : st.sessions) found = found || s.owner == "alice";
  EXPECT_TRUE(found) << "no SessionOwner record for alice";
}

TEST(Auth, LocationsDecideWhoMayUploadWhere) {
  AuthDriver a("/alice/ alice; /shared/ *; /shared/private/ bob");
  a.d.storage.addDir("/root/alice");
  a.d.storage.addDir("/root/shared");
  a.d.storage.addDir("/root/shared/private");
  EXPECT_FALSE(a.create("/alice/a.bin", "alice:wonderland").empty());
  Reply denied = a.d.send(request("/alice/b.bin", "Create-Session",
                                  {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)}}, "bob:builder"));
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(denied.get("BITS-Error-Code"), "0x80070005");
  EXPECT_FALSE(a.create("/shared/x.bin", "bob:builder").empty());
  EXPECT_FALSE(a.create("/shared/y.bin", "alice:wonderland").empty());
  EXPECT_TRUE(a.create("/shared/private/z.bin", "alice:wonderland").empty());  // the longest prefix decides
  EXPECT_FALSE(a.create("/shared/private/z.bin", "bob:builder").empty());
  EXPECT_TRUE(a.create("/elsewhere.bin", "alice:wonderland").empty());  // no location matches
  // Ping needs a user but no location.
  EXPECT_EQ(a.d.send(request("/elsewhere.bin", "Ping", {}, "bob:builder")).status, 200);
}

TEST(Auth, LocationsSyntax) {
  std::vector<Location> l;
  std::string e;
  EXPECT_TRUE(parseLocations("", &l, &e));
  EXPECT_TRUE(l.empty());
  ASSERT_TRUE(parseLocations(" /a alice bob ; / * ", &l, &e)) << e;
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].prefix, "a/");
  EXPECT_EQ(l[0].users, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(l[1].prefix, "");
  EXPECT_TRUE(l[1].anyone);
  EXPECT_TRUE(mayUpload(l, "alice", "a/x"));
  EXPECT_FALSE(mayUpload(l, "carol", "a/x"));
  EXPECT_TRUE(mayUpload(l, "carol", "ab"));  // "/a" is the directory a/, not a name prefix: "/" decides
  EXPECT_FALSE(parseLocations("a alice", &l, &e));
  EXPECT_NE(e.find("not a URL path prefix"), std::string::npos) << e;
  EXPECT_FALSE(parseLocations("/a", &l, &e));
  EXPECT_NE(e.find("lists no users"), std::string::npos) << e;
  EXPECT_FALSE(parseLocations("/a al:ice", &l, &e));
  EXPECT_FALSE(parseLocations("/../x alice", &l, &e));
  // PREFIX=DIR: the location's own directory (absolute; a trailing '/' is dropped).
  ASSERT_TRUE(parseLocations("/reports=/srv/reports/ alice; /in *", &l, &e)) << e;
  EXPECT_EQ(l[0].prefix, "reports/");
  EXPECT_EQ(l[0].dir, "/srv/reports");
  EXPECT_EQ(l[1].dir, "");
  EXPECT_EQ(locationFor(l, "reports/2026/a.csv"), &l[0]);
  EXPECT_EQ(locationFor(l, "in/a"), &l[1]);
  EXPECT_EQ(locationFor(l, "other"), nullptr);
  for (const char* bad : {"/r=srv alice", "/r=/ alice", "/r= alice", "/r=//  alice"}) {
    EXPECT_FALSE(parseLocations(bad, &l, &e)) << bad;
    EXPECT_NE(e.find("must be an absolute path other than /"), std::string::npos) << e;
  }
}

// Recovery finds a location's upload where it was committed: a RecoveryInspector that only records.
struct RecordingInspector final : RecoveryInspector {
  RecoveryDecision inspect(const RecoveryItem& item) override {
    dests.emplace_back(item.destPath);
    return RecoveryDecision();
  }
  std::vector<std::string> dests;
};

TEST(Auth, ALocationWithADirectoryCommitsThereAndTheJournalKeepsTheUrlPath) {
  AuthDriver a("/reports=/data/reports alice; /other *");
  a.d.storage.addDir("/data/reports");
  a.d.storage.addDir("/data/reports/2026");
  a.d.storage.addDir("/root/other");
  std::string id = a.create("/reports/2026/a.csv", "alice:wonderland");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(a.fragment("/reports/2026/a.csv", id, "abc", 0, 6, "alice:wonderland").status, 200);
  // A location without a directory stays under the root; a missing directory in the location is
  // refused as anywhere else, not written somewhere.
  std::string o = a.create("/other/x.bin", "bob:builder");
  ASSERT_FALSE(o.empty());
  ASSERT_EQ(a.fragment("/other/x.bin", o, "x", 0, 1, "bob:builder").status, 200);
  EXPECT_EQ(a.d.storage.contents("/root/other/x.bin"), "x");
  EXPECT_TRUE(a.create("/reports/1999/old.csv", "alice:wonderland").empty());
  // After a restart, recovery looks for it in the location's directory, and it resumes there.
  // (The fake random generator starts over after a restart, so no new sessions below.)
  AuthDriver b("/reports=/data/reports alice; /other *");
  b.d.restartFrom(a.d);
  RecordingInspector seen;
  b.d.engine.reconcile(seen);
  EXPECT_EQ(seen.dests, (std::vector<std::string>{"/data/reports/2026/a.csv"}));
  ASSERT_EQ(b.fragment("/reports/2026/a.csv", id, "def", 3, 6, "alice:wonderland").status, 200);
  EXPECT_EQ(b.d.storage.contents("/data/reports/2026/a.csv"), "abcdef");
  EXPECT_FALSE(b.d.storage.files().count("/root/reports/2026/a.csv"));
  JournalState st = b.d.replayed();
  bool found = false;
  for (const auto& [sid, s] : st.sessions) found = found || s.path == "reports/2026/a.csv";
  EXPECT_TRUE(found) << "the journal should keep the URL path, not the directory";
}

}  // namespace
}  // namespace bitsd::testing
