// The access log and the error log (README "Logs") on the real bitsd: every request one line with
// its fields, SIGUSR1 reopens the file, JSON lines parse; each refusal one error-log line naming its
// reason and the client, timestamped unless JOURNAL_STREAM says journald is listening.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/bitsd_process.h"

namespace bitsd::testing {
namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Waits (bounded) until `path` holds at least `n` lines; returns them.
std::vector<std::string> waitLines(const std::string& path, size_t n, int timeoutMs = 10000) {
  std::vector<std::string> got;
  waitUntil([&] {
    std::string text;
    if (readFile(path, &text)) got = lines(text);
    return got.size() >= n;
  }, timeoutMs, 50);
  return got;
}

std::vector<std::string> matching(const std::string& text, const std::string& needle) {
  std::vector<std::string> out;
  for (const auto& l : lines(text)) {
    if (l.find(needle) != std::string::npos) out.push_back(l);
  }
  return out;
}

std::string createRequest(const std::string& path) {
  return bitsRequest(path, "Create-Session", {{"BITS-Supported-Protocols", std::string(kUploadProtocolGuid)}});
}

TEST(AccessLog, TextLinesForEachRequestAndSigusr1Reopens) {
  TempDir logs;
  std::string log = logs.path() + "/access.log";
  BitsdProcess server({"--access-log", log});
  ASSERT_TRUE(server.start()) << server.stderrText();
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  EXPECT_EQ(c.roundTrip(bitsRequest("/f.bin", "Ping")).status, 200);
  Reply create = c.roundTrip(createRequest("/f.bin"));
  ASSERT_EQ(create.status, 200);
  std::string id = create.get("BITS-Session-Id");
  EXPECT_EQ(c.roundTrip(fragmentRequest("/f.bin", id, 0, "hello", 10)).status, 200);
  EXPECT_EQ(c.roundTrip(fragmentRequest("/f.bin", id, 7, "xyz", 10)).status, 416);  // a gap
  EXPECT_EQ(c.roundTrip(fragmentRequest("/f.bin", id, 5, "world", 10)).status, 200);
  EXPECT_EQ(c.roundTrip(bitsRequest("/f.bin", "Close-Session", {{"BITS-Session-Id", id}})).status, 200);

  std::vector<std::string> got = waitLines(log, 6);
  ASSERT_EQ(got.size(), 6u);
  // CLIENT - USER [TIME] "METHOD PATH HTTP/x.y" STATUS BYTES_OUT PACKET SESSION "RANGE" ERROR BYTES_IN MS
  std::regex re(R"(^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "BITS_POST /f\.bin HTTP/1\.1" )"
                R"re((\d{3}) (\d+) ([A-Za-z-]+) (\S+) "([^"]*)" (\S+) (\d+) (\d+\.\d{3})$)re");
  struct Want {
    const char* status;
    const char* packet;
    bool session;
    const char* range;
    const char* error;
    const char* in;
  } want[] = {
      {"200", "Ping", false, "-", "-", "0"},
      {"200", "Create-Session", true, "-", "-", "0"},
      {"200", "Fragment", true, "bytes 0-4/10", "-", "5"},
      {"416", "Fragment", true, "bytes 7-9/10", "0x00000000", "3"},  // a resume hint: BITS-Error-Code 0x0 (§10.1)
      {"200", "Fragment", true, "bytes 5-9/10", "-", "5"},
      {"200", "Close-Session", true, "-", "-", "0"},
  };
  for (size_t i = 0; i < 6; ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(got[i], m, re)) << got[i];
    EXPECT_EQ(m[1], want[i].status) << got[i];
    EXPECT_GT(std::stoul(m[2]), 50u) << got[i];  // the Ack's head
    EXPECT_EQ(m[3], want[i].packet) << got[i];
    EXPECT_EQ(m[4], want[i].session ? id : "-") << got[i];
    EXPECT_EQ(m[5], want[i].range) << got[i];
    EXPECT_EQ(m[6], want[i].error) << got[i];
    EXPECT_EQ(m[7], want[i].in) << got[i];
  }

  // logrotate: move the file, SIGUSR1, and the next request goes to a new file at the old name.
  std::string moved = log + ".1";
  ASSERT_EQ(::rename(log.c_str(), moved.c_str()), 0);
  ASSERT_EQ(::kill(server.pid(), SIGUSR1), 0);
  // The reopen is logged once done; wait for it, then make a request.
  waitUntil([&] { return server.stderrText().find("access log " + log + " reopened") != std::string::npos; }, 10000, 20);
  ASSERT_NE(server.stderrText().find("reopened"), std::string::npos) << server.stderrText();
  EXPECT_EQ(c.roundTrip(bitsRequest("/g.bin", "Ping")).status, 200);
  std::vector<std::string> fresh = waitLines(log, 1);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_NE(fresh[0].find("\"BITS_POST /g.bin HTTP/1.1\" 200"), std::string::npos) << fresh[0];
  std::string old;
  ASSERT_TRUE(readFile(moved, &old));
  EXPECT_EQ(lines(old).size(), 6u);
  EXPECT_EQ(server.stop(), 0);
}

// A request whose head never completes (408) is logged with nothing of the request its request slot
// served before (that may have been another client's): no packet type, no session.
TEST(AccessLog, AHeadThatTimesOutIsLoggedWithoutTheSlotsLastRequest) {
  TempDir logs;
  std::string log = logs.path() + "/access.log";
  BitsdProcess server({"--access-log", log, "--request-slots", "4", "--header-timeout-ms", "500"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  {
    Client a;
    ASSERT_TRUE(a.connect(server.port()));
    ASSERT_EQ(a.roundTrip(createRequest("/f.bin")).status, 200);
  }
  ASSERT_EQ(waitLines(log, 1).size(), 1u);
  Client b;
  ASSERT_TRUE(b.connect(server.port()));
  ASSERT_TRUE(b.sendAll("BITS_POST /x HTTP/1.1\r\nHo"));
  EXPECT_TRUE(b.waitClosed(10000));
  std::vector<std::string> got = waitLines(log, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_NE(got[0].find(" Create-Session {"), std::string::npos) << got[0];
  EXPECT_NE(got[1].find(" 408 "), std::string::npos) << got[1];
  EXPECT_NE(got[1].find(" - - \"-\" 0x80070057 "), std::string::npos) << got[1];
  EXPECT_EQ(got[1].find("Create-Session"), std::string::npos) << got[1];
  EXPECT_EQ(server.stderrText().find("refused Create-Session"), std::string::npos) << server.stderrText();
}

TEST(AccessLog, JsonLinesParse) {
  TempDir logs;
  std::string log = logs.path() + "/access.json";
  BitsdProcess server({"--access-log", log, "--access-log-format", "json"});
  ASSERT_TRUE(server.start()) << server.stderrText();
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  Reply create = c.roundTrip(createRequest("/j.bin"));
  ASSERT_EQ(create.status, 200);
  std::string id = create.get("BITS-Session-Id");
  EXPECT_EQ(c.roundTrip(fragmentRequest("/j.bin", id, 0, "abc", 3)).status, 200);
  EXPECT_EQ(c.roundTrip(createRequest("/no/such/dir/x.bin")).status, 404);
  // A path with a quote and a control byte (percent-encoded: the target is logged as sent).
  EXPECT_EQ(c.roundTrip(createRequest("/%22q%01%ff.bin")).status, 400);
  EXPECT_EQ(server.stop(), 0);  // the rest is written out at exit
  std::string text;
  ASSERT_TRUE(readFile(log, &text));
  ASSERT_EQ(lines(text).size(), 4u) << text;
  std::string check =
      "import json,sys\n"
      "rows=[json.loads(l) for l in open(sys.argv[1])]\n"
      "assert rows[0]['packet']=='Create-Session' and rows[0]['status']==200 and rows[0]['client']=='127.0.0.1', rows[0]\n"
      "assert rows[1]['packet']=='Fragment' and rows[1]['range']=='bytes 0-2/3' and rows[1]['bytes_in']==3, rows[1]\n"
      "assert rows[1]['session']==sys.argv[2] and rows[1]['error'] is None and rows[1]['user'] is None, rows[1]\n"
      "assert rows[2]['status']==404 and rows[2]['error']=='0x80070003', rows[2]\n"
      "assert rows[2]['path']=='/no/such/dir/x.bin', rows[2]\n"
      "assert rows[3]['status']==400 and rows[3]['path']=='/%22q%01%ff.bin', rows[3]\n"
      "assert all(isinstance(r['duration_ms'], float) for r in rows)\n";
  std::string cmd = "python3 -c \"$CHECK\" '" + log + "' '" + id + "'";
  ASSERT_EQ(::setenv("CHECK", check.c_str(), 1), 0);
  int rc = std::system(cmd.c_str());
  ::unsetenv("CHECK");
  EXPECT_EQ(WEXITSTATUS(rc), 0) << text;
}

TEST(ErrorLog, EachRefusalOneInfoLineWithReasonAndClient) {
  ::unsetenv("JOURNAL_STREAM");
  BitsdProcess server;
  ASSERT_TRUE(server.start()) << server.stderrText();
  {
    FILE* f = std::fopen((server.root() + "/exists.bin").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  Client c;
  ASSERT_TRUE(c.connect(server.port()));
  EXPECT_EQ(c.roundTrip(createRequest("/exists.bin")).status, 403);
  EXPECT_EQ(c.roundTrip(createRequest("/missing/dir/f.bin")).status, 404);
  EXPECT_EQ(server.stop(), 0);
  std::string err = server.stderrText();
  std::vector<std::string> exists = matching(err, "file exists");
  ASSERT_EQ(exists.size(), 1u) << err;
  EXPECT_NE(exists[0].find("info: refused Create-Session /exists.bin from 127.0.0.1: 403"), std::string::npos)
      << exists[0];
  std::vector<std::string> missing = matching(err, "/missing/dir/f.bin");
  ASSERT_EQ(missing.size(), 1u) << err;
  EXPECT_NE(missing[0].find("from 127.0.0.1: 404 the destination's directory does not exist"), std::string::npos)
      << missing[0];
  // Not under journald: every line starts with a timestamp.
  std::regex stamped(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} bitsd: )");
  for (const auto& l : lines(err)) {
    if (l.rfind("bitsd listening", 0) == 0) continue;  // stdout's ready line, if merged
    EXPECT_TRUE(std::regex_search(l, stamped)) << l;
  }
}

TEST(ErrorLog, NoTimestampUnderJournald) {
  ASSERT_EQ(::setenv("JOURNAL_STREAM", "8:12345", 1), 0);
  BitsdProcess server;
  bool started = server.start();
  ::unsetenv("JOURNAL_STREAM");
  ASSERT_TRUE(started) << server.stderrText();
  EXPECT_EQ(server.stop(), 0);
  std::vector<std::string> got = lines(server.stderrText());
  ASSERT_FALSE(got.empty());
  for (const auto& l : got) EXPECT_EQ(l.rfind("bitsd: ", 0), 0u) << l;
}

}  // namespace
}  // namespace bitsd::testing
