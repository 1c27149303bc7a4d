// The BITS state machine on fake storage and a fake clock: every packet, every error, durability
// order, expiry and fault handling, without sockets or a real disk.
#include "core/upload_engine.h"

#include <gtest/gtest.h>

#include <mbedtls/sha256.h>

#include <cstring>
#include <random>

#include "tests/support/engine_driver.h"

namespace bitsd::testing {
namespace {

constexpr const char* kProto = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

void expectAck(const Reply& r) {
  EXPECT_EQ(r.get("BITS-Packet-Type"), "Ack") << r.raw;
  EXPECT_EQ(r.get("Content-Length"), "0") << r.raw;
}

void expectError(const Reply& r, int status, const char* code, const char* ctx = "0x5") {
  expectAck(r);
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Code"), code) << r.raw;
  EXPECT_EQ(r.get("BITS-Error-Context"), ctx) << r.raw;
}

std::string data(size_t n, uint32_t seed = 1) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1103515245 + 12345;
    s[i] = static_cast<char>(seed >> 16);
  }
  return s;
}

TEST(UploadEngine, PingIsAckedWithoutASession) {
  EngineDriver d;
  Reply r = d.send(bitsRequest("/any", "Ping"));
  expectAck(r);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.has("BITS-Error-Code"));
}

TEST(UploadEngine, CreateSessionAnswersProtocolIdAndEncoding) {
  EngineDriver d;
  Reply r = d.send(bitsRequest("/f.bin", "Create-Session", {{"BITS-Supported-Protocols", kProto}}));
  expectAck(r);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.get("BITS-Protocol"), kProto);
  EXPECT_EQ(r.get("Accept-Encoding"), "identity");
  std::string id = r.get("BITS-Session-Id");
  SessionId parsed;
  ASSERT_TRUE(parseSessionId(id, &parsed));
  EXPECT_TRUE(d.storage.exists(d.partialPath(id)));
  // A second session gets a different id.
  EXPECT_NE(d.createSession("/f.bin"), id);
}

TEST(UploadEngine, CreateSessionWithoutTheUploadProtocolIsRefused) {
  EngineDriver d;
  expectError(d.send(bitsRequest("/f", "Create-Session", {{"BITS-Supported-Protocols", "{00000000-0000-0000-0000-000000000000}"}})),
              400, "0x80070057");
  expectError(d.send(bitsRequest("/f", "Create-Session")), 400, "0x80070057");
  EXPECT_EQ(d.engine.sessionCount(), 0u);
}

