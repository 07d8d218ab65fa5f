#pragma once

// gRPC credentials from PEM files. Certificates are watched and reloaded (gRPC's
// FileWatcherCertificateProvider), so rotating a certificate needs no restart.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace ppn {

// Paths of one identity's PEM files.
struct TlsFiles {
  std::string ca_cert;  // CA certificate(s) that peers' certificates must chain to
  std::string cert;     // this process's certificate chain
  std::string key;      // this process's private key
};

// How often watched files are re-read.
inline constexpr absl::Duration kCertificateRefresh = absl::Minutes(1);

// Checks that the files exist, parse, and that the key matches the certificate, so a bad
// configuration fails at startup with one clear line instead of at the first handshake.
// `need_identity` false checks only the CA file.
absl::Status CheckTlsFiles(const TlsFiles& files, bool need_identity = true);

// Server credentials for mesh services: TLS that requires and verifies a client
// certificate issued by `files.ca_cert`.
std::shared_ptr<grpc::ServerCredentials> MtlsServerCredentials(const TlsFiles& files);

// Server credentials for the tenant-facing listener: TLS, no client certificate.
std::shared_ptr<grpc::ServerCredentials> TlsServerCredentials(const TlsFiles& files);

// Channel credentials for a mesh client presenting its own certificate.
std::shared_ptr<grpc::ChannelCredentials> MtlsChannelCredentials(const TlsFiles& files);

// Channel credentials for a client that only verifies the server (tenants).
std::shared_ptr<grpc::ChannelCredentials> TlsChannelCredentials(const std::string& ca_cert);

}  // namespace ppn
