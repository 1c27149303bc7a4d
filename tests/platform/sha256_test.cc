// Tests of the platform's SHA-256 behind core's Sha256 seam (platform/sha256.h): NettleSha256 (the
// default) and MbedSha256 (the previous one). Known vectors (FIPS 180-2 / NIST CAVP), agreement with
// an independent implementation (mbedtls_sha256_ret, one call) over random lengths and split points,
// and the digest checkpoint (exportState/importState): byte-for-byte the same bytes from both, and
// a state exported by one resumes in the other, so journals written by either binary still resume.
#include <gtest/gtest.h>
#include <mbedtls/sha256.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "platform/sha256.h"
#include "platform/system.h"

namespace bitsd::platform {
namespace {

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    s += b;
  }
  return s;
}

std::string reference(const std::string& data) {
  uint8_t out[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, 0);
  return hex(out, 32);
}

// Feeds `data` to `sha` in pieces cut at `cuts` (sorted offsets), then finishes.
std::string hashSplit(Sha256& sha, const std::string& data, const std::vector<size_t>& cuts = {}) {
  Sha256State st;
  sha.start(st);
  size_t at = 0;
  for (size_t cut : cuts) {
    sha.update(st, std::span<const char>(data.data() + at, cut - at));
    at = cut;
  }
  sha.update(st, std::span<const char>(data.data() + at, data.size() - at));
  uint8_t out[32];
  sha.finish(st, out);
  return hex(out, 32);
}

std::string randomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

class Sha256Impls : public ::testing::Test {
 protected:
  NettleSha256 nettle;
  MbedSha256 mbed;
  Sha256* both[2] = {&nettle, &mbed};
};

TEST_F(Sha256Impls, KnownVectorsFromFips180) {
  struct Vector {
    std::string in;
    const char* digest;
  };
  const Vector vectors[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
      {std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (Sha256* sha : both) {
    for (const Vector& v : vectors) {
      EXPECT_EQ(hashSplit(*sha, v.in), v.digest) << v.in.size() << " bytes";
      if (v.in.size() > 3) {
        EXPECT_EQ(hashSplit(*sha, v.in, {1, 2, v.in.size() / 2}), v.digest);
      }
    }
  }
  // And through the type bitsd is built with.
  UploadSha256 built;
  EXPECT_EQ(hashSplit(built, "abc"), vectors[1].digest);
}

TEST_F(Sha256Impls, AgreeWithAnIndependentImplementationOverRandomLengthsAndSplits) {
  std::mt19937_64 rng(18);
  for (int round = 0; round < 400; ++round) {
    // Mostly around block boundaries, sometimes large (several of bitsd's 256 KiB spans).
    size_t n = round % 10 == 0 ? rng() % (1 << 20) : rng() % 700;
    std::string data = randomBytes(rng, n);
    std::vector<size_t> cuts;
    size_t pieces = n == 0 ? 0 : rng() % 6;
    for (size_t i = 0; i < pieces; ++i) cuts.push_back(rng() % (n + 1));
    std::sort(cuts.begin(), cuts.end());
    const std::string want = reference(data);
    for (Sha256* sha : both) ASSERT_EQ(hashSplit(*sha, data, cuts), want) << n << " bytes, round " << round;
  }
}

// Hashes `data[0, cut)` with `from`, exports, imports into `to`, feeds the rest from the exported
// length, finishes. Returns the digest; `exported` gets the checkpoint bytes.
std::string resumeAcross(Sha256& from, Sha256& to, const std::string& data, size_t cut, std::vector<uint8_t>* exported) {
  Sha256State a;
  from.start(a);
  from.update(a, std::span<const char>(data.data(), cut));
  uint8_t buf[Sha256::kMaxExportBytes];
  size_t len = from.exportState(a, buf);
  EXPECT_EQ(len, 40u);
  exported->assign(buf, buf + len);
  uint64_t at = 0;
  for (int i = 7; i >= 0; --i) at = at << 8 | buf[i];
  EXPECT_EQ(at, cut / 64 * 64) << "the checkpoint is at the last whole block";
  Sha256State b;
  std::memset(b.bytes, 0xa5, sizeof b.bytes);  // whatever was there before
  EXPECT_TRUE(to.importState(b, buf, len));
  to.update(b, std::span<const char>(data.data() + at, data.size() - at));
  uint8_t out[32];
  to.finish(b, out);
  return hex(out, 32);
}

TEST_F(Sha256Impls, CheckpointsAreTheSameBytesAndResumeAcrossImplementations) {
  std::mt19937_64 rng(180);
  for (int round = 0; round < 200; ++round) {
    size_t n = rng() % 3000;
    std::string data = randomBytes(rng, n);
    size_t cut = rng() % (n + 1);
    const std::string want = reference(data);
    std::vector<uint8_t> fromNettle, fromMbed, x;
    EXPECT_EQ(resumeAcross(nettle, mbed, data, cut, &fromNettle), want) << "nettle -> mbedtls, cut " << cut;
    EXPECT_EQ(resumeAcross(mbed, nettle, data, cut, &fromMbed), want) << "mbedtls -> nettle, cut " << cut;
    EXPECT_EQ(resumeAcross(nettle, nettle, data, cut, &x), want);
    EXPECT_EQ(resumeAcross(mbed, mbed, data, cut, &x), want);
    ASSERT_EQ(fromNettle, fromMbed) << "checkpoint bytes differ at cut " << cut << " of " << n;
  }
}

TEST_F(Sha256Impls, ACheckpointPastFourGibibytesKeepsItsHighWord) {
  // A checkpoint as a journal holds it after 4 GiB + 64 bytes: low word 64, high word 1, some chain.
  uint8_t in[40] = {};
  in[0] = 64;
  in[4] = 1;
  for (int i = 8; i < 40; ++i) in[i] = static_cast<uint8_t>(i * 37);
  std::string digests[2];
  for (int k = 0; k < 2; ++k) {
    Sha256State st;
    ASSERT_TRUE(both[k]->importState(st, in, sizeof in));
    uint8_t out[Sha256::kMaxExportBytes];
    ASSERT_EQ(both[k]->exportState(st, out), 40u);
    EXPECT_EQ(0, std::memcmp(in, out, 40)) << (k == 0 ? "nettle" : "mbedtls");
    both[k]->update(st, std::span<const char>("tail", 4));
    uint8_t d[32];
    both[k]->finish(st, d);  // the padding carries the total length: both must agree on it
    digests[k] = hex(d, 32);
  }
  EXPECT_EQ(digests[0], digests[1]);
}

TEST_F(Sha256Impls, ImportRefusesWhatIsNotACheckpoint) {
  uint8_t in[40] = {};
  for (Sha256* sha : both) {
    Sha256State st;
    EXPECT_FALSE(sha->importState(st, in, 39));
    EXPECT_FALSE(sha->importState(st, in, 41));
    in[0] = 63;  // not a whole number of blocks
    EXPECT_FALSE(sha->importState(st, in, 40));
    in[0] = 0;
    EXPECT_TRUE(sha->importState(st, in, 40));
  }
}

}  // namespace
}  // namespace bitsd::platform
