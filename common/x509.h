#pragma once

// Minimal X.509 toolkit on OpenSSL for the mesh CA: keys, a self-signed CA, certificates
// with a SPIFFE URI SAN, and CSRs. Used by //tools/pki, the pairing admin and tests.
// Keys are ECDSA P-256 (supported by every gRPC TLS stack).

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ppn::x509 {

// A PEM key pair and certificate.
struct Identity {
  std::string cert_pem;
  std::string key_pem;  // PKCS#8 private key; never logged
};

struct CertRequest {
  std::string common_name;
  std::string spiffe_id;                // URI SAN; empty for none
  std::vector<std::string> dns_names;   // DNS SANs
  std::vector<std::string> ips;         // IP SANs (v4 or v6 literals)
  std::vector<std::string> extra_uris;  // more URI SANs (tests of ambiguous identities)
  absl::Duration validity = absl::Hours(24 * 365);
};

// A new ECDSA P-256 private key, PEM.
absl::StatusOr<std::string> GenerateKey();

// A self-signed CA certificate for `mesh` with a new key.
absl::StatusOr<Identity> MakeCa(const std::string& mesh, absl::Duration validity);

// A leaf certificate for `request` with a new key, signed by `ca`. Usable for both TLS
// server and client authentication.
absl::StatusOr<Identity> Issue(const Identity& ca, const CertRequest& request);

// A CSR (PEM) for `key_pem` carrying `request`'s names.
absl::StatusOr<std::string> MakeCsr(const std::string& key_pem, const CertRequest& request);

// Signs `csr_pem` with `ca`, after checking its self-signature. The SANs come from
// `request`, not from the CSR: the CA decides a node's identity, not the node.
absl::StatusOr<std::string> SignCsr(const Identity& ca, const std::string& csr_pem, const CertRequest& request);

// Verifies that `cert_pem` chains to `ca_cert_pem` and returns its URI SANs.
absl::StatusOr<std::vector<std::string>> VerifyAndGetUris(const std::string& ca_cert_pem, const std::string& cert_pem);

// SHA-256 of the certificate's DER encoding (32 bytes).
absl::StatusOr<std::string> Fingerprint(const std::string& cert_pem);

// The public key of `cert_pem` or of a private key, as DER SubjectPublicKeyInfo.
absl::StatusOr<std::string> PublicKeyDer(const std::string& cert_or_key_pem);

}  // namespace ppn::x509
