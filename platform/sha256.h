// The SHA-256 behind core's Sha256 seam for upload digests: Nettle (platform/sha256_nettle.cc), whose
// fat build picks the CPU's SHA instructions at run time (x86-64 SHA-NI, ARMv8 SHA2) and falls back
// to portable code; or, built with -DBITSD_SHA256=mbedtls, mbedTLS's portable code (MbedSha256 in
// platform/system.h). Both export and import the same digest checkpoint bytes (core/ports.h), so a
// journal written by either resumes with the other.
#pragma once

#include "core/ports.h"
#include "platform/system.h"

namespace bitsd::platform {

// SHA-256 with Nettle; the sha256_ctx lives in the caller's Sha256State. Thread-safe on different
// states (nettle keeps no global state beyond the fat dispatch, set up once before main).
class NettleSha256 final : public Sha256 {
 public:
  void start(Sha256State& st) override;
  void update(Sha256State& st, std::span<const char> data) override;
  void finish(Sha256State& st, uint8_t out[32]) override;
  size_t exportState(const Sha256State& st, uint8_t* out) override;
  bool importState(Sha256State& st, const uint8_t* in, size_t len) override;
  // "Nettle 3.8 (SHA-NI)": the library and the instructions this CPU offers it, for --version.
  static const char* implementation();
};

#if BITSD_SHA256_NETTLE
using UploadSha256 = NettleSha256;
#else
using UploadSha256 = MbedSha256;
#endif

}  // namespace bitsd::platform
