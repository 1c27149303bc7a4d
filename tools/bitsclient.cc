// bitsclient: a host-side BITS upload client that behaves like the Windows one
// (../shared/protocol/BITS-UPLOAD.md §9), for demos, tests and fault finding. The protocol decisions
// live in tools/client/job.{h,cc} (a state machine with no I/O); tools/client/driver.{h,cc} runs it on a
// libuv loop: one keep-alive connection, one request in flight, llhttp parsing the answers. This file
// is main(): the command, the file and the state file checks. The parts:
//   tools/client/options.*      command line, --help, URL check
//   tools/client/state_file.*   the job's state file (resume, cancel)
//   tools/client/progress.*     progress output: the terminal line, or JSON events
//   tools/client/driver.*       the upload job on libuv: connections, TLS, requests, answers
//   tools/bench/client_bench.*  `bitsclient bench` (concurrent uploads with faults)
//
//   bitsclient upload FILE URL [options]   upload FILE; the job's state goes to FILE.bitsjob
//   bitsclient resume STATEFILE [options]  carry on with a job after bitsclient was killed
//   bitsclient cancel STATEFILE            Cancel-Session, then forget the job
//
// See `bitsclient --help` and the README's "bitsclient" section.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/bench/client_bench.h"
#include "tools/client/driver.h"
#include "tools/client/job.h"
#include "tools/client/options.h"
#include "tools/client/state_file.h"

using bitsd::client::Driver;
using bitsd::client::Job;
using bitsd::client::Options;
using bitsd::client::kUsage;
using bitsd::client::parseOptions;
using bitsd::client::parseUrl;
using bitsd::client::readState;
using bitsd::client::runBench;
using bitsd::client::usageError;
namespace client = bitsd::client;

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
    std::string error;
    if (!readState(argv[2], &o, &error)) usageError(error);
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
