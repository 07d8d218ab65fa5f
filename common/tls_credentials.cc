#include "common/tls_credentials.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace ppn {
namespace {

using grpc::experimental::FileWatcherCertificateProvider;

int RefreshSeconds() { return static_cast<int>(absl::ToInt64Seconds(kCertificateRefresh)); }

std::shared_ptr<FileWatcherCertificateProvider> IdentityProvider(const TlsFiles& files) {
  return std::make_shared<FileWatcherCertificateProvider>(files.key, files.cert, files.ca_cert, RefreshSeconds());
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsFiles& files,
                                                           grpc_ssl_client_certificate_request_type type) {
  grpc::experimental::TlsServerCredentialsOptions options(IdentityProvider(files));
  options.watch_identity_key_cert_pairs();
  options.watch_root_certs();
  options.set_cert_request_type(type);
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files, bool need_identity) {
  auto bio_of = [](const std::string& pem) { return BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())); };
  absl::StatusOr<std::string> ca = ReadFile(files.ca_cert);
  if (!ca.ok()) return ca.status();
  BIO* ca_bio = bio_of(*ca);
  X509* ca_cert = PEM_read_bio_X509(ca_bio, nullptr, nullptr, nullptr);
  BIO_free(ca_bio);
  if (ca_cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(files.ca_cert, " holds no PEM certificate"));
  }
  X509_free(ca_cert);
  if (!need_identity) return absl::OkStatus();

  absl::StatusOr<std::string> cert_pem = ReadFile(files.cert);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile(files.key);
  if (!key_pem.ok()) return key_pem.status();
  BIO* cert_bio = bio_of(*cert_pem);
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(files.cert, " holds no PEM certificate"));
  }
  BIO* key_bio = bio_of(*key_pem);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  absl::Status status;
  if (key == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat(files.key, " holds no PEM private key"));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(absl::StrCat(files.key, " does not match the certificate in ", files.cert));
  }
  EVP_PKEY_free(key);
  X509_free(cert);
  return status;
}

std::shared_ptr<grpc::ServerCredentials> MtlsServerCredentials(const TlsFiles& files) {
  return ServerCredentials(files, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
}

std::shared_ptr<grpc::ServerCredentials> TlsServerCredentials(const TlsFiles& files) {
  return ServerCredentials(files, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
}

std::shared_ptr<grpc::ChannelCredentials> MtlsChannelCredentials(const TlsFiles& files) {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(IdentityProvider(files));
  options.watch_identity_key_cert_pairs();
  options.watch_root_certs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> TlsChannelCredentials(const std::string& ca_cert) {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(std::make_shared<FileWatcherCertificateProvider>(ca_cert, RefreshSeconds()));
  options.watch_root_certs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

}  // namespace ppn
