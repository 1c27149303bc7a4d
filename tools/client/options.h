// bitsclient's command line: the options every command shares (Options), their parsing and --help
// text, and the http(s) URL check. The state file (state_file.h) fills the same Options on resume.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/notify.h"
#include "tools/client/job.h"

namespace bitsd::client {

extern const char* const kUsage;

[[noreturn]] void usageError(const std::string& why);

bool parseSize(const std::string& text, uint64_t* out);

struct Options {
  std::string command, file, url, statePath, replyOut;
  std::vector<std::string> headers;
  uint64_t fileBytes = 0;
  client::JobConfig job;
  uint64_t timeoutMs = 300000;
  bool json = false, jsonForced = false, quiet = false;
  std::string cacert;      // https: trust this PEM certificate (chain) instead of the system's
  int tlsSuite = 0;        // https: offer only this cipher suite (benchmarks)
  bool insecure = false;   // https: do not verify the server's certificate
  std::string user;        // Basic authentication "NAME:PASSWORD" (never written to the state file)
  // From a state file (resume/cancel).
  std::string sessionId, hostId;
  uint64_t offset = 0, fallbackSeconds = 0;
};

bool validHeader(const std::string& h);

// Parses the options after the command's positional arguments.
void parseOptions(int argc, char** argv, int first, Options* o);

// http:// or https:// URL. For https the default port is 443.
bool parseUrl(const std::string& url, bitsd::HttpUrl* u, bool* tls, std::string* storage);

}  // namespace bitsd::client
