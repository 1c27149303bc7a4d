// bitsd: the BITS upload server. Parses settings, prepares directories, and runs one libuv loop.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "core/log.h"
#include "core/upload_engine.h"
#include "platform/cli.h"
#include "platform/system.h"
#include "platform/uv_server.h"
#include "platform/uv_storage.h"

namespace {

struct Signals {
  uv_signal_t term;
  uv_signal_t intr;
  bitsd::platform::UvServer* server;
};

void onSignal(uv_signal_t* h, int signum) {
  auto* sig = static_cast<Signals*>(h->data);
  bitsd::logf(bitsd::LogLevel::Info, "signal %d: shutting down", signum);
  sig->server->shutdown();
  uv_close(reinterpret_cast<uv_handle_t*>(&sig->term), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig->intr), nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bitsd;
  Settings settings;
  std::string error;
  switch (platform::parseCommandLine(argc, argv, &settings, &error)) {
    case platform::CliOutcome::Help:
      std::fputs(platform::usageText(), stdout);
      return 0;
    case platform::CliOutcome::Error:
      std::fprintf(stderr, "bitsd: %s\n", error.c_str());
      return 2;
    case platform::CliOutcome::Run:
      break;
  }
  platform::installLogging(settings.logLevel);
  std::signal(SIGPIPE, SIG_IGN);

  std::string rootReal;
  if (!platform::prepareDirectories(settings, &rootReal, &error)) {
    std::fprintf(stderr, "bitsd: %s\n", error.c_str());
    return 2;
  }
  platform::DrbgRandom random;
  if (!random.init(&error)) {
    std::fprintf(stderr, "bitsd: %s\n", error.c_str());
    return 1;
  }

  uv_loop_t* loop = uv_default_loop();
  platform::UvClock clock;
  platform::UvStorage storage(loop, rootReal);
  UploadEngine engine(storage, clock, random);
  Settings engineSettings = settings;
  engineSettings.root = rootReal;
  Status st = engine.init(engineSettings);
  if (!st.isOk()) {
    std::fprintf(stderr, "bitsd: %s\n", st.message());
    return 2;
  }
  platform::UvServer server(loop, settings, engine);
  std::string url;
  if (!server.start(&url, &error)) {
    std::fprintf(stderr, "bitsd: %s\n", error.c_str());
    return 2;
  }

  Signals sig;
  sig.server = &server;
  uv_signal_init(loop, &sig.term);
  uv_signal_init(loop, &sig.intr);
  sig.term.data = sig.intr.data = &sig;
  uv_signal_start(&sig.term, onSignal, SIGTERM);
  uv_signal_start(&sig.intr, onSignal, SIGINT);

  logf(LogLevel::Info, "root %s, state %s, fdatasync %s", rootReal.c_str(), settings.state.c_str(),
       settings.fdatasync ? "on" : "off");
  std::printf("bitsd listening on %s\n", url.c_str());
  std::fflush(stdout);

  uv_run(loop, UV_RUN_DEFAULT);
  const auto& es = engine.stats();
  logf(LogLevel::Info, "stopped: %llu sessions, %llu commits, %llu bytes written",
       static_cast<unsigned long long>(es.sessionsCreated), static_cast<unsigned long long>(es.commits),
       static_cast<unsigned long long>(es.bytesWritten));
  uv_loop_close(loop);
  return 0;
}
