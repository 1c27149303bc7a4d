// Owns the heads of reply downloads (GET/HEAD of a BITS-Reply-URL) (core/http_reply.h).
#include "core/http_reply.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <cstring>

#include "core/content_range.h"
#include "core/protocol.h"

namespace bitsd {

namespace {
constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void put2(char* p, unsigned v) {
  p[0] = static_cast<char>('0' + v / 10 % 10);
  p[1] = static_cast<char>('0' + v % 10);
}

bool digits(std::string_view s, uint64_t* out) { return s.size() > 0 && parseDecimal(s, out); }
}  // namespace

void formatHttpDate(uint64_t unixSeconds, char out[kHttpDateBytes]) {
  using namespace std::chrono;
  const sys_days day{days{static_cast<int64_t>(unixSeconds / 86400)}};
  const year_month_day ymd{day};
  const weekday wd{day};
  const uint64_t secs = unixSeconds % 86400;
  std::memcpy(out, kDays[wd.c_encoding()], 3);
  out[3] = ',';
  out[4] = ' ';
  put2(out + 5, static_cast<unsigned>(ymd.day()));
  out[7] = ' ';
  std::memcpy(out + 8, kMonths[static_cast<unsigned>(ymd.month()) - 1], 3);
  out[11] = ' ';
  int y = static_cast<int>(ymd.year());
  put2(out + 12, static_cast<unsigned>(y / 100));
  put2(out + 14, static_cast<unsigned>(y % 100));
  out[16] = ' ';
  put2(out + 17, static_cast<unsigned>(secs / 3600));
  out[19] = ':';
  put2(out + 20, static_cast<unsigned>(secs / 60 % 60));
  out[22] = ':';
  put2(out + 23, static_cast<unsigned>(secs % 60));
  std::memcpy(out + 25, " GMT", 4);
}

bool parseHttpDate(std::string_view t, uint64_t* unixSeconds) {
  using namespace std::chrono;
  t = trimOws(t);
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  if (t.size() != kHttpDateBytes || t[3] != ',' || t[4] != ' ' || t[7] != ' ' || t[11] != ' ' ||
      t[16] != ' ' || t[19] != ':' || t[22] != ':' || t.substr(25) != " GMT") {
    return false;
  }
  uint64_t d, y, hh, mm, ss;
  if (!digits(t.substr(5, 2), &d) || !digits(t.substr(12, 4), &y) || !digits(t.substr(17, 2), &hh) ||
      !digits(t.substr(20, 2), &mm) || !digits(t.substr(23, 2), &ss)) {
    return false;
  }
  unsigned mon = 0;
  for (unsigned i = 0; i < 12; ++i) {
    if (t.substr(8, 3) == kMonths[i]) mon = i + 1;
  }
  if (mon == 0 || hh > 23 || mm > 59 || ss > 60 || y < 1970) return false;
  const year_month_day ymd{year{static_cast<int>(y)}, month{mon}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return false;
  const int64_t days = sys_days{ymd}.time_since_epoch().count();
  *unixSeconds = static_cast<uint64_t>(days) * 86400 + hh * 3600 + mm * 60 + ss;
  return true;
}

RangeAnswer interpretRanges(std::string_view header, uint64_t size, ReplyRange* out, size_t* count) {
  *count = 0;
  header = trimOws(header);
  if (header.size() < 6 || !equalsIgnoreCase(header.substr(0, 6), "bytes=")) return RangeAnswer::Unsatisfiable;
  std::string_view specs = header.substr(6);
  ReplyRange found[kMaxReplyRanges];
  size_t n = 0;
  bool spilled = false;  // more than kMaxReplyRanges before merging: found[0] spans them all
  auto add = [&](ReplyRange r) {
    if (!spilled && n < kMaxReplyRanges) {
      found[n++] = r;
      return;
    }
    if (!spilled) {
      for (size_t i = 1; i < n; ++i) {
        found[0].begin = std::min(found[0].begin, found[i].begin);
        found[0].end = std::max(found[0].end, found[i].end);
      }
      n = 1;
      spilled = true;
    }
    found[0].begin = std::min(found[0].begin, r.begin);
    found[0].end = std::max(found[0].end, r.end);
  };
  bool any = false;
  while (!specs.empty()) {
    size_t comma = specs.find(',');
    std::string_view spec = trimOws(specs.substr(0, comma));
    specs = comma == std::string_view::npos ? std::string_view() : specs.substr(comma + 1);
    if (spec.empty()) continue;
    any = true;
    size_t dash = spec.find('-');
    if (dash == std::string_view::npos) return RangeAnswer::Unsatisfiable;
    std::string_view a = spec.substr(0, dash), b = spec.substr(dash + 1);
    uint64_t first = 0, last = 0;
    if (a.empty()) {  // suffix: the last N bytes
      if (!digits(b, &last)) return RangeAnswer::Unsatisfiable;
      if (last == 0 || size == 0) continue;
      first = last >= size ? 0 : size - last;
      last = size - 1;
    } else {
      if (!digits(a, &first)) return RangeAnswer::Unsatisfiable;
      if (b.empty()) {
        last = size == 0 ? 0 : size - 1;
      } else if (!digits(b, &last) || last < first) {
        return RangeAnswer::Unsatisfiable;
      }
      if (first >= size) continue;  // this one is unsatisfiable; others may not be
      if (last >= size) last = size - 1;
    }
    add(ReplyRange{first, last + 1});
  }
  if (!any || n == 0) return RangeAnswer::Unsatisfiable;
  for (size_t i = 1; i < n; ++i) {  // at most kMaxReplyRanges: an insertion sort by begin
    for (size_t j = i; j > 0 && found[j].begin < found[j - 1].begin; --j) std::swap(found[j], found[j - 1]);
  }
  size_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    if (m > 0 && found[i].begin <= out[m - 1].end) {
      out[m - 1].end = std::max(out[m - 1].end, found[i].end);
    } else {
      out[m++] = found[i];
    }
  }
  *count = m;
  return m == 1 ? RangeAnswer::Partial : RangeAnswer::Multipart;
}

}  // namespace bitsd
