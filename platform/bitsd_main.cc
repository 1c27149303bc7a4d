// bitsd: the BITS upload server. Parses settings, prepares directories, and runs one libuv loop.
#include <uv.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/access_log.h"
#include "core/log.h"
#include "core/state_files.h"
#include "platform/access_log_writer.h"
#include "core/upload_engine.h"
#include "platform/admin_server.h"
#include "platform/cli.h"
#include "platform/recovery.h"
#include "platform/sha256.h"
#include "platform/system.h"
#include "platform/tls.h"
#include "platform/uv_farm.h"
#include "platform/uv_notifier.h"
#include "platform/uv_server.h"
#include "platform/users.h"
#include "platform/uv_storage.h"

namespace {

struct Signals {
  uv_signal_t term;
  uv_signal_t intr;
  uv_signal_t hup;
  uv_signal_t usr1;
  bitsd::platform::AccessLogWriter* accessLog = nullptr;
  bitsd::platform::UvServer* server;
  bitsd::platform::AdminServer* admin = nullptr;  // when admin-listen is set
  bitsd::UploadEngine* engine = nullptr;
  bitsd::platform::UvAuthenticator* users = nullptr;  // when users-file is set
  bitsd::platform::UvFarm* farm = nullptr;            // farm mode (farm-etcd set)
  bool tls = false;
  // SIGHUP parses the same command line again (board defaults, --config FILE, flags).
  int argc = 0;
  char** argv = nullptr;
  bitsd::Settings running;  // as parsed, before paths were resolved
};

// Start-up fails one way, whatever failed: one line on stderr naming the problem ("bitsd: ..."), and
// exit code 2 (1 when the host failed rather than the configuration: the random generator).
int refuseToStart(const bitsd::Outcome& o, int exitCode = 2) {
  std::fprintf(stderr, "bitsd: %s\n", o.message().c_str());
  return exitCode;
}

// The configuration parsers (command line, settings, locations) report a bool and the one line that
// names the problem, as parsers do; as an Outcome.
bitsd::Outcome configError(const std::string& line) { return bitsd::Outcome::fail(bitsd::Code::InvalidArgument, line); }

std::string joined(const std::vector<const char*>& keys) {
  std::string out;
  for (const char* k : keys) out += std::string(out.empty() ? "" : ", ") + k;
  return out;
}

// SIGHUP: read the settings again, the same way as at start-up, and apply those that can change
// live (core/settings.cc lists them); load the TLS certificate and key again (live connections keep
// theirs) and the users file. Everything that can fail is done before anything changes, so a broken
// file, certificate or users file changes nothing. One log line says what happened.
void reload(Signals* sig) {
  using namespace bitsd;
  std::string error;
  Settings next;
  platform::CliOutcome outcome = platform::parseCommandLine(sig->argc, sig->argv, &next, &error);
  if (outcome != platform::CliOutcome::Run) {
    logf(LogLevel::Error, "SIGHUP: settings not reloaded, nothing changed: %s", error.c_str());
    return;
  }
  SettingsDiff diff = diffSettings(sig->running, next);
  Settings applied = sig->running;
  copyLiveSettings(next, &applied);
  std::vector<Location> locations;
  bool newLocations = std::find(diff.live.begin(), diff.live.end(), std::string_view("locations")) != diff.live.end();
  if (newLocations) {
    Outcome o = parseLocations(applied.locations, &locations, &error) ? Outcome::ok() : configError(error);
    if (o.isOk()) o = platform::prepareLocationDirs(applied, &locations);
    if (!o.isOk()) {
      logf(LogLevel::Error, "SIGHUP: locations not applied, nothing changed: %s", o.message().c_str());
      return;
    }
  }
  std::shared_ptr<platform::TlsContext> tls;
  if (sig->tls) {
    tls = platform::TlsContext::load(applied.tlsCert, applied.tlsKey, &error, applied.tlsRecordBytes);
    if (!tls) {
      logf(LogLevel::Error, "SIGHUP: TLS certificate not reloaded, nothing changed: %s", error.c_str());
      return;
    }
  }
  if (sig->users != nullptr && !sig->users->reload(&error)) {
    logf(LogLevel::Error, "SIGHUP: users file not reloaded, nothing changed: %s", error.c_str());
    return;
  }
  // Nothing below can fail.
  sig->engine->applyLive(applied);
  if (newLocations) sig->engine->setLocations(std::move(locations));
  sig->server->applyLive(applied, std::move(tls));
  sig->running = applied;
  std::string line = "SIGHUP: ";
  if (sig->tls) line += "TLS certificate reloaded; ";
  if (sig->users != nullptr) line += "users file reloaded; ";
  if (diff.live.empty() && diff.restart.empty()) line += sig->tls || sig->users != nullptr ? "no setting changed" : "no change";
  if (!diff.live.empty()) line += "applied " + joined(diff.live);
  if (!diff.live.empty() && !diff.restart.empty()) line += "; ";
  if (!diff.restart.empty()) line += "needs a restart: " + joined(diff.restart);
  logf(diff.restart.empty() ? LogLevel::Info : LogLevel::Warn, "%s", line.c_str());
  platform::installLogging(applied.logLevel);  // after the line: a quieter level still confirms itself
}

void onHangup(uv_signal_t* h, int) {
  auto* sig = static_cast<Signals*>(h->data);
  bitsd::platform::notifyReloading();
  reload(sig);
  bitsd::platform::notifyServiceManager("READY=1");
}

// SIGUSR1: reopen the access log (logrotate has moved it; see README "Logs").
void onUser1(uv_signal_t* h, int) {
  auto* sig = static_cast<Signals*>(h->data);
  if (sig->accessLog != nullptr) sig->accessLog->reopen();
}

void onSignal(uv_signal_t* h, int signum) {
  auto* sig = static_cast<Signals*>(h->data);
  bitsd::logf(bitsd::LogLevel::Info, "signal %d: shutting down", signum);
  bitsd::platform::notifyServiceManager("STOPPING=1");
  if (sig->users != nullptr) sig->users->stopWaiting();  // no throttle delay outlasts the grace period
  sig->server->shutdown();
  if (sig->admin != nullptr) sig->admin->shutdown();
  // The farm's lease is revoked: the other nodes see this one gone at once, not after its TTL.
  if (sig->farm != nullptr) sig->farm->stop([](void*) {}, nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig->term), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig->intr), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig->hup), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig->usr1), nullptr);
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
    case platform::CliOutcome::Version:
      std::fputs(platform::versionText("bitsd").c_str(), stdout);
      return 0;
    case platform::CliOutcome::Error:
      return refuseToStart(configError(error));
    case platform::CliOutcome::Run:
      break;
  }
  platform::installLogging(settings.logLevel);
  std::signal(SIGPIPE, SIG_IGN);

  // Every connection and open upload is a descriptor: a default soft limit of 1024 would make
  // accepts fail long before max-connections.
  uint64_t fdNeeded = platform::fileDescriptorsNeeded(settings);
  uint64_t fdLimit = platform::raiseFileLimit(fdNeeded);
  if (fdLimit < fdNeeded) {
    logf(LogLevel::Warn,
         "file descriptor limit is %llu but max-connections and max-open-files need %llu: raise the hard "
         "limit (ulimit -Hn, LimitNOFILE=) or lower those settings",
         static_cast<unsigned long long>(fdLimit), static_cast<unsigned long long>(fdNeeded));
  }

  // Bound before any directory is created: a bad or busy address leaves nothing behind.
  int listenFd = -1;
  if (Outcome o = platform::bindListenSocket(settings.listen, &listenFd); !o.isOk()) return refuseToStart(o);

  std::string rootReal;
  std::vector<std::string> createdDirs;  // logged once the start has gone through (a refusal is one line)
  if (Outcome o = platform::prepareDirectories(settings, &rootReal, &createdDirs); !o.isOk()) return refuseToStart(o);
  platform::DrbgRandom random;
  if (Outcome o = random.init(); !o.isOk()) return refuseToStart(o, 1);

  // libuv sizes its thread pool from this when the first work is queued (recovery, below).
  const uint32_t threads = effectiveThreadPool(settings);
  ::setenv("UV_THREADPOOL_SIZE", std::to_string(threads).c_str(), 1);
  uv_loop_t* loop = uv_default_loop();
  platform::UvClock clock;
  platform::UploadSha256 sha;
  platform::UvStorage storage(loop, sha);
  // Where each Ack waits for fdatasync anyway, start the writeback of the data while the fragment
  // still arrives (writeback-bytes units, as RocksDB's bytes_per_sync), so fdatasync has little left.
  if (settings.fdatasync) storage.setWritebackBytes(settings.writebackBytes);
  platform::UvFlushScheduler scheduler(loop);
  // Declared before the engine so it outlives the session table it backs.
  platform::HugePageAllocator bulk;
  Journal journal(storage, scheduler, random);
  scheduler.setJournal(&journal);
  journal.setSyncEnabled(settings.fdatasync);
  storage.setSyncDirs(settings.fdatasync);
  UploadEngine engine(storage, clock, random, sha, journal);
  platform::UvNotifier notifier(loop, settings.maxNotifications, storage);
  engine.setNotifier(&notifier);
  // Before recovery: restored sessions get their owners from the journal by user name.
  platform::UvAuthenticator authenticator;
  if (!settings.usersFile.empty()) {
    std::vector<Location> locations;
    // Password checks not answered from memory may hold at most half the request slots, so that
    // a flood of wrong passwords always leaves slots to verified clients.
    authenticator.setMaxUnverified(settings.requestSlots / 2);
    Outcome o = authenticator.load(loop, settings.usersFile);
    if (o.isOk() && !parseLocations(settings.locations, &locations, &error)) o = configError(error);
    if (o.isOk()) o = platform::prepareLocationDirs(settings, &locations);
    if (!o.isOk()) return refuseToStart(o);
    engine.setAuthenticator(&authenticator, std::move(locations));
  }
  Settings engineSettings = settings;
  engineSettings.root = rootReal;
  Status st = engine.init(engineSettings, &bulk);
  if (st.isOk()) {
    st = journal.init(settings.journalBufferBytes, settings.requestSlots + 64, settings.journalMaxBytes,
                      settings.state + "/journal");
  }
  if (!st.isOk()) return refuseToStart(st);
  platform::UvServer server(loop, settings, engine);
  server.setJournal(&journal, &scheduler);
  server.setNotifier(&notifier);
  server.setListenSocket(listenFd);
  platform::AccessLogWriter accessLog(loop);
  if (!settings.accessLog.empty()) {
    if (Outcome o = accessLog.open(settings.accessLog); !o.isOk()) return refuseToStart(o);
    server.setAccessLog(&accessLog, settings.accessLogFormat == "json" ? AccessLogFormat::Json : AccessLogFormat::Text);
  }
  std::string url;
  if (Outcome o = server.start(&url); !o.isOk()) return refuseToStart(o);

  // Farm mode (docs/FARMS.md): the shared record in etcd. The node starts serving at once; until
  // etcd grants its lease it answers Ping and local packets, and 503 to what needs the farm.
  std::unique_ptr<platform::UvFarm> farm;
  if (!settings.farmEtcd.empty()) {
    platform::UvFarmConfig fc;
    fc.endpoints = farmEtcdEndpoints(settings);
    fc.caFile = settings.farmEtcdCacert;
    fc.certFile = settings.farmEtcdCert;
    fc.keyFile = settings.farmEtcdKey;
    fc.farmName = settings.farmName;
    fc.node = settings.hostId;
    size_t colon = url.rfind(':');
    uint16_t boundPort = colon == std::string::npos ? 0 : static_cast<uint16_t>(std::atoi(url.c_str() + colon + 1));
    fc.peerUrl = farmPeerUrl(settings, boundPort);
    fc.leaseSeconds = settings.farmLeaseSeconds;
    // One lease holds both the delivered records and the session owners, so it lasts for the longer
    // of the two: a delivered-retention shorter than session-timeout must not take a live session's
    // owner record (and with it forwarding to its node) away from the other nodes.
    fc.retentionSeconds = std::max(deliveredRetentionSeconds(settings.deliveredRetentionSeconds, settings.sessionTimeoutSeconds),
                                   settings.sessionTimeoutSeconds);
    farm = platform::UvFarm::create(loop, fc, &error);
    if (!farm) return refuseToStart(configError(error));
    if (fc.peerUrl.rfind("https://", 0) == 0) {
      // Forwarded requests to https peers are verified against the farm's CA.
      std::shared_ptr<platform::TlsContext> peerTls;
      if (!settings.farmEtcdCacert.empty()) {
        bool caUnreadable = false;
        peerTls = platform::TlsContext::client(settings.farmEtcdCacert, false, 0, &error, &caUnreadable);
        if (!peerTls) return refuseToStart(configError("farm-etcd-cacert: " + error));
      }
      server.setFarmPeerTls(std::move(peerTls));
    }
    server.setNodeName(settings.hostId);
    engine.setFarm(farm.get());
    farm->start();
    logf(LogLevel::Info, "farm %s: node %s, reached at %s, etcd %s", settings.farmName.c_str(),
         settings.hostId.c_str(), fc.peerUrl.c_str(), settings.farmEtcd.c_str());
  }

  platform::AdminServer admin(loop, settings,
                              {&engine, &server, &journal, &storage, settings.usersFile.empty() ? nullptr : &authenticator});
  std::string adminUrl;
  if (!settings.adminListen.empty()) {
    if (Outcome o = admin.start(&adminUrl); !o.isOk()) return refuseToStart(o);
  }

  // Bound before recovery, so a bad address fails fast; connections wait in the kernel's backlog
  // until the loop runs.
  platform::RecoveryReport rep;
  if (Outcome o = platform::recoverState(settings, engine, journal, sha, random, &rep); !o.isOk()) {
    return refuseToStart(o);
  }
  logf(LogLevel::Info,
       "recovered %u session(s) from the journal (%llu records, %llu bytes, replay %.1f ms, restore %.1f ms, "
       "files %.1f ms, total %.1f ms); "
       "%u expired, %u dropped, %u trimmed, %u orphaned file(s) removed%s%s",
       rep.sessions, static_cast<unsigned long long>(rep.records), static_cast<unsigned long long>(rep.journalBytes),
       rep.replayMs, rep.restoreMs, rep.filesMs, rep.totalMs, rep.expired, rep.dropped, rep.trimmed, rep.orphans,
       rep.tailBytes > 0 ? "; torn tail cut: " : "", rep.tailBytes > 0 ? rep.stopReason : "");
  journal.flush();  // what recovery journaled goes out with the loop's first turn
  Signals sig;
  sig.server = &server;
  if (!settings.adminListen.empty()) {
    sig.admin = &admin;
    logf(LogLevel::Info, "admin listener on %s (/metrics, /status.json, /)%s", adminUrl.c_str(),
         settings.usersFile.empty() ? "" : ", Basic authentication from users-file");
  }
  sig.engine = &engine;
  sig.argc = argc;
  sig.argv = argv;
  sig.running = settings;
  sig.tls = !settings.tlsCert.empty();
  if (!settings.usersFile.empty()) sig.users = &authenticator;
  sig.farm = farm.get();
  uv_signal_init(loop, &sig.term);
  uv_signal_init(loop, &sig.intr);
  sig.term.data = sig.intr.data = &sig;
  uv_signal_start(&sig.term, onSignal, SIGTERM);
  uv_signal_start(&sig.intr, onSignal, SIGINT);
  uv_signal_init(loop, &sig.hup);
  sig.hup.data = &sig;
  uv_signal_start(&sig.hup, onHangup, SIGHUP);
  uv_signal_init(loop, &sig.usr1);
  sig.usr1.data = &sig;
  sig.accessLog = &accessLog;
  uv_signal_start(&sig.usr1, onUser1, SIGUSR1);

  // So that a mistyped root or state that made a new tree is seen.
  for (const std::string& dir : createdDirs) logf(LogLevel::Info, "created directory %s", dir.c_str());
  logf(LogLevel::Info, "root %s, state %s, fdatasync %s, thread pool %u%s", rootReal.c_str(), settings.state.c_str(),
       settings.fdatasync ? "on" : "off", threads,
       threads != settings.threadPool ? " (fdatasync off and thread-pool not set: at most 4)" : "");
  std::printf("bitsd listening on %s\n", url.c_str());
  std::fflush(stdout);
  platform::notifyServiceManager("READY=1");  // listening, and recovery is done

  uv_run(loop, UV_RUN_DEFAULT);
  authenticator.close();
  accessLog.close();  // writes out the last lines
  uv_run(loop, UV_RUN_DEFAULT);  // their close callbacks
  if (!settings.usersFile.empty()) {
    logf(LogLevel::Info, "password checks run (PBKDF2): %llu; refused unchecked (throttled): %llu",
         static_cast<unsigned long long>(authenticator.checksRun()),
         static_cast<unsigned long long>(authenticator.checksRefused()));
  }
  const auto& es = engine.stats();
  logf(LogLevel::Info, "stopped: %llu sessions, %llu commits, %llu bytes written",
       static_cast<unsigned long long>(es.sessionsCreated), static_cast<unsigned long long>(es.commits),
       static_cast<unsigned long long>(es.bytesWritten));
  uv_loop_close(loop);
  return 0;
}
