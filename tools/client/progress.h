// bitsclient's progress output: the line on the terminal (stderr; the text comes from
// progress_line.h) with its width and retry countdown, or one JSON object per job event on stdout.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "tools/client/job.h"
#include "tools/client/options.h"
#include "tools/client/progress_line.h"

namespace bitsd::client {

std::string jsonString(const std::string& s);

class Progress {
 public:
  explicit Progress(const Options& o);
  bool bar() const { return bar_; }
  // The terminal's width, from the terminal the line is drawn on (stderr); again on SIGWINCH.
  void readWidth();
  void resized(const Job& job, uint64_t nowMs);
  // Redraws the line (at most every 100 ms), e.g. for the retry countdown.
  void tick(const Job& job, uint64_t nowMs);
  void event(const Event& e, const Job& job, uint64_t nowMs);
  void finish();
  double seconds() const;

 private:
  static std::string describe(const Event& e);
  void clearLine();
  void draw(const Job& job, bool force, uint64_t nowMs);
  uint64_t firstOffset(uint64_t have);
  void printJson(const Event& e, const Job& job);

  bool json_, bar_, quiet_;
  int width_ = client::kDefaultProgressWidth;
  bool drawn_ = false;
  bool haveFirst_ = false;
  uint64_t first_ = 0;
  std::chrono::steady_clock::time_point start_, lastDraw_;
};

}  // namespace bitsd::client
