// bitsclient's progress output (progress.h).
#include "tools/client/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace bitsd::client {

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

Progress::Progress(const Options& o) : json_(o.json), bar_(!o.json && !o.quiet && ::isatty(2)), quiet_(o.quiet) {
  start_ = std::chrono::steady_clock::now();
  readWidth();
}

// The terminal's width, from the terminal the line is drawn on (stderr); again on SIGWINCH.
void Progress::readWidth() {
  winsize ws{};
  width_ = bar_ && ::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : client::kDefaultProgressWidth;
}

void Progress::resized(const Job& job, uint64_t nowMs) {
  readWidth();
  if (bar_ && drawn_) draw(job, true, nowMs);
}

// Redraws the line (at most every 100 ms), e.g. for the retry countdown.
void Progress::tick(const Job& job, uint64_t nowMs) {
  if (bar_ && drawn_) draw(job, false, nowMs);
}

void Progress::event(const Event& e, const Job& job, uint64_t nowMs) {
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

void Progress::finish() {
  if (bar_ && drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::describe(const Event& e) {
  switch (e.type) {
    case Event::Type::Retry: return e.text + "; retrying in " + std::to_string(e.delayMs) + " ms";
    case Event::Type::Resync: return "server holds " + std::to_string(e.offset) + " bytes (we were at " +
                                     std::to_string(e.previous) + ")";
    case Event::Type::Shrunk: return "fragment " + std::to_string(e.previous) + " -> " + std::to_string(e.offset) + " bytes";
    default: return e.text;
  }
}

void Progress::clearLine() {
  if (drawn_) std::fputs("\r\033[K", stderr);
}

void Progress::draw(const Job& job, bool force, uint64_t nowMs) {
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

uint64_t Progress::firstOffset(uint64_t have) {
  if (!haveFirst_) {
    haveFirst_ = true;
    first_ = have;
  }
  return first_;
}

void Progress::printJson(const Event& e, const Job& job) {
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

}  // namespace bitsd::client
