// The wire layer's head formatter: writes an HTTP/1.1 head (a status or request line, header lines
// and the blank line that ends it) into a caller's fixed buffer, never past its end and without
// allocating. The server's answers (core/response.cc) are written with it, and so are the requests
// bitsd's HTTP clients send. A piece that does not fit is left out whole and truncated() says so;
// room for the final CRLF is always kept, so the head stays well-formed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace bitsd {

class HeadWriter {
 public:
  HeadWriter(char* out, size_t cap);

  HeadWriter& statusLine(int status);  // "HTTP/1.1 <status> <reason phrase>"
  HeadWriter& requestLine(std::string_view method, std::string_view target);  // "... HTTP/1.1"
  HeadWriter& header(std::string_view name, std::string_view value);
  HeadWriter& headerNumber(std::string_view name, uint64_t value);  // decimal

  // Ends the head with the blank line (once); returns its length.
  size_t end();
  size_t size() const { return len_; }
  bool truncated() const { return truncated_; }

 private:
  // Appends the pieces whole, or none of them.
  void put(std::initializer_list<std::string_view> pieces);

  char* out_;
  size_t cap_;
  size_t len_ = 0;
  bool truncated_ = false;
};

// Decimal digits of `v` into `out` (room for 20); returns how many.
size_t formatDecimal(uint64_t v, char* out);

}  // namespace bitsd
