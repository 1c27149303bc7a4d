// bitsclient: a host-side BITS upload client that behaves like the Windows one
// (../shared/protocol/BITS-UPLOAD.md §9), for demos, tests and fault finding. The protocol decisions
// live in tools/client/job.{h,cc} (a state machine with no I/O); this file runs it on a libuv loop:
// one keep-alive connection, one request in flight, llhttp parsing the answers.
//
//   bitsclient upload FILE URL [options]   upload FILE; the job's state goes to FILE.bitsjob
//   bitsclient resume STATEFILE [options]  carry on with a job after bitsclient was killed
//   bitsclient cancel STATEFILE            Cancel-Session, then forget the job
//
// See `bitsclient --help` and the README's "bitsclient" section.
#include <fcntl.h>
#include <llhttp.h>
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/content_range.h"
#include "core/notify.h"
#include "core/protocol.h"
#include "tools/client/job.h"
#include "tools/client/progress_line.h"

namespace {

using bitsd::client::Event;
using bitsd::client::Job;
using bitsd::client::Kind;
using bitsd::client::Request;
using bitsd::client::Response;
namespace client = bitsd::client;
namespace H = bitsd::header;  // header names, shared with the server

constexpr const char* kUserAgent = "Microsoft BITS/7.8";  // Windows 10/11 (§9)
constexpr size_t kChunkBytes = 256 * 1024;

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

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string human(double bytes) { return client::humanBytes(bytes); }

// --- Options and the state file ---------------------------------------------------------------------

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

bool writeState(const Options& o, const Job& job, std::string* error) {
  std::ostringstream s;
  s << "# bitsclient job: bitsclient resume " << o.statePath << "\n"
    << "version=1\nfile=" << o.file << "\nsize=" << o.fileBytes << "\nurl=" << o.url
    << "\nsession=" << job.sessionId() << "\noffset=" << job.offset() << "\nfragment=" << job.fragmentBytes()
    << "\nhost-id=" << (job.usingHostId() ? job.hostId() : std::string()) << "\nfallback=" << job.fallbackSeconds()
    << "\nreply-out=" << o.replyOut << "\n";
  for (const std::string& h : o.headers) s << "header=" << h << "\n";
  std::string text = s.str();
  std::string tmp = o.statePath + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "cannot write " + tmp + ": " + std::strerror(errno);
    return false;
  }
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), o.statePath.c_str()) != 0) {
    *error = "cannot write " + o.statePath + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

void readState(const std::string& path, Options* o) {
  std::ifstream in(path);
  if (!in) usageError("cannot read state file " + path + ": " + std::strerror(errno));
  std::string line;
  bool sawVersion = false;
  int lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) usageError(path + ":" + std::to_string(lineNo) + ": not key=value");
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    uint64_t n = 0;
    auto num = [&]() {
      if (!bitsd::parseDecimal(v, &n)) usageError(path + ":" + std::to_string(lineNo) + ": bad number for " + k);
      return n;
    };
    if (k == "version") {
      if (v != "1") usageError(path + ": unknown state file version " + v);
      sawVersion = true;
    } else if (k == "file") {
      o->file = v;
    } else if (k == "size") {
      o->fileBytes = num();
    } else if (k == "url") {
      o->url = v;
    } else if (k == "session") {
      o->sessionId = v;
    } else if (k == "offset") {
      o->offset = num();
    } else if (k == "fragment") {
      o->job.fragmentBytes = num();
    } else if (k == "host-id") {
      o->hostId = v;
    } else if (k == "fallback") {
      o->fallbackSeconds = num();
    } else if (k == "reply-out") {
      o->replyOut = v;
      o->job.wantReply = !v.empty();
    } else if (k == "header") {
      o->headers.push_back(v);
    } else {
      usageError(path + ":" + std::to_string(lineNo) + ": unknown key " + k);
    }
  }
  if (!sawVersion || o->file.empty() || o->url.empty()) usageError(path + ": not a bitsclient state file");
  o->statePath = path;
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

// --- Progress -----------------------------------------------------------------------------------------

