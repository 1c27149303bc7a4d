// TLS for bitsd's listener (issue 7): one TlsContext holds the certificate, key and mbedTLS
// configuration (TLS 1.2, ECDHE with ChaCha20-Poly1305 or AES-GCM only, no client certificate
// request). Connections hold a shared_ptr to the context they were accepted with, so a SIGHUP
// reload swaps the context for new connections while live ones finish on the old one.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <memory>
#include <string>

namespace bitsd::platform {

class TlsContext {
 public:
  // Loads a PEM certificate (chain) and its private key (RSA or ECDSA). nullptr with a one-line
  // reason naming the file when anything is wrong.
  static std::shared_ptr<TlsContext> load(const std::string& certPath, const std::string& keyPath, std::string* error);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  const mbedtls_ssl_config* conf() const { return &conf_; }
  const std::string& subject() const { return subject_; }

 private:
  TlsContext();
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  mbedtls_x509_crt cert_;
  mbedtls_pk_context key_;
  mbedtls_ssl_config conf_;
  std::string subject_;
};

// The cipher suites bitsd offers, most preferred first (0-terminated).
const int* tlsCipherSuites();
// mbedTLS's text for an error code.
std::string tlsErrorText(int rc);

}  // namespace bitsd::platform
