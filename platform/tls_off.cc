// TLS for a build without it (-DBITSD_TLS=OFF): the same interface, so the server and main compile
// unchanged, but nothing links mbedTLS's TLS or X.509 libraries. tls-cert is refused at start-up.
#include "platform/tls.h"

namespace bitsd::platform {

extern const bool kTlsBuilt = false;

namespace {
const int kNoSuites[] = {0};
}

const int* tlsCipherSuites() { return kNoSuites; }

std::string tlsErrorText(int) { return "this bitsd was built without TLS"; }

TlsContext::TlsContext() = default;
TlsContext::~TlsContext() = default;

std::shared_ptr<TlsContext> TlsContext::load(const std::string&, const std::string&, std::string* error, uint32_t) {
  *error = "tls-cert: this bitsd was built without TLS (cmake -DBITSD_TLS=OFF); rebuild with -DBITSD_TLS=ON for https";
  return nullptr;
}

std::shared_ptr<TlsContext> TlsContext::client(const std::string&, bool, int, std::string* error, bool* caUnreadable) {
  *caUnreadable = false;
  *error = "this build has no TLS (cmake -DBITSD_TLS=OFF)";
  return nullptr;
}

bool TlsContext::setClientCertificate(const std::string&, const std::string&, std::string* error) {
  *error = "this build has no TLS (cmake -DBITSD_TLS=OFF)";
  return false;
}

struct TlsSession::Impl {};

TlsSession::TlsSession() : impl_(nullptr) {}
TlsSession::~TlsSession() = default;
bool TlsSession::setup(const std::shared_ptr<TlsContext>&, void*, SendFn, RecvFn, const char*) { return false; }
TlsSession::Result TlsSession::handshake(std::string* error) {
  *error = tlsErrorText(0);
  return Result::Failed;
}
size_t TlsSession::read(char*, size_t, Result* r, std::string* error) {
  *r = Result::Failed;
  *error = tlsErrorText(0);
  return 0;
}
TlsSession::Result TlsSession::peek(const char**, size_t*) { return Result::Failed; }
bool TlsSession::write(const char*, size_t, std::string* error) {
  *error = tlsErrorText(0);
  return false;
}
void TlsSession::closeNotify() {}
std::string TlsSession::certificateProblem() const { return ""; }
const char* TlsSession::suite() const { return ""; }

}  // namespace bitsd::platform
