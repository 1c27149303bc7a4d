// bitsclient's progress line, laid out for a terminal `width` columns wide (a pure function, so it
// is unit-tested at every width). The line never holds more than width-1 characters, so it never
// wraps and "\r" + the line always redraws it in place. All of it is ASCII: characters = bytes.
//
// Full:      [##########          ]  31% 312.0 MiB / 1.0 GiB  41.2 MiB/s  ETA 0:17
// Retrying:  [##########          ]  31% 312.0 MiB / 1.0 GiB  retrying in 12 s
//
// As the width shrinks the fields go in this order: the bar shrinks (20..50 cells) and then goes,
// then the ETA, then " / total", then the rate, then the bytes so far; the percentage (and "retrying in N s" during a
// retry, which replaces the rate and ETA, being stale then) stay down to 40 columns and below.
#pragma once

#include <cstdint>
#include <string>

namespace bitsd::client {

struct ProgressState {
  uint64_t have = 0;           // bytes the server acked
  uint64_t total = 0;          // bytes of the file
  double rate = -1;            // bytes/s; < 0: not known yet
  int64_t etaSeconds = -1;     // < 0: not known
  int64_t retryInSeconds = -1; // >= 0: waiting to retry, this many seconds left
};

inline constexpr int kMinProgressWidth = 40;
inline constexpr int kDefaultProgressWidth = 80;  // when the terminal does not say

std::string progressLine(int width, const ProgressState& s);

// "312.0 MiB", "17 B".
std::string humanBytes(double bytes);

}  // namespace bitsd::client
