#include "core/log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "core/status.h"

namespace bitsd {
namespace {
LogSink gSink = nullptr;
LogLevel gLevel = LogLevel::Info;
}  // namespace

void setLogSink(LogSink sink) { gSink = sink; }
void setLogLevel(LogLevel minimum) { gLevel = minimum; }

void logf(LogLevel level, const char* fmt, ...) {
  if (gSink == nullptr || level < gLevel) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  gSink(level, line);
}

void checkFailed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "bitsd: internal check failed: %s at %s:%d\n", what, file, line);
  std::abort();
}

}  // namespace bitsd
