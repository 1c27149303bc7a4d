#include "tests/support/engine_driver.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace bitsd::testing {

Reply parseReply(const std::string& raw) {
  Reply r;
  r.raw = raw;
  size_t eol = raw.find("\r\n");
  std::string line = raw.substr(0, eol);
  if (line.rfind("HTTP/1.1 ", 0) == 0) r.status = std::stoi(line.substr(9, 3));
  size_t pos = eol + 2;
  while (pos < raw.size()) {
    size_t e = raw.find("\r\n", pos);
    if (e == std::string::npos || e == pos) break;
    std::string h = raw.substr(pos, e - pos);
    size_t colon = h.find(':');
    if (colon != std::string::npos) {
      std::string v = h.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      r.headers[h.substr(0, colon)] = v;
    }
    pos = e + 2;
  }
  return r;
}

std::string bitsRequest(const std::string& path, const std::string& packetType,
                        const std::map<std::string, std::string>& headers, const std::string& body) {
  std::string r = "BITS_POST " + path + " HTTP/1.1\r\nHost: appliance\r\nUser-Agent: Microsoft BITS/7.8\r\n";
  if (!packetType.empty()) r += "BITS-Packet-Type: " + packetType + "\r\n";
  bool hasLength = false;
  for (auto& [k, v] : headers) {
    r += k + ": " + v + "\r\n";
    if (k == "Content-Length") hasLength = true;
  }
  if (!hasLength) r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r += "\r\n" + body;
  return r;
}

std::string EngineDriver::httpRequest(const std::string& method, const std::string& target,
                                      const std::map<std::string, std::string>& headers) {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: appliance\r\n";
  for (auto& [k, v] : headers) r += k + ": " + v + "\r\n";
  return r + "\r\n";
}

Settings EngineDriver::defaultSettings() {
  Settings s;
  s.root = "/root";
  s.state = "/state";
  s.maxSessions = 64;
  s.maxOpenFiles = 8;
  s.maxFragmentBytes = 1 << 20;
  return s;
}

EngineDriver::EngineDriver(Settings settings)
    : journal(storage, scheduler, random), engine(storage, clock, random, sha, journal),
      parser_(settings.maxHeaderBytes, settings.transactionHeader) {
  storage.sha = &sha;
  storage.addDir("/root");
  storage.addDir("/state");
  storage.addDir("/state/partial");
  storage.addDir("/state/replies");
  engine.setNotifier(&notifier);
  EXPECT_TRUE(engine.init(settings).isOk());
  EXPECT_TRUE(journal.init(settings.journalBufferBytes, 64, settings.journalMaxBytes, kJournalPath).isOk());
  JournalHeader h;
  h.salt = 0x5A17;
  std::string header(kJournalBlockBytes, '\0');
  encodeJournalHeader(h, reinterpret_cast<uint8_t*>(header.data()));
  storage.addFile(kJournalPath, header);
  storage.journalPath = kJournalPath;
  journal.attach(storage.openForTest(kJournalPath), h.salt, 1, kJournalBlockBytes, 0);
  ex_.setHost(this);
}

EngineDriver::~EngineDriver() { settle(); }

bool EngineDriver::runOneThing() {
  if (scheduler.requested) {
    scheduler.requested = false;
    journal.flush();
  } else if (storage.pending() > 0) {
    storage.runOne();
  } else if (notifier.pending() > 0) {
    notifier.runOne();
  } else if (auth.pending() > 0) {
    auth.runOne();
  } else if (farm != nullptr && farm->pending() > 0) {
    farm->runOne();
  } else {
    return false;
  }
  return true;
}

void EngineDriver::settle() {
  for (int i = 0; i < 100000; ++i) {
    if (!runOneThing()) return;
  }
  ADD_FAILURE() << "storage and journal never settled";
}

void EngineDriver::restartFrom(EngineDriver& old) {
  old.settle();
  for (const auto& [path, contents] : old.storage.files()) storage.addFile(path, contents);
  storage.copyTreeFrom(old.storage);
  restoreFromDisk();
}

namespace {
// platform/recovery's FileHasher over the fake disk.
class FakeDiskHasher final : public RecoveryHasher {
 public:
  explicit FakeDiskHasher(const FakeStorage& storage) : storage_(storage) {}
  bool hashRange(const char* path, uint64_t from, uint64_t bytes, Sha256& sha, Sha256State& st) override {
    if (!storage_.exists(path)) return false;
    const std::string& data = storage_.contents(path);
    if (from > data.size() || bytes > data.size() - from) return false;
    sha.update(st, std::span<const char>(data.data() + from, static_cast<size_t>(bytes)));
    ++ranges;
    rangeBytes += bytes;
    return true;
  }
  int ranges = 0;
  uint64_t rangeBytes = 0;

 private:
  const FakeStorage& storage_;
};
}  // namespace

void EngineDriver::restoreFromDisk() {
  const std::string& bytes = storage.contents(kJournalPath);
  ReplayResult rr = replayJournal(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &engine);
  ASSERT_EQ(rr.status, ReplayStatus::Ok);
  std::vector<SessionId> expired;
  ASSERT_TRUE(engine.finishRestore(&expired).isOk());
  journal.attach(storage.openForTest(kJournalPath), rr.header.salt, rr.nextSeq, rr.validEnd, 0);
  FakeDiskHasher hasher(storage);
  engine.rehashOpenSessions(hasher);
  rehashedBytes = hasher.rangeBytes;
}

JournalState EngineDriver::replayed() {
  JournalState st;
  const std::string& bytes = storage.contents(kJournalPath);
  replayJournal(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), &st);
  return st;
}

