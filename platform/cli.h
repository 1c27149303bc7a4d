// Command line: `bitsd [--config FILE] [--KEY VALUE | --KEY=VALUE | --BOOL-KEY]... [--help]`.
// Layers: board defaults (embedded), then the config file, then flags, whatever their order.
#pragma once

#include <string>

#include "core/settings.h"

namespace bitsd::platform {

enum class CliOutcome { Run, Help, Version, Error };

// On Error, `error` is one line naming the problem.
CliOutcome parseCommandLine(int argc, char** argv, Settings* out, std::string* error);

const char* usageText();

// `PROGRAM --version`: "PROGRAM 0.1.0", then one "name: value" line per build option (tls: on|off,
// sha256: its implementation, board: the board whose defaults are embedded).
std::string versionText(const char* program);

}  // namespace bitsd::platform
