// Drives the real RequestParser and UploadEngine the way the libuv connection does, over FakeStorage,
// FakeClock and FakeRandom, so protocol behaviour is tested deterministically without sockets.
#pragma once

#include <map>
#include <string>

#include "core/request_parser.h"
#include "core/upload_engine.h"
#include "platform/sha256.h"
#include "platform/system.h"
#include "tests/support/fakes.h"

namespace bitsd::testing {

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names as sent
  std::string raw;
  std::string body;  // a reply download's body
  // Header names match case-insensitively (RFC 9110 §5.1; a proxy such as haproxy lower-cases them).
  bool has(const std::string& name) const { return find(name) != headers.end(); }
  std::string get(const std::string& name) const {
    auto it = find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  std::map<std::string, std::string>::const_iterator find(const std::string& name) const {
    auto it = headers.find(name);
    if (it != headers.end()) return it;
    for (it = headers.begin(); it != headers.end(); ++it) {
      if (it->first.size() != name.size()) continue;
      bool same = true;
      for (size_t i = 0; i < name.size() && same; ++i) {
        same = (it->first[i] | 0x20) == (name[i] | 0x20);
      }
      if (same) return it;
    }
    return headers.end();
  }
};

// Parses an HTTP response head (status line + headers) as produced by formatAck.
Reply parseReply(const std::string& raw);

// Builds a BITS_POST request.
std::string bitsRequest(const std::string& path, const std::string& packetType,
                        const std::map<std::string, std::string>& headers = {}, const std::string& body = "");

class EngineDriver final : public ExchangeHost {
 public:
  explicit EngineDriver(Settings settings = defaultSettings());
  ~EngineDriver();
  static Settings defaultSettings();

  // Sends one whole request, delivered `chunk` bytes at a time, and returns the Ack.
  Reply send(const std::string& request, size_t chunk = SIZE_MAX);
  // Sends one whole request but returns once nothing the driver may run is left (e.g. its POST is
  // held: notifier.hold), so that other requests or nodes can run meanwhile. True if it is still in
  // flight; complete() then finishes it (after the test released what it waits for).
  bool start(const std::string& request);
  Reply complete();

  // Farm mode: the engine uses `f` (its operations are run like the other fakes').
  void useFarm(FakeFarm* f) {
    farm = f;
    engine.setFarm(f);
  }
  FakeFarm* farm = nullptr;

  // Delivers only the first `bytes` bytes of a request, then drops it as a dead connection would.
  void sendCut(const std::string& request, size_t bytes);

  // Conveniences for the usual packets. Paths are URL paths ("/a.bin").
  std::string createSession(const std::string& path);  // returns the session id, or "" on failure
  Reply fragment(const std::string& path, const std::string& id, uint64_t first, const std::string& bytes,
                 uint64_t total);
  Reply close(const std::string& path, const std::string& id, const char* type = "Close-Session");

  std::string rootPath(const std::string& rel) const { return "/root/" + rel; }
  std::string partialPath(const std::string& id) const { return "/state/partial/" + id + ".part"; }
  std::string replyPath(const std::string& id) const { return "/state/replies/" + id; }
  // A plain HTTP request (GET/HEAD on reply URLs).
  static std::string httpRequest(const std::string& method, const std::string& target,
                                 const std::map<std::string, std::string>& headers = {});

  FakeStorage storage;
  FakeClock clock;
  FakeRandom random;
  FakeScheduler scheduler;
  platform::UploadSha256 sha;  // what bitsd is built with (Nettle by default): the golden journals resume with it
  FakeNotifier notifier{&storage};
  FakeAuthenticator auth;
  Journal journal;
  UploadEngine engine;
  // Runs pending journal flushes and storage operations until nothing is left.
  void settle();
  // Replays the journal file as it is on the fake disk.
  JournalState replayed();
  // A core-level restart: copies `old`'s disk (settled) into this driver and restores the engine
  // from the journal alone, as platform/recovery does (without its file checks).
  void restartFrom(EngineDriver& old);
  // The same restore from whatever this driver's fake disk already holds (e.g. a journal file
  // written on another host), then the digest catch-up (rehashOpenSessions) from the fake disk.
  void restoreFromDisk();
  // The client address the next requests come from (as the platform passes it on).
  void setPeer(const ClientAddress& peer) { ex_.setPeer(peer); }
  uint64_t rehashedBytes = 0;  // upload bytes the last restore read back to rebuild digests
  static constexpr const char* kJournalPath = "/state/journal";
  int readyCalls = 0;
  // The exchange the requests run in (to hand it a completion it did not ask for).
  Exchange& exchange() { return ex_; }
  // The last send() was answered from its head alone (Exchange::respondNow()), before any body byte.
  bool answeredBeforeBody = false;

 private:
  void onExchangeReady(Exchange&) override { ++readyCalls; }
  void abandonExchange(Exchange& ex) override { engine.finish(ex); }
  void waitFor(Flow f);
  bool runOneThing();  // runs one pending flush or completion; false if none is runnable

  RequestParser parser_;
  Exchange ex_;
  int startedReady_ = 0;         // start(): readyCalls before the message's end
  bool startedWaiting_ = false;  // start(): the engine returned Wait at the message's end
};

}  // namespace bitsd::testing
