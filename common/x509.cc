#include "common/x509.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppn::x509 {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, " failed (OpenSSL)"));
}

BioPtr MemBio(const std::string& pem) { return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))); }

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, n);
}

absl::StatusOr<KeyPtr> ParseKey(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError("not a PEM private key");
  return key;
}

absl::StatusOr<CertPtr> ParseCert(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  CertPtr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return absl::InvalidArgumentError("not a PEM certificate");
  return cert;
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("write key");
  }
  return BioString(bio.get());
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("write certificate");
  return BioString(bio.get());
}

KeyPtr NewKey() { return KeyPtr(EVP_EC_gen("P-256")); }

absl::Status AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return absl::InvalidArgumentError(absl::StrCat("bad extension ", value));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return absl::OkStatus();
}

std::string SanValue(const CertRequest& request) {
  std::vector<std::string> sans;
  if (!request.spiffe_id.empty()) sans.push_back("URI:" + request.spiffe_id);
  for (const auto& u : request.extra_uris) sans.push_back("URI:" + u);
  for (const auto& d : request.dns_names) sans.push_back("DNS:" + d);
  for (const auto& ip : request.ips) sans.push_back("IP:" + ip);
  return absl::StrJoin(sans, ",");
}

// A certificate for `pubkey` named by `request`, signed by `issuer_key` (issuer == nullptr:
// self-signed CA).
absl::StatusOr<std::string> Build(EVP_PKEY* pubkey, const CertRequest& request, X509* issuer, EVP_PKEY* issuer_key,
                                  bool is_ca) {
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  // Back-date a little so a peer with a slightly slow clock accepts a fresh certificate.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(absl::ToInt64Seconds(request.validity)));
  X509_set_pubkey(cert.get(), pubkey);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(request.common_name.c_str()), -1, -1, 0);
  X509* issuer_cert = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert));
  absl::Status s;
  if (is_ca) {
    s.Update(AddExt(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:TRUE"));
    s.Update(AddExt(cert.get(), issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    s.Update(AddExt(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:FALSE"));
    s.Update(AddExt(cert.get(), issuer_cert, NID_key_usage, "critical,digitalSignature,keyEncipherment"));
    s.Update(AddExt(cert.get(), issuer_cert, NID_ext_key_usage, "serverAuth,clientAuth"));
  }
  s.Update(AddExt(cert.get(), issuer_cert, NID_subject_key_identifier, "hash"));
  if (issuer != nullptr) {
    s.Update(AddExt(cert.get(), issuer_cert, NID_authority_key_identifier, "keyid:always"));
  }
  std::string sans = SanValue(request);
  if (!sans.empty()) s.Update(AddExt(cert.get(), issuer_cert, NID_subject_alt_name, sans));
  if (!s.ok()) return s;
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return OpenSslError("sign");
  return CertPem(cert.get());
}

}  // namespace

absl::StatusOr<std::string> GenerateKey() {
  KeyPtr key = NewKey();
  if (!key) return OpenSslError("generate key");
  return KeyPem(key.get());
}

absl::StatusOr<Identity> MakeCa(const std::string& mesh, absl::Duration validity) {
  KeyPtr key = NewKey();
  if (!key) return OpenSslError("generate key");
  CertRequest request;
  request.common_name = absl::StrCat(mesh, " mesh CA");
  request.validity = validity;
  absl::StatusOr<std::string> cert = Build(key.get(), request, nullptr, key.get(), true);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key_pem = KeyPem(key.get());
  if (!key_pem.ok()) return key_pem.status();
  return Identity{*cert, *key_pem};
}

absl::StatusOr<Identity> Issue(const Identity& ca, const CertRequest& request) {
  absl::StatusOr<CertPtr> ca_cert = ParseCert(ca.cert_pem);
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<KeyPtr> ca_key = ParseKey(ca.key_pem);
  if (!ca_key.ok()) return ca_key.status();
  KeyPtr key = NewKey();
  if (!key) return OpenSslError("generate key");
  absl::StatusOr<std::string> cert = Build(key.get(), request, ca_cert->get(), ca_key->get(), false);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key_pem = KeyPem(key.get());
  if (!key_pem.ok()) return key_pem.status();
  return Identity{*cert, *key_pem};
}

absl::StatusOr<std::string> MakeCsr(const std::string& key_pem, const CertRequest& request) {
  absl::StatusOr<KeyPtr> key = ParseKey(key_pem);
  if (!key.ok()) return key.status();
  ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(request.common_name.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key->get());
  if (X509_REQ_sign(req.get(), key->get(), EVP_sha256()) == 0) return OpenSslError("sign CSR");
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  return BioString(bio.get());
}

absl::StatusOr<std::string> SignCsr(const Identity& ca, const std::string& csr_pem, const CertRequest& request) {
  BioPtr bio = MemBio(csr_pem);
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return absl::InvalidArgumentError("not a PEM certificate signing request");
  KeyPtr pubkey(X509_REQ_get_pubkey(req.get()));
  if (!pubkey || X509_REQ_verify(req.get(), pubkey.get()) != 1) {
    return absl::InvalidArgumentError("CSR signature does not verify");
  }
  absl::StatusOr<CertPtr> ca_cert = ParseCert(ca.cert_pem);
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<KeyPtr> ca_key = ParseKey(ca.key_pem);
  if (!ca_key.ok()) return ca_key.status();
  return Build(pubkey.get(), request, ca_cert->get(), ca_key->get(), false);
}

absl::StatusOr<std::vector<std::string>> VerifyAndGetUris(const std::string& ca_cert_pem, const std::string& cert_pem) {
  absl::StatusOr<CertPtr> ca = ParseCert(ca_cert_pem);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<CertPtr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca->get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert->get(), nullptr);
  int ok = X509_verify_cert(ctx);
  int err = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  if (ok != 1) {
    return absl::UnauthenticatedError(
        absl::StrCat("certificate does not verify: ", X509_verify_cert_error_string(err)));
  }
  std::vector<std::string> uris;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert->get(), NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_URI) {
      const ASN1_IA5STRING* uri = n->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)), ASN1_STRING_length(uri));
    }
  }
  GENERAL_NAMES_free(names);
  return uris;
}

absl::StatusOr<std::string> Fingerprint(const std::string& cert_pem) {
  absl::StatusOr<CertPtr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert->get(), EVP_sha256(), md, &n) != 1) return OpenSslError("digest");
  return std::string(reinterpret_cast<char*>(md), n);
}

absl::StatusOr<std::string> PublicKeyDer(const std::string& cert_or_key_pem) {
  KeyPtr key;
  if (absl::StatusOr<CertPtr> cert = ParseCert(cert_or_key_pem); cert.ok()) {
    key.reset(X509_get_pubkey(cert->get()));
  } else if (absl::StatusOr<KeyPtr> priv = ParseKey(cert_or_key_pem); priv.ok()) {
    key = std::move(*priv);
  } else {
    return absl::InvalidArgumentError("neither a PEM certificate nor a PEM private key");
  }
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key.get(), &der);
  if (n <= 0) return OpenSslError("encode public key");
  std::string out(reinterpret_cast<char*>(der), n);
  OPENSSL_free(der);
  return out;
}

}  // namespace ppn::x509
