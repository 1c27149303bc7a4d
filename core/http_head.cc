// Owns HeadWriter, the wire layer's fixed-buffer HTTP/1.1 head formatter (core/http_head.h).
#include "core/http_head.h"

#include <cstring>

#include "core/response.h"

namespace bitsd {

size_t formatDecimal(uint64_t v, char* out) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  return n;
}

HeadWriter::HeadWriter(char* out, size_t cap) : out_(out), cap_(cap) {}

void HeadWriter::put(std::initializer_list<std::string_view> pieces) {
  size_t total = 0;
  for (std::string_view p : pieces) total += p.size();
  // Two bytes stay free for end()'s CRLF.
  if (cap_ < 2 || total > cap_ - 2 - len_) {
    truncated_ = true;
    return;
  }
  for (std::string_view p : pieces) {
    std::memcpy(out_ + len_, p.data(), p.size());
    len_ += p.size();
  }
}

HeadWriter& HeadWriter::statusLine(int status) {
  char code[20];
  size_t n = formatDecimal(static_cast<uint64_t>(status < 0 ? 0 : status), code);
  put({"HTTP/1.1 ", std::string_view(code, n), " ", reasonPhrase(status), "\r\n"});
  return *this;
}

HeadWriter& HeadWriter::requestLine(std::string_view method, std::string_view target) {
  put({method, " ", target, " HTTP/1.1\r\n"});
  return *this;
}

HeadWriter& HeadWriter::header(std::string_view name, std::string_view value) {
  put({name, ": ", value, "\r\n"});
  return *this;
}

HeadWriter& HeadWriter::headerNumber(std::string_view name, uint64_t value) {
  char digits[20];
  return header(name, std::string_view(digits, formatDecimal(value, digits)));
}

size_t HeadWriter::end() {
  if (cap_ >= 2) {
    std::memcpy(out_ + len_, "\r\n", 2);
    len_ += 2;
  }
  return len_;
}

}  // namespace bitsd