void EngineDriver::waitFor(Flow f) {
  if (f == Flow::Continue) return;
  int before = readyCalls;
  // Storage and the journal complete only when we run them: exactly one ready call must follow.
  while (readyCalls == before && runOneThing()) {
  }
  ASSERT_EQ(readyCalls, before + 1) << "engine returned Wait but never became ready";
}

bool EngineDriver::start(const std::string& request) {
  parser_.reset();
  startedReady_ = readyCalls;
  startedWaiting_ = false;
  size_t pos = 0;
  bool kick = false;
  while (pos < request.size() || kick) {
    kick = false;
    size_t used = 0;
    ParseEvent ev = parser_.execute(request.data() + pos, request.size() - pos, &used);
    pos += used;
    if (ev == ParseEvent::HeadersComplete) {
      kick = true;
      waitFor(engine.onHeaders(ex_, parser_.head()));
      if (ex_.respondNow()) return false;
    } else if (ev == ParseEvent::Body) {
      kick = true;
      waitFor(engine.onBody(ex_, parser_.body()));
    } else if (ev == ParseEvent::MessageComplete) {
      startedReady_ = readyCalls;
      if (engine.onMessageComplete(ex_) == Flow::Continue) return false;
      startedWaiting_ = true;
      while (readyCalls == startedReady_ && runOneThing()) {
      }
      return readyCalls == startedReady_;
    } else if (ev != ParseEvent::NeedMore) {
      ADD_FAILURE() << "the request failed to parse";
      return false;
    }
  }
  ADD_FAILURE() << "the request ended before the parser finished it";
  return false;
}

Reply EngineDriver::complete() {
  if (startedWaiting_) {
    while (readyCalls == startedReady_ && runOneThing()) {
    }
    EXPECT_EQ(readyCalls, startedReady_ + 1) << "the request never finished";
  }
  startedWaiting_ = false;
  Reply r = parseReply(std::string(ex_.response()));
  engine.finish(ex_);
  return r;
}

Reply EngineDriver::send(const std::string& request, size_t chunk) {
  parser_.reset();
  answeredBeforeBody = false;
  size_t pos = 0;
  bool kick = false;
  while (true) {
    size_t n = std::min(chunk, request.size() - pos);
    if (n == 0 && !kick && pos == request.size()) {
      ADD_FAILURE() << "request ended before the parser finished it";
      return Reply();
    }
    kick = false;
    size_t used = 0;
    ParseEvent ev = parser_.execute(request.data() + pos, n, &used);
    pos += used;
    switch (ev) {
      case ParseEvent::NeedMore:
        break;
      case ParseEvent::HeadersComplete:
        kick = true;
        waitFor(engine.onHeaders(ex_, parser_.head()));
        if (ex_.respondNow()) {
          Reply r = parseReply(std::string(ex_.response()));
          engine.finish(ex_);
          answeredBeforeBody = true;
          return r;
        }
        break;
      case ParseEvent::Body:
        kick = true;
        waitFor(engine.onBody(ex_, parser_.body()));
        break;
      case ParseEvent::MessageComplete: {
        waitFor(engine.onMessageComplete(ex_));
        Reply r = parseReply(std::string(ex_.response()));
        if (ex_.sendsFile()) {
          // A reply download: the body comes from Storage part by part (a small buffer, so that
          // it takes several reads), as the platform sends it; a short file ends it early.
          char buf[7];
          for (uint64_t left = ex_.fileLength(); left > 0;) {
            waitFor(engine.readReply(ex_, std::span<char>(buf, sizeof buf)));
            std::span<const char> part = ex_.replyChunk();
            if (part.empty()) break;
            r.body.append(part.data(), part.size());
            left -= part.size();
          }
        }
        engine.finish(ex_);
        return r;
      }
      case ParseEvent::Error: {
        engine.formatProtocolError(ex_, parser_.errorStatus());
        return parseReply(std::string(ex_.response()));
      }
    }
  }
}

void EngineDriver::sendCut(const std::string& request, size_t bytes) {
  parser_.reset();
  std::string part = request.substr(0, bytes);
  size_t pos = 0;
  bool kick = false;
  while (pos < part.size() || kick) {
    kick = false;
    size_t used = 0;
    ParseEvent ev = parser_.execute(part.data() + pos, part.size() - pos, &used);
    pos += used;
    if (ev == ParseEvent::HeadersComplete) {
      kick = true;
      waitFor(engine.onHeaders(ex_, parser_.head()));
      if (ex_.respondNow()) break;
    } else if (ev == ParseEvent::Body) {
      kick = true;
      waitFor(engine.onBody(ex_, parser_.body()));
    } else if (ev != ParseEvent::NeedMore) {
      ADD_FAILURE() << "the cut request ended or failed before the cut";
      break;
    }
  }
  engine.finish(ex_);  // the connection died here
}

std::string EngineDriver::createSession(const std::string& path) {
  Reply r = send(bitsRequest(path, "Create-Session",
                             {{"BITS-Supported-Protocols", "{7df0354d-249b-430f-820d-3d2a9bef4931}"}}));
  return r.status == 200 ? r.get("BITS-Session-Id") : std::string();
}

Reply EngineDriver::fragment(const std::string& path, const std::string& id, uint64_t first,
                             const std::string& bytes, uint64_t total) {
  std::string range = "bytes " + std::to_string(first) + "-" + std::to_string(first + bytes.size() - 1) + "/" +
                      std::to_string(total);
  if (total == 0) range = "bytes 0--1/0";
  return send(bitsRequest(path, "Fragment", {{"BITS-Session-Id", id}, {"Content-Range", range}}, bytes));
}

Reply EngineDriver::close(const std::string& path, const std::string& id, const char* type) {
  return send(bitsRequest(path, type, {{"BITS-Session-Id", id}}));
}

}  // namespace bitsd::testing