class Progress {
 public:
  explicit Progress(const Options& o) : json_(o.json), bar_(!o.json && !o.quiet && ::isatty(2)), quiet_(o.quiet) {
    start_ = std::chrono::steady_clock::now();
    readWidth();
  }
  bool bar() const { return bar_; }
  // The terminal's width, from the terminal the line is drawn on (stderr); again on SIGWINCH.
  void readWidth() {
    winsize ws{};
    width_ = bar_ && ::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : client::kDefaultProgressWidth;
  }
  void resized(const Job& job, uint64_t nowMs) {
    readWidth();
    if (bar_ && drawn_) draw(job, true, nowMs);
  }
  // Redraws the line (at most every 100 ms), e.g. for the retry countdown.
  void tick(const Job& job, uint64_t nowMs) {
    if (bar_ && drawn_) draw(job, false, nowMs);
  }
  void event(const Event& e, const Job& job, uint64_t nowMs) {
    if (json_ && !quiet_) printJson(e, job);
    if (bar_) {
      if (e.type == Event::Type::Retry || e.type == Event::Type::Restart || e.type == Event::Type::Fallback ||
          e.type == Event::Type::Resync || e.type == Event::Type::Shrunk) {
        clearLine();
        std::fprintf(stderr, "%s: %s\n", client::eventName(e.type), describe(e).c_str());
        drawn_ = false;
      }
      draw(job, e.type == Event::Type::Done || e.type == Event::Type::Retry, nowMs);
    }
  }
  void finish() {
    if (bar_ && drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  static std::string describe(const Event& e) {
    switch (e.type) {
      case Event::Type::Retry: return e.text + "; retrying in " + std::to_string(e.delayMs) + " ms";
      case Event::Type::Resync: return "server holds " + std::to_string(e.offset) + " bytes (we were at " +
                                       std::to_string(e.previous) + ")";
      case Event::Type::Shrunk: return "fragment " + std::to_string(e.previous) + " -> " + std::to_string(e.offset) + " bytes";
      default: return e.text;
    }
  }
  void clearLine() {
    if (drawn_) std::fputs("\r\033[K", stderr);
  }
  void draw(const Job& job, bool force, uint64_t nowMs) {
    auto now = std::chrono::steady_clock::now();
    if (!force && drawn_ && now - lastDraw_ < std::chrono::milliseconds(100)) return;
    lastDraw_ = now;
    client::ProgressState st;
    st.total = job.totalBytes();
    st.have = job.offset();
    double secs = seconds();
    st.rate = secs > 0 ? static_cast<double>(st.have - std::min(st.have, firstOffset(st.have))) / secs : 0;
    if (st.rate > 0 && st.have < st.total) st.etaSeconds = static_cast<int64_t>(static_cast<double>(st.total - st.have) / st.rate);
    if (uint64_t wait = job.retryWaitMs(nowMs); wait > 0) st.retryInSeconds = static_cast<int64_t>((wait + 999) / 1000);
    clearLine();
    std::fputs(client::progressLine(width_, st).c_str(), stderr);
    std::fflush(stderr);
    drawn_ = true;
  }
  uint64_t firstOffset(uint64_t have) {
    if (!haveFirst_) {
      haveFirst_ = true;
      first_ = have;
    }
    return first_;
  }
  void printJson(const Event& e, const Job& job) {
    std::string line = "{\"event\":" + jsonString(client::eventName(e.type));
    auto num = [&](const char* k, uint64_t v) { line += std::string(",\"") + k + "\":" + std::to_string(v); };
    switch (e.type) {
      case Event::Type::SessionCreated: line += ",\"session\":" + jsonString(e.text); break;
      case Event::Type::Acked:
        num("offset", e.offset);
        num("total", job.totalBytes());
        break;
      case Event::Type::Resync:
        num("from", e.previous);
        num("to", e.offset);
        break;
      case Event::Type::Shrunk:
        num("from", e.previous);
        num("to", e.offset);
        break;
      case Event::Type::Retry:
        num("failures", e.failures);
        num("delay_ms", e.delayMs);
        num("status", static_cast<uint64_t>(e.status));
        if (e.errorCode != 0) line += ",\"error\":" + jsonString(client::hresultText(e.errorCode));
        line += ",\"reason\":" + jsonString(e.text);
        break;
      case Event::Type::Restart: line += ",\"reason\":" + jsonString(e.text); break;
      case Event::Type::HostId:
      case Event::Type::Fallback: line += ",\"host\":" + jsonString(e.text); break;
      case Event::Type::Reply:
        num("bytes", e.offset);
        if (!e.text.empty()) line += ",\"url\":" + jsonString(e.text);
        break;
      case Event::Type::Done:
        num("bytes", job.totalBytes());
        line += ",\"session\":" + jsonString(job.sessionId());
        if (!job.replyUrl().empty()) line += ",\"reply_url\":" + jsonString(job.replyUrl());
        {
          char secs[32];
          std::snprintf(secs, sizeof secs, "%.3f", seconds());
          line += std::string(",\"seconds\":") + secs;
        }
        break;
      case Event::Type::Failed: line += ",\"reason\":" + jsonString(e.text); break;
    }
    line += "}\n";
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
  }

  bool json_, bar_, quiet_;
  int width_ = client::kDefaultProgressWidth;
  bool drawn_ = false;
  bool haveFirst_ = false;
  uint64_t first_ = 0;
  std::chrono::steady_clock::time_point start_, lastDraw_;
};

// --- The driver ---------------------------------------------------------------------------------------

// Faults a bench injects into its own requests (bounded by count).
struct Chaos {
  double cutChance = 0;    // per fragment: close the connection after part of the body
  double pauseChance = 0;  // per fragment: stop sending for pauseMs after the head (a slow client)
  uint64_t pauseMs = 0;
  uint32_t maxCuts = 0, maxPauses = 0;
  uint32_t cuts = 0, pauses = 0;
  std::mt19937_64 rng{1};
  bool roll(double chance) { return chance > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < chance; }
};

// What a bench measures across its jobs.
struct BenchStats {
  std::vector<double> fragmentMs;  // request sent -> Ack, for Fragments answered 200
  uint64_t retries = 0, restarts = 0, resyncs = 0, shrinks = 0, fallbacks = 0;
};

struct Conn;

// One uv_write: its request, the connection, the request generation it belongs to, and (for heads)
// its own copy of the bytes.
struct WriteReq {
  uv_write_t req;
  Conn* c = nullptr;
  uint64_t gen = 0;
  std::string bytes;
};

class Driver {
 public:
  // `interactive`: a user's job (signals, progress, state file). A bench job has none of these and
  // reports through `onFinish`.
  Driver(uv_loop_t* loop, Options& o, Job& job, int fileFd, bool interactive = true)
      : loop_(loop), o_(o), job_(job), progress_(o), fileFd_(fileFd), chunk_(kChunkBytes), interactive_(interactive) {
    uv_timer_init(loop_, &timeout_);
    uv_timer_init(loop_, &wait_);
    uv_timer_init(loop_, &pause_);
    timeout_.data = wait_.data = pause_.data = this;
    if (interactive_) {
      uv_signal_init(loop_, &sigint_);
      uv_signal_init(loop_, &sigterm_);
      sigint_.data = sigterm_.data = this;
      uv_signal_start(&sigint_, onSignal, SIGINT);
      uv_signal_start(&sigterm_, onSignal, SIGTERM);
    }
    if (interactive_ && progress_.bar()) {
      // The line follows the terminal's width, and counts a retry's wait down once a second.
      uv_signal_init(loop_, &sigwinch_);
      uv_timer_init(loop_, &tick_);
      sigwinch_.data = tick_.data = this;
      uv_signal_start(&sigwinch_, onResize, SIGWINCH);
      uv_timer_start(&tick_, onTick, 250, 250);
      uv_unref(reinterpret_cast<uv_handle_t*>(&tick_));
      uv_unref(reinterpret_cast<uv_handle_t*>(&sigwinch_));
      ticking_ = true;
    }
    if (!o_.user.empty()) {
      unsigned char b64[1024];
      size_t n = 0;
      if (mbedtls_base64_encode(b64, sizeof b64, &n, reinterpret_cast<const unsigned char*>(o_.user.data()),
                                o_.user.size()) == 0) {
        authorization_ = "Basic " + std::string(reinterpret_cast<char*>(b64), n);
      }
    }
    llhttp_settings_init(&settings_);
    settings_.on_header_field = onHeaderField;
    settings_.on_header_value = onHeaderValue;
    settings_.on_headers_complete = onHeadersComplete;
    settings_.on_body = onBody;
    settings_.on_message_complete = onMessageComplete;
  }

  ~Driver() {
    if (tlsReady_) {
      mbedtls_ssl_config_free(&tlsConf_);
      mbedtls_x509_crt_free(&tlsCa_);
      mbedtls_ctr_drbg_free(&tlsDrbg_);
      mbedtls_entropy_free(&tlsEntropy_);
    }
  }
  void start() { step(); }
  int run() {
    if (!o_.statePath.empty()) {  // from the start, so even a job killed before its session resumes
      std::string err;
      if (!writeState(o_, job_, &err)) {
        std::fprintf(stderr, "bitsclient: %s (the job cannot be resumed if bitsclient dies)\n", err.c_str());
        o_.statePath.clear();
      }
    }
    step();
    uv_run(loop_, UV_RUN_DEFAULT);
    return exitCode_;
  }

  // Public for the C callbacks below.
  void step();
  void send(const Request& r);
  void connected(Conn* c, int status);
  void startRequest();
  void sendBody();
  void bodyWritten(Conn* c, int status);
  void queueWrite(WriteReq* w, char* data, size_t len);
  void queueRaw(WriteReq* w, char* data, size_t len);
  bool parsePlain(const char* data, size_t len);
  bool setupTls();
  void handshake(Conn* c);
  void flushTls(Conn* c);
  void fatal(int code, const std::string& why);
  void readData(Conn* c, ssize_t n, const uv_buf_t* buf);
  void complete(Response r);
  void fail(const std::string& why);
  void finish(int code);
  void closeConn();
  void header();

  static void onSignal(uv_signal_t* s, int signum);
  static void onResize(uv_signal_t* s, int signum);
  static void onTick(uv_timer_t* t);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onMessageComplete(llhttp_t* p);

  uv_loop_t* loop_;
  Options& o_;
  Job& job_;
  Progress progress_;
  int fileFd_;
  int replyFd_ = -1;
  std::vector<char> chunk_;
  uv_timer_t timeout_, wait_, pause_;
  uv_signal_t sigint_, sigterm_, sigwinch_;
  uv_timer_t tick_;
  bool interactive_;
  bool ticking_ = false;  // sigwinch_ and tick_ are in use (a progress bar on a terminal)
  Chaos* chaos_ = nullptr;
  BenchStats* stats_ = nullptr;
  std::function<void(Driver&)> onFinish_;
  uint64_t sentAt_ = 0;  // uv_hrtime() when the request in flight was started
  uint64_t gen_ = 0;     // bumped for every request written
  bool useTls_ = false;  // the request in flight goes over https
  bool tlsReady_ = false;
  mbedtls_ssl_config tlsConf_;
  mbedtls_x509_crt tlsCa_;
  mbedtls_ctr_drbg_context tlsDrbg_;
  mbedtls_entropy_context tlsEntropy_;
  std::vector<char> plain_ = std::vector<char>(16 * 1024 + 64);
  std::string authorization_;  // "Basic ..." when -u was given
  int tlsSuites_[2] = {0, 0};
  bool paused_ = false;
  bool chaosRolled_ = false;
  uint64_t cutAt_ = 0;  // chaos: the body offset where this fragment's connection is cut (0: none)
  llhttp_t parser_;
  llhttp_settings_t settings_;
  Conn* conn_ = nullptr;
  Request cur_;
  Response resp_;
  std::string field_, value_;
  std::string head_;
  std::string host_, hostHeader_, target_;
  uint16_t port_ = 80;
  uint64_t bodyNext_ = 0;
  uint64_t replyBody_ = 0;  // body bytes of the reply GET in flight
  bool inFlight_ = false;
  bool answered_ = false;
  bool bodyDone_ = false;
  bool closeAfter_ = false;
  bool finished_ = false;
  int exitCode_ = 0;
};

// A connection's TLS client state (https): mbedTLS over the libuv stream, as in the server.
struct ConnTls {
  mbedtls_ssl_context ssl;
  std::string in;   // ciphertext from the socket not yet taken by mbedTLS
  size_t inPos = 0;
  std::string out;  // ciphertext mbedTLS produced, not yet written
  bool handshakeDone = false;
  ConnTls() { mbedtls_ssl_init(&ssl); }
  ~ConnTls() { mbedtls_ssl_free(&ssl); }
};

struct Conn {
  uv_tcp_t tcp;
  std::unique_ptr<ConnTls> tls;
  uv_getaddrinfo_t gai;
  uv_connect_t connect;
  Driver* d = nullptr;
  std::string key;
  bool open = false;   // connected and usable
  bool closing = false;
  bool tcpInit = false;
  char readBuf[64 * 1024];
};

void onClose(uv_handle_t* h) { delete static_cast<Conn*>(h->data); }

void Driver::closeConn() {
  Conn* c = conn_;
  conn_ = nullptr;
  if (c == nullptr) return;
  c->d = nullptr;  // stale callbacks see this and stop
  c->open = false;
  if (c->tcpInit && !c->closing) {
    c->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), onClose);
  } else if (!c->tcpInit) {
    // Still resolving: the getaddrinfo callback frees it.
  }
}