TEST(UploadEngine, CreateSessionChecksTheDestination) {
  EngineDriver d;
  expectError(d.send(bitsRequest("/nodir/f", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 404,
              "0x80070003");
  d.storage.addFile("/root/exists.txt", "old");
  expectError(d.send(bitsRequest("/exists.txt", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 403,
              "0x80070005");
  d.storage.addDir("/root/sub");
  expectError(d.send(bitsRequest("/sub", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 400,
              "0x80070057");
  EXPECT_EQ(d.engine.sessionCount(), 0u);
  EXPECT_EQ(d.storage.contents("/root/exists.txt"), "old");
}

TEST(UploadEngine, WholeUploadCommitsByteIdenticalAndRemovesThePartial) {
  EngineDriver d;
  std::string id = d.createSession("/f.bin");
  std::string body = data(10000);
  for (size_t off = 0; off < body.size(); off += 3000) {
    std::string piece = body.substr(off, 3000);
    Reply r = d.fragment("/f.bin", id, off, piece, body.size());
    expectAck(r);
    ASSERT_EQ(r.status, 200) << r.raw;
    EXPECT_EQ(r.get("BITS-Received-Content-Range"), std::to_string(off + piece.size()));
    EXPECT_EQ(r.get("BITS-Session-Id"), id);
  }
  ASSERT_TRUE(d.storage.exists("/root/f.bin"));
  EXPECT_EQ(d.storage.contents("/root/f.bin"), body);
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(d.engine.stats().commits, 1u);
  EXPECT_EQ(d.storage.openHandles(), 0);
  Reply c = d.close("/f.bin", id);
  expectAck(c);
  EXPECT_EQ(c.status, 200);
  EXPECT_EQ(d.storage.contents("/root/f.bin"), body);  // Close-Session is cleanup only
}

TEST(UploadEngine, EveryFragmentIsSyncedBeforeItsAck) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  d.fragment("/f", id, 0, data(100), 300);
  EXPECT_EQ(d.storage.syncCalls, 1u);
  d.fragment("/f", id, 100, data(100), 300);
  EXPECT_EQ(d.storage.syncCalls, 2u);
  // A sync that fails must not advance `have`.
  d.storage.failSync = true;
  Reply r = d.fragment("/f", id, 200, data(50), 300);
  expectError(r, 500, "0x8007054F");
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "200");
  d.storage.failSync = false;
  EXPECT_EQ(d.fragment("/f", id, 200, data(100), 300).get("BITS-Received-Content-Range"), "300");
}

TEST(UploadEngine, SyncCanBeTurnedOffForBenchmarks) {
  Settings s = EngineDriver::defaultSettings();
  s.fdatasync = false;
  EngineDriver d(s);
  std::string id = d.createSession("/f");
  EXPECT_EQ(d.fragment("/f", id, 0, data(100), 100).status, 200);
  EXPECT_EQ(d.storage.syncCalls, 0u);
  EXPECT_TRUE(d.storage.exists("/root/f"));
}

TEST(UploadEngine, DigestOffCommitsWithoutHashing) {
  Settings s = EngineDriver::defaultSettings();
  s.digest = false;
  EngineDriver d(s);
  struct CountingSha : Sha256 {
    void start(Sha256State&) override {}
    void update(Sha256State&, std::span<const char>) override { ++updates; }
    void finish(Sha256State&, uint8_t out[32]) override { std::memset(out, 1, 32); }
    size_t exportState(const Sha256State&, uint8_t*) override { return 0; }
    bool importState(Sha256State&, const uint8_t*, size_t) override { return false; }
    int updates = 0;
  } counting;
  d.storage.sha = &counting;
  std::string id = d.createSession("/f");
  EXPECT_EQ(d.fragment("/f", id, 0, data(100), 100).status, 200);
  EXPECT_EQ(counting.updates, 0);
  EXPECT_EQ(d.storage.contents("/root/f"), data(100));
}

std::string sha256Of(const std::string& s) {
  unsigned char d[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d, 0);
  return std::string(reinterpret_cast<char*>(d), 32);
}

std::string randomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// A fragment whose connection dies mid-body was hashed further than it was acked; the digest is
// rewound to the acked prefix, so the retry keeps it and the commit still has the content's SHA-256.
TEST(UploadEngine, AFragmentCutMidBodyKeepsTheDigest) {
  EngineDriver d;
  std::string data = randomBytes(3000, 21);
  std::string id = d.createSession("/cut.bin");
  ASSERT_EQ(d.fragment("/cut.bin", id, 0, data.substr(0, 1000), 3000).status, 200);
  std::string second = bitsRequest("/cut.bin", "Fragment",
                                   {{"BITS-Session-Id", id}, {"Content-Range", "bytes 1000-2999/3000"}},
                                   data.substr(1000));
  d.sendCut(second, second.size() - 1200);  // 800 of its 2000 body bytes arrive, then nothing
  Reply r = d.fragment("/cut.bin", id, 1000, data.substr(1000), 3000);
  ASSERT_EQ(r.status, 200) << r.raw;
  JournalState st = d.replayed();
  const RecoveredSession* s = nullptr;
  for (const auto& [sid, rs] : st.sessions) s = &rs;
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->committed);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s->sha256), 32), sha256Of(data))
      << "the commit lost or corrupted the digest";
}

TEST(UploadEngine, OverlapWritesOnlyTheNewTail) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  std::string body = data(1000);
  d.fragment("/f", id, 0, body.substr(0, 600), 1000);
  uint64_t before = d.storage.bytesWritten;
  Reply r = d.fragment("/f", id, 400, body.substr(400, 400), 1000);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "800");
  EXPECT_EQ(d.storage.bytesWritten - before, 200u);
  d.fragment("/f", id, 800, body.substr(800), 1000);
  EXPECT_EQ(d.storage.contents("/root/f"), body);
}

TEST(UploadEngine, PureRepeatWritesNothing) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  std::string body = data(1000);
  d.fragment("/f", id, 0, body.substr(0, 500), 1000);
  uint64_t writes = d.storage.writeCalls, syncs = d.storage.syncCalls;
  Reply r = d.fragment("/f", id, 0, body.substr(0, 500), 1000);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "500");
  EXPECT_EQ(d.storage.writeCalls, writes);
  EXPECT_EQ(d.storage.syncCalls, syncs);
}

TEST(UploadEngine, GapAnswers416WithTheResumeOffset) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  d.fragment("/f", id, 0, data(100), 1000);
  uint64_t writes = d.storage.writeCalls;
  Reply r = d.fragment("/f", id, 500, data(100), 1000);
  expectError(r, 416, "0x0");
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "100");
  EXPECT_EQ(d.storage.writeCalls, writes);
  EXPECT_FALSE(r.has("Connection"));  // the connection stays usable
}

