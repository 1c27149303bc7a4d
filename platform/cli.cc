// Owns the command line: layered settings from board, config file and flags, --help, --version
// (platform/cli.h).
#include "platform/cli.h"

#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "platform/sha256.h"
#include "platform/system.h"
#include "platform/tls.h"

#ifndef BITSD_VERSION
#error "BITSD_VERSION comes from CMakeLists.txt (project VERSION)"
#endif

namespace bitsd::board {
extern const char kBoardName[];
extern const char kBoardDefaults[];
}  // namespace bitsd::board

namespace bitsd::platform {

const char* usageText() {
  // Every key with the board's default (a board whose defaults do not parse cannot start either:
  // parseCommandLine says so; here the help just lists the built-in values).
  static const Settings boardDefaults = [] {
    Settings s;
    std::string ignored;
    (void)applySettingsText(&s, board::kBoardDefaults, "board", &ignored);
    return s;
  }();
  static std::string text = std::string(
      "usage: bitsd [--config FILE] [OPTIONS]\n"
      "A BITS upload server: Windows clients upload with Start-BitsTransfer -TransferType Upload\n"
      "or bitsadmin /upload. Defaults come from the board '") + board::kBoardName +
      "'; a config file of 'key = value' lines overrides them; flags override both.\n\n"
      "  --config FILE               read settings from FILE\n"
      "  --help                      show this help\n"
      "  --version                   show the version and the build's options\n" + settingsHelp(boardDefaults);
  return text.c_str();
}

std::string versionText(const char* program) {
  return std::string(program) + " " + BITSD_VERSION + "\n" +
         "tls: " + (kTlsBuilt ? "on" : "off") + "\n" +
         "sha256: " + UploadSha256::implementation() + "\n" +
         "board: " + board::kBoardName + "\n";
}

CliOutcome parseCommandLine(int argc, char** argv, Settings* out, std::string* error) {
  Settings s;
  std::string boardError;
  if (!applySettingsText(&s, board::kBoardDefaults, std::string("board ") + board::kBoardName, &boardError)) {
    *error = boardError;
    return CliOutcome::Error;
  }
  s.threadPoolSet = false;  // the board's value: effectiveThreadPool may lower it
  std::vector<std::pair<std::string, std::string>> flags;
  std::string configPath;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return CliOutcome::Help;
    if (arg == "--version") return CliOutcome::Version;
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      *error = "unexpected argument '" + std::string(arg) + "' (see --help)";
      return CliOutcome::Error;
    }
    arg.remove_prefix(2);
    std::string key, value;
    size_t eq = arg.find('=');
    bool hasValue = eq != std::string_view::npos;
    key = std::string(arg.substr(0, eq));
    if (hasValue) value = std::string(arg.substr(eq + 1));
    bool isBool = false;
    if (key != "config" && !isSettingKey(key, &isBool)) {
      *error = "unknown option --" + key + " (see --help)";
      return CliOutcome::Error;
    }
    if (!hasValue) {
      // bitsd takes no positional arguments, so a word after an on/off flag is its value:
      // `--fdatasync off`, and `--fdatasync maybe` is an error about --fdatasync.
      bool nextIsValue = i + 1 < argc && std::string_view(argv[i + 1]).substr(0, 2) != "--";
      if (isBool && nextIsValue) {
        value = argv[++i];  // `--fdatasync off`
      } else if (isBool) {
        value = "true";     // `--allow-overwrites`
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        *error = "option --" + key + " needs a value";
        return CliOutcome::Error;
      }
    }
    if (key == "config") {
      if (!configPath.empty()) {
        *error = "--config given twice ('" + configPath + "' and '" + value + "'): give one file";
        return CliOutcome::Error;
      }
      configPath = value;
    } else {
      flags.emplace_back(key, value);
    }
  }
  if (!configPath.empty()) {
    std::string text;
    if (Outcome o = readTextFile(configPath, &text); !o.isOk()) {
      *error = o.message();
      return CliOutcome::Error;
    }
    if (!applySettingsText(&s, text, "config file " + configPath, error)) return CliOutcome::Error;
  }
  for (auto& [key, value] : flags) {
    if (!applyFlag(&s, key, value, error)) return CliOutcome::Error;
  }
  if (!validateSettings(s, error)) return CliOutcome::Error;
  *out = std::move(s);
  return CliOutcome::Run;
}

}  // namespace bitsd::platform
