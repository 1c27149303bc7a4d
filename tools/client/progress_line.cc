#include "tools/client/progress_line.h"

#include <algorithm>
#include <cstdio>

namespace bitsd::client {

std::string humanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

namespace {

constexpr int kMinBar = 20;  // bar cells, brackets not counted
constexpr int kMaxBar = 50;

std::string bar(int cells, uint64_t have, uint64_t total) {
  int filled = total == 0 ? cells : static_cast<int>(static_cast<double>(have) * cells / static_cast<double>(total));
  filled = std::clamp(filled, 0, cells);
  std::string b = "[";
  b.append(static_cast<size_t>(filled), '#');
  b.append(static_cast<size_t>(cells - filled), ' ');
  b += "] ";
  return b;
}

}  // namespace

std::string progressLine(int width, const ProgressState& s) {
  const size_t room = width > 1 ? static_cast<size_t>(width - 1) : 0;
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", s.total == 0 ? 100 : static_cast<int>(std::min(s.have, s.total) * 100 / s.total));
  std::string have = humanBytes(static_cast<double>(s.have));
  std::string total = " / " + humanBytes(static_cast<double>(s.total));
  std::string rate, eta;
  if (s.retryInSeconds >= 0) {
    rate = "  retrying in " + std::to_string(s.retryInSeconds) + " s";
  } else {
    rate = "  " + (s.rate >= 0 ? humanBytes(s.rate) : std::string("--")) + "/s";
    if (s.etaSeconds >= 0) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "  ETA %lld:%02lld", static_cast<long long>(s.etaSeconds / 60),
                    static_cast<long long>(s.etaSeconds % 60));
      eta = buf;
    } else if (s.have < s.total) {
      eta = "  ETA --:--";
    }
  }
  bool retrying = s.retryInSeconds >= 0;
  // Fields after the bar, dropped from the least useful on until they fit. During a retry the
  // countdown is what matters most after the percentage, so the sizes go before it.
  auto text = [&](bool withEta, bool withRate, bool withTotal, bool withHave) {
    std::string t = pct;
    if (withHave) t += " " + have;
    if (withHave && withTotal) t += total;
    if (withRate) t += rate;
    if (withEta) t += eta;
    return t;
  };
  // {eta, rate (or the countdown), total, have}, from the fullest layout down.
  static constexpr bool kSteps[][4] = {
      {true, true, true, true}, {false, true, true, true}, {false, true, false, true}, {false, true, false, false},
      {false, false, false, true}, {false, false, false, false},
  };
  static constexpr bool kRetrySteps[][4] = {
      {true, true, true, true}, {true, true, false, true}, {true, true, false, false}, {false, false, false, false},
  };
  const bool(*steps)[4] = retrying ? kRetrySteps : kSteps;
  const size_t count = retrying ? std::size(kRetrySteps) : std::size(kSteps);
  std::string line;
  for (size_t i = 0; i < count; ++i) {
    line = text(steps[i][0], steps[i][1], steps[i][2], steps[i][3]);
    if (line.size() > room) continue;
    // Everything fits: a bar in front, in what is left, if it can be at least kMinBar cells.
    size_t left = room - line.size();
    if (i == 0 && left >= static_cast<size_t>(kMinBar) + 3) {
      line = bar(static_cast<int>(std::min<size_t>(left - 3, kMaxBar)), s.have, s.total) + line;
    }
    break;
  }
  if (line.size() > room) line.resize(room);  // narrower than any layout: cut, never wrap
  return line;
}

}  // namespace bitsd::client