TEST(UploadEngine, FragmentValidation) {
  Settings s = EngineDriver::defaultSettings();
  s.maxUploadSizeBytes = 20000;
  s.maxFragmentBytes = 8192;
  EngineDriver d(s);
  std::string id = d.createSession("/f");
  // Body length does not match the range.
  expectError(d.send(bitsRequest("/f", "Fragment", {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-9/100"}},
                                 "12345")),
              400, "0x80070057");
  // Unparsable or missing range.
  expectError(d.send(bitsRequest("/f", "Fragment", {{"BITS-Session-Id", id}, {"Content-Range", "bytes x"}}, "1")),
              400, "0x80070057");
  expectError(d.send(bitsRequest("/f", "Fragment", {{"BITS-Session-Id", id}}, "1")), 400, "0x80070057");
  // Total too large.
  expectError(d.fragment("/f", id, 0, data(10), 20001), 500, "0x80200020");
  // Fix the total, then change it.
  EXPECT_EQ(d.fragment("/f", id, 0, data(10), 100).status, 200);
  expectError(d.fragment("/f", id, 10, data(10), 200), 400, "0x80070057");
  // Fragment over the per-request limit: 413, the client shrinks it.
  EXPECT_EQ(d.fragment("/f", id, 10, data(90), 100).status, 200);
  std::string g = d.createSession("/g");
  Reply big = d.fragment("/g", g, 0, data(8193), 10000);
  expectAck(big);
  EXPECT_EQ(big.status, 413);
  EXPECT_FALSE(big.has("BITS-Error-Code"));
  EXPECT_EQ(d.fragment("/g", g, 0, data(8192), 10000).status, 200);
}

TEST(UploadEngine, UnknownSessionIs500SessionNotFound) {
  EngineDriver d;
  expectError(d.fragment("/f", "{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}", 0, data(10), 10), 500, "0x8020001F");
  expectError(d.close("/f", "{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}"), 500, "0x8020001F");
  expectError(d.close("/f", "not-a-guid", "Cancel-Session"), 500, "0x8020001F");
  expectError(d.send(bitsRequest("/f", "Fragment", {{"Content-Range", "bytes 0-0/1"}}, "x")), 500, "0x8020001F");
  // A session is bound to the URL it was created for.
  std::string id = d.createSession("/a");
  expectError(d.fragment("/b", id, 0, data(10), 10), 500, "0x8020001F");
}

TEST(UploadEngine, RepeatedFinalFragmentGetsTheSameFinalAckAndNoSecondCommit) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  std::string body = data(300);
  d.fragment("/f", id, 0, body.substr(0, 200), 300);
  Reply fin = d.fragment("/f", id, 200, body.substr(200), 300);
  ASSERT_EQ(fin.status, 200);
  Reply again = d.fragment("/f", id, 200, body.substr(200), 300);
  EXPECT_EQ(again.raw, fin.raw);
  Reply earlier = d.fragment("/f", id, 0, body.substr(0, 200), 300);  // any fragment after completion
  EXPECT_EQ(earlier.raw, fin.raw);
  EXPECT_EQ(d.engine.stats().commits, 1u);
  expectError(d.fragment("/f", id, 0, body, 999), 400, "0x80070057");  // a different total
}

// The commit moves the partial file in one directory operation (renameat2 RENAME_NOREPLACE), so
// nothing is left to remove afterwards; where the file system can only link, the partial name is
// removed after the link. Either way the destination holds the upload and the partial is gone.
TEST(UploadEngine, ACommitThatRenamedLeavesNothingToRemove) {
  EngineDriver d;
  std::string id = d.createSession("/f.bin");
  uint64_t removesBefore = d.storage.removeCalls;
  expectAck(d.fragment("/f.bin", id, 0, data(5000), 5000));
  EXPECT_EQ(d.storage.contents("/root/f.bin"), data(5000));
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(d.storage.removeCalls, removesBefore);
}

TEST(UploadEngine, ACommitThatLinkedRemovesThePartialName) {
  EngineDriver d;
  d.storage.linkCommits = true;
  std::string id = d.createSession("/f.bin");
  uint64_t removesBefore = d.storage.removeCalls;
  expectAck(d.fragment("/f.bin", id, 0, data(5000), 5000));
  EXPECT_EQ(d.storage.contents("/root/f.bin"), data(5000));
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(d.storage.removeCalls, removesBefore + 1);
}

TEST(UploadEngine, DestinationThatAppearsBeforeCommitIsNotOverwritten) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  d.storage.addFile("/root/f", "someone else's");
  Reply r = d.fragment("/f", id, 0, data(10), 10);
  expectError(r, 403, "0x80070005");
  EXPECT_EQ(d.storage.contents("/root/f"), "someone else's");
}

TEST(UploadEngine, OverwritesAllowedReplaceAtomically) {
  Settings s = EngineDriver::defaultSettings();
  s.allowOverwrites = true;
  EngineDriver d(s);
  d.storage.addFile("/root/f", "old");
  std::string id = d.createSession("/f");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(d.fragment("/f", id, 0, "new!", 4).status, 200);
  EXPECT_EQ(d.storage.contents("/root/f"), "new!");
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
}

