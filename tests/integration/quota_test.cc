// Sessions per client (issue 20, hole 4) on the real bitsd: one client address that fills its
// max-sessions-per-user quota, and several that fill the whole table, leave another client
// uploading; after a SIGKILL and a restart on the same state the quota still holds (the client
// address of each session is in the journal) and the other client still uploads.
#include <gtest/gtest.h>

#include <csignal>
#include <string>
#include <vector>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

constexpr const char* kProto = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

Reply createReply(Client& c, const std::string& path) {
  return c.roundTrip(bitsRequest(path, "Create-Session", {{"BITS-Supported-Protocols", kProto}}));
}

void expectRefused(const Reply& r) {
  EXPECT_EQ(r.status, 503) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), "0x800705AA") << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), "0x5") << r.raw;
  EXPECT_FALSE(r.has("BITS-Session-Id")) << r.raw;
}

// Uploads `body` to `path` from `from` in 16 KiB fragments and closes the session.
void uploadFrom(int port, const char* from, const std::string& path, const std::string& body) {
  Client c;
  ASSERT_TRUE(c.connect(port, from)) << from;
  std::string id = createSession(c, path);
  ASSERT_FALSE(id.empty()) << from << " could not create a session for " << path;
  const size_t frag = 16384;
  for (size_t off = 0; off < body.size(); off += frag) {
    Reply r = c.roundTrip(fragmentRequest(path, id, off, body.substr(off, frag), body.size()));
    ASSERT_EQ(r.status, 200) << r.raw;
  }
  Reply r = c.roundTrip(bitsRequest(path, "Close-Session", {{"BITS-Session-Id", id}}));
  ASSERT_EQ(r.status, 200) << r.raw;
}

TEST(SessionQuota, OneClientFillingItsQuotaLeavesOthersUploadingAcrossARestart) {
  BitsdProcess server({"--max-sessions", "20", "--max-sessions-per-user", "5"});
  ASSERT_TRUE(server.start());
  const std::string body = randomBytes(100000, 7);

  // 127.0.0.1 takes its five sessions and sends nothing; the sixth is refused, transiently.
  Client abuser;
  ASSERT_TRUE(abuser.connect(server.port(), "127.0.0.1"));
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(createSession(abuser, "/abuse" + std::to_string(i)).empty()) << i;
  expectRefused(createReply(abuser, "/abuse5"));
  // A new connection from the same address does not help it.
  Client again;
  ASSERT_TRUE(again.connect(server.port(), "127.0.0.1"));
  expectRefused(createReply(again, "/abuse6"));

  // 127.0.0.2 creates sessions and uploads a whole file.
  uploadFrom(server.port(), "127.0.0.2", "/other1.bin", body);
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/other1.bin", &got));
  EXPECT_TRUE(got == body) << "other1.bin differs";

  // SIGKILL, restart on the same state: the count comes back from the journal.
  abuser.close();
  again.close();
  EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(server.start());
  ASSERT_TRUE(abuser.connect(server.port(), "127.0.0.1"));
  expectRefused(createReply(abuser, "/abuse7"));
  uploadFrom(server.port(), "127.0.0.2", "/other2.bin", body);
  ASSERT_TRUE(readFile(server.root() + "/other2.bin", &got));
  EXPECT_TRUE(got == body) << "other2.bin differs";
  // The error log's refusal line (README "Logs") names the client and the reason.
  EXPECT_NE(server.stderrText().find("refused Create-Session /abuse5 from 127.0.0.1: 503 the client or user holds "
                                     "max-sessions-per-user open sessions"),
            std::string::npos)
      << server.stderrText();
}

TEST(SessionQuota, ClientsFillingTheWholeTablePayForANewcomerAcrossARestart) {
  BitsdProcess server({"--max-sessions", "20", "--max-sessions-per-user", "5"});
  ASSERT_TRUE(server.start());
  const std::string body = randomBytes(50000, 9);
  // Four addresses take five idle sessions each: the table is full.
  for (int a = 10; a < 14; ++a) {
    std::string from = "127.0.0." + std::to_string(a);
    Client c;
    ASSERT_TRUE(c.connect(server.port(), from.c_str()));
    for (int i = 0; i < 5; ++i) ASSERT_FALSE(createSession(c, "/f" + std::to_string(a) + "_" + std::to_string(i)).empty());
  }
  // One of them asks for more: refused (its quota, and it holds as much as anyone).
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port(), "127.0.0.10"));
    expectRefused(createReply(c, "/f10_5"));
  }
  // A newcomer gets a place: one of the biggest holders' sessions goes instead.
  uploadFrom(server.port(), "127.0.0.2", "/newcomer1.bin", body);
  EXPECT_NE(server.stderrText().find("which holds the most open sessions (5)"), std::string::npos)
      << server.stderrText();
  // After a SIGKILL and a restart the parties come back from the journal: 127.0.0.11 is still at its
  // quota, and a newcomer still gets places. (Its first takes the closed upload's tombstone, its
  // second one of the biggest holders' idle sessions.)
  EXPECT_EQ(server.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(server.start());
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port(), "127.0.0.11"));
    expectRefused(createReply(c, "/f11_5"));
    Client n;
    ASSERT_TRUE(n.connect(server.port(), "127.0.0.3"));
    ASSERT_FALSE(createSession(n, "/newcomer-idle").empty());
  }
  uploadFrom(server.port(), "127.0.0.3", "/newcomer2.bin", body);
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/newcomer2.bin", &got));
  EXPECT_TRUE(got == body);
}

}  // namespace
}  // namespace bitsd::testing
