// Logging seam. core/ formats one-line messages; the platform decides where they go (stderr on the
// host). The sink is a plain function pointer so that nothing here allocates.
#pragma once

#include <cstdint>

namespace bitsd {

enum class LogLevel { Debug, Info, Warn, Error };

using LogSink = void (*)(LogLevel level, const char* line);
using LogClock = uint64_t (*)();  // monotonic milliseconds

// Replaces the sink (nullptr restores the default, which drops Debug and writes the rest to nothing;
// the platform installs a stderr sink at start-up). Loop thread only.
void setLogSink(LogSink sink);
void setLogLevel(LogLevel minimum);
bool logEnabled(LogLevel level);

// printf-style; the line is truncated at 512 bytes.
void logf(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Rate-limited logging for events that can repeat quickly (journal compactions, evictions, throttled
// password checks, refusals). Lines with the same `key` (compared by pointer: use a string literal,
// usually the format itself) are written at most once per window (kLogWindowMs); the ones in between
// are counted, and the next line written for that key ends with " (N more suppressed)". A fixed
// table of kLogKeys keys, no allocation; when it is full the key that was written longest ago is
// recycled (its pending count is then lost). Needs a clock (setLogClock); without one nothing is
// suppressed.
inline constexpr uint64_t kLogWindowMs = 10000;
inline constexpr int kLogKeys = 32;
void setLogClock(LogClock clock);
void logLimited(LogLevel level, const char* key, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
// Tests: forget every key's history.
void resetLogLimits();

}  // namespace bitsd
