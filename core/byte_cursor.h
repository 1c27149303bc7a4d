// Bounds-checked cursors over a byte buffer, with explicit little-endian integers: the only way the
// journal codec (core/journal_format.cc) touches bytes. As SQLite's walEncodeFrame/walDecodeFrame
// and littlefs's tole32/fromle32 pairs do, each put on a ByteWriter has a get on a ByteReader that
// undoes it, so a record's layout is written once for encoding and once, in the same order, for
// decoding, with no offsets to keep in step by hand.
//
// Neither cursor ever reads or writes outside its buffer, whatever it is asked. The first operation
// that would go past the end fails, leaves the buffer and its output untouched, and makes the cursor
// fail every later operation too (ok() turns false), so a sequence of puts or gets can be checked
// once at the end. A ByteWriter made by counting() writes nothing and never fails: its size() is the
// number of bytes the same puts would write (how the codec sizes a record before encoding it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace bitsd {

class ByteWriter {
 public:
  // Writes into out[0, cap).
  ByteWriter(uint8_t* out, size_t cap) : out_(out), cap_(cap) {}
  // Writes nothing; size() counts what would be written.
  static ByteWriter counting() { return ByteWriter(nullptr, SIZE_MAX); }

  void u8(uint8_t v) { putLe(v, 1); }
  void le16(uint16_t v) { putLe(v, 2); }
  void le32(uint32_t v) { putLe(v, 4); }
  void le64(uint64_t v) { putLe(v, 8); }
  void bytes(const void* p, size_t n) {
    if (!reserve(n)) return;
    if (out_ != nullptr && n > 0) std::memcpy(out_ + pos_, p, n);
    pos_ += n;
  }
  // A length (1 or 2 bytes) then the bytes. The caller checks the length fits its prefix.
  void str8(std::string_view s) {
    u8(static_cast<uint8_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void str16(std::string_view s) {
    le16(static_cast<uint16_t>(s.size()));
    bytes(s.data(), s.size());
  }

  // Bytes written (or counted) so far.
  size_t size() const { return pos_; }
  // False once a put did not fit.
  bool ok() const { return ok_; }

 private:
  bool reserve(size_t n) {
    if (!ok_ || n > cap_ - pos_) {
      ok_ = false;
      return false;
    }
    return true;
  }
  void putLe(uint64_t v, size_t n) {
    if (!reserve(n)) return;
    if (out_ != nullptr) {
      for (size_t i = 0; i < n; ++i) out_[pos_ + i] = static_cast<uint8_t>(v >> (8 * i));
    }
    pos_ += n;
  }

  uint8_t* out_;
  size_t cap_;
  size_t pos_ = 0;
  bool ok_ = true;
};

class ByteReader {
 public:
  ByteReader(const uint8_t* in, size_t len) : in_(in), len_(len) {}
  explicit ByteReader(std::span<const uint8_t> in) : in_(in.data()), len_(in.size()) {}

  // Each get returns ok(): false (and the output untouched) if the bytes are not there.
  bool u8(uint8_t* v) { return getLe(v, 1); }
  bool le16(uint16_t* v) { return getLe(v, 2); }
  bool le32(uint32_t* v) { return getLe(v, 4); }
  bool le64(uint64_t* v) { return getLe(v, 8); }
  bool bytes(void* out, size_t n) {
    if (!take(n)) return false;
    if (n > 0) std::memcpy(out, in_ + pos_ - n, n);
    return true;
  }
  // A view of the next n bytes, valid as long as the input is.
  bool view(size_t n, std::string_view* out) {
    if (!take(n)) return false;
    *out = std::string_view(reinterpret_cast<const char*>(in_ + pos_ - n), n);
    return true;
  }
  // The inverses of ByteWriter::str8 / str16.
  bool str8(std::string_view* out) {
    uint8_t n = 0;
    return u8(&n) && view(n, out);
  }
  bool str16(std::string_view* out) {
    uint16_t n = 0;
    return le16(&n) && view(n, out);
  }

  bool ok() const { return ok_; }
  // Every byte consumed, and no get failed: a fixed-layout payload must end exactly here.
  bool atEnd() const { return ok_ && pos_ == len_; }
  size_t position() const { return pos_; }
  size_t remaining() const { return len_ - pos_; }

 private:
  bool take(size_t n) {
    if (!ok_ || n > len_ - pos_) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }
  template <typename T>
  bool getLe(T* v, size_t n) {
    if (!take(n)) return false;
    uint64_t x = 0;
    for (size_t i = n; i-- > 0;) x = x << 8 | in_[pos_ - n + i];
    *v = static_cast<T>(x);
    return true;
  }

  const uint8_t* in_;
  size_t len_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace bitsd