// With overwrites on, a symlink at the destination's name is replaced itself by the commit (never
// its target), so Create-Session takes it, as it takes a regular file; a directory is still 400.
TEST(UploadEngine, OverwritesAllowedReplaceASymlinkItselfNotADirectory) {
  Settings s = EngineDriver::defaultSettings();
  s.allowOverwrites = true;
  EngineDriver d(s);
  d.storage.addSymlink("/root/link");
  std::string id = d.createSession("/link");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(d.fragment("/link", id, 0, "new!", 4).status, 200);
  EXPECT_EQ(d.storage.contents("/root/link"), "new!");
  EXPECT_FALSE(d.storage.isSymlink("/root/link"));
  d.storage.addDir("/root/dir");
  expectError(d.send(bitsRequest("/dir", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 400,
              "0x80070057");
}

TEST(UploadEngine, CloseBeforeCompletionDiscardsThePartialAndIsIdempotent) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  d.fragment("/f", id, 0, data(10), 100);
  Reply c = d.close("/f", id);
  expectAck(c);
  EXPECT_EQ(c.status, 200);
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  EXPECT_FALSE(d.storage.exists("/root/f"));
  EXPECT_EQ(d.close("/f", id).status, 200);
  EXPECT_EQ(d.close("/f", id, "Cancel-Session").status, 200);
  expectError(d.fragment("/f", id, 10, data(10), 100), 500, "0x8020001F");
}

TEST(UploadEngine, CancelAfterCompletionKeepsTheUpload) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  d.fragment("/f", id, 0, "abc", 3);
  EXPECT_EQ(d.close("/f", id, "Cancel-Session").status, 200);
  EXPECT_EQ(d.storage.contents("/root/f"), "abc");
  EXPECT_EQ(d.close("/f", id, "Cancel-Session").status, 200);
}

class ZeroByte : public ::testing::TestWithParam<const char*> {};

TEST_P(ZeroByte, EmptyUploadCommitsAnEmptyFile) {
  EngineDriver d;
  std::string id = d.createSession("/empty");
  Reply r = d.send(bitsRequest("/empty", "Fragment", {{"BITS-Session-Id", id}, {"Content-Range", GetParam()}}));
  expectAck(r);
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "0");
  ASSERT_TRUE(d.storage.exists("/root/empty"));
  EXPECT_EQ(d.storage.contents("/root/empty"), "");
}

INSTANTIATE_TEST_SUITE_P(Forms, ZeroByte, ::testing::Values("bytes 0--1/0", "bytes */0"));

TEST(UploadEngine, DiskFullAnswers500AndCorruptsNothing) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  std::string body = data(3000);
  EXPECT_EQ(d.fragment("/f", id, 0, body.substr(0, 1000), 3000).status, 200);
  d.storage.spaceLeftBytes = 300;  // the next write stores 300 bytes, then the disk is full
  Reply r = d.fragment("/f", id, 1000, body.substr(1000, 1000), 3000);
  expectError(r, 500, "0x80070112");
  EXPECT_EQ(r.get("BITS-Received-Content-Range"), "1000");
  EXPECT_EQ(d.storage.contents(d.partialPath(id)).size(), 1000u) << "trimmed back to the acked prefix";
  EXPECT_EQ(d.engine.stats().diskFull, 1u);
  d.storage.spaceLeftBytes = UINT64_MAX;
  EXPECT_EQ(d.fragment("/f", id, 1000, body.substr(1000), 3000).status, 200);
  EXPECT_EQ(d.storage.contents("/root/f"), body);
}

TEST(UploadEngine, ShortWritesAreCompleted) {
  EngineDriver d;
  d.storage.maxWriteBytes = 7;
  std::string id = d.createSession("/f");
  std::string body = data(100);
  EXPECT_EQ(d.fragment("/f", id, 0, body, 100).status, 200);
  EXPECT_EQ(d.storage.contents("/root/f"), body);
}

TEST(UploadEngine, SessionsExpireAndTheirDataIsDeleted) {
  Settings s = EngineDriver::defaultSettings();
  s.sessionTimeoutSeconds = 60;
  EngineDriver d(s);
  std::string id = d.createSession("/f");
  d.fragment("/f", id, 0, data(10), 100);
  d.clock.advanceMs(59000);
  d.engine.sweep();
  d.storage.runAll();
  EXPECT_TRUE(d.storage.exists(d.partialPath(id)));
  d.fragment("/f", id, 10, data(10), 100);  // activity restarts the timer
  d.clock.advanceMs(59000);
  d.engine.sweep();
  EXPECT_EQ(d.engine.sessionCount(), 1u);
  d.clock.advanceMs(1000);
  d.engine.sweep();
  d.storage.runAll();
  EXPECT_EQ(d.engine.sessionCount(), 0u);
  EXPECT_FALSE(d.storage.exists(d.partialPath(id)));
  EXPECT_EQ(d.storage.openHandles(), 0);
  expectError(d.fragment("/f", id, 20, data(10), 100), 500, "0x8020001F");
}

