// libFuzzer target for HTTP responses, the untrusted answers bitsd reads from peers it calls (the
// notified application; bitsclient; next the etcd client and the forwarder): arbitrary bytes go
// through core's ResponseParser and the notifier's reading of the headers (takeNotifyHeader), as
// platform/uv_notifier.cc drives them. The input is split into reads at the marker "-_-" (as in
// fuzz_request), and the stream ends with the peer's close (finish()). Every input runs three ways:
// the notifier's head budget, a small budget (256 bytes), and as the answer to a HEAD request.
//
// Invariants checked (a violation aborts, which the fuzzer reports):
//   - every event is in order: headers, then HeadersComplete once, then body (and chunked trailers),
//     then MessageComplete;
//   - execute() never claims more than it was given, and NeedMore means it used all of it;
//   - a header fits the budget, and so does what the parser read of the head;
//   - a body never exceeds its Content-Length, and meets it when the message completes;
//   - an answer to HEAD has no body; after an Error every call is an Error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/notify.h"
#include "core/response_parser.h"

namespace {

using namespace bitsd;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_response invariant broken: %s\n", what);
    std::abort();
  }
}

bool hasNoBody(int status) { return (status >= 100 && status < 200) || status == 204 || status == 304; }

void run(std::string_view input, size_t maxHead, bool toHead) {
  ResponseParser parser(maxHead);
  parser.reset(toHead);
  NotifyResult result;
  bool headers = false, complete = false, failed = false;
  uint64_t bodyBytes = 0;
  while (!input.empty() && !complete && !failed) {
    size_t cut = input.find("-_-");
    // Each read in a buffer of its own, so that reads beyond it are visible to ASan.
    std::string read(input.substr(0, cut));
    input = cut == std::string_view::npos ? std::string_view() : input.substr(cut + 3);
    size_t pos = 0;
    for (int guard = 0;; ++guard) {
      require(guard < 1000000, "no progress");
      size_t used = 0;
      ResponseEvent e = parser.execute(read.data() + pos, read.size() - pos, &used);
      require(used <= read.size() - pos, "consumed more than given");
      pos += used;
      if (e == ResponseEvent::NeedMore) {
        require(pos == read.size(), "NeedMore left input unread");
        break;
      }
      if (e == ResponseEvent::Header) {
        require(!headers || parser.head().chunked, "a header after the head (other than a chunked trailer)");
        require(!parser.headerName().empty(), "empty header name");
        require(parser.headerName().size() + parser.headerValue().size() <= maxHead, "header over the budget");
        (void)takeNotifyHeader(parser.headerName(), parser.headerValue(), &result);
        require(result.staticUrlLen <= NotifyResult::kMaxUrlBytes, "static URL too long");
      } else if (e == ResponseEvent::HeadersComplete) {
        require(!headers, "HeadersComplete twice");
        headers = true;
        require(parser.head().status >= 0 && parser.head().status <= 999, "status out of range");
      } else if (e == ResponseEvent::Body) {
        require(headers, "body before the head");
        require(!toHead, "a body in an answer to HEAD");
        require(!parser.body().empty(), "empty body event");
        require(parser.body().data() >= read.data() && parser.body().data() + parser.body().size() <= read.data() + read.size(),
                "body outside the read");
        bodyBytes += parser.body().size();
        const ResponseHead& h = parser.head();
        require(!h.hasContentLength || h.chunked || bodyBytes <= h.contentLength, "body over Content-Length");
      } else if (e == ResponseEvent::MessageComplete) {
        require(headers, "message complete before the head");
        const ResponseHead& h = parser.head();
        if (h.hasContentLength && !h.chunked && !toHead && !hasNoBody(h.status)) {
          require(bodyBytes == h.contentLength, "message complete short of Content-Length");
        }
        complete = true;
        break;
      } else {
        require(parser.errorText()[0] != '\0', "an error without a reason");
        failed = true;
        break;
      }
    }
  }
  if (complete) {
    size_t used = 0;
    require(parser.execute("x", 1, &used) == ResponseEvent::MessageComplete && used == 0, "stays complete");
    return;
  }
  ResponseEvent end = parser.finish();
  require(end == ResponseEvent::MessageComplete || end == ResponseEvent::Error, "finish() decides");
  if (failed) {
    require(end == ResponseEvent::Error, "an error is final");
    size_t used = 0;
    require(parser.execute("HTTP/1.1 200 OK\r\n\r\n", 19, &used) == ResponseEvent::Error && used == 0, "stays failed");
  }
  if (end == ResponseEvent::MessageComplete) require(headers, "complete without a head");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  run(input, ResponseParser::kDefaultMaxHeadBytes, false);
  run(input, 256, false);
  run(input, ResponseParser::kDefaultMaxHeadBytes, true);
  return 0;
}
