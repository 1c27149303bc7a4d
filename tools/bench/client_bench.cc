// `bitsclient bench` (client_bench.h): the concurrent uploads, the faults, the figures.
#include "tools/bench/client_bench.h"

#include <fcntl.h>
#include <signal.h>
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
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/content_range.h"
#include "tools/client/driver.h"
#include "tools/client/job.h"
#include "tools/client/options.h"

namespace bitsd::client {
namespace {

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

}  // namespace

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

}  // namespace bitsd::client
