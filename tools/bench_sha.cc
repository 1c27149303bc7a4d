// bench-sha: how fast each SHA-256 implementation on this machine hashes an upload, the way bitsd
// feeds it (one update per written span, by default bitsd's 256 KiB read buffer on the host board).
// It compares the libraries the README's dependency table weighs for the upload digest:
//   mbedtls   mbedTLS (Debian 2.28: portable C, no SHA instructions)
//   nettle    Nettle (Debian's fat build picks SHA-NI / ARMv8 SHA2 / portable code at run time;
//             NETTLE_FAT_VERBOSE=1 prints its choice, NETTLE_FAT_OVERRIDE= forces the plain path)
//   openssl   OpenSSL libcrypto (only if the build found it: -DBITSD_BENCH_OPENSSL)
//   bitsd     the platform Sha256 bitsd is built with (platform/sha256.h), through its seam
//
//   bench-sha [--size BYTES] [--span BYTES] [--rounds N]
// Prints one line per implementation: name, MiB/s (the median of the rounds), and the digest's
// first bytes (all must agree).
#include <nettle/sha2.h>
#include <nettle/version.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#ifdef BITSD_BENCH_OPENSSL
#include <openssl/crypto.h>
#include <openssl/evp.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "platform/sha256.h"

namespace {

using Clock = std::chrono::steady_clock;
using HashFn = std::function<void(const std::vector<char>&, size_t, uint8_t[32])>;

void mbedHash(const std::vector<char>& buf, size_t span, uint8_t out[32]) {
  mbedtls_sha256_context c;
  mbedtls_sha256_init(&c);
  mbedtls_sha256_starts_ret(&c, 0);
  for (size_t at = 0; at < buf.size(); at += span) {
    size_t n = std::min(span, buf.size() - at);
    mbedtls_sha256_update_ret(&c, reinterpret_cast<const unsigned char*>(buf.data() + at), n);
  }
  mbedtls_sha256_finish_ret(&c, out);
  mbedtls_sha256_free(&c);
}

void nettleHash(const std::vector<char>& buf, size_t span, uint8_t out[32]) {
  sha256_ctx c;
  sha256_init(&c);
  for (size_t at = 0; at < buf.size(); at += span) {
    size_t n = std::min(span, buf.size() - at);
    sha256_update(&c, n, reinterpret_cast<const uint8_t*>(buf.data() + at));
  }
  sha256_digest(&c, SHA256_DIGEST_SIZE, out);
}

#ifdef BITSD_BENCH_OPENSSL
void opensslHash(const std::vector<char>& buf, size_t span, uint8_t out[32]) {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  EVP_DigestInit_ex(c, EVP_sha256(), nullptr);
  for (size_t at = 0; at < buf.size(); at += span) EVP_DigestUpdate(c, buf.data() + at, std::min(span, buf.size() - at));
  unsigned int len = 32;
  EVP_DigestFinal_ex(c, out, &len);
  EVP_MD_CTX_free(c);
}
#endif

void seamHash(const std::vector<char>& buf, size_t span, uint8_t out[32]) {
  bitsd::platform::UploadSha256 sha;
  bitsd::Sha256State st;
  sha.start(st);
  for (size_t at = 0; at < buf.size(); at += span) {
    sha.update(st, std::span<const char>(buf.data() + at, std::min(span, buf.size() - at)));
  }
  sha.finish(st, out);
}

uint64_t number(const char* s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != 0 || v == 0) {
    std::fprintf(stderr, "bench-sha: not a positive number: %s\n", s);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t size = 512ull << 20, span = 256 << 10, rounds = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 < argc && a == "--size") size = number(argv[++i]);
    else if (i + 1 < argc && a == "--span") span = number(argv[++i]);
    else if (i + 1 < argc && a == "--rounds") rounds = number(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench-sha [--size BYTES] [--span BYTES] [--rounds N]\n");
      return 2;
    }
  }
  std::vector<char> buf(size);
  uint32_t x = 0x9e3779b9;
  for (auto& c : buf) {  // xorshift: data the CPU cannot predict, same every run
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    c = static_cast<char>(x);
  }
  struct Impl {
    std::string name;
    HashFn fn;
  };
  std::vector<Impl> impls = {
      {std::string("mbedtls ") + MBEDTLS_VERSION_STRING, mbedHash},
      {"nettle " + std::to_string(nettle_version_major()) + "." + std::to_string(nettle_version_minor()), nettleHash},
#ifdef BITSD_BENCH_OPENSSL
      {std::string("openssl ") + OpenSSL_version(OPENSSL_VERSION_STRING), opensslHash},
#endif
      {std::string("bitsd seam (") + bitsd::platform::UploadSha256::implementation() + ")", seamHash},
  };
  std::printf("SHA-256 over %llu MiB in %llu KiB updates, median of %llu rounds\n",
              static_cast<unsigned long long>(size >> 20), static_cast<unsigned long long>(span >> 10),
              static_cast<unsigned long long>(rounds));
  std::string first;
  int rc = 0;
  for (const Impl& im : impls) {
    std::vector<double> mibps;
    uint8_t out[32];
    for (uint64_t r = 0; r < rounds; ++r) {
      auto t0 = Clock::now();
      im.fn(buf, span, out);
      double s = std::chrono::duration<double>(Clock::now() - t0).count();
      mibps.push_back(static_cast<double>(size) / 1048576.0 / s);
    }
    std::sort(mibps.begin(), mibps.end());
    char hex[17];
    for (int i = 0; i < 8; ++i) std::snprintf(hex + 2 * i, 3, "%02x", out[i]);
    if (first.empty()) first = hex;
    if (first != hex) rc = 1;
    std::printf("  %-40s %8.0f MiB/s   %s...\n", im.name.c_str(), mibps[mibps.size() / 2], hex);
  }
  if (rc != 0) std::fprintf(stderr, "bench-sha: the digests differ\n");
  return rc;
}
