// Owns every mbedTLS call: contexts, certificates, sessions for the server and the clients
// (platform/tls.h).
#include "platform/tls.h"

#include <mbedtls/error.h>
#include <mbedtls/version.h>

#include <cstring>

namespace bitsd::platform {

extern const bool kTlsBuilt = true;

namespace {
// ECDHE only (forward secrecy), AEAD only. ChaCha20-Poly1305 first: on ARM cores without AES
// instructions it is several times faster than AES-GCM; clients with AES hardware still get it when
// they prefer it (the server picks the first of its own list the client offers).
const int kSuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};
}  // namespace

const int* tlsCipherSuites() { return kSuites; }

std::string tlsErrorText(int rc) {
  char buf[160];
  mbedtls_strerror(rc, buf, sizeof buf);
  return buf;
}

TlsContext::TlsContext() {
  mbedtls_entropy_init(&entropy_);
  mbedtls_ctr_drbg_init(&drbg_);
  mbedtls_x509_crt_init(&cert_);
  mbedtls_pk_init(&key_);
  mbedtls_x509_crt_init(&own_);
  mbedtls_ssl_config_init(&conf_);
}

TlsContext::~TlsContext() {
  mbedtls_ssl_config_free(&conf_);
  mbedtls_pk_free(&key_);
  mbedtls_x509_crt_free(&own_);
  mbedtls_x509_crt_free(&cert_);
  mbedtls_ctr_drbg_free(&drbg_);
  mbedtls_entropy_free(&entropy_);
}

