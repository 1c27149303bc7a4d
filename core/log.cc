// Owns the log: the sink, the level, rate-limited lines and BITS_CHECK's failure (core/log.h).
#include "core/log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "core/status.h"

namespace bitsd {
namespace {
LogSink gSink = nullptr;
LogLevel gLevel = LogLevel::Info;
LogClock gClock = nullptr;

struct LimitSlot {
  const char* key = nullptr;
  uint64_t lastMs = 0;      // when a line for this key was last written
  uint64_t suppressed = 0;  // lines dropped since
};
LimitSlot gLimits[kLogKeys];

void emit(LogLevel level, const char* fmt, va_list ap, uint64_t suppressed) {
  char line[2048];  // a SIGHUP summary can name every setting
  int n = std::vsnprintf(line, sizeof line, fmt, ap);
  if (suppressed > 0) {
    size_t at = n < 0 ? 0 : static_cast<size_t>(n) < sizeof line ? static_cast<size_t>(n) : sizeof line - 1;
    std::snprintf(line + at, sizeof line - at, " (%llu more suppressed)", static_cast<unsigned long long>(suppressed));
  }
  gSink(level, line);
}
}  // namespace

void setLogSink(LogSink sink) { gSink = sink; }
void setLogLevel(LogLevel minimum) { gLevel = minimum; }
bool logEnabled(LogLevel level) { return gSink != nullptr && level >= gLevel; }
void setLogClock(LogClock clock) { gClock = clock; }

void resetLogLimits() {
  for (auto& s : gLimits) s = LimitSlot{};
}

void logf(LogLevel level, const char* fmt, ...) {
  if (!logEnabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  emit(level, fmt, ap, 0);
  va_end(ap);
}

void logLimited(LogLevel level, const char* key, const char* fmt, ...) {
  if (!logEnabled(level)) return;
  uint64_t suppressed = 0;
  if (gClock != nullptr) {
    uint64_t now = gClock();
    LimitSlot* slot = nullptr;
    LimitSlot* oldest = &gLimits[0];
    for (auto& s : gLimits) {
      if (s.key == key) {
        slot = &s;
        break;
      }
      if (oldest->key == nullptr) continue;  // an empty slot is taken first
      if (s.key == nullptr || s.lastMs < oldest->lastMs) oldest = &s;
    }
    if (slot != nullptr && now - slot->lastMs < kLogWindowMs) {
      ++slot->suppressed;
      return;
    }
    if (slot == nullptr) {
      slot = oldest;
      *slot = LimitSlot{};
      slot->key = key;
    }
    suppressed = slot->suppressed;
    slot->suppressed = 0;
    slot->lastMs = now;
  }
  va_list ap;
  va_start(ap, fmt);
  emit(level, fmt, ap, suppressed);
  va_end(ap);
}

void checkFailed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "bitsd: internal check failed: %s at %s:%d\n", what, file, line);
  std::abort();
}

}  // namespace bitsd
