// bitsclient's state file (tools/client/state_file.*), on real files in a scratch directory: a job's
// state survives a write and a read; every file cut short, and every damaged one, is refused with a
// sentence naming the file (never an exit, a crash or a half-read job); a name the format cannot hold
// is refused at write time; a failed write leaves nothing behind.
#include "tools/client/state_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace bitsd::client {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

class StateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr ? tmp : "/tmp") + "/bitsclient-state-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") ::unlink((dir_ + "/" + n).c_str());
      }
      ::closedir(d);
    }
    ::rmdir(dir_.c_str());
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static void put(const std::string& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  static bool exists(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
  }
  // A job in the middle of its upload: session, offset, BITS-Host-Id with fallback, reply wanted,
  // extra headers.
  Options busyOptions() const {
    Options o;
    o.command = "upload";
    o.file = "/data/big file.iso";
    o.url = "https://uploads.example:8443/in/big%20file.iso?x=1";
    o.statePath = path("big.bitsjob");
    o.replyOut = "/data/reply.bin";
    o.job.wantReply = true;
    o.headers = {"BITS-Transaction-Id: 1234", "X-Trace: a=b; c"};
    o.fileBytes = 10 * kMiB + 7;
    o.job.fileBytes = o.fileBytes;
    o.job.fragmentBytes = 2 * kMiB;
    return o;
  }
  // Reads `p` into fresh Options; on failure the error must be a sentence that names the file.
  static bool read(const std::string& p, Options* o, std::string* error) {
    bool ok = readState(p, o, error);
    if (!ok) {
      EXPECT_FALSE(error->empty());
      EXPECT_NE(error->find(p), std::string::npos) << "the error does not name the file: " << *error;
    }
    return ok;
  }

  std::string dir_;
};

TEST_F(StateFileTest, RoundTripKeepsEveryField) {
  Options o = busyOptions();
  Job job(o.job);
  job.resume("{5A1C2E3B-0000-4000-8000-00000000ABCD}", 3 * kMiB, "node7.example:8443", 30);
  std::string error;
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  EXPECT_FALSE(exists(o.statePath + ".tmp")) << "the temporary file outlived the rename";

  Options r;
  ASSERT_TRUE(read(o.statePath, &r, &error)) << error;
  EXPECT_EQ(r.file, o.file);
  EXPECT_EQ(r.fileBytes, o.fileBytes);
  EXPECT_EQ(r.url, o.url);
  EXPECT_EQ(r.sessionId, "{5A1C2E3B-0000-4000-8000-00000000ABCD}");
  EXPECT_EQ(r.offset, 3 * kMiB);
  EXPECT_EQ(r.job.fragmentBytes, 2 * kMiB);
  EXPECT_EQ(r.hostId, "node7.example:8443");
  EXPECT_EQ(r.fallbackSeconds, 30u);
  EXPECT_EQ(r.replyOut, o.replyOut);
  EXPECT_TRUE(r.job.wantReply);
  EXPECT_EQ(r.headers, o.headers);
  EXPECT_EQ(r.statePath, o.statePath);
  EXPECT_TRUE(r.user.empty()) << "credentials are never kept";
}

TEST_F(StateFileTest, AJobWithoutASessionRoundTrips) {
  Options o = busyOptions();
  o.replyOut.clear();
  o.job.wantReply = false;
  o.headers.clear();
  o.user = "alice:secret";
  Job job(o.job);
  std::string error;
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  EXPECT_EQ(slurp(o.statePath).find("secret"), std::string::npos) << "the password was written to the state file";

  Options r;
  ASSERT_TRUE(read(o.statePath, &r, &error)) << error;
  EXPECT_EQ(r.file, o.file);
  EXPECT_EQ(r.url, o.url);
  EXPECT_TRUE(r.sessionId.empty());
  EXPECT_EQ(r.offset, 0u);
  EXPECT_TRUE(r.hostId.empty());
  EXPECT_FALSE(r.job.wantReply);
  EXPECT_TRUE(r.headers.empty());
}

TEST_F(StateFileTest, ARewriteReplacesTheWholeFile) {
  Options o = busyOptions();
  Job job(o.job);
  job.resume("{S}", 1 * kMiB, "", 0);
  std::string error;
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  job.resume("{S}", 9 * kMiB, "", 0);
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  Options r;
  ASSERT_TRUE(read(o.statePath, &r, &error)) << error;
  EXPECT_EQ(r.offset, 9 * kMiB);
  EXPECT_EQ(r.headers, o.headers) << "a rewrite must not append to the old file";
  EXPECT_FALSE(exists(o.statePath + ".tmp"));
}

// A file cut at any byte (a full disk, a copy broken off) is refused, never read as a shorter job:
// a URL or session cut short would be another upload's.
TEST_F(StateFileTest, EveryTruncationIsRefused) {
  Options o = busyOptions();
  Job job(o.job);
  job.resume("{5A1C2E3B-0000-4000-8000-00000000ABCD}", 3 * kMiB, "node7.example:8443", 30);
  std::string error;
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  std::string whole = slurp(o.statePath);
  ASSERT_GT(whole.size(), 100u);
  std::string cut = path("cut.bitsjob");
  for (size_t n = 0; n < whole.size(); ++n) {
    put(cut, whole.substr(0, n));
    Options r;
    error.clear();
    EXPECT_FALSE(read(cut, &r, &error)) << "a file cut to " << n << " of " << whole.size() << " bytes was accepted:\n"
                                        << whole.substr(0, n);
  }
  put(cut, whole);
  Options r;
  EXPECT_TRUE(read(cut, &r, &error)) << error;
}

