// Errors as values (STYLE.md §4): a small enum code with a static message. No allocation, no
// exceptions. `Result<T>` carries either a value or a non-OK Status. `Outcome` is the same for
// start-up and reload, where a message names a path or a value and is composed at run time.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
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

// A Status whose message is composed at run time, for start-up, reload and the command line: there
// an error names a path or a value ("cannot create directory var/state: Permission denied") and
// allocating is fine. Never on the request path, where a Status costs nothing. A Status converts to
// an Outcome unchanged (its code, its static message), so core's errors and the platform's
// start-up errors travel the same way up to main(), which prints the one line.
class [[nodiscard]] Outcome {
 public:
  Outcome() = default;
  Outcome(const Status& st)  // NOLINT: implicit by design
      : code_(st.code()), message_(st.isOk() ? "" : st.message()) {}
  static Outcome ok() { return Outcome(); }
  static Outcome fail(Code code, std::string message) {
    Outcome o;
    o.code_ = code == Code::Ok ? Code::Io : code;
    o.message_ = std::move(message);
    return o;
  }

  bool isOk() const { return code_ == Code::Ok; }
  Code code() const { return code_; }
  // One line naming the problem; empty when ok.
  const std::string& message() const { return message_; }
  // The same failure, its message preceded by `context` ("locations: /a -> /b: ..."); ok stays ok.
  Outcome within(std::string_view context) const {
    if (isOk()) return *this;
    return fail(code_, std::string(context) + message_);
  }

 private:
  Code code_ = Code::Ok;
  std::string message_;
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
