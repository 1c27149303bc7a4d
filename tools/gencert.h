// bitsctl gen-cert: a self-signed key and certificate for bitsd's https (see tools/gencert.cc).
#pragma once

#include <string>

namespace bitsd::tools {

struct GenCertOptions {
  std::string cn;                      // host name or IP address clients use
  std::string certPath = "bitsd.crt";  // PEM
  std::string keyPath = "bitsd.key";   // PEM, mode 0600
  unsigned days = 3650;
  bool force = false;                  // replace existing files
};

// Writes the key and the certificate; false with a one-line reason in *error.
bool genCert(const GenCertOptions& o, std::string* error);

}  // namespace bitsd::tools
