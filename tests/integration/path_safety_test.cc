// The commit cannot escape the root (issue 20, hole 3): someone with write access inside the root
// swaps a directory for a symlink between Create-Session and the final fragment
// (`mv root/d root/d.old; ln -s /elsewhere root/d`). The real bitsd must refuse the commit with a
// BITS error, write nothing outside the root, keep the upload's data for a retry, and keep serving.
// The directory-opening helper itself (platform/beneath.h) is tested in tests/platform/beneath_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

void expectError(const Reply& r, int status, const std::string& code, const std::string& ctx = "0x5") {
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), code) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), ctx) << r.raw;
}

bool makeDir(const std::string& path) { return ::mkdir(path.c_str(), 0755) == 0; }
bool moveTo(const std::string& from, const std::string& to) { return ::rename(from.c_str(), to.c_str()) == 0; }
bool symlinkTo(const std::string& target, const std::string& link) { return ::symlink(target.c_str(), link.c_str()) == 0; }

// Create-Session on `url`, the first half of `data`, then `swap()` (the attacker), then the final
// fragment: its answer. `headers` go on every request (credentials).
Reply uploadAcrossSwap(Client& c, const std::string& url, const std::string& data, const std::function<void()>& swap,
                       const std::map<std::string, std::string>& headers, std::string* id) {
  std::map<std::string, std::string> h = headers;
  h["BITS-Supported-Protocols"] = "{7df0354d-249b-430f-820d-3d2a9bef4931}";
  Reply created = c.roundTrip(bitsRequest(url, "Create-Session", h));
  EXPECT_EQ(created.status, 200) << created.raw;
  *id = created.get("BITS-Session-Id");
  size_t half = data.size() / 2;
  auto fragment = [&](size_t first, size_t n) {
    std::map<std::string, std::string> f = headers;
    f["BITS-Session-Id"] = *id;
    f["Content-Range"] = "bytes " + std::to_string(first) + "-" + std::to_string(first + n - 1) + "/" +
                         std::to_string(data.size());
    return c.roundTrip(bitsRequest(url, "Fragment", f, data.substr(first, n)));
  };
  Reply first = fragment(0, half);
  EXPECT_EQ(first.status, 200) << first.raw;
  swap();
  return fragment(half, data.size() - half);
}

// A plain upload still works (on a fresh connection).
void expectStillUploading(BitsdProcess& server) {
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string id = createSession(c, "/after.bin");
  ASSERT_FALSE(id.empty()) << server.stderrText();
  EXPECT_EQ(c.roundTrip(fragmentRequest("/after.bin", id, 0, "still here", 10)).status, 200);
  std::string got;
  ASSERT_TRUE(readFile(server.root() + "/after.bin", &got));
  EXPECT_EQ(got, "still here");
}

class CommitRace : public ::testing::TestWithParam<bool> {
 protected:
  std::vector<std::string> args() const {
    return GetParam() ? std::vector<std::string>{"--allow-overwrites"} : std::vector<std::string>{};
  }
};

// The race exactly as in the issue. With overwrites off the commit is a link, with them on a rename.
TEST_P(CommitRace, ParentSwappedForASymlinkIsRefusedAndNothingLandsOutside) {
  BitsdProcess server(args());
  ASSERT_TRUE(server.start()) << server.stderrText();
  TempDir outside;
  const std::string root = server.root();
  ASSERT_TRUE(makeDir(root + "/d"));
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string data = randomBytes(200000, 31), id;
  Reply last = uploadAcrossSwap(c, "/d/x.bin", data, [&] {
    ASSERT_TRUE(moveTo(root + "/d", root + "/d.old"));
    ASSERT_TRUE(symlinkTo(outside.path(), root + "/d"));
  }, {}, &id);
  expectError(last, 403, "0x80070005");
  EXPECT_TRUE(listDir(outside.path()).empty()) << "the commit followed the swapped-in symlink";
  EXPECT_TRUE(listDir(root + "/d.old").empty());
  EXPECT_NE(server.stderrText().find("a symlink in the destination's path"), std::string::npos) << server.stderrText();
  expectStillUploading(server);
  // The upload's data was kept: once the directory is back, the final fragment's retry commits it.
  ASSERT_EQ(::unlink((root + "/d").c_str()), 0);
  ASSERT_TRUE(moveTo(root + "/d.old", root + "/d"));
  size_t half = data.size() / 2;
  Reply retry = c.roundTrip(fragmentRequest("/d/x.bin", id, half, data.substr(half), data.size()));
  EXPECT_EQ(retry.status, 200) << retry.raw;
  std::string got;
  ASSERT_TRUE(readFile(root + "/d/x.bin", &got));
  EXPECT_TRUE(got == data);
  EXPECT_TRUE(listDir(outside.path()).empty());
}

