// bitsclient's driver: runs one upload job (tools/client/job.h, no I/O) on a libuv loop. One
// keep-alive connection (a platform Stream: plain TCP, or TLS for https), one request in flight, core's
// ResponseParser (the wire layer) parsing the answers, the fragment bodies read from the file, the
// reply downloaded into a file, the
// state file rewritten after each event that moves the job. `bitsclient bench` runs many drivers on
// one loop, each with the faults (Chaos) and figures (BenchStats) below.
#pragma once

#include <mbedtls/base64.h>
#include <signal.h>
#include <uv.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/response_parser.h"
#include "tools/client/job.h"
#include "tools/client/options.h"
#include "tools/client/progress.h"
#include "tools/client/state_file.h"

namespace bitsd::platform {
class TlsContext;
}

namespace bitsd::client {

constexpr size_t kChunkBytes = 256 * 1024;

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
  }

  ~Driver();
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
  void queueWrite(Conn* c, char* data, size_t len);
  bool parsePlain(const char* data, size_t len);
  bool setupTls();
  void streamEvent(Conn* c, int event, const char* why);
  void fatal(int code, const std::string& why);
  void readData(Conn* c, ssize_t n, const uv_buf_t* buf);
  void complete(Response r);
  void fail(const std::string& why);
  void finish(int code);
  void closeConn();
  void header(std::string_view name, std::string_view value);
  bool takeBody(std::span<const char> b);
  void bodyComplete();

  static void onSignal(uv_signal_t* s, int signum);
  static void onResize(uv_signal_t* s, int signum);
  static void onTick(uv_timer_t* t);

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
  std::shared_ptr<platform::TlsContext> tls_;  // made on the first https connection
  std::string authorization_;  // "Basic ..." when -u was given
  bool paused_ = false;
  bool chaosRolled_ = false;
  uint64_t cutAt_ = 0;  // chaos: the body offset where this fragment's connection is cut (0: none)
  ResponseParser parser_;  // core's wire layer (core/response_parser.h)
  Conn* conn_ = nullptr;
  Request cur_;
  Response resp_;
  std::string head_;
  // The heads of the last two requests: the answer can arrive, and the next request start on this
  // connection, before libuv has called back for the last head's write.
  std::string sent_[2];
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

}  // namespace bitsd::client
