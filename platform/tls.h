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

#include <cstdint>
#include <memory>
#include <string>

namespace bitsd::platform {

// Whether this build serves https (cmake -DBITSD_TLS): true in tls.cc, false in tls_off.cc.
extern const bool kTlsBuilt;

class TlsContext {
 public:
  // Loads a PEM certificate (chain) and its private key (RSA or ECDSA). nullptr with a one-line
  // reason naming the file when anything is wrong. `recordBytes` caps the payload of the records
  // bitsd sends (512, 1024, 2048, 4096 or 16384): a small board keeps its write bursts small.
  static std::shared_ptr<TlsContext> load(const std::string& certPath, const std::string& keyPath, std::string* error,
                                          uint32_t recordBytes = 16384);
  // A client's configuration (bitsclient): TLS 1.2 with mbedTLS's defaults, or only `suite` when
  // not 0; the server's certificate verified against the PEM file `caPath` unless `insecure`.
  // nullptr with *error set; *caUnreadable when it was the CA file that could not be read.
  static std::shared_ptr<TlsContext> client(const std::string& caPath, bool insecure, int suite, std::string* error,
                                            bool* caUnreadable);
  bool isClient() const { return client_; }
  // A client's own certificate (PEM chain) and unencrypted key, for a server that asks for one (etcd
  // with client-cert-auth). False with *error naming the file.
  bool setClientCertificate(const std::string& certPath, const std::string& keyPath, std::string* error);
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
  mbedtls_x509_crt own_;  // a client's own certificate (setClientCertificate)
  mbedtls_ssl_config conf_;
  std::string subject_;
  bool client_ = false;
  int suites_[2] = {0, 0};
};

// One connection's TLS state over caller-provided I/O: `send` takes ciphertext to write (all of it),
// `recv` gives buffered ciphertext or returns kWantRead. Every mbedTLS call of Stream's TLS backend
// (stream_tls.cc) is here, so a build without TLS (BITSD_TLS=OFF) compiles it unchanged.
class TlsSession {
 public:
  static constexpr int kWantRead = -0x6900;  // MBEDTLS_ERR_SSL_WANT_READ
  using SendFn = int (*)(void* io, const unsigned char* buf, size_t len);
  using RecvFn = int (*)(void* io, unsigned char* buf, size_t len);
  enum class Result { Done, WantMore, Closed, Failed };

  TlsSession();
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // `hostname`: a client's name for the server (SNI, and checked against its certificate).
  bool setup(const std::shared_ptr<TlsContext>& ctx, void* io, SendFn send, RecvFn recv, const char* hostname = nullptr);
  // Advances the handshake: Done, WantMore (needs more ciphertext) or Failed (*error says why).
  Result handshake(std::string* error);
  // Decrypts into buf: the byte count (> 0), or 0 with *r = WantMore, Closed or Failed.
  size_t read(char* buf, size_t len, Result* r, std::string* error);
  // Decrypts the next record if its ciphertext is all there and shows its plaintext without taking
  // it (the next read returns it): Done with *data/*len, WantMore (no whole record yet), Closed
  // (close_notify), or Failed for anything else (an alert, an error), which the next read reports.
  Result peek(const char** data, size_t* len);
  // Encrypts all of `len` bytes into `send`; false on failure.
  bool write(const char* data, size_t len, std::string* error);
  // Queues a close_notify alert into `send` (best effort).
  void closeNotify();
  // A client's handshake failed on the server's certificate: why, on one line ("" otherwise).
  std::string certificateProblem() const;
  const char* suite() const;

 private:
  struct Impl;
  Impl* impl_;
  std::shared_ptr<TlsContext> ctx_;  // the configuration this connection was accepted with
};

// The cipher suites bitsd offers, most preferred first (0-terminated).
const int* tlsCipherSuites();
// mbedTLS's text for an error code.
std::string tlsErrorText(int rc);

}  // namespace bitsd::platform
