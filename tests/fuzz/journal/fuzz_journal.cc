// libFuzzer target for journal replay on arbitrary bytes (STYLE.md §8). Whatever the input:
// replay must not crash or read out of bounds, must report a consistent end, and the state it
// rebuilds must survive a compaction round trip (encodeSnapshot, then replay again, gives the same
// sessions). Inputs that happen to lack a valid header are also tried behind a valid header, so the
// fuzzer reaches the record parser quickly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/journal_format.h"
#include "core/journal_model.h"

namespace {

using namespace bitsd;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_journal invariant broken: %s\n", what);
    std::abort();
  }
}

void check(std::span<const uint8_t> bytes) {
  JournalState st;
  ReplayResult r = replayJournal(bytes, &st);
  if (r.status != ReplayStatus::Ok) return;
  require(r.validEnd <= bytes.size(), "validEnd past the input");
  require(r.validEnd + r.tailBytes == bytes.size(), "validEnd + tail != size");
  // Compaction round trip.
  std::vector<uint8_t> snap(kJournalBlockBytes, 0);
  JournalHeader h;
  h.salt = r.header.salt ^ 0x5A5A5A5A;
  encodeJournalHeader(h, snap.data());
  uint64_t seq = 1, off = kJournalBlockBytes;
  encodeSnapshot(st, h.salt, &seq, &off, &snap);
  require(off == snap.size(), "snapshot offset bookkeeping");
  require(snap.size() % kJournalBlockBytes == 0, "snapshot not block-aligned");
  JournalState again;
  ReplayResult r2 = replayJournal(snap, &again);
  require(r2.status == ReplayStatus::Ok && r2.tailBytes == 0, "snapshot does not replay cleanly");
  require(again.sessions.size() == st.sessions.size(), "snapshot lost or invented sessions");
  require(again.delivered.size() == st.delivered.size(), "snapshot lost transaction ids");
  for (const auto& [id, s] : st.sessions) {
    auto it = again.sessions.find(id);
    require(it != again.sessions.end(), "session missing after snapshot");
    require(it->second.haveBytes == s.haveBytes || s.committed, "have changed by snapshot");
    require(it->second.closed == s.closed && it->second.committed == s.committed, "state changed by snapshot");
    require(it->second.path == s.path, "path changed by snapshot");
    // Whatever the bytes held, a digest state is a checkpoint (no upload data) or nothing, and a
    // compaction keeps it as it is.
    require(s.shaStateLen == 0 || s.shaStateLen == kDigestCheckpointBytes, "digest state is not a checkpoint");
    require(s.committed || !s.totalKnown ||
                (it->second.shaStateLen == s.shaStateLen && std::memcmp(it->second.shaState, s.shaState, 104) == 0),
            "digest checkpoint changed by snapshot");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check(std::span<const uint8_t>(data, size));
  // The same bytes as records behind a valid header (salt from the first bytes).
  std::vector<uint8_t> framed(kJournalBlockBytes, 0);
  JournalHeader h;
  h.salt = size >= 4 ? static_cast<uint32_t>(getLe(data, 4)) : 0;
  encodeJournalHeader(h, framed.data());
  framed.insert(framed.end(), data, data + size);
  check(framed);
  return 0;
}