TEST(UploadEngine, TombstonesExpireToo) {
  Settings s = EngineDriver::defaultSettings();
  s.sessionTimeoutSeconds = 10;
  EngineDriver d(s);
  std::string id = d.createSession("/f");
  d.close("/f", id);
  d.clock.advanceMs(10000);
  d.engine.sweep();
  EXPECT_EQ(d.engine.sessionCount(), 0u);
  expectError(d.close("/f", id), 500, "0x8020001F");
}

TEST(UploadEngine, FullTableEvictsTombstonesThenAnswers503) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessions = 3;
  EngineDriver d(s);
  std::string a = d.createSession("/a"), b = d.createSession("/b"), c = d.createSession("/c");
  ASSERT_FALSE(c.empty());
  expectError(d.send(bitsRequest("/d", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 503, "0x800705AA");
  d.close("/a", a);
  std::string e = d.createSession("/e");  // evicts a's tombstone
  EXPECT_FALSE(e.empty());
  EXPECT_EQ(d.engine.findSessionForTest([&] { SessionId x; parseSessionId(a, &x); return x; }()), nullptr);
}

size_t partialFiles(const EngineDriver& d) {
  size_t n = 0;
  for (const auto& [path, bytes] : d.storage.files()) n += path.rfind("/state/partial/", 0) == 0;
  return n;
}

// Create-Session checks the destination and creates the in-progress file in one storage step; a
// refusal that comes after that step (here: the table is full) removes the file it created, and
// the refused request holds no handle.
TEST(UploadEngine, ARefusedCreateSessionLeavesNoInProgressFile) {
  Settings s = EngineDriver::defaultSettings();
  s.maxSessions = 2;
  EngineDriver d(s);
  ASSERT_FALSE(d.createSession("/a").empty());
  ASSERT_FALSE(d.createSession("/b").empty());
  EXPECT_EQ(partialFiles(d), 2u);
  expectError(d.send(bitsRequest("/c", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 503, "0x800705AA");
  d.settle();  // the removal runs in the background
  EXPECT_EQ(partialFiles(d), 2u);
  EXPECT_EQ(d.storage.openHandles(), 2);
  // A destination that may not be replaced: refused by the check itself, nothing created.
  EngineDriver d2;
  d2.storage.addFile("/root/exists.bin", "old");
  expectError(d2.send(bitsRequest("/exists.bin", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 403,
              "0x80070005");
  EXPECT_EQ(partialFiles(d2), 0u);
  EXPECT_EQ(d2.storage.openHandles(), 0);
}

// The in-progress file cannot be created (the state directory's disk is full): 500 with the
// error, no session.
TEST(UploadEngine, AnInProgressFileThatCannotBeCreatedIsA500) {
  EngineDriver d;
  d.storage.failCreate = true;
  Reply r = d.send(bitsRequest("/f.bin", "Create-Session", {{"BITS-Supported-Protocols", kProto}}));
  expectError(r, 500, "0x80070112");  // ERROR_DISK_FULL
  EXPECT_EQ(r.get("BITS-Session-Id"), "");
  EXPECT_EQ(d.engine.sessionCount(), 0u);
  EXPECT_EQ(partialFiles(d), 0u);
  d.storage.failCreate = false;
  EXPECT_FALSE(d.createSession("/f.bin").empty());
}

TEST(UploadEngine, MoreSessionsThanOpenFilesStillInterleave) {
  Settings s = EngineDriver::defaultSettings();
  s.maxOpenFiles = 2;
  EngineDriver d(s);
  std::vector<std::string> ids, bodies;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(d.createSession("/f" + std::to_string(i)));
    bodies.push_back(data(400, static_cast<uint32_t>(i + 10)));
  }
  for (size_t off = 0; off < 400; off += 100) {
    for (int i = 0; i < 5; ++i) {
      ASSERT_EQ(d.fragment("/f" + std::to_string(i), ids[i], off, bodies[i].substr(off, 100), 400).status, 200);
      EXPECT_LE(d.storage.openHandles(), 2);
    }
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(d.storage.contents("/root/f" + std::to_string(i)), bodies[i]);
}

TEST(UploadEngine, LostPartialFileEndsTheSession) {
  Settings s = EngineDriver::defaultSettings();
  s.maxOpenFiles = 1;
  EngineDriver d(s);
  std::string a = d.createSession("/a");
  std::string b = d.createSession("/b");  // closes a's file
  d.storage.runAll();
  StorageOp op;
  struct Cb : StorageCallback {
    void onStorageDone(StorageOp&) override {}
  } cb;
  op.callback = &cb;
  d.storage.remove(op, d.partialPath(a).c_str());
  d.storage.runAll();
  expectError(d.fragment("/a", a, 0, data(10), 10), 500, "0x8020001F");
}

TEST(UploadEngine, HttpLevelErrors) {
  EngineDriver d;
  Reply get = d.send("GET /f HTTP/1.1\r\nHost: a\r\n\r\n");
  expectError(get, 405, "0x80070057");
  EXPECT_EQ(get.get("Allow"), "BITS_POST");
  Reply noLen = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: Fragment\r\n\r\n");
  expectError(noLen, 411, "0x80070057");
  Reply v10 = d.send("BITS_POST /f HTTP/1.0\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(v10.status, 505);
  EXPECT_EQ(v10.get("Connection"), "close");
  expectError(d.send(bitsRequest("/f", "Launch-Missiles")), 400, "0x80070057");
  expectError(d.send(bitsRequest("/f", "")), 400, "0x80070057");
  expectError(d.send(bitsRequest("/../etc/passwd", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 400,
              "0x80070057");
  expectError(d.send(bitsRequest("/f", "Ping", {{"Content-Encoding", "gzip"}})), 400, "0x80070057");
}

// §0.1 item 3 and §2.2: a Ping is answered 200 at any time, to any URL. Its path is never looked at,
// so even targets no upload could use (the root, a directory, traversal, bad escapes, a path over
// max-path-bytes) get 200, and nothing is created.
TEST(UploadEngine, PingIsAckedAtAnyUrl) {
  EngineDriver d;
  size_t filesBefore = d.storage.files().size();
  const std::string longPath = "/" + std::string(2000, 'p');
  for (const std::string& target : {std::string("/"), std::string("/dir/"), std::string("/../etc/passwd"),
                                    std::string("/a%2Fb"), std::string("/a%00b"), std::string("/a\\b"),
                                    std::string("/%zz"), std::string("//"), std::string("/x?query=1"), longPath}) {
    Reply r = d.send(bitsRequest(target, "Ping"));
    EXPECT_EQ(r.status, 200) << target << "\n" << r.raw;
    expectAck(r);
    EXPECT_FALSE(r.has("BITS-Error-Code")) << target;
  }
  EXPECT_EQ(d.engine.sessionCount(), 0u);
  EXPECT_EQ(d.storage.files().size(), filesBefore);
  // Other packets keep their answers on such paths, and so do other methods.
  expectError(d.send(bitsRequest("/", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 400, "0x80070057");
  expectError(d.send(bitsRequest("/dir/", "Close-Session", {{"BITS-Session-Id", "{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}"}})),
              400, "0x80070057");
  expectError(d.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 405, "0x80070057");
  // A Ping with a body is still malformed, wherever it goes.
  expectError(d.send(bitsRequest("/", "Ping", {}, "x")), 400, "0x80070057");
}

// RFC 9112 §3.2: an HTTP/1.1 request without a Host header is answered 400, whatever it asks for.
TEST(UploadEngine, RequestWithoutHostIs400) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  ASSERT_FALSE(id.empty());
  const std::string noHost[] = {
      "BITS_POST /f HTTP/1.1\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n",
      "BITS_POST /g HTTP/1.1\r\nBITS-Packet-Type: Create-Session\r\nBITS-Supported-Protocols: " +
          std::string(kProto) + "\r\nContent-Length: 0\r\n\r\n",
      "BITS_POST /f HTTP/1.1\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: " + id +
          "\r\nContent-Range: bytes 0-1/4\r\nContent-Length: 2\r\n\r\nab",
      "BITS_POST /f HTTP/1.1\r\nBITS-Packet-Type: Close-Session\r\nBITS-Session-Id: " + id +
          "\r\nContent-Length: 0\r\n\r\n",
      "GET /f HTTP/1.1\r\n\r\n",
      "HEAD /BITS-Sessions/Replies/%7B" + id.substr(1, 36) + "%7D/responsefile.bin HTTP/1.1\r\n\r\n",
      "PUT /f HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
  };
  for (const std::string& req : noHost) {
    Reply r = d.send(req);
    expectError(r, 400, "0x80070057");
  }
  // Nothing happened: no new session, no byte stored, the session still open.
  EXPECT_EQ(d.engine.sessionCount(), 1u);
  EXPECT_EQ(d.storage.contents(d.partialPath(id)), "");
  // An empty Host is a Host (RFC 9112 §3.2 lets a client send one).
  EXPECT_EQ(d.send("BITS_POST /f HTTP/1.1\r\nHost:\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n").status,
            200);
  EXPECT_EQ(d.fragment("/f", id, 0, "abcd", 4).status, 200);
}

// An invalid Host is a missing one (RFC 9112 §3.2): it would otherwise go into BITS-Reply-URL.
TEST(UploadEngine, RequestWithAnInvalidHostIs400) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  ASSERT_FALSE(id.empty());
  for (const char* host : {"a b", "evil.example/x?", "user@host", "[::1", "host:80a", "::1", "h:123456"}) {
    Reply ping = d.send("BITS_POST /f HTTP/1.1\r\nHost: " + std::string(host) +
                        "\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n");
    expectError(ping, 400, "0x80070057");
    Reply frag = d.send("BITS_POST /f HTTP/1.1\r\nHost: " + std::string(host) +
                        "\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: " + id +
                        "\r\nContent-Range: bytes 0-1/4\r\nContent-Length: 2\r\n\r\nab");
    expectError(frag, 400, "0x80070057");
  }
  EXPECT_EQ(d.storage.contents(d.partialPath(id)), "");
  for (const char* host : {"appliance", "appliance.example:8080", "10.0.0.1:80", "[fe80::1]:8080", "[::1]", "xn--bcher-kva.example"}) {
    Reply ping = d.send("BITS_POST /f HTTP/1.1\r\nHost: " + std::string(host) +
                        "\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(ping.status, 200) << host << "\n" << ping.raw;
  }
}

// §1, §7.1: a header value over 4 KB is 400 E_INVALIDARG, whichever header carries it.
TEST(UploadEngine, AnyHeaderValueOver4KBIs400) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  ASSERT_FALSE(id.empty());
  Reply ping = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(5000, 'x') +
                      "\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n");
  expectError(ping, 400, "0x80070057");
  EXPECT_EQ(ping.get("BITS-Error-Context"), "0x5");
  Reply frag = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nContent-Name: " + std::string(5000, 'n') +
                      "\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: " + id +
                      "\r\nContent-Range: bytes 0-1/4\r\nContent-Length: 2\r\n\r\nab");
  expectError(frag, 400, "0x80070057");
  EXPECT_EQ(d.storage.contents(d.partialPath(id)), "");
  // 4 KB exactly is fine.
  Reply edge = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(4096, 'x') +
                      "\r\nBITS-Packet-Type: Ping\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(edge.status, 200) << edge.raw;
}

// §10.1 (revised): Ping, Create-Session, Close-Session and Cancel-Session with neither Content-Length
// nor Transfer-Encoding are bodyless HTTP/1.1 requests (RFC 9112 §6.3), as curl and Python's
// http.client send them; they get their normal answers.
TEST(UploadEngine, BodylessPacketsWithoutContentLengthGetTheirNormalAnswers) {
  EngineDriver d;
  auto bare = [](const std::string& path, const std::string& type, const std::string& extra = "") {
    return "BITS_POST " + path + " HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: " + type + "\r\n" + extra + "\r\n";
  };
  Reply ping = d.send(bare("/f", "Ping"));
  EXPECT_EQ(ping.status, 200) << ping.raw;
  expectAck(ping);
  Reply cr = d.send(bare("/f", "Create-Session", "BITS-Supported-Protocols: " + std::string(kProto) + "\r\n"));
  ASSERT_EQ(cr.status, 200) << cr.raw;
  std::string id = cr.get("BITS-Session-Id");
  EXPECT_EQ(d.fragment("/f", id, 0, "hello", 5).status, 200);
  Reply close = d.send(bare("/f", "Close-Session", "BITS-Session-Id: " + id + "\r\n"));
  EXPECT_EQ(close.status, 200) << close.raw;
  EXPECT_NE(close.get("Connection"), "close");
  EXPECT_EQ(d.storage.contents("/root/f"), "hello");
  Reply cr2 = d.send(bare("/g", "Create-Session", "BITS-Supported-Protocols: " + std::string(kProto) + "\r\n"));
  ASSERT_EQ(cr2.status, 200) << cr2.raw;
  std::string id2 = cr2.get("BITS-Session-Id");
  EXPECT_EQ(d.fragment("/g", id2, 0, "ab", 5).status, 200);
  Reply cancel = d.send(bare("/g", "Cancel-Session", "BITS-Session-Id: " + id2 + "\r\n"));
  EXPECT_EQ(cancel.status, 200) << cancel.raw;
  EXPECT_FALSE(d.storage.exists(d.partialPath(id2)));
  EXPECT_FALSE(d.storage.exists("/root/g"));
}

// A Fragment needs its length (§10.1): without Content-Length it is 411, and the connection closes
// (body bytes the client may send anyway would otherwise be read as the next request).
TEST(UploadEngine, FragmentWithoutContentLengthIs411AndCloses) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  Reply r = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: " + id +
                   "\r\nContent-Range: bytes 0-1/2\r\n\r\n");
  expectError(r, 411, "0x80070057");
  EXPECT_EQ(r.get("Connection"), "close");
  EXPECT_EQ(d.fragment("/f", id, 0, "ab", 2).status, 200);
}

// DESIGN.md: a chunked body is never read; 411, then close (a guard: unchanged by the §10.1 revision).
TEST(UploadEngine, ChunkedBodyIs411AndCloses) {
  EngineDriver d;
  for (const char* type : {"Ping", "Create-Session", "Fragment"}) {
    Reply r = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: " + std::string(type) +
                     "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    expectError(r, 411, "0x80070057");
    EXPECT_EQ(r.get("Connection"), "close") << type;
  }
}

// A Fragment over max-fragment-bytes is answered 413 from its head alone, and the connection
// closes: the body is never read (a client could otherwise keep its request slot for as long as it
// cares to send bytes that are thrown away).
TEST(UploadEngine, OversizedFragmentIsAnswered413BeforeItsBodyAndCloses) {
  Settings s = EngineDriver::defaultSettings();
  s.maxFragmentBytes = 8192;
  EngineDriver d(s);
  std::string id = d.createSession("/f");
  // Only the head: the answer must come without a single body byte.
  std::string head = "BITS_POST /f HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: Fragment\r\nBITS-Session-Id: " + id +
                     "\r\nContent-Range: bytes 0-8192/10000\r\nContent-Length: 8193\r\n\r\n";
  Reply r = d.send(head);
  EXPECT_TRUE(d.answeredBeforeBody);
  expectAck(r);
  EXPECT_EQ(r.status, 413) << r.raw;
  EXPECT_FALSE(r.has("BITS-Error-Code")) << r.raw;  // as before: 413 needs no BITS error (§7.1)
  EXPECT_EQ(r.get("Connection"), "close");
  EXPECT_EQ(d.storage.contents(d.partialPath(id)), "");
  // Any other refusal of a body that large goes out before it too (an unknown session here).
  Reply unknown = d.send("BITS_POST /f HTTP/1.1\r\nHost: a\r\nBITS-Packet-Type: Fragment\r\n"
                         "BITS-Session-Id: {A0FF5911-4144-45B3-BF27-27AFC8EC8A67}\r\n"
                         "Content-Range: bytes 0-99999/100000\r\nContent-Length: 100000\r\n\r\n");
  EXPECT_TRUE(d.answeredBeforeBody);
  expectError(unknown, 500, "0x8020001F");
  EXPECT_EQ(unknown.get("Connection"), "close");
  // The session is not left busy: the client's smaller fragment goes through.
  EXPECT_EQ(d.fragment("/f", id, 0, data(8192), 10000).status, 200);
  EXPECT_FALSE(d.answeredBeforeBody);
}

TEST(UploadEngine, ParseErrorAfterASessionRequestCarriesNothingFromIt) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  ASSERT_EQ(d.fragment("/f", id, 0, "ab", 4).status, 200);
  Reply bad = d.send("BITS_POST /f HTTP/1.1\r\nContent-Length: zz\r\n\r\n");
  expectError(bad, 400, "0x80070057");
  EXPECT_FALSE(bad.has("BITS-Session-Id")) << bad.raw;
  EXPECT_FALSE(bad.has("BITS-Received-Content-Range")) << bad.raw;
  EXPECT_EQ(bad.get("Connection"), "close");
  EXPECT_EQ(d.fragment("/f", id, 2, "cd", 4).status, 200);  // the session is not left busy
}

TEST(UploadEngine, ExpectContinue) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  // Acceptable: the engine asks for 100 Continue, then takes the body.
  Reply ok = d.send(bitsRequest("/f", "Fragment",
                                {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-3/8"}, {"Expect", "100-continue"}},
                                "abcd"));
  EXPECT_EQ(ok.status, 200);
  // Refused: the error goes out before the body, and the connection closes.
  Reply bad = d.send(bitsRequest("/f", "Fragment",
                                 {{"BITS-Session-Id", id}, {"Content-Range", "bytes 6-7/8"}, {"Expect", "100-continue"}},
                                 "gh"));
  EXPECT_EQ(bad.status, 416);
  EXPECT_EQ(bad.get("Connection"), "close");
}

TEST(UploadEngine, RandomFailureIsAnInternalError) {
  EngineDriver d;
  d.random.fail = true;
  expectError(d.send(bitsRequest("/f", "Create-Session", {{"BITS-Supported-Protocols", kProto}})), 500,
              "0x8007054F");
}

TEST(UploadEngine, ByteAtATimeDeliveryGivesTheSameResult) {
  EngineDriver d;
  std::string id = d.createSession("/f");
  std::string body = data(64);
  std::string req = bitsRequest("/f", "Fragment", {{"BITS-Session-Id", id}, {"Content-Range", "bytes 0-63/64"}}, body);
  Reply r = d.send(req, 1);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(d.storage.contents("/root/f"), body);
}

}  // namespace
}  // namespace bitsd::testing
