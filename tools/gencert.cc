// bitsctl gen-cert: a self-signed ECDSA P-256 key and certificate for bitsd's https, made with
// mbedTLS (an appliance has no openssl). The certificate carries the name both as its CN and as a
// subjectAltName (DNS name, or IP address for a literal), which is what Windows checks.
#include "tools/gencert.h"

#include <fcntl.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace bitsd::tools {
namespace {

std::string mbedError(int rc) {
  char buf[128];
  mbedtls_strerror(rc, buf, sizeof buf);
  return buf;
}

bool writeNew(const std::string& path, const unsigned char* data, size_t len, mode_t mode, bool force,
              std::string* error) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
  int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) {
    *error = errno == EEXIST ? path + " exists (use --force to replace it)" : "cannot write " + path + ": " + std::strerror(errno);
    return false;
  }
  bool ok = ::write(fd, data, len) == static_cast<ssize_t>(len) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) *error = "cannot write " + path + ": " + std::strerror(errno);
  return ok;
}

std::string timeText(std::time_t t) {
  std::tm tm;
  ::gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

// DER of GeneralNames for subjectAltName: dNSName [2] for a host name; for an IP literal both the
// iPAddress [7] (what Windows and OpenSSL match) and the text as a dNSName (mbedTLS 2.28 clients
// match only dNSNames once a subjectAltName is present).
bool subjectAltName(const std::string& name, std::vector<unsigned char>* der) {
  unsigned char ip[16];
  size_t ipLen = 0;
  if (::inet_pton(AF_INET, name.c_str(), ip) == 1) ipLen = 4;
  else if (::inet_pton(AF_INET6, name.c_str(), ip) == 1) ipLen = 16;
  if (name.size() > 255) return false;
  unsigned char buf[800];
  unsigned char* p = buf + sizeof buf;
  int len = 0, rc;
  auto entry = [&](int tag, const unsigned char* value, size_t valueLen) {
    if ((rc = mbedtls_asn1_write_raw_buffer(&p, buf, value, valueLen)) < 0) return false;
    len += rc;
    if ((rc = mbedtls_asn1_write_len(&p, buf, valueLen)) < 0) return false;
    len += rc;
    if ((rc = mbedtls_asn1_write_tag(&p, buf, static_cast<unsigned char>(MBEDTLS_ASN1_CONTEXT_SPECIFIC | tag))) < 0) return false;
    len += rc;
    return true;
  };
  if (!entry(2, reinterpret_cast<const unsigned char*>(name.data()), name.size())) return false;
  if (ipLen != 0 && !entry(7, ip, ipLen)) return false;
  if ((rc = mbedtls_asn1_write_len(&p, buf, static_cast<size_t>(len))) < 0) return false;
  len += rc;
  if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0) return false;
  len += rc;
  der->assign(p, p + len);
  return true;
}

bool validName(const std::string& cn) {
  if (cn.empty() || cn.size() > 253) return false;
  for (char c : cn) {
    unsigned char u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '-' || c == '.' || c == ':' || c == '*')) return false;
  }
  return true;
}

}  // namespace

bool genCert(const GenCertOptions& o, std::string* error) {
  if (!validName(o.cn)) {
    *error = "--cn must be a host name or IP address (letters, digits, '-', '.', ':')";
    return false;
  }
  if (o.days < 1 || o.days > 36500) {
    *error = "--days must be 1..36500";
    return false;
  }
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_pk_context key;
  mbedtls_x509write_cert crt;
  mbedtls_mpi serial;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_pk_init(&key);
  mbedtls_x509write_crt_init(&crt);
  mbedtls_mpi_init(&serial);
  bool ok = false;
  int rc = 0;
  std::vector<unsigned char> san;
  std::vector<unsigned char> pem(8192);
  std::vector<unsigned char> keyPem(4096);
  std::time_t now = std::time(nullptr);
  std::string subject = "CN=" + o.cn;
  unsigned char serialBytes[16];
  const char* pers = "bitsctl gen-cert";
  do {
    if ((rc = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                    reinterpret_cast<const unsigned char*>(pers), std::strlen(pers))) != 0) {
      *error = "random generator: " + mbedError(rc);
      break;
    }
    if ((rc = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0 ||
        (rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), mbedtls_ctr_drbg_random, &drbg)) != 0) {
      *error = "key generation: " + mbedError(rc);
      break;
    }
    if ((rc = mbedtls_ctr_drbg_random(&drbg, serialBytes, sizeof serialBytes)) != 0) {
      *error = "random generator: " + mbedError(rc);
      break;
    }
    serialBytes[0] &= 0x7f;  // a positive serial
    mbedtls_mpi_read_binary(&serial, serialBytes, sizeof serialBytes);
    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, &key);
    mbedtls_x509write_crt_set_issuer_key(&crt, &key);
    if ((rc = mbedtls_x509write_crt_set_subject_name(&crt, subject.c_str())) != 0 ||
        (rc = mbedtls_x509write_crt_set_issuer_name(&crt, subject.c_str())) != 0 ||
        (rc = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0 ||
        (rc = mbedtls_x509write_crt_set_validity(&crt, timeText(now - 86400).c_str(),
                                                 timeText(now + static_cast<std::time_t>(o.days) * 86400).c_str())) != 0 ||
        (rc = mbedtls_x509write_crt_set_basic_constraints(&crt, 1, 0)) != 0 ||
        (rc = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
        (rc = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0 ||
        (rc = mbedtls_x509write_crt_set_key_usage(
             &crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE | MBEDTLS_X509_KU_KEY_CERT_SIGN)) != 0) {
      *error = "certificate: " + mbedError(rc);
      break;
    }
    if (!subjectAltName(o.cn, &san) ||
        (rc = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, san.data(),
                                                  san.size())) != 0) {
      *error = "certificate subjectAltName: " + mbedError(rc);
      break;
    }
    if ((rc = mbedtls_x509write_crt_pem(&crt, pem.data(), pem.size(), mbedtls_ctr_drbg_random, &drbg)) != 0 ||
        (rc = mbedtls_pk_write_key_pem(&key, keyPem.data(), keyPem.size())) != 0) {
      *error = "PEM encoding: " + mbedError(rc);
      break;
    }
    if (!writeNew(o.keyPath, keyPem.data(), std::strlen(reinterpret_cast<char*>(keyPem.data())), 0600, o.force, error)) break;
    if (!writeNew(o.certPath, pem.data(), std::strlen(reinterpret_cast<char*>(pem.data())), 0644, o.force, error)) {
      ::unlink(o.keyPath.c_str());
      break;
    }
    ok = true;
  } while (false);
  mbedtls_mpi_free(&serial);
  mbedtls_x509write_crt_free(&crt);
  mbedtls_pk_free(&key);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  std::memset(keyPem.data(), 0, keyPem.size());
  return ok;
}

}  // namespace bitsd::tools
