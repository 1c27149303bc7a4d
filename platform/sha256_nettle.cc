// NettleSha256: upload digests with Nettle's SHA-256, and its digest checkpoint in the same bytes
// as MbedSha256's (platform/system.cc), so journals stay readable whichever library wrote them.
#include "platform/sha256.h"

#include <nettle/sha2.h>
#include <nettle/version.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include <cstdio>

namespace bitsd::platform {

static_assert(sizeof(sha256_ctx) <= Sha256State::kBytes, "Sha256State too small for nettle's sha256_ctx");
static_assert(alignof(sha256_ctx) <= alignof(Sha256State), "Sha256State under-aligned for sha256_ctx");

namespace {
sha256_ctx* ctx(Sha256State& st) { return reinterpret_cast<sha256_ctx*>(st.bytes); }
const sha256_ctx* ctx(const Sha256State& st) { return reinterpret_cast<const sha256_ctx*>(st.bytes); }

// The SHA-256 instructions the CPU announces, as Nettle's fat build looks for them (its choice is
// made inside the library; NETTLE_FAT_VERBOSE=1 prints it).
const char* cpuSha() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)) != 0) return "SHA-NI";
#elif defined(__aarch64__) && defined(HWCAP_SHA2)
  if ((getauxval(AT_HWCAP) & HWCAP_SHA2) != 0) return "ARMv8 SHA2";
#endif
  return "no SHA instructions";
}
}  // namespace

const char* NettleSha256::implementation() {
  static char text[64];
  if (text[0] == 0) {
    std::snprintf(text, sizeof text, "Nettle %d.%d (%s)", nettle_version_major(), nettle_version_minor(), cpuSha());
  }
  return text;
}

void NettleSha256::start(Sha256State& st) { sha256_init(ctx(st)); }

void NettleSha256::update(Sha256State& st, std::span<const char> data) {
  sha256_update(ctx(st), data.size(), reinterpret_cast<const uint8_t*>(data.data()));
}

void NettleSha256::finish(Sha256State& st, uint8_t out[32]) { sha256_digest(ctx(st), SHA256_DIGEST_SIZE, out); }

// Exported state (core/ports.h): the bytes hashed in whole blocks (count x 64) as two little-endian
// u32 (low, high: mbedTLS's total[0] & ~63 and total[1]), then state[0..7]. ctx->block (the
// unfinished block's bytes, upload data) is never read.
size_t NettleSha256::exportState(const Sha256State& st, uint8_t* out) {
  const sha256_ctx* c = ctx(st);
  if (c->count > (UINT64_MAX >> 6)) return 0;
  const uint64_t bytes = c->count << 6;
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
  };
  put32(0, static_cast<uint32_t>(bytes));
  put32(4, static_cast<uint32_t>(bytes >> 32));
  for (int i = 0; i < 8; ++i) put32(8 + 4 * static_cast<size_t>(i), c->state[i]);
  return 40;
}

bool NettleSha256::importState(Sha256State& st, const uint8_t* in, size_t len) {
  if (len != 40) return false;
  auto get32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | in[at + static_cast<size_t>(i)];
    return v;
  };
  const uint64_t bytes = static_cast<uint64_t>(get32(4)) << 32 | get32(0);
  if (bytes % 64 != 0) return false;
  sha256_ctx* c = ctx(st);
  sha256_init(c);  // index 0: no bytes of an unfinished block
  c->count = bytes >> 6;
  for (int i = 0; i < 8; ++i) c->state[i] = get32(8 + 4 * static_cast<size_t>(i));
  return true;
}

}  // namespace bitsd::platform
