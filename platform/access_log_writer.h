// The access log's file side: lines formatted by core (core/access_log.h) go into one of two
// fixed buffers; a full-enough buffer (half of it) or a short timer hands it to the thread pool
// (uv_fs_write) while lines go on into the other. No allocation after open(), no blocking write on
// the loop. When the active buffer is full while the other is still being written, lines are
// dropped and counted, and one rate-limited warning says how many.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace bitsd::platform {

class AccessLogWriter {
 public:
  static constexpr size_t kBufferBytes = 64 * 1024;
  static constexpr uint64_t kFlushMs = 1000;

  // `bufferBytes`: each of the two buffers (tests make it small to flush often).
  explicit AccessLogWriter(uv_loop_t* loop, size_t bufferBytes = kBufferBytes) : loop_(loop), cap_(bufferBytes) {}
  ~AccessLogWriter();
  AccessLogWriter(const AccessLogWriter&) = delete;
  AccessLogWriter& operator=(const AccessLogWriter&) = delete;

  // `path`: a file (created 0640, appended to) or "-"/"stderr". False with *error on failure.
  Outcome open(const std::string& path);
  bool isOpen() const { return fd_ >= 0; }
  // Copies one line (ending in '\n') into the active buffer.
  void append(const char* line, size_t len);
  // SIGUSR1: writes out what is buffered, then opens the path again (logrotate moved the file).
  void reopen();
  // Shutdown: writes out everything (blocking; the loop is done) and closes the timer.
  void close();
  uint64_t dropped() const { return droppedTotal_; }

 private:
  static void onTimerThunk(uv_timer_t* t);
  static void onWriteThunk(uv_fs_t* req);
  void startFlush();
  void onWritten(ssize_t result);
  void openNow();

  uv_loop_t* loop_;
  size_t cap_;
  std::string path_;
  bool toStderr_ = false;
  int fd_ = -1;
  char* buf_[2] = {nullptr, nullptr};
  size_t len_[2] = {0, 0};
  int active_ = 0;
  bool flushing_ = false;
  bool reopenPending_ = false;
  size_t written_ = 0;      // of the buffer being flushed (short writes continue)
  uint64_t dropped_ = 0;    // since the last warning
  uint64_t droppedTotal_ = 0;
  uv_fs_t req_;
  uv_timer_t timer_;
  bool timerOn_ = false;
};

}  // namespace bitsd::platform
