// Host services behind core's seams: the monotonic clock (libuv), the CSPRNG (mbedTLS CTR-DRBG seeded
// from the OS entropy source), the stderr log sink, and start-up file-system preparation.
#pragma once

#include <uv.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include <string>

#include "core/ports.h"
#include "core/settings.h"

namespace bitsd::platform {

class UvClock final : public Clock {
 public:
  uint64_t nowMs() override { return uv_hrtime() / 1000000; }
};

class DrbgRandom final : public Random {
 public:
  DrbgRandom();
  ~DrbgRandom() override;
  // Seeds from the OS. False (with a reason) if the entropy source fails.
  bool init(std::string* error);
  bool fill(uint8_t* out, size_t len) override;

 private:
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  bool ready_ = false;
};

// Installs the stderr log sink at the configured level.
void installLogging(const std::string& level);

// Start-up checks and preparation, before the loop serves anyone (blocking calls are fine here):
// creates root and state (and state/partial), checks that both are directories on the same file
// system and that neither contains the other, resolves the root's real path, and deletes orphaned
// in-progress files (without a journal, nothing can resume them after a restart).
bool prepareDirectories(const Settings& s, std::string* rootReal, std::string* error);

// Reads a whole (small) file; false with a one-line reason.
bool readTextFile(const std::string& path, std::string* out, std::string* error);

}  // namespace bitsd::platform
