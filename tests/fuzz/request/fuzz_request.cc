// libFuzzer target for the request path: arbitrary bytes arrive on one connection and go through the
// real RequestParser and UploadEngine (over FakeStorage), exactly as the libuv connection drives them.
// The input is split into reads at the marker "-_-" so that partial reads are exercised (h2o's
// fuzz/driver.cc does the same). FakeRandom is deterministic, so corpus files can name the session id
// that the first Create-Session returns: {913969A1-AE06-4527-B906-5B87EB53CB64}.
//
// Invariants checked on every answer (a violation aborts, which the fuzzer reports):
//   - it is an HTTP/1.1 status line with BITS-Packet-Type: Ack and Content-Length: 0;
//   - a committed file has exactly the size its session announced.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "core/request_parser.h"
#include "core/upload_engine.h"
#include "platform/system.h"
#include "tests/support/fakes.h"

namespace {

using namespace bitsd;

class Host final : public ExchangeHost {
 public:
  void onExchangeReady(Exchange&) override { ++ready; }
  // One connection only: no other request can take a session over.
  void abandonExchange(Exchange&) override { std::abort(); }
  int ready = 0;
};

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_request invariant broken: %s\n", what);
    std::abort();
  }
}

void checkAck(std::string_view r) {
  require(r.rfind("HTTP/1.1 ", 0) == 0, "status line");
  require(r.find("\r\nBITS-Packet-Type: Ack\r\n") != std::string_view::npos, "packet type");
  require(r.find("\r\nContent-Length: 0\r\n") != std::string_view::npos, "content length");
  require(r.size() >= 4 && r.substr(r.size() - 4) == "\r\n\r\n", "head terminator");
}

bitsd::testing::FakeScheduler* gScheduler = nullptr;
Journal* gJournal = nullptr;

// Runs the journal and storage until nothing is pending (or, with `host`, until it is ready).
void drain(bitsd::testing::FakeStorage& storage, Host* host, int before) {
  while (host == nullptr || host->ready == before) {
    if (gScheduler->requested) {
      gScheduler->requested = false;
      gJournal->flush();
    } else if (storage.pending() > 0) {
      storage.runOne();
    } else {
      break;
    }
  }
}

void wait(bitsd::testing::FakeStorage& storage, Host& host, Flow f) {
  if (f == Flow::Continue) return;
  int before = host.ready;
  drain(storage, &host, before);
  require(host.ready == before + 1, "engine waited but never became ready");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bitsd::testing::FakeStorage storage;
  bitsd::testing::FakeClock clock;
  bitsd::testing::FakeRandom random;
  storage.addDir("/root");
  storage.addDir("/root/sub");
  storage.addDir("/state/partial");
  storage.addFile("/root/exists.txt", "old");
  Settings settings;
  settings.root = "/root";
  settings.state = "/state";
  settings.maxSessions = 8;
  settings.maxOpenFiles = 2;
  settings.maxFragmentBytes = 64 * 1024;
  settings.maxUploadSizeBytes = 1 << 20;
  bitsd::testing::FakeScheduler scheduler;
  bitsd::platform::MbedSha256 sha;
  storage.sha = &sha;
  Journal journal(storage, scheduler, random);
  gScheduler = &scheduler;
  gJournal = &journal;
  UploadEngine engine(storage, clock, random, sha, journal);
  if (!engine.init(settings).isOk() || !journal.init(16384, 16, 1 << 20, "/state/journal").isOk()) std::abort();
  {
    JournalHeader h;
    h.salt = 7;
    std::string header(kJournalBlockBytes, '\0');
    encodeJournalHeader(h, reinterpret_cast<uint8_t*>(header.data()));
    storage.addFile("/state/journal", header);
    storage.journalPath = "/state/journal";
    journal.attach(storage.openForTest("/state/journal"), h.salt, 1, kJournalBlockBytes, 0);
  }
  RequestParser parser(2048);
  Exchange ex;
  Host host;
  ex.setHost(&host);

  std::string_view input(reinterpret_cast<const char*>(data), size);
  bool kick = false;
  while (!input.empty() || kick) {
    size_t cut = input.find("-_-");
    std::string_view read = input.substr(0, cut);
    input = cut == std::string_view::npos ? std::string_view() : input.substr(cut + 3);
    // Copy the read into its own buffer so out-of-bounds reads are visible to ASan.
    std::string buf(read);
    size_t pos = 0;
    kick = kick || !buf.empty();
    while (pos < buf.size() || kick) {
      kick = false;
      size_t used = 0;
      ParseEvent e = parser.execute(buf.data() + pos, buf.size() - pos, &used);
      pos += used;
      if (e == ParseEvent::NeedMore) break;
      if (e == ParseEvent::HeadersComplete) {
        kick = true;
        wait(storage, host, engine.onHeaders(ex, parser.head()));
        if (ex.respondNow()) {
          checkAck(ex.response());
          engine.finish(ex);
          input = {};  // the connection closes
          break;
        }
      } else if (e == ParseEvent::Body) {
        kick = true;
        wait(storage, host, engine.onBody(ex, parser.body()));
      } else if (e == ParseEvent::MessageComplete) {
        wait(storage, host, engine.onMessageComplete(ex));
        checkAck(ex.response());
        bool close = ex.closeAfterResponse();
        engine.finish(ex);
        parser.reset();
        clock.advanceMs(1000);
        engine.sweep();
        drain(storage, nullptr, 0);
        if (close) break;
      } else {
        engine.formatProtocolError(ex, parser.errorStatus());
        checkAck(ex.response());
        input = {};
        break;
      }
    }
  }
  drain(storage, nullptr, 0);
  // Whatever the input did, the journal on the fake disk replays to the engine's own state.
  {
    const std::string& bytes = storage.contents("/state/journal");
    JournalState replayed;
    ReplayResult rr = replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &replayed);
    require(rr.status == ReplayStatus::Ok && rr.tailBytes == 0, "the journal replays completely");
    JournalState live;
    engine.snapshot(&live);
    for (const auto& [id, s] : live.sessions) {
      auto it = replayed.sessions.find(id);
      require(it != replayed.sessions.end(), "a live session is missing from the journal");
      require(it->second.committed == s.committed && it->second.closed == s.closed, "journal state differs");
      require(it->second.haveBytes == s.haveBytes, "journaled have differs from the acked have");
    }
  }
  for (const auto& [path, contents] : storage.files()) {
    require(path.rfind("/root/", 0) == 0 || path.rfind("/state/partial/", 0) == 0 || path == "/state/journal",
            "file outside root and state");
  }
  return 0;
}