TEST_F(StateFileTest, DamagedFilesGiveAClearError) {
  Options o = busyOptions();
  Job job(o.job);
  job.resume("{S}", 3 * kMiB, "", 0);
  std::string error;
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  std::string good = slurp(o.statePath);
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    size_t at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? t : t.replace(at, from.size(), to);
  };
  struct Case {
    const char* what;
    std::string bytes;
    const char* says;  // part of the expected error
  };
  std::vector<Case> cases = {
      {"empty", "", "not a bitsclient state file"},
      {"binary", std::string("\x7f" "ELF\x02\x01\x01\0\0\0\xff\xfe\n", 13), "not key=value"},
      {"NUL in a key", replace("offset=", std::string("off\0set=", 8)), "unknown key"},
      {"another version", replace("version=1", "version=2"), "unknown state file version 2"},
      {"no version", replace("version=1\n", ""), "not a bitsclient state file"},
      {"a line without =", replace("fallback=0\n", "fallback 0\n"), ":12: not key=value"},
      {"a number with letters", replace("offset=3145728", "offset=31457x8"), ":9: bad number for offset"},
      {"a negative number", replace("size=", "size=-"), "bad number for size"},
      {"a number past 64 bits", replace("offset=3145728", "offset=99999999999999999999999"), "bad number for offset"},
      {"an empty number", replace("fragment=2097152", "fragment="), "bad number for fragment"},
      {"an unknown key", replace("fallback=0", "fallback=0\npassword=x"), "unknown key password"},
      {"no file", replace("file=/data/big file.iso\n", ""), "not a bitsclient state file"},
      {"an empty url", replace("url=" + o.url, "url="), "not a bitsclient state file"},
      {"no session line", replace("session={S}\n", ""), "no session= line"},
      {"CRLF line ends", replace("fallback=0\n", "fallback=0\r\n"), "bad number for fallback"},
  };
  std::string p = path("damaged.bitsjob");
  for (const Case& c : cases) {
    put(p, c.bytes);
    Options r;
    error.clear();
    EXPECT_FALSE(read(p, &r, &error)) << c.what;
    EXPECT_NE(error.find(c.says), std::string::npos) << c.what << ": " << error;
  }
}

TEST_F(StateFileTest, AMissingFileOrADirectoryGivesAClearError) {
  Options r;
  std::string error;
  EXPECT_FALSE(read(path("missing.bitsjob"), &r, &error));
  EXPECT_NE(error.find("cannot read state file"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(read(dir_, &r, &error));  // an istream throws here
  EXPECT_NE(error.find("cannot read state file"), std::string::npos) << error;
}

// The upload's own file given by mistake (bitsclient resume big.iso): refused without reading it all.
TEST_F(StateFileTest, AFileFarTooLargeIsNotAStateFile) {
  std::string p = path("big.iso");
  put(p, "version=1\n" + std::string(3 * kMiB, 'x') + "\n");
  Options r;
  std::string error;
  EXPECT_FALSE(read(p, &r, &error));
  EXPECT_NE(error.find("not a bitsclient state file"), std::string::npos) << error;
}

// Random damage to a good file: each read either succeeds or says why, and never takes the process
// down (the old reader exited from inside; under ASan this also checks the bounds).
TEST_F(StateFileTest, RandomDamageIsAnsweredNotCrashedOn) {
  Options o = busyOptions();
  Job job(o.job);
  job.resume("{S}", 3 * kMiB, "h:1", 5);
  std::string error;
  ASSERT_TRUE(writeState(o, job, &error)) << error;
  std::string good = slurp(o.statePath);
  std::mt19937 rng(16);
  std::string p = path("random.bitsjob");
  int refused = 0;
  for (int i = 0; i < 500; ++i) {
    std::string t = good;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % t.size();
      switch (rng() % 3) {
        case 0: t[at] = static_cast<char>(rng() & 0xff); break;
        case 1: t.erase(at, 1 + rng() % 8); break;
        default: t.insert(at, 1, "=\n\0#"[rng() % 4]); break;
      }
      if (t.empty()) t = "x";
    }
    put(p, t);
    Options r;
    error.clear();
    if (!read(p, &r, &error)) ++refused;
  }
  EXPECT_GT(refused, 0) << "no damage was ever noticed";
}

// A file name may hold a line break; the state file cannot. The write is refused (the job goes on,
// unresumable, as for any failed write) rather than writing a file that reads back as something else.
TEST_F(StateFileTest, ALineBreakInANameIsRefusedAtWriteTime) {
  Options o = busyOptions();
  o.file = "/data/evil\nurl=http://elsewhere/x";
  Job job(o.job);
  std::string error;
  EXPECT_FALSE(writeState(o, job, &error));
  EXPECT_NE(error.find("line break"), std::string::npos) << error;
  EXPECT_FALSE(exists(o.statePath));
  EXPECT_FALSE(exists(o.statePath + ".tmp"));
}

TEST_F(StateFileTest, AWriteThatCannotHappenSaysSoAndLeavesNothing) {
  Options o = busyOptions();
  o.statePath = path("no-such-dir/job.bitsjob");
  Job job(o.job);
  std::string error;
  EXPECT_FALSE(writeState(o, job, &error));
  EXPECT_NE(error.find("cannot write"), std::string::npos) << error;
  EXPECT_NE(error.find(o.statePath), std::string::npos) << error;
}

}  // namespace
}  // namespace bitsd::client