void Driver::onSignal(uv_signal_t* s, int) {
  Driver* d = static_cast<Driver*>(s->data);
  d->progress_.finish();
  std::fprintf(stderr, "bitsclient: interrupted at byte %llu; carry on with: bitsclient resume %s\n",
               static_cast<unsigned long long>(d->job_.offset()), d->o_.statePath.c_str());
  std::exit(130);
}

void Driver::onResize(uv_signal_t* s, int) {
  Driver* d = static_cast<Driver*>(s->data);
  uv_update_time(d->loop_);
  d->progress_.resized(d->job_, uv_now(d->loop_));
}

void Driver::onTick(uv_timer_t* t) {
  Driver* d = static_cast<Driver*>(t->data);
  d->progress_.tick(d->job_, uv_now(d->loop_));
}

void Driver::finish(int code) {
  if (finished_) return;
  finished_ = true;
  exitCode_ = code;
  closeConn();
  uv_close(reinterpret_cast<uv_handle_t*>(&timeout_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&wait_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&pause_), nullptr);
  if (interactive_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  }
  if (ticking_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigwinch_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
  }
  if (onFinish_) onFinish_(*this);
}

void drainEvents(Driver* d) {
  bool save = false;
  for (const Event& e : d->job_.takeEvents()) {
    d->progress_.event(e, d->job_, uv_now(d->loop_));
    if (d->stats_ != nullptr) {
      BenchStats& st = *d->stats_;
      st.retries += e.type == Event::Type::Retry;
      st.restarts += e.type == Event::Type::Restart;
      st.resyncs += e.type == Event::Type::Resync;
      st.shrinks += e.type == Event::Type::Shrunk;
      st.fallbacks += e.type == Event::Type::Fallback;
    }
    save = save || e.type == Event::Type::SessionCreated || e.type == Event::Type::Acked ||
           e.type == Event::Type::Resync || e.type == Event::Type::Restart || e.type == Event::Type::HostId ||
           e.type == Event::Type::Fallback || e.type == Event::Type::Shrunk;
  }
  if (save && !d->o_.statePath.empty()) {
    std::string err;
    if (!writeState(d->o_, d->job_, &err)) {
      std::fprintf(stderr, "bitsclient: %s (the job cannot be resumed if bitsclient dies)\n", err.c_str());
      d->o_.statePath.clear();
    }
  }
}

void onWait(uv_timer_t* t) { static_cast<Driver*>(t->data)->step(); }

void Driver::step() {
  if (finished_) return;
  uv_update_time(loop_);
  Request r;
  uint64_t until = 0;
  Job::Next n = job_.next(uv_now(loop_), &r, &until);
  drainEvents(this);
  switch (n) {
    case Job::Next::Send: return send(r);
    case Job::Next::Wait:
      uv_timer_start(&wait_, onWait, until - uv_now(loop_), 0);
      return;
    case Job::Next::Done:
      progress_.finish();
      if (!o_.json && !o_.quiet) {
        double secs = progress_.seconds();
        std::fprintf(stderr, "bitsclient: %s %llu bytes to %s in %.2f s (%s/s)%s%s\n",
                     o_.command == "cancel" ? "cancelled the job of" : "uploaded",
                     static_cast<unsigned long long>(job_.totalBytes()), o_.url.c_str(), secs,
                     human(secs > 0 ? static_cast<double>(job_.totalBytes()) / secs : 0).c_str(),
                     o_.replyOut.empty() ? "" : "; reply in ", o_.replyOut.c_str());
      }
      if (!o_.statePath.empty()) ::unlink(o_.statePath.c_str());
      return finish(client::kExitOk);
    case Job::Next::Failed: {
      progress_.finish();
      // A job with a session can be resumed or cancelled later; one refused before it had a
      // session has nothing to keep.
      bool keep = !o_.statePath.empty() && (!job_.sessionId().empty() || job_.exitCode() == client::kExitRetries);
      if (!keep && !o_.statePath.empty()) ::unlink(o_.statePath.c_str());
      if (interactive_) {
        std::fprintf(stderr, "bitsclient: %s%s%s\n", job_.failure().c_str(), keep ? "; the job is kept in " : "",
                     keep ? o_.statePath.c_str() : "");
      }
      return finish(job_.exitCode());
    }
  }
}

void onTimeout(uv_timer_t* t) {
  Driver* d = static_cast<Driver*>(t->data);
  d->fail("no answer within " + std::to_string(d->o_.timeoutMs) + " ms");
}

// A transport failure of the request in flight: close the connection, status 0 to the job.
void Driver::fail(const std::string& why) {
  if (!inFlight_) return;
  Response r;
  r.transportError = why;
  closeConn();
  complete(r);
}

void Driver::complete(Response r) {
  inFlight_ = false;
  uv_timer_stop(&timeout_);
  uv_timer_stop(&pause_);
  paused_ = false;
  if (stats_ != nullptr && cur_.kind == Kind::Fragment && r.status == 200) {
    stats_->fragmentMs.push_back(static_cast<double>(uv_hrtime() - sentAt_) / 1e6);
  }
  if (r.status == 0 || closeAfter_ || !bodyDone_) closeConn();
  uv_update_time(loop_);
  job_.onResponse(r, uv_now(loop_));
  step();
}

void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  Conn* c = static_cast<Conn*>(req->data);
  Driver* d = c->d;
  if (d == nullptr) {  // abandoned while resolving
    if (res != nullptr) uv_freeaddrinfo(res);
    delete c;
    return;
  }
  if (status < 0 || res == nullptr) {
    d->conn_ = nullptr;
    delete c;
    if (res != nullptr) uv_freeaddrinfo(res);
    return d->fail(std::string("cannot resolve the host: ") + uv_strerror(status));
  }
  uv_tcp_init(d->loop_, &c->tcp);
  c->tcp.data = c;
  c->tcpInit = true;
  uv_tcp_nodelay(&c->tcp, 1);
  c->connect.data = c;
  int rc = uv_tcp_connect(&c->connect, &c->tcp, res->ai_addr, [](uv_connect_t* cr, int st) {
    Conn* cc = static_cast<Conn*>(cr->data);
    if (cc->d != nullptr) cc->d->connected(cc, st);
  });
  uv_freeaddrinfo(res);
  if (rc < 0) d->fail(std::string("cannot connect: ") + uv_strerror(rc));
}

