// Errors as values (STYLE.md §4): a small enum code with a static message. No allocation, no
// exceptions. `Result<T>` carries either a value or a non-OK Status.
#pragma once

#include <cstdint>
#include <utility>

namespace bitsd {

enum class Code : uint8_t {
  Ok = 0,
  InvalidArgument,   // bad input (config value, request field)
  NotFound,          // file or directory missing
  AlreadyExists,     // create/link target exists
  IsDirectory,
  NotDirectory,
  NoSpace,           // ENOSPC / EDQUOT / EFBIG
  AccessDenied,
  Io,                // any other I/O failure
  Exhausted,         // a fixed pool is empty
  Cancelled,
};

class [[nodiscard]] Status {
 public:
  constexpr Status() = default;
  constexpr Status(Code code, const char* message, int sysCode = 0)
      : code_(code), message_(message), sysCode_(sysCode) {}
  static constexpr Status ok() { return Status(); }

  constexpr bool isOk() const { return code_ == Code::Ok; }
  constexpr Code code() const { return code_; }
  // Static string; never owned.
  constexpr const char* message() const { return message_; }
  // The original OS/library error number, kept for the log (0 when none).
  constexpr int sysCode() const { return sysCode_; }

 private:
  Code code_ = Code::Ok;
  const char* message_ = "ok";
  int sysCode_ = 0;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(status) {}     // NOLINT: implicit by design
  bool isOk() const { return status_.isOk(); }
  const Status& status() const { return status_; }
  const T& value() const { return value_; }
  T& value() { return value_; }

 private:
  Status status_;
  T value_{};
};

}  // namespace bitsd

// Always-on invariant check for broken *internal* state (never for network or disk bytes).
#define BITS_CHECK(cond)                                                                         \
  do {                                                                                           \
    if (!(cond)) ::bitsd::checkFailed(#cond, __FILE__, __LINE__);                                \
  } while (0)

namespace bitsd {
[[noreturn]] void checkFailed(const char* what, const char* file, int line);
}
