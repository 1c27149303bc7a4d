// Owns the access log's file: buffered lines flushed off the loop, reopened on SIGUSR1
// (platform/access_log_writer.h).
#include "platform/access_log_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/log.h"

namespace bitsd::platform {

AccessLogWriter::~AccessLogWriter() {
  if (fd_ >= 0 && !toStderr_) ::close(fd_);
  std::free(buf_[0]);
  std::free(buf_[1]);
}

Outcome AccessLogWriter::open(const std::string& path) {
  std::string error;
  path_ = path;
  toStderr_ = path == "-" || path == "stderr";
  if (toStderr_) {
    fd_ = STDERR_FILENO;
  } else {
    fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0) {
      error = "access-log: cannot open " + path + ": " + std::strerror(errno);
      return Outcome::fail(Code::Io, error);
    }
  }
  buf_[0] = static_cast<char*>(std::malloc(cap_));
  buf_[1] = static_cast<char*>(std::malloc(cap_));
  if (buf_[0] == nullptr || buf_[1] == nullptr) {
    error = "access-log: out of memory";
    return Outcome::fail(Code::Io, error);
  }
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  timerOn_ = true;
  uv_timer_start(&timer_, onTimerThunk, kFlushMs, kFlushMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));  // the log never keeps the loop alive
  return Outcome::ok();
}

void AccessLogWriter::append(const char* line, size_t len) {
  if (fd_ < 0) return;
  if (len_[active_] + len > cap_) {
    startFlush();  // swaps buffers unless a flush is already running
    if (len_[active_] + len > cap_) {
      ++dropped_;
      ++droppedTotal_;
      return;
    }
  }
  std::memcpy(buf_[active_] + len_[active_], line, len);
  len_[active_] += len;
  if (len_[active_] >= cap_ / 2) startFlush();
}

void AccessLogWriter::startFlush() {
  if (flushing_ || len_[active_] == 0) return;
  flushing_ = true;
  written_ = 0;
  active_ ^= 1;  // new lines go to the other buffer while this one is written
  int full = active_ ^ 1;
  uv_buf_t b = uv_buf_init(buf_[full], static_cast<unsigned>(len_[full]));
  req_.data = this;
  if (uv_fs_write(loop_, &req_, fd_, &b, 1, -1, onWriteThunk) != 0) {
    flushing_ = false;
    len_[full] = 0;
  }
}

void AccessLogWriter::onWriteThunk(uv_fs_t* req) {
  auto* self = static_cast<AccessLogWriter*>(req->data);
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  self->onWritten(result);
}

void AccessLogWriter::onWritten(ssize_t result) {
  int full = active_ ^ 1;
  if (result < 0) {
    static const char kKey[] = "access log write";
    logLimited(LogLevel::Warn, kKey, "access log: write failed: %s; %zu bytes of lines lost", uv_strerror(static_cast<int>(result)),
               len_[full] - written_);
  } else {
    written_ += static_cast<size_t>(result);
    if (written_ < len_[full] && result > 0) {  // a short write: the rest, still off the loop
      uv_buf_t b = uv_buf_init(buf_[full] + written_, static_cast<unsigned>(len_[full] - written_));
      req_.data = this;
      if (uv_fs_write(loop_, &req_, fd_, &b, 1, -1, onWriteThunk) == 0) return;
    }
  }
  len_[full] = 0;
  flushing_ = false;
  if (dropped_ > 0) {
    logLimited(LogLevel::Warn, "access log dropped", "access log: %llu line(s) dropped: the disk did not keep up",
               static_cast<unsigned long long>(dropped_));
    dropped_ = 0;
  }
  if (reopenPending_) {
    reopenPending_ = false;
    openNow();
  }
  if (len_[active_] >= cap_ / 2) startFlush();
}

void AccessLogWriter::onTimerThunk(uv_timer_t* t) { static_cast<AccessLogWriter*>(t->data)->startFlush(); }

void AccessLogWriter::reopen() {
  if (fd_ < 0 || toStderr_) return;
  // Lines logged before the signal belong to the old file: write them there first.
  startFlush();
  if (flushing_) {
    reopenPending_ = true;
    return;
  }
  openNow();
}

void AccessLogWriter::openNow() {
  // One open() on the loop per rotation; everything else stays off it.
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    logf(LogLevel::Error, "SIGUSR1: access log %s not reopened: %s; still writing the old file", path_.c_str(),
         std::strerror(errno));
    return;
  }
  ::close(fd_);
  fd_ = fd;
  logf(LogLevel::Info, "SIGUSR1: access log %s reopened", path_.c_str());
}

void AccessLogWriter::close() {
  if (fd_ < 0) return;
  // The loop has stopped, so no flush is in flight: write both buffers in order, blocking.
  for (int k = 0; k < 2; ++k) {
    int i = active_ ^ 1 ^ k;  // the older buffer first
    size_t off = 0;
    while (off < len_[i]) {
      ssize_t n = ::write(fd_, buf_[i] + off, len_[i] - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    len_[i] = 0;
  }
  if (timerOn_) {
    timerOn_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  }
}

}  // namespace bitsd::platform