void Driver::send(const Request& r) {
  cur_ = r;
  resp_ = Response();
  replyBody_ = 0;
  sentAt_ = uv_hrtime();
  cutAt_ = 0;
  chaosRolled_ = false;
  inFlight_ = true;
  answered_ = false;
  closeAfter_ = false;
  bodyDone_ = r.kind != Kind::Fragment;
  // Where it goes: the reply URL, the host-id host, or the upload URL.
  std::string url = (r.kind == Kind::ReplyHead || r.kind == Kind::ReplyGet) ? job_.replyUrl() : o_.url;
  bitsd::HttpUrl u;
  std::string urlStorage;
  if (!parseUrl(url, &u, &useTls_, &urlStorage)) {
    inFlight_ = false;
    progress_.finish();
    std::fprintf(stderr, "bitsclient: cannot use URL '%s' (only http(s)://host[:port]/path)\n", url.c_str());
    return finish(client::kExitUsage);
  }
  host_ = std::string(u.host);
  port_ = u.port;
  target_ = u.pathAndQuery.front() == '?' ? "/" + std::string(u.pathAndQuery) : std::string(u.pathAndQuery);
  if (r.toHostId && !job_.hostId().empty()) {
    // BITS-Host-Id: a host name or address, optionally with :port; it replaces the URL's host.
    std::string h = job_.hostId();
    size_t colon = h.rfind(':');
    if (!h.empty() && h.front() == '[') {
      size_t close = h.find(']');
      host_ = h.substr(1, close == std::string::npos ? std::string::npos : close - 1);
      if (close != std::string::npos && close + 1 < h.size() && h[close + 1] == ':') {
        port_ = static_cast<uint16_t>(std::atoi(h.c_str() + close + 2));
      }
    } else if (colon != std::string::npos && h.find(':') == colon) {
      host_ = h.substr(0, colon);
      port_ = static_cast<uint16_t>(std::atoi(h.c_str() + colon + 1));
    } else {
      host_ = h;
    }
  }
  hostHeader_ = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
  if (port_ != (useTls_ ? 443 : 80)) hostHeader_ += ":" + std::to_string(port_);
  uv_timer_start(&timeout_, onTimeout, o_.timeoutMs, 0);
  std::string key = std::string(useTls_ ? "s|" : "|") + host_ + "|" + std::to_string(port_);
  if (conn_ != nullptr && conn_->open && conn_->key == key) return startRequest();
  closeConn();
  Conn* c = new Conn();
  c->d = this;
  c->key = key;
  c->gai.data = c;
  conn_ = c;
  addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(loop_, &c->gai, onResolved, host_.c_str(), std::to_string(port_).c_str(), &hints);
  if (rc < 0) {
    conn_ = nullptr;
    delete c;
    fail(std::string("cannot resolve the host: ") + uv_strerror(rc));
  }
}

void onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(h->data);
  *buf = uv_buf_init(c->readBuf, sizeof c->readBuf);
}

void onRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(s->data);
  if (c->d == nullptr) return;
  c->d->readData(c, n, buf);
}

void Driver::connected(Conn* c, int status) {
  if (c != conn_) return;
  if (status < 0) return fail(std::string("cannot connect to ") + host_ + ":" + std::to_string(port_) + ": " +
                              uv_strerror(status));
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), onAlloc, onRead);
  if (useTls_) {
    c->tls = std::make_unique<ConnTls>();
    if (!tlsReady_ && !setupTls()) return;
    if (mbedtls_ssl_setup(&c->tls->ssl, &tlsConf_) != 0 || mbedtls_ssl_set_hostname(&c->tls->ssl, host_.c_str()) != 0) {
      return fail("TLS setup failed");
    }
    mbedtls_ssl_set_bio(
        &c->tls->ssl, c,
        [](void* ctx, const unsigned char* b, size_t len) -> int {
          static_cast<Conn*>(ctx)->tls->out.append(reinterpret_cast<const char*>(b), len);
          return static_cast<int>(len);
        },
        [](void* ctx, unsigned char* b, size_t len) -> int {
          ConnTls* t = static_cast<Conn*>(ctx)->tls.get();
          size_t have = t->in.size() - t->inPos;
          if (have == 0) return MBEDTLS_ERR_SSL_WANT_READ;
          size_t n = std::min(have, len);
          std::memcpy(b, t->in.data() + t->inPos, n);
          t->inPos += n;
          if (t->inPos == t->in.size()) {
            t->in.clear();
            t->inPos = 0;
          }
          return static_cast<int>(n);
        },
        nullptr);
    return handshake(c);
  }
  c->open = true;
  startRequest();
}

