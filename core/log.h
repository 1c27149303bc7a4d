// Logging seam. core/ formats one-line messages; the platform decides where they go (stderr on the
// host). The sink is a plain function pointer so that nothing here allocates.
#pragma once

namespace bitsd {

enum class LogLevel { Debug, Info, Warn, Error };

using LogSink = void (*)(LogLevel level, const char* line);

// Replaces the sink (nullptr restores the default, which drops Debug and writes the rest to nothing;
// the platform installs a stderr sink at start-up). Loop thread only.
void setLogSink(LogSink sink);
void setLogLevel(LogLevel minimum);

// printf-style; the line is truncated at 512 bytes.
void logf(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace bitsd
