// bitsclient's command line: usage text, option parsing, URL check (options.h).
#include "tools/client/options.h"

#include <mbedtls/ssl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "core/content_range.h"

namespace bitsd::client {

const char* const kUsage =
    "usage: bitsclient upload FILE URL [options]\n"
    "       bitsclient resume STATEFILE [options]\n"
    "       bitsclient cancel STATEFILE\n"
    "       bitsclient bench URL [options]   (bitsclient bench --help)\n"
    "options:\n"
    "  -H, --header 'Name: value'  extra header on every request (e.g. BITS-Transaction-Id), repeatable\n"
    "  --fragment-size BYTES       fragment size, 5K..13M (default 1M; K/M suffixes)\n"
    "  --retries N                 transient failures in a row before giving up (default 8)\n"
    "  --retry-delay-ms MS         first retry delay, doubled each time (default 1000)\n"
    "  --retry-max-delay-ms MS     longest retry delay (default 60000)\n"
    "  --restarts N                new sessions after the server lost ours (default 3)\n"
    "  --timeout-ms MS             time for one request's answer (default 300000, as Windows)\n"
    "  --state FILE                where the job's state is kept (default FILE.bitsjob)\n"
    "  --reply-out FILE            upload-reply: download the reply into FILE before closing\n"
    "  --json                      one JSON line per event on stdout (the default when stdout is not a terminal)\n"
    "  --quiet                     no progress output\n"
    "  --cacert FILE               https: trust this PEM certificate (e.g. bitsd.crt) instead of the system's\n"
    "  -k, --insecure              https: do not verify the server's certificate\n"
    "  --tls-suite NAME            https: offer only this cipher suite (benchmarks)\n"
    "  -u, --user NAME:PASSWORD    Basic authentication on every request (not kept in the state file)\n"
    "exit codes: 0 done, 1 fatal server answer, 2 usage or state file, 3 retries exhausted,\n"
    "            4 session lost too often, 5 local file error, 130 interrupted\n";

[[noreturn]] void usageError(const std::string& why) {
  std::fprintf(stderr, "bitsclient: %s\n", why.c_str());
  std::exit(client::kExitUsage);
}

bool parseSize(const std::string& text, uint64_t* out) {
  if (text.empty()) return false;
  uint64_t mult = 1;
  std::string digits = text;
  char last = digits.back();
  if (last == 'K' || last == 'k') mult = 1024;
  if (last == 'M' || last == 'm') mult = 1024 * 1024;
  if (mult != 1) digits.pop_back();
  uint64_t v = 0;
  if (!bitsd::parseDecimal(digits, &v) || v > UINT64_MAX / mult) return false;
  *out = v * mult;
  return true;
}

bool validHeader(const std::string& h) {
  size_t colon = h.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  for (size_t i = 0; i < colon; ++i) {
    char c = h[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  for (char c : h) {
    if (c == '\r' || c == '\n') return false;
  }
  return true;
}

// Parses the options after the command's positional arguments.
void parseOptions(int argc, char** argv, int first, Options* o) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usageError(a + " needs a value");
      return argv[++i];
    };
    auto number = [&](uint64_t* out) {
      std::string v = value();
      if (!parseSize(v, out)) usageError("invalid value '" + v + "' for " + a + ": expected a whole number");
    };
    uint64_t n = 0;
    if (a == "-H" || a == "--header") {
      std::string h = value();
      if (!validHeader(h)) usageError("invalid header '" + h + "': expected 'Name: value'");
      o->headers.push_back(h);
    } else if (a == "--fragment-size") {
      number(&n);
      if (n < client::kMinFragmentBytes || n > client::kMaxFragmentBytes) {
        usageError("--fragment-size must be 5K..13M (the Windows client's range)");
      }
      o->job.fragmentBytes = n;
    } else if (a == "--retries") {
      number(&n);
      if (n < 1 || n > 1000000) usageError("--retries must be 1..1000000");
      o->job.retry.maxFailures = static_cast<uint32_t>(n);
    } else if (a == "--retry-delay-ms") {
      number(&o->job.retry.firstDelayMs);
    } else if (a == "--retry-max-delay-ms") {
      number(&o->job.retry.maxDelayMs);
    } else if (a == "--restarts") {
      number(&n);
      o->job.maxRestarts = static_cast<uint32_t>(std::min<uint64_t>(n, 1000000));
    } else if (a == "--timeout-ms") {
      number(&o->timeoutMs);
      if (o->timeoutMs == 0) usageError("--timeout-ms must be at least 1");
    } else if (a == "--state") {
      o->statePath = value();
    } else if (a == "--reply-out") {
      o->replyOut = value();
      o->job.wantReply = true;
    } else if (a == "--json") {
      o->json = o->jsonForced = true;
    } else if (a == "--quiet") {
      o->quiet = true;
    } else if (a == "--cacert") {
      o->cacert = value();
    } else if (a == "--tls-suite") {
      std::string v = value();
      o->tlsSuite = mbedtls_ssl_get_ciphersuite_id(v.c_str());
      if (o->tlsSuite == 0) usageError("unknown TLS cipher suite '" + v + "' (e.g. TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256)");
    } else if (a == "--insecure" || a == "-k") {
      o->insecure = true;
    } else if (a == "-u" || a == "--user") {
      o->user = value();
      if (o->user.find(':') == std::string::npos) usageError("-u needs NAME:PASSWORD");
      o->job.credentialsGiven = true;
    } else {
      usageError("unknown option '" + a + "' (see bitsclient --help)");
    }
  }
  if (o->job.retry.maxDelayMs < o->job.retry.firstDelayMs) o->job.retry.maxDelayMs = o->job.retry.firstDelayMs;
}

// http:// or https:// URL. For https the default port is 443.
bool parseUrl(const std::string& url, bitsd::HttpUrl* u, bool* tls, std::string* storage) {
  *tls = url.rfind("https://", 0) == 0;
  *storage = *tls ? "http://" + url.substr(8) : url;
  if (!bitsd::parseHttpUrl(*storage, u)) return false;
  if (*tls && u->port == 80) {
    // Was :80 written out? Look at the authority.
    std::string_view rest = std::string_view(*storage).substr(7);
    std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
    size_t close = authority.rfind(']');
    size_t colon = authority.rfind(':');
    bool explicitPort = colon != std::string_view::npos && (close == std::string_view::npos || colon > close);
    if (!explicitPort) u->port = 443;
  }
  return true;
}

}  // namespace bitsd::client