bool Driver::setupTls() {
  mbedtls_ssl_config_init(&tlsConf_);
  mbedtls_x509_crt_init(&tlsCa_);
  mbedtls_ctr_drbg_init(&tlsDrbg_);
  mbedtls_entropy_init(&tlsEntropy_);
  tlsReady_ = true;
  int rc = mbedtls_ctr_drbg_seed(&tlsDrbg_, mbedtls_entropy_func, &tlsEntropy_, nullptr, 0);
  if (rc == 0) {
    rc = mbedtls_ssl_config_defaults(&tlsConf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
  }
  if (rc != 0) {
    fatal(client::kExitLocal, "TLS setup failed");
    return false;
  }
  mbedtls_ssl_conf_rng(&tlsConf_, mbedtls_ctr_drbg_random, &tlsDrbg_);
  if (o_.tlsSuite != 0) {
    tlsSuites_[0] = o_.tlsSuite;
    mbedtls_ssl_conf_ciphersuites(&tlsConf_, tlsSuites_);
  }
  if (o_.insecure) {
    mbedtls_ssl_conf_authmode(&tlsConf_, MBEDTLS_SSL_VERIFY_NONE);
  } else {
    std::string ca = o_.cacert.empty() ? "/etc/ssl/certs/ca-certificates.crt" : o_.cacert;
    rc = mbedtls_x509_crt_parse_file(&tlsCa_, ca.c_str());
    if (rc < 0 || tlsCa_.version == 0) {
      fatal(client::kExitUsage, "cannot read the CA certificate(s) in " + ca + " (--cacert FILE, or --insecure)");
      return false;
    }
    mbedtls_ssl_conf_ca_chain(&tlsConf_, &tlsCa_, nullptr);
    mbedtls_ssl_conf_authmode(&tlsConf_, MBEDTLS_SSL_VERIFY_REQUIRED);
  }
  return true;
}

void Driver::fatal(int code, const std::string& why) {
  inFlight_ = false;
  progress_.finish();
  std::fprintf(stderr, "bitsclient: %s\n", why.c_str());
  finish(code);
}

// Runs the TLS handshake as ciphertext arrives; sends the request once it is done.
void Driver::handshake(Conn* c) {
  int rc = mbedtls_ssl_handshake(&c->tls->ssl);
  flushTls(c);
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return;
  if (rc != 0) {
    uint32_t flags = mbedtls_ssl_get_verify_result(&c->tls->ssl);
    if (flags != 0 && flags != static_cast<uint32_t>(-1)) {
      char why[256];
      mbedtls_x509_crt_verify_info(why, sizeof why, "", flags);
      std::string w(why);
      while (!w.empty() && w.back() == '\n') w.pop_back();
      for (size_t i = 0; (i = w.find('\n', i)) != std::string::npos;) w.replace(i, 1, "; ");
      return fatal(client::kExitFatal, "the server's certificate is not trusted (" + w + "); --cacert FILE or --insecure");
    }
    char text[160];
    mbedtls_strerror(rc, text, sizeof text);
    return fail(std::string("TLS handshake failed: ") + text);
  }
  c->tls->handshakeDone = true;
  c->open = true;
  startRequest();
}

void Driver::flushTls(Conn* c) {
  if (c->tls->out.empty()) return;
  WriteReq* w = new WriteReq();
  w->c = c;
  w->gen = UINT64_MAX;  // handshake output: no request waits for it
  w->bytes.swap(c->tls->out);
  queueRaw(w, w->bytes.data(), w->bytes.size());
}

void Driver::startRequest() {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
  parser_.data = this;
  field_.clear();
  value_.clear();
  const char* method = cur_.kind == Kind::ReplyHead ? "HEAD" : cur_.kind == Kind::ReplyGet ? "GET" : "BITS_POST";
  head_ = std::string(method) + " " + target_ + " HTTP/1.1\r\n";
  auto add = [&](const std::string& n, const std::string& v) { head_ += n + ": " + v + "\r\n"; };
  add(std::string(H::kHost), hostHeader_);
  add("User-Agent", kUserAgent);
  add("Accept", "*/*");
  add("Connection", "Keep-Alive");
  uint64_t bodyBytes = 0;
  switch (cur_.kind) {
    case Kind::Ping: add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::Ping)); break;
    case Kind::CreateSession:
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::CreateSession));
      add(std::string(H::kSupportedProtocols), std::string(bitsd::kUploadProtocolGuid));
      break;
    case Kind::Fragment: {
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::Fragment));
      add(std::string(H::kSessionId), job_.sessionId());
      std::string name = o_.file.substr(o_.file.find_last_of('/') + 1);
      add(std::string(H::kContentName), name);
      bodyBytes = cur_.end - cur_.begin;
      if (job_.totalBytes() == 0) {
        add(std::string(H::kContentRange), "bytes */0");
      } else {
        add(std::string(H::kContentRange), "bytes " + std::to_string(cur_.begin) + "-" + std::to_string(cur_.end - 1) + "/" +
                                 std::to_string(job_.totalBytes()));
      }
      break;
    }
    case Kind::CloseSession:
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::CloseSession));
      add(std::string(H::kSessionId), job_.sessionId());
      break;
    case Kind::CancelSession:
      add(std::string(H::kPacketType), bitsd::packetTypeName(bitsd::PacketType::CancelSession));
      add(std::string(H::kSessionId), job_.sessionId());
      break;
    case Kind::ReplyHead: add("Accept-Encoding", "identity"); break;
    case Kind::ReplyGet:
      add("Accept-Encoding", "identity");
      add("Range", "bytes=" + std::to_string(cur_.begin) + "-" + std::to_string(cur_.end - 1));
      break;
  }
  if (!authorization_.empty()) add("Authorization", authorization_);
  if (cur_.kind != Kind::ReplyHead && cur_.kind != Kind::ReplyGet) {
    for (const std::string& h : o_.headers) head_ += h + "\r\n";
    add(std::string(H::kContentLength), std::to_string(bodyBytes));
  }
  head_ += "\r\n";
  bodyNext_ = cur_.begin;
  ++gen_;
  // The head owns its bytes: the answer can arrive, and the next request start on this connection,
  // before libuv has called back for this write.
  WriteReq* w = new WriteReq();
  w->c = conn_;
  w->gen = gen_;
  w->bytes = head_;
  queueWrite(w, w->bytes.data(), w->bytes.size());
}

void onWriteDone(uv_write_t* req, int status) {
  WriteReq* w = static_cast<WriteReq*>(req->data);
  Conn* c = w->c;
  uint64_t gen = w->gen;
  delete w;
  // Only the write of the request in flight moves it on; a late callback of an earlier request's
  // write (answered already) or of a closed connection is ignored.
  if (c->d != nullptr && c->d->gen_ == gen) c->d->bodyWritten(c, status);
}

void Driver::queueWrite(WriteReq* w, char* data, size_t len) {
  if (w->c->tls) {
    // Encrypt into the write's own buffer; the plaintext may be reused at once.
    ConnTls* t = w->c->tls.get();
    size_t done = 0;
    while (done < len) {
      int rc = mbedtls_ssl_write(&t->ssl, reinterpret_cast<const unsigned char*>(data + done), len - done);
      if (rc <= 0) {
        delete w;
        return fail("TLS write failed");
      }
      done += static_cast<size_t>(rc);
    }
    w->bytes.swap(t->out);
    t->out.clear();
    return queueRaw(w, w->bytes.data(), w->bytes.size());
  }
  queueRaw(w, data, len);
}

void Driver::queueRaw(WriteReq* w, char* data, size_t len) {
  w->req.data = w;
  uv_buf_t b = uv_buf_init(data, static_cast<unsigned>(len));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&w->c->tcp), &b, 1, onWriteDone);
  if (rc < 0) {
    delete w;
    fail(std::string("cannot send: ") + uv_strerror(rc));
  }
}

// After the head, and after each body chunk: the next chunk of the fragment, read from the file.
void Driver::bodyWritten(Conn* c, int status) {
  if (c != conn_ || !inFlight_) return;
  if (status < 0) {
    if (answered_) return;  // the server answered before taking the whole body
    return fail(std::string("connection lost while sending: ") + uv_strerror(status));
  }
  if (cur_.kind != Kind::Fragment || answered_ || paused_) return;
  if (bodyNext_ >= cur_.end) {
    bodyDone_ = true;
    return;
  }
  if (chaos_ != nullptr && cur_.end - cur_.begin >= 2) {
    if (bodyNext_ == cur_.begin && !chaosRolled_) {
      chaosRolled_ = true;
      // A broken link: this fragment's connection is cut halfway through its body.
      if (chaos_->cuts < chaos_->maxCuts && chaos_->roll(chaos_->cutChance)) {
        ++chaos_->cuts;
        cutAt_ = cur_.begin + (cur_.end - cur_.begin) / 2;
      }
      // A slow client: it stops after the head for a while.
      if (chaos_->pauses < chaos_->maxPauses && chaos_->roll(chaos_->pauseChance)) {
        ++chaos_->pauses;
        paused_ = true;
        uv_timer_start(&pause_, [](uv_timer_t* t) {
          Driver* d = static_cast<Driver*>(t->data);
          d->paused_ = false;
          if (d->conn_ != nullptr && d->inFlight_) d->bodyWritten(d->conn_, 0);
        }, chaos_->pauseMs, 0);
        return;
      }
    }
    if (cutAt_ != 0 && bodyNext_ >= cutAt_) return fail("connection cut mid-fragment (chaos)");
  }
  uint64_t stop = cutAt_ != 0 ? cutAt_ : cur_.end;
  size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_.size(), stop - bodyNext_));
  ssize_t got = ::pread(fileFd_, chunk_.data(), n, static_cast<off_t>(bodyNext_));
  if (got <= 0) {
    progress_.finish();
    std::fprintf(stderr, "bitsclient: reading %s at byte %llu failed: %s\n", o_.file.c_str(),
                 static_cast<unsigned long long>(bodyNext_), got < 0 ? std::strerror(errno) : "the file is shorter");
    return finish(client::kExitLocal);
  }
  bodyNext_ += static_cast<uint64_t>(got);
  // One body write at a time per request, from chunk_; a request answered before its body was sent
  // closes its connection (complete()), so the buffer is never reused under a live write.
  WriteReq* w = new WriteReq();
  w->c = c;
  w->gen = gen_;
  queueWrite(w, chunk_.data(), static_cast<size_t>(got));
}

void Driver::readData(Conn* c, ssize_t n, const uv_buf_t* buf) {
  if (c != conn_) return;
  if (n == 0) return;
  if (n < 0) {
    if (inFlight_) return fail(n == UV_EOF ? "the server closed the connection" : uv_strerror(static_cast<int>(n)));
    closeConn();  // an idle keep-alive connection went away: reconnect next time
    return;
  }
  if (c->tls) {
    c->tls->in.append(buf->base, static_cast<size_t>(n));
    if (!c->tls->handshakeDone) return handshake(c);
    // Decrypt what there is and parse it; mbedTLS may hold more than one record.
    while (conn_ == c && inFlight_) {
      int rc = mbedtls_ssl_read(&c->tls->ssl, reinterpret_cast<unsigned char*>(plain_.data()), plain_.size());
      if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return;
      if (rc <= 0) return fail(rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ? "the server closed the connection"
                                                                                 : "TLS read failed");
      if (!parsePlain(plain_.data(), static_cast<size_t>(rc))) return;
    }
    return;
  }
  if (!inFlight_) {
    closeConn();  // bytes nobody asked for
    return;
  }
  parsePlain(buf->base, static_cast<size_t>(n));
}

