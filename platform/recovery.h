// Start-up recovery (blocking POSIX calls are fine: the loop is not serving yet). Replays
// <state>/journal through core's replay code, rebuilds the engine's session table, reconciles each
// open session with its files (trims in-progress files back to their acked length, finds commits
// that happened just before a crash), deletes orphaned and expired in-progress files, truncates a
// torn tail, and hands the open journal file to the Journal writer.
#pragma once

#include <cstdint>
#include <string>

#include "core/journal.h"
#include "core/upload_engine.h"

namespace bitsd::platform {

struct RecoveryReport {
  uint64_t journalBytes = 0;
  uint64_t records = 0;
  uint64_t tailBytes = 0;
  const char* stopReason = "";
  uint32_t sessions = 0;
  uint32_t expired = 0;
  uint32_t dropped = 0;
  uint32_t trimmed = 0;
  uint32_t orphans = 0;
  double replayMs = 0;     // read + replay of the journal
  double restoreMs = 0;    // session table rebuilt
  double filesMs = 0;      // reconcile with in-progress files, orphan scan, digests
  double totalMs = 0;
};

// An error (the state directory locked by another process, a foreign or corrupt journal, an I/O
// failure) comes back with one line naming it; bitsd then refuses to start.
Outcome recoverState(const Settings& settings, UploadEngine& engine, Journal& journal, Sha256& sha,
                     Random& random, RecoveryReport* report);

}  // namespace bitsd::platform