// A symlink put at the destination's own name after Create-Session is never followed either: with
// overwrites off the link finds the name taken (403, as for any existing destination); with them on,
// the rename replaces the symlink itself. The file it points at, outside the root, is untouched.
TEST_P(CommitRace, SymlinkAtTheFinalNameIsNotFollowed) {
  BitsdProcess server(args());
  ASSERT_TRUE(server.start()) << server.stderrText();
  TempDir outside;
  const std::string root = server.root(), target = outside.path() + "/victim";
  {
    std::FILE* f = std::fopen(target.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("precious", f);
    std::fclose(f);
  }
  // The commit through a swapped parent is refused first (this part fails on a path-based commit),
  // then the final name itself is a symlink.
  ASSERT_TRUE(makeDir(root + "/d"));
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string id;
  Reply refused = uploadAcrossSwap(c, "/d/y.bin", "payload!", [&] {
    ASSERT_TRUE(moveTo(root + "/d", root + "/d.old"));
    ASSERT_TRUE(symlinkTo(outside.path(), root + "/d"));
  }, {}, &id);
  expectError(refused, 403, "0x80070005");
  EXPECT_EQ(listDir(outside.path()), std::vector<std::string>{"victim"});
  Reply last = uploadAcrossSwap(c, "/x.bin", "payload!", [&] { ASSERT_TRUE(symlinkTo(target, root + "/x.bin")); }, {}, &id);
  std::string got;
  ASSERT_TRUE(readFile(target, &got));
  EXPECT_EQ(got, "precious");
  struct stat st;
  ASSERT_EQ(::lstat((root + "/x.bin").c_str(), &st), 0);
  if (GetParam()) {
    EXPECT_EQ(last.status, 200) << last.raw;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << "the rename replaces the symlink itself";
  } else {
    expectError(last, 403, "0x80070005");
    EXPECT_TRUE(S_ISLNK(st.st_mode));
  }
  // A symlink already there at Create-Session: with overwrites on it is an existing name like any
  // other (the session is created with its in-progress file, and the commit replaces the link
  // itself); with them off, 403 at once.
  ASSERT_TRUE(symlinkTo(target, root + "/z.bin"));
  Reply created = c.roundTrip(bitsRequest("/z.bin", "Create-Session", {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  if (GetParam()) {
    ASSERT_EQ(created.status, 200) << created.raw;
    const std::string zid = created.get("BITS-Session-Id");
    Reply done = c.roundTrip(bitsRequest("/z.bin", "Fragment",
                                         {{"BITS-Session-Id", zid}, {"Content-Range", "bytes 0-7/8"}}, "payload!"));
    EXPECT_EQ(done.status, 200) << done.raw;
    ASSERT_EQ(::lstat((root + "/z.bin").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
  } else {
    expectError(created, 403, "0x80070005");
  }
  ASSERT_TRUE(readFile(target, &got));
  EXPECT_EQ(got, "precious");
}

INSTANTIATE_TEST_SUITE_P(Overwrites, CommitRace, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "On" : "Off"; });

// A component deeper up the path is swapped: /a/b/x.bin, `a` replaced by a symlink to a directory
// that has a `b` of its own, so a path-based commit would land in it.
TEST(PathSafety, IntermediateComponentSwappedIsRefused) {
  BitsdProcess server;
  ASSERT_TRUE(server.start()) << server.stderrText();
  TempDir outside;
  const std::string root = server.root();
  ASSERT_TRUE(makeDir(root + "/a"));
  ASSERT_TRUE(makeDir(root + "/a/b"));
  ASSERT_TRUE(makeDir(outside.path() + "/b"));
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  std::string data = randomBytes(5000, 3), id;
  Reply last = uploadAcrossSwap(c, "/a/b/x.bin", data, [&] {
    ASSERT_TRUE(moveTo(root + "/a", root + "/a.old"));
    ASSERT_TRUE(symlinkTo(outside.path(), root + "/a"));
  }, {}, &id);
  expectError(last, 403, "0x80070005");
  EXPECT_TRUE(listDir(outside.path() + "/b").empty());
  EXPECT_TRUE(listDir(root + "/a.old/b").empty());
  expectStillUploading(server);
  // The symlink gone and nothing in its place: a missing directory, 404 as at Create-Session.
  ASSERT_EQ(::unlink((root + "/a").c_str()), 0);
  Reply retry = c.roundTrip(fragmentRequest("/a/b/x.bin", id, 2500, data.substr(2500), data.size()));
  expectError(retry, 404, "0x80070003");
  // The directory back: the retry commits the kept data.
  ASSERT_TRUE(moveTo(root + "/a.old", root + "/a"));
  retry = c.roundTrip(fragmentRequest("/a/b/x.bin", id, 2500, data.substr(2500), data.size()));
  EXPECT_EQ(retry.status, 200) << retry.raw;
  std::string got;
  ASSERT_TRUE(readFile(root + "/a/b/x.bin", &got));
  EXPECT_TRUE(got == data);
  EXPECT_TRUE(listDir(outside.path() + "/b").empty());
}

// Create-Session applies the same rule as the commit: no symlink anywhere below the root, even one
// that stays inside it (before, a symlink resolving inside the root was accepted at Create-Session).
TEST(PathSafety, CreateSessionRefusesAnySymlinkOnTheWay) {
  BitsdProcess server;
  ASSERT_TRUE(server.start()) << server.stderrText();
  const std::string root = server.root();
  ASSERT_TRUE(makeDir(root + "/real"));
  ASSERT_TRUE(symlinkTo(root + "/real", root + "/alias"));
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  Reply r = c.roundTrip(bitsRequest("/alias/x.bin", "Create-Session",
                                    {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  expectError(r, 403, "0x80070005");
  EXPECT_FALSE(createSession(c, "/real/x.bin").empty());
}

// Recovery asks "is the upload already at its destination?" the way the commit would reach it: a
// file behind a swapped-in symlink does not count. Here the in-progress file is gone (as if renamed
// into place just before a crash) and a file sits at the symlink's target: that is not our commit,
// so the session is dropped (500 + BG_E_SESSION_NOT_FOUND), not answered "committed".
TEST(PathSafety, RecoveryDoesNotFollowASwappedSymlink) {
  BitsdProcess server;
  ASSERT_TRUE(server.start()) << server.stderrText();
  TempDir outside;
  const std::string root = server.root();
  ASSERT_TRUE(makeDir(root + "/d"));
  std::string data = "0123456789", id;
  {
    Client c;
    ASSERT_TRUE(c.connect(server.port()));
    Reply last = uploadAcrossSwap(c, "/d/x.bin", data, [&] {
      ASSERT_TRUE(moveTo(root + "/d", root + "/d.old"));
      ASSERT_TRUE(symlinkTo(outside.path(), root + "/d"));
    }, {}, &id);
    ASSERT_EQ(last.status, 403) << last.raw;
  }
  server.stop();
  auto partials = listDir(server.state() + "/partial");
  ASSERT_EQ(partials.size(), 1u);
  ASSERT_EQ(::unlink((server.state() + "/partial/" + partials[0]).c_str()), 0);
  {
    std::FILE* f = std::fopen((outside.path() + "/x.bin").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(data.c_str(), f);
    std::fclose(f);
  }
  ASSERT_TRUE(server.start()) << server.stderrText();
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  Reply again = c.roundTrip(fragmentRequest("/d/x.bin", id, 5, data.substr(5), data.size()));
  expectError(again, 500, "0x8020001F");
}

// A location with a directory of its own: the base is the location's directory, and the same
// swap inside it is refused the same way. Plain http with a password (explicitly allowed).
TEST(PathSafety, InsideALocationsDirectory) {
  TempDir dir;
  const std::string users = dir.path() + "/users", reports = dir.path() + "/reports";
  {
    std::string pw = dir.path() + "/pw";
    std::FILE* f = std::fopen(pw.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("wonderland\n", f);
    std::fclose(f);
    int in = ::open(pw.c_str(), O_RDONLY);
    int out = ::open((dir.path() + "/bitsctl.out").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    pid_t pid = spawnProgram(BITSCTL_BINARY,
                             {"user", "add", "alice", "--users-file", users, "--iterations", "2000", "--password-stdin"},
                             out, out, {}, in);
    ::close(in);
    ::close(out);
    ASSERT_EQ(waitProcess(pid, 60000), 0);
  }
  BitsdProcess server({"--users-file", users, "--allow-basic-over-http", "--locations", "/reports=" + reports + " alice"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  TempDir outside;
  ASSERT_TRUE(makeDir(reports + "/d"));
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  const std::map<std::string, std::string> auth = {{"Authorization", "Basic YWxpY2U6d29uZGVybGFuZA=="}};  // alice:wonderland
  std::string id;
  Reply last = uploadAcrossSwap(c, "/reports/d/x.bin", randomBytes(3000, 8), [&] {
    ASSERT_TRUE(moveTo(reports + "/d", reports + "/d.old"));
    ASSERT_TRUE(symlinkTo(outside.path(), reports + "/d"));
  }, auth, &id);
  expectError(last, 403, "0x80070005");
  EXPECT_TRUE(listDir(outside.path()).empty());
  EXPECT_TRUE(listDir(reports + "/d.old").empty());
}

}  // namespace
}  // namespace bitsd::testing