// Feeds answer bytes to llhttp; false once the request is over (answered or failed).
bool Driver::parsePlain(const char* data, size_t len) {
  llhttp_errno_t e = llhttp_execute(&parser_, data, len);
  if (e == HPE_PAUSED) {  // message complete (we pause there)
    Response r = resp_;
    complete(r);
    return false;
  }
  if (e != HPE_OK) {
    fail(std::string("the server's answer is not valid HTTP: ") + llhttp_errno_name(e));
    return false;
  }
  return true;
}

void Driver::header() {
  if (field_.empty()) return;
  std::string v(bitsd::trimOws(value_));
  auto is = [&](std::string_view n) { return bitsd::equalsIgnoreCase(field_, n); };
  uint64_t num = 0;
  if (is(H::kSessionId)) {
    resp_.sessionId = v;
  } else if (is(H::kReceivedContentRange)) {
    resp_.hasReceived = bitsd::parseDecimal(v, &resp_.received);
  } else if (is(H::kErrorCode)) {
    char* end = nullptr;
    unsigned long code = std::strtoul(v.c_str(), &end, 16);
    resp_.hasErrorCode = end != v.c_str() && *end == '\0';
    resp_.errorCode = static_cast<uint32_t>(code);
  } else if (is(H::kErrorContext)) {
    resp_.errorContext = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 16));
  } else if (is(H::kReplyUrl)) {
    resp_.replyUrl = v;
  } else if (is(H::kHostId)) {
    resp_.hostId = v;
  } else if (is(H::kHostIdFallbackTimeout)) {
    resp_.hasFallback = bitsd::parseDecimal(v, &resp_.fallbackSeconds);
  } else if (is("Retry-After")) {
    if (bitsd::parseDecimal(v, &num)) resp_.retryAfterSeconds = num;
  } else if (is(H::kContentLength)) {
    resp_.hasContentLength = bitsd::parseDecimal(v, &resp_.contentLength);
  } else if (is(H::kContentRange)) {
    // bytes a-b/total
    bitsd::ByteRange br;
    if (bitsd::parseContentRange(v, &br)) {
      resp_.hasContentRange = true;
      resp_.rangeBegin = br.begin;
      resp_.rangeEnd = br.end;
      resp_.rangeTotal = br.total;
    }
  } else if (is("Connection")) {
    if (bitsd::equalsIgnoreCase(v, "close")) closeAfter_ = true;
  }
  field_.clear();
  value_.clear();
}

int Driver::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  Driver* d = static_cast<Driver*>(p->data);
  if (!d->value_.empty() || d->field_.size() + len > 8192) d->header();
  if (d->field_.size() + len > 8192) return -1;
  d->field_.append(at, len);
  return 0;
}

int Driver::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  Driver* d = static_cast<Driver*>(p->data);
  if (d->value_.size() + len > 8192) return -1;
  d->value_.append(at, len);
  return 0;
}

int Driver::onHeadersComplete(llhttp_t* p) {
  Driver* d = static_cast<Driver*>(p->data);
  d->header();
  d->resp_.status = p->status_code;
  d->answered_ = true;
  // A HEAD answer has no body whatever its Content-Length says.
  return d->cur_.kind == Kind::ReplyHead ? 1 : 0;
}

