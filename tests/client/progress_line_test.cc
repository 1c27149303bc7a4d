// bitsclient's progress line at every terminal width (issue 19): never more than width-1
// characters, fields dropped in their order (bar, ETA, total, rate), and a retry's countdown in
// place of the stale rate and ETA.
#include <gtest/gtest.h>

#include "tools/client/progress_line.h"

namespace bitsd::client {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

ProgressState running() {
  ProgressState s;
  s.have = 312 * kMiB;
  s.total = 1024 * kMiB;
  s.rate = 41.2 * kMiB;
  s.etaSeconds = 17;
  return s;
}

bool has(const std::string& line, const char* what) { return line.find(what) != std::string::npos; }

TEST(ProgressLine, NeverWiderThanWidthMinusOneFrom40To200) {
  ProgressState huge = running();
  huge.have = 999ull * 1024 * 1024 * 1024 * 1024;
  huge.total = 1000ull * 1024 * 1024 * 1024 * 1024;
  huge.etaSeconds = 99999999;
  ProgressState retry = running();
  retry.retryInSeconds = 3600;
  ProgressState start;
  start.total = 5;
  for (int w = 40; w <= 200; ++w) {
    for (const ProgressState& s : {running(), huge, retry, start}) {
      std::string line = progressLine(w, s);
      EXPECT_LE(line.size(), static_cast<size_t>(w - 1)) << w << ": '" << line << "'";
      EXPECT_TRUE(has(line, "%")) << w << ": the percentage is always there: '" << line << "'";
      EXPECT_EQ(line.find_first_of("\r\n\t\033"), std::string::npos);
    }
  }
}

TEST(ProgressLine, WideTerminalsShowEverythingWithABar) {
  for (int w : {80, 120, 200}) {
    std::string line = progressLine(w, running());
    EXPECT_EQ(line.rfind("[", 0), 0u) << w << ": " << line;
    EXPECT_TRUE(has(line, " 30% 312.0 MiB / 1.0 GiB  41.2 MiB/s  ETA 0:17")) << w << ": " << line;
  }
  // The bar grows with the width, up to 50 cells.
  EXPECT_LT(progressLine(80, running()).size(), progressLine(120, running()).size());
  EXPECT_EQ(progressLine(200, running()), progressLine(300, running()));
  // 80 columns: the line of issue 19 was 83 characters; now it fits with the bar.
  EXPECT_EQ(progressLine(80, running()).size(), 79u);
}

TEST(ProgressLine, FieldsGoInOrderBarEtaTotalRate) {
  ProgressState s = running();
  std::string full = progressLine(80, s);
  ASSERT_TRUE(has(full, "[") && has(full, "ETA") && has(full, "MiB/s") && has(full, "/ 1.0 GiB")) << full;
  // Find the widest width at which each field is gone; each goes at a narrower width than the one
  // before it in the order.
  auto lastWidthWith = [&](const char* what) {
    for (int w = 200; w >= 1; --w) {
      if (!has(progressLine(w, s), what)) return w + 1;
    }
    return 1;
  };
  int bar = lastWidthWith("["), eta = lastWidthWith("ETA"), rate = lastWidthWith("/s"), total = lastWidthWith("/ 1.0");
  EXPECT_GT(bar, eta);
  EXPECT_GT(eta, total);
  EXPECT_GT(total, rate);
  // At 40 columns: no bar, no ETA, but the rate and the sizes.
  std::string narrow = progressLine(40, s);
  EXPECT_EQ(narrow, " 30% 312.0 MiB / 1.0 GiB  41.2 MiB/s") << narrow;
}

TEST(ProgressLine, ARetryShowsItsCountdownInsteadOfRateAndEta) {
  ProgressState s = running();
  s.retryInSeconds = 12;
  for (int w : {40, 80, 200}) {
    std::string line = progressLine(w, s);
    EXPECT_TRUE(has(line, "retrying in 12 s")) << w << ": " << line;
    EXPECT_FALSE(has(line, "/s")) << w << ": a stale rate: " << line;
    EXPECT_FALSE(has(line, "ETA")) << w << ": a stale ETA: " << line;
  }
  EXPECT_TRUE(has(progressLine(80, s), "[")) << progressLine(80, s);
  s.retryInSeconds = 0;
  EXPECT_TRUE(has(progressLine(40, s), "retrying in 0 s"));
}

TEST(ProgressLine, UnknownRateAndEtaAreDashes) {
  ProgressState s;
  s.total = 10 * kMiB;
  std::string line = progressLine(100, s);
  EXPECT_TRUE(has(line, "  0% 0 B / 10.0 MiB  --/s  ETA --:--")) << line;
  s.have = s.total;
  s.rate = 1;
  EXPECT_TRUE(has(progressLine(100, s), "100%")) << progressLine(100, s);
  EXPECT_FALSE(has(progressLine(100, s), "ETA"));
}

TEST(ProgressLine, NarrowerThan40IsCutNotWrapped) {
  for (int w = 0; w < 40; ++w) {
    EXPECT_LE(progressLine(w, running()).size(), static_cast<size_t>(w > 0 ? w - 1 : 0)) << w;
  }
}

}  // namespace
}  // namespace bitsd::client