std::shared_ptr<TlsContext> TlsContext::load(const std::string& certPath, const std::string& keyPath,
                                             std::string* error, uint32_t recordBytes) {
  std::shared_ptr<TlsContext> t(new TlsContext());
  int rc = mbedtls_x509_crt_parse_file(&t->cert_, certPath.c_str());
  if (rc != 0) {
    *error = "tls-cert " + certPath + ": not a readable PEM certificate (" + tlsErrorText(rc) + ")";
    return nullptr;
  }
  rc = mbedtls_pk_parse_keyfile(&t->key_, keyPath.c_str(), nullptr);
  if (rc != 0) {
    *error = "tls-key " + keyPath + ": not a readable, unencrypted PEM private key (" + tlsErrorText(rc) + ")";
    return nullptr;
  }
  if (mbedtls_pk_check_pair(&t->cert_.pk, &t->key_) != 0) {
    *error = "tls-key " + keyPath + " does not belong to the certificate in " + certPath;
    return nullptr;
  }
  const char* pers = "bitsd tls";
  rc = mbedtls_ctr_drbg_seed(&t->drbg_, mbedtls_entropy_func, &t->entropy_,
                             reinterpret_cast<const unsigned char*>(pers), std::strlen(pers));
  if (rc != 0) {
    *error = "TLS random generator: " + tlsErrorText(rc);
    return nullptr;
  }
  rc = mbedtls_ssl_config_defaults(&t->conf_, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                   MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc != 0) {
    *error = "TLS configuration: " + tlsErrorText(rc);
    return nullptr;
  }
  mbedtls_ssl_conf_rng(&t->conf_, mbedtls_ctr_drbg_random, &t->drbg_);
  mbedtls_ssl_conf_min_version(&t->conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_max_version(&t->conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&t->conf_, kSuites);
  // Never ask for a client certificate: a Windows BITS job with none configured fails on an
  // optional request (BITS-UPLOAD.md §9).
  mbedtls_ssl_conf_authmode(&t->conf_, MBEDTLS_SSL_VERIFY_NONE);
  mbedtls_ssl_conf_renegotiation(&t->conf_, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  if (recordBytes < 16384) {
    // Records sent are capped (the server side of RFC 6066's max_fragment_length). Records received
    // are the client's choice: mbedTLS takes up to 16 KiB whatever this says.
#if defined(MBEDTLS_SSL_MAX_FRAGMENT_LENGTH)
    unsigned char code = recordBytes == 512    ? MBEDTLS_SSL_MAX_FRAG_LEN_512
                         : recordBytes == 1024 ? MBEDTLS_SSL_MAX_FRAG_LEN_1024
                         : recordBytes == 2048 ? MBEDTLS_SSL_MAX_FRAG_LEN_2048
                                               : MBEDTLS_SSL_MAX_FRAG_LEN_4096;
    if (recordBytes != 512 && recordBytes != 1024 && recordBytes != 2048 && recordBytes != 4096) {
      *error = "tls-record-bytes must be 512, 1K, 2K, 4K or 16K";
      return nullptr;
    }
    if (mbedtls_ssl_conf_max_frag_len(&t->conf_, code) != 0) {
      *error = "tls-record-bytes: mbedTLS refused the record size";
      return nullptr;
    }
#else
    *error = "tls-record-bytes below 16K needs an mbedTLS built with MBEDTLS_SSL_MAX_FRAGMENT_LENGTH";
    return nullptr;
#endif
  }
  rc = mbedtls_ssl_conf_own_cert(&t->conf_, &t->cert_, &t->key_);
  if (rc != 0) {
    *error = "tls-cert " + certPath + ": " + tlsErrorText(rc);
    return nullptr;
  }
  char subject[256];
  if (mbedtls_x509_dn_gets(subject, sizeof subject, &t->cert_.subject) > 0) t->subject_ = subject;
  return t;
}

std::shared_ptr<TlsContext> TlsContext::client(const std::string& caPath, bool insecure, int suite, std::string* error,
                                               bool* caUnreadable) {
  *caUnreadable = false;
  std::shared_ptr<TlsContext> t(new TlsContext());
  t->client_ = true;
  int rc = mbedtls_ctr_drbg_seed(&t->drbg_, mbedtls_entropy_func, &t->entropy_, nullptr, 0);
  if (rc == 0) {
    rc = mbedtls_ssl_config_defaults(&t->conf_, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
  }
  if (rc != 0) {
    *error = "TLS setup failed";
    return nullptr;
  }
  mbedtls_ssl_conf_rng(&t->conf_, mbedtls_ctr_drbg_random, &t->drbg_);
  if (suite != 0) {
    t->suites_[0] = suite;
    mbedtls_ssl_conf_ciphersuites(&t->conf_, t->suites_);
  }
  if (insecure) {
    mbedtls_ssl_conf_authmode(&t->conf_, MBEDTLS_SSL_VERIFY_NONE);
    return t;
  }
  rc = mbedtls_x509_crt_parse_file(&t->cert_, caPath.c_str());
  if (rc < 0 || t->cert_.version == 0) {
    *caUnreadable = true;
    *error = "cannot read the CA certificate(s) in " + caPath;
    return nullptr;
  }
  mbedtls_ssl_conf_ca_chain(&t->conf_, &t->cert_, nullptr);
  mbedtls_ssl_conf_authmode(&t->conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
  return t;
}

bool TlsContext::setClientCertificate(const std::string& certPath, const std::string& keyPath, std::string* error) {
  int rc = mbedtls_x509_crt_parse_file(&own_, certPath.c_str());
  if (rc != 0) {
    *error = certPath + ": not a readable PEM certificate (" + tlsErrorText(rc) + ")";
    return false;
  }
  rc = mbedtls_pk_parse_keyfile(&key_, keyPath.c_str(), nullptr);
  if (rc != 0) {
    *error = keyPath + ": not a readable, unencrypted PEM private key (" + tlsErrorText(rc) + ")";
    return false;
  }
  if (mbedtls_pk_check_pair(&own_.pk, &key_) != 0) {
    *error = keyPath + " does not belong to the certificate in " + certPath;
    return false;
  }
  rc = mbedtls_ssl_conf_own_cert(&conf_, &own_, &key_);
  if (rc != 0) {
    *error = certPath + ": " + tlsErrorText(rc);
    return false;
  }
  return true;
}

struct TlsSession::Impl {
  mbedtls_ssl_context ssl;
};

TlsSession::TlsSession() : impl_(new Impl()) { mbedtls_ssl_init(&impl_->ssl); }

TlsSession::~TlsSession() {
  mbedtls_ssl_free(&impl_->ssl);
  delete impl_;
}

bool TlsSession::setup(const std::shared_ptr<TlsContext>& ctx, void* io, SendFn send, RecvFn recv,
                       const char* hostname) {
  ctx_ = ctx;
  if (mbedtls_ssl_setup(&impl_->ssl, ctx->conf()) != 0) return false;
  if (hostname != nullptr && mbedtls_ssl_set_hostname(&impl_->ssl, hostname) != 0) return false;
  mbedtls_ssl_set_bio(&impl_->ssl, io, send, recv, nullptr);
  return true;
}

TlsSession::Result TlsSession::handshake(std::string* error) {
  int rc = mbedtls_ssl_handshake(&impl_->ssl);
  if (rc == 0) return Result::Done;
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantMore;
  *error = tlsErrorText(rc);
  return Result::Failed;
}

size_t TlsSession::read(char* buf, size_t len, Result* r, std::string* error) {
  int rc = mbedtls_ssl_read(&impl_->ssl, reinterpret_cast<unsigned char*>(buf), len);
  if (rc > 0) {
    *r = Result::Done;
    return static_cast<size_t>(rc);
  }
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
    *r = Result::WantMore;
  } else if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
    *r = Result::Closed;
  } else {
    *r = Result::Failed;
    *error = tlsErrorText(rc);
  }
  return 0;
}

TlsSession::Result TlsSession::peek(const char** data, size_t* len) {
  // A read of 0 bytes processes the next record and leaves its plaintext in mbedTLS's input buffer.
  unsigned char none = 0;
  int rc = mbedtls_ssl_read(&impl_->ssl, &none, 0);
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantMore;
  if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return Result::Closed;
  size_t avail = mbedtls_ssl_get_bytes_avail(&impl_->ssl);
  if (rc != 0 || avail == 0) return Result::Failed;
#if MBEDTLS_VERSION_MAJOR >= 3
  *data = reinterpret_cast<const char*>(impl_->ssl.MBEDTLS_PRIVATE(in_offt));
#else
  *data = reinterpret_cast<const char*>(impl_->ssl.in_offt);
#endif
  *len = avail;
  return Result::Done;
}

bool TlsSession::write(const char* data, size_t len, std::string* error) {
  size_t done = 0;
  while (done < len) {
    int rc = mbedtls_ssl_write(&impl_->ssl, reinterpret_cast<const unsigned char*>(data + done), len - done);
    if (rc <= 0) {
      *error = tlsErrorText(rc);
      return false;
    }
    done += static_cast<size_t>(rc);
  }
  return true;
}

void TlsSession::closeNotify() { (void)mbedtls_ssl_close_notify(&impl_->ssl); }

std::string TlsSession::certificateProblem() const {
  uint32_t flags = mbedtls_ssl_get_verify_result(&impl_->ssl);
  if (flags == 0 || flags == static_cast<uint32_t>(-1)) return "";
  char why[256];
  mbedtls_x509_crt_verify_info(why, sizeof why, "", flags);
  std::string w(why);
  while (!w.empty() && w.back() == '\n') w.pop_back();
  for (size_t i = 0; (i = w.find('\n', i)) != std::string::npos;) w.replace(i, 1, "; ");
  return w;
}

const char* TlsSession::suite() const { return mbedtls_ssl_get_ciphersuite(&impl_->ssl); }

static_assert(TlsSession::kWantRead == MBEDTLS_ERR_SSL_WANT_READ, "TlsSession::kWantRead");

}  // namespace bitsd::platform