int Driver::onBody(llhttp_t* p, const char* at, size_t len) {
  Driver* d = static_cast<Driver*>(p->data);
  if (d->cur_.kind != Kind::ReplyGet || d->resp_.status != 206 || !d->resp_.hasContentRange) return 0;
  if (d->replyFd_ < 0) {
    d->replyFd_ = ::open(d->o_.replyOut.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (d->replyFd_ < 0) {
      std::fprintf(stderr, "bitsclient: cannot write the reply to %s: %s\n", d->o_.replyOut.c_str(), std::strerror(errno));
      d->finish(client::kExitLocal);
      return -1;
    }
  }
  uint64_t at0 = d->resp_.rangeBegin + d->replyBody_;
  if (::pwrite(d->replyFd_, at, len, static_cast<off_t>(at0)) != static_cast<ssize_t>(len)) {
    std::fprintf(stderr, "bitsclient: writing the reply to %s failed: %s\n", d->o_.replyOut.c_str(), std::strerror(errno));
    d->finish(client::kExitLocal);
    return -1;
  }
  d->replyBody_ += len;
  return 0;
}

int Driver::onMessageComplete(llhttp_t* p) {
  Driver* d = static_cast<Driver*>(p->data);
  if (d->cur_.kind == Kind::ReplyGet) {
    if (d->replyBody_ != d->resp_.rangeEnd - d->resp_.rangeBegin) d->resp_.hasContentRange = false;
    if (d->replyFd_ >= 0) {
      ::fsync(d->replyFd_);
    }
  }
  return HPE_PAUSED;
}


// --- bench --------------------------------------------------------------------------------------------

const char* const kBenchUsage =
    "usage: bitsclient bench URL [options]      N uploads at once over N connections\n"
    "  --sessions N            concurrent uploads (default 4)\n"
    "  --size BYTES            bytes per upload (default 16M; K/M/G suffixes)\n"
    "  --fragment-size BYTES   as for upload (default 1M)\n"
    "  --chaos                 cut connections mid-fragment and pause mid-request at random\n"
    "                          (= --cut-chance 0.05 --pause-chance 0.05 --pause-ms 300)\n"
    "  --cut-chance P          chance per fragment that its connection is cut halfway (0..1)\n"
    "  --pause-chance P        chance per fragment that the client stalls after its head\n"
    "  --pause-ms MS           length of such a stall (default 300)\n"
    "  --max-faults N          at most N cuts and N pauses in the whole run (default 50)\n"
    "  --kill-pid PID          SIGKILL the server at random moments...\n"
    "  --restart-cmd CMD       ...and start it again with CMD (run as sh -c 'exec CMD')\n"
    "  --kills N               how many kills (default 3)\n"
    "  --kill-every-ms MIN:MAX interval between kills (default 300:1500)\n"
    "  --verify-root DIR       compare every upload with DIR/<name> at the end (the server's root)\n"
    "  --seed N                random seed (printed; default from the clock)\n"
    "  --timeout-s S           give up after S seconds (default 600)\n"
    "  plus -H, --retries, --retry-delay-ms, --retry-max-delay-ms, --restarts, --timeout-ms\n"
    "prints key=value figures (or one JSON object with --json); exit 0 when every upload finished\n"
    "(and verified), 1 otherwise\n";

struct BenchJob {
  Options o;
  std::unique_ptr<Job> job;
  std::unique_ptr<Driver> driver;
  bool done = false;
  int code = -1;
};

struct Bench {
  uv_loop_t* loop = nullptr;
  std::vector<std::unique_ptr<BenchJob>> jobs;
  size_t finished = 0;
  Chaos chaos;
  BenchStats stats;
  uv_timer_t killTimer, deadline;
  pid_t serverPid = 0;
  std::string restartCmd;
  uint32_t kills = 0, maxKills = 3;
  uint64_t killMinMs = 300, killMaxMs = 1500;
  bool timedOut = false;
  bool verbose = false;
};

void scheduleKill(Bench* b);

void onKillTimer(uv_timer_t* t) {
  Bench* b = static_cast<Bench*>(t->data);
  if (b->finished == b->jobs.size() || b->kills >= b->maxKills) return;
  ++b->kills;
  ::kill(b->serverPid, SIGKILL);
  ::waitpid(b->serverPid, nullptr, 0);  // reaps it if it is our child (a restart); else ECHILD at once
  uv_process_t* proc = new uv_process_t();
  std::string shellCmd = "exec " + b->restartCmd;
  char sh[] = "/bin/sh", dashC[] = "-c";
  char* args[] = {sh, dashC, shellCmd.data(), nullptr};
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = b->verbose ? UV_INHERIT_FD : UV_IGNORE;
  stdio[2].data.fd = 2;
  uv_process_options_t po;
  std::memset(&po, 0, sizeof po);
  po.file = "/bin/sh";
  po.args = args;
  po.stdio = stdio;
  po.stdio_count = 3;
  po.flags = UV_PROCESS_DETACHED;
  int rc = uv_spawn(b->loop, proc, &po);
  pid_t old = b->serverPid;
  if (rc < 0) {
    std::fprintf(stderr, "bitsclient bench: cannot run the restart command: %s\n", uv_strerror(rc));
    delete proc;
  } else {
    b->serverPid = proc->pid;
    uv_unref(reinterpret_cast<uv_handle_t*>(proc));
    uv_close(reinterpret_cast<uv_handle_t*>(proc), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
  }
  if (b->verbose) std::fprintf(stderr, "bench: killed server pid %d, restarted as pid %d\n", old, b->serverPid);
  scheduleKill(b);
}

void scheduleKill(Bench* b) {
  if (b->serverPid <= 0 || b->kills >= b->maxKills) return;
  uint64_t ms = std::uniform_int_distribution<uint64_t>(b->killMinMs, b->killMaxMs)(b->chaos.rng);
  uv_timer_start(&b->killTimer, onKillTimer, ms, 0);
}

void benchJobDone(Bench* b) {
  if (++b->finished < b->jobs.size()) return;
  uv_timer_stop(&b->killTimer);
  uv_timer_stop(&b->deadline);
  uv_close(reinterpret_cast<uv_handle_t*>(&b->killTimer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&b->deadline), nullptr);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int runBench(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) == "--help") {
    std::fputs(kBenchUsage, argc < 3 ? stderr : stdout);
    return argc < 3 ? client::kExitUsage : 0;
  }
  Options base;
  base.command = "bench";
  base.url = argv[2];
  base.quiet = true;
  bitsd::HttpUrl u;
  bool tls = false;
  std::string urlStorage;
  if (!parseUrl(base.url, &u, &tls, &urlStorage)) usageError("cannot use URL '" + base.url + "' (only http(s)://host[:port]/path)");
  uint64_t sessions = 4, size = 16 * 1024 * 1024, seed = 0, timeoutS = 600, maxFaults = 50;
  std::string verifyRoot;
  Bench b;
  b.chaos.pauseMs = 300;
  bool jsonOut = false;
  std::vector<char*> rest = {argv[0], argv[1]};
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usageError(a + " needs a value");
      return argv[++i];
    };
    auto number = [&](uint64_t* out) {
      std::string v = value();
      uint64_t mult = 1;
      if (!v.empty() && (v.back() == 'G' || v.back() == 'g')) {
        mult = 1024ull * 1024 * 1024;
        v.pop_back();
      }
      if (!parseSize(v, out) || *out > UINT64_MAX / mult) usageError("invalid value '" + v + "' for " + a);
      *out *= mult;
    };
    auto chance = [&](double* out) {
      std::string v = value();
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || d < 0 || d > 1) usageError(a + " must be a number 0..1");
      *out = d;
    };
    if (a == "--sessions") {
      number(&sessions);
      if (sessions < 1 || sessions > 10000) usageError("--sessions must be 1..10000");
    } else if (a == "--size") {
      number(&size);
    } else if (a == "--chaos") {
      b.chaos.cutChance = 0.05;
      b.chaos.pauseChance = 0.05;
    } else if (a == "--cut-chance") {
      chance(&b.chaos.cutChance);
    } else if (a == "--pause-chance") {
      chance(&b.chaos.pauseChance);
    } else if (a == "--pause-ms") {
      number(&b.chaos.pauseMs);
    } else if (a == "--max-faults") {
      number(&maxFaults);
    } else if (a == "--kill-pid") {
      uint64_t pid = 0;
      number(&pid);
      b.serverPid = static_cast<pid_t>(pid);
    } else if (a == "--restart-cmd") {
      b.restartCmd = value();
    } else if (a == "--kills") {
      uint64_t k = 0;
      number(&k);
      b.maxKills = static_cast<uint32_t>(std::min<uint64_t>(k, 1000));
    } else if (a == "--kill-every-ms") {
      std::string v = value();
      size_t colon = v.find(':');
      if (colon == std::string::npos || !bitsd::parseDecimal(v.substr(0, colon), &b.killMinMs) ||
          !bitsd::parseDecimal(v.substr(colon + 1), &b.killMaxMs) || b.killMinMs > b.killMaxMs) {
        usageError("--kill-every-ms must be MIN:MAX milliseconds");
      }
    } else if (a == "--verify-root") {
      verifyRoot = value();
    } else if (a == "--seed") {
      number(&seed);
    } else if (a == "--timeout-s") {
      number(&timeoutS);
    } else if (a == "--json") {
      jsonOut = true;
    } else if (a == "--verbose") {
      b.verbose = true;
    } else {
      rest.push_back(argv[i]);  // a common option (-H, --retries, ...), or an error there
      bool flag = a == "--json" || a == "--quiet" || a == "--insecure" || a == "-k";
      if (a[0] == '-' && !flag && i + 1 < argc) rest.push_back(argv[++i]);
    }
  }
  if ((b.serverPid > 0) != !b.restartCmd.empty()) usageError("--kill-pid and --restart-cmd go together");
  // Bench defaults: retry briskly, the server is expected back within seconds.
  base.job.retry.firstDelayMs = 100;
  base.job.retry.maxDelayMs = 2000;
  base.job.retry.maxFailures = 60;
  base.job.maxRestarts = 10;
  parseOptions(static_cast<int>(rest.size()), rest.data(), 2, &base);
  base.json = false;
  base.quiet = true;
  if (base.job.wantReply) usageError("--reply-out does not apply to bench");
  b.chaos.maxCuts = b.chaos.maxPauses = static_cast<uint32_t>(std::min<uint64_t>(maxFaults, 1000000));
  if (seed == 0) seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) % 1000000007;
  b.chaos.rng.seed(seed);

  // The data: one temporary file of random bytes, uploaded by every session.
  const char* tmpdir = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmpdir != nullptr ? tmpdir : "/tmp") + "/bitsclient-bench-XXXXXX";
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);  // not inherited by a restarted server
  if (fd < 0) usageError("cannot create a temporary file in " + tmpl + ": " + std::strerror(errno));
  ::unlink(tmpl.c_str());
  {
    std::vector<char> buf(1024 * 1024);
    std::mt19937_64 data(seed);
    uint64_t left = size;
    while (left > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      for (size_t i = 0; i + 8 <= buf.size(); i += 8) {
        uint64_t x = data();
        std::memcpy(buf.data() + i, &x, 8);
      }
      if (::write(fd, buf.data(), n) != static_cast<ssize_t>(n)) {
        std::fprintf(stderr, "bitsclient bench: cannot write the test data: %s\n", std::strerror(errno));
        return client::kExitLocal;
      }
      left -= n;
    }
  }

  b.loop = uv_default_loop();
  uv_timer_init(b.loop, &b.killTimer);
  uv_timer_init(b.loop, &b.deadline);
  b.killTimer.data = b.deadline.data = &b;
  std::string tag = std::to_string(::getpid()) + "-" + std::to_string(seed % 100000);
  for (uint64_t i = 0; i < sessions; ++i) {
    auto j = std::make_unique<BenchJob>();
    j->o = base;
    std::string name = "bench-" + tag + "-" + std::to_string(i) + ".bin";
    j->o.url = base.url + (base.url.back() == '/' ? "" : "/") + name;
    j->o.file = name;  // Content-Name only; the data comes from the shared descriptor
    j->o.fileBytes = size;
    j->o.job.fileBytes = size;
    j->job = std::make_unique<Job>(j->o.job);
    j->driver = std::make_unique<Driver>(b.loop, j->o, *j->job, fd, false);
    j->driver->chaos_ = &b.chaos;
    j->driver->stats_ = &b.stats;
    BenchJob* raw = j.get();
    j->driver->onFinish_ = [&b, raw](Driver& d) {
      raw->done = true;
      raw->code = d.exitCode_;
      benchJobDone(&b);
    };
    b.jobs.push_back(std::move(j));
  }
  uv_timer_start(&b.deadline, [](uv_timer_t* t) {
    Bench* bb = static_cast<Bench*>(t->data);
    bb->timedOut = true;
    for (auto& j : bb->jobs) {
      if (!j->done) j->driver->finish(client::kExitRetries);
    }
  }, timeoutS * 1000, 0);
  scheduleKill(&b);
  uint64_t t0 = uv_hrtime();
  for (auto& j : b.jobs) j->driver->start();
  uv_run(b.loop, UV_RUN_DEFAULT);
  double secs = static_cast<double>(uv_hrtime() - t0) / 1e9;

  // Verification against the server's root (when it is on this machine).
  uint64_t failed = 0, verified = 0, mismatched = 0;
  std::vector<char> want(1024 * 1024), got(1024 * 1024);
  for (auto& j : b.jobs) {
    if (j->code != 0) {
      ++failed;
      if (!j->job->failure().empty()) std::fprintf(stderr, "bitsclient bench: %s: %s\n", j->o.url.c_str(), j->job->failure().c_str());
      continue;
    }
    if (verifyRoot.empty()) continue;
    std::string path = verifyRoot + "/" + j->o.url.substr(j->o.url.rfind('/') + 1);
    int vf = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    bool same = vf >= 0;
    uint64_t off = 0;
    while (same && off < size) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(want.size(), size - off));
      same = ::pread(fd, want.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n) &&
             ::pread(vf, got.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n) &&
             std::memcmp(want.data(), got.data(), n) == 0;
      off += n;
    }
    struct stat vst;
    if (same && (::fstat(vf, &vst) != 0 || static_cast<uint64_t>(vst.st_size) != size)) same = false;
    if (vf >= 0) ::close(vf);
    if (same) {
      ++verified;
    } else {
      ++mismatched;
      std::fprintf(stderr, "bitsclient bench: %s differs from what was sent (or is missing)\n", path.c_str());
    }
  }
  ::close(fd);
  double mib = static_cast<double>(size) * static_cast<double>(sessions - failed) / (1024.0 * 1024.0);
  std::vector<std::pair<std::string, std::string>> kv;
  auto add = [&](const char* k, double v, int decimals = 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    kv.emplace_back(k, buf);
  };
  add("sessions", static_cast<double>(sessions));
  add("bytes_per_session", static_cast<double>(size));
  add("fragment_bytes", static_cast<double>(client::FragmentSizer(base.job.fragmentBytes).bytes()));
  add("seconds", secs, 3);
  add("throughput_mib_s", secs > 0 ? mib / secs : 0, 1);
  add("fragments", static_cast<double>(b.stats.fragmentMs.size()));
  add("fragment_p50_ms", percentile(b.stats.fragmentMs, 0.50), 2);
  add("fragment_p90_ms", percentile(b.stats.fragmentMs, 0.90), 2);
  add("fragment_p99_ms", percentile(b.stats.fragmentMs, 0.99), 2);
  add("fragment_max_ms", percentile(b.stats.fragmentMs, 1.0), 2);
  add("retries", static_cast<double>(b.stats.retries));
  add("restarts", static_cast<double>(b.stats.restarts));
  add("resyncs", static_cast<double>(b.stats.resyncs));
  add("cuts", b.chaos.cuts);
  add("pauses", b.chaos.pauses);
  add("kills", b.kills);
  if (b.serverPid > 0) add("server_pid", b.serverPid);  // the server now running (a restart, after kills)
  add("failed", static_cast<double>(failed));
  if (!verifyRoot.empty()) {
    add("verified", static_cast<double>(verified));
    add("mismatched", static_cast<double>(mismatched));
  }
  add("seed", static_cast<double>(seed));
  if (jsonOut) {
    std::string line = "{";
    for (size_t i = 0; i < kv.size(); ++i) line += (i ? ",\"" : "\"") + kv[i].first + "\":" + kv[i].second;
    std::printf("%s}\n", line.c_str());
  } else {
    for (const auto& [k, v] : kv) std::printf("%s=%s\n", k.c_str(), v.c_str());
  }
  if (b.timedOut) std::fprintf(stderr, "bitsclient bench: gave up after %llu s\n", static_cast<unsigned long long>(timeoutS));
  return failed == 0 && mismatched == 0 && !b.timedOut ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 3 && !(argc == 2 && std::string(argv[1]) == "bench")) {
    std::fputs(kUsage, stderr);
    return client::kExitUsage;
  }
  ::signal(SIGPIPE, SIG_IGN);
  if (std::string(argv[1]) == "bench") return runBench(argc, argv);
  Options o;
  o.command = argv[1];
  int first = 0;
  if (o.command == "upload") {
    if (argc < 4) usageError("upload needs FILE and URL");
    o.file = argv[2];
    o.url = argv[3];
    first = 4;
  } else if (o.command == "resume" || o.command == "cancel") {
    readState(argv[2], &o);
    first = 3;
  } else {
    usageError("unknown command '" + o.command + "' (upload, resume or cancel)");
  }
  parseOptions(argc, argv, first, &o);
  if (!o.jsonForced && !::isatty(1)) o.json = true;
  bitsd::HttpUrl u;
  bool tls = false;
  std::string urlStorage;
  if (!parseUrl(o.url, &u, &tls, &urlStorage)) usageError("cannot use URL '" + o.url + "' (only http(s)://host[:port]/path)");

  int fd = ::open(o.file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && o.command != "cancel") usageError("cannot read " + o.file + ": " + std::strerror(errno));
  struct stat st;
  if (fd >= 0 && ::fstat(fd, &st) == 0) {
    if (!S_ISREG(st.st_mode)) usageError(o.file + " is not a regular file");
    if (o.command == "resume" && static_cast<uint64_t>(st.st_size) != o.fileBytes) {
      usageError(o.file + " changed size since the job started (" + std::to_string(o.fileBytes) + " -> " +
                 std::to_string(st.st_size) + " bytes); cancel the job with bitsclient cancel " + o.statePath);
    }
    o.fileBytes = static_cast<uint64_t>(st.st_size);
  }
  if (o.command == "upload") {
    if (o.statePath.empty()) o.statePath = o.file + ".bitsjob";
    struct stat sst;
    if (::stat(o.statePath.c_str(), &sst) == 0) {
      usageError(o.statePath + " exists: a job for this file is unfinished; bitsclient resume " + o.statePath +
                 " carries it on, bitsclient cancel " + o.statePath + " drops it");
    }
  }
  o.job.fileBytes = o.fileBytes;
  Job job(o.job);
  if (o.command != "upload") {
    if (!o.sessionId.empty()) job.resume(o.sessionId, o.offset, o.hostId, o.fallbackSeconds);
    if (o.command == "cancel") {
      if (o.sessionId.empty()) {  // no session was ever created: nothing to tell the server
        ::unlink(o.statePath.c_str());
        std::fprintf(stderr, "bitsclient: the job had no session yet; forgotten\n");
        return client::kExitOk;
      }
      job.cancel();
    }
  }
  uv_loop_t* loop = uv_default_loop();
  Driver d(loop, o, job, fd);
  int code = d.run();
  uv_loop_close(loop);
  if (fd >= 0) ::close(fd);
  return code;
}
