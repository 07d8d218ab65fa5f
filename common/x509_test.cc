#include "common/x509.h"

#include "catch2/catch.hpp"

namespace ppn::x509 {
namespace {

TEST_CASE("a CSR signed by the mesh CA verifies and carries the CA's chosen SPIFFE id", "[common][x509]") {
  absl::StatusOr<Identity> ca = MakeCa("ppn.test", absl::Hours(1));
  REQUIRE(ca.ok());
  absl::StatusOr<std::string> key = GenerateKey();
  REQUIRE(key.ok());
  CertRequest asked;
  asked.common_name = "laptop-a";
  asked.spiffe_id = "spiffe://ppn.test/operator/sneaky";  // a CSR cannot pick its identity
  absl::StatusOr<std::string> csr = MakeCsr(*key, asked);
  REQUIRE(csr.ok());
  CertRequest granted;
  granted.common_name = "laptop-a";
  granted.spiffe_id = "spiffe://ppn.test/host/laptop-a";
  absl::StatusOr<std::string> cert = SignCsr(*ca, *csr, granted);
  REQUIRE(cert.ok());

  absl::StatusOr<std::vector<std::string>> uris = VerifyAndGetUris(ca->cert_pem, *cert);
  REQUIRE(uris.ok());
  CHECK(*uris == std::vector<std::string>{"spiffe://ppn.test/host/laptop-a"});
  // The certificate is for the CSR's key, which never left the caller.
  CHECK(*PublicKeyDer(*cert) == *PublicKeyDer(*key));

  SECTION("another CA's certificate does not verify") {
    absl::StatusOr<Identity> other = MakeCa("ppn.test", absl::Hours(1));
    REQUIRE(other.ok());
    CHECK(VerifyAndGetUris(other->cert_pem, *cert).status().code() == absl::StatusCode::kUnauthenticated);
  }
  SECTION("a tampered CSR is refused") {
    std::string bad = *csr;
    bad[bad.size() / 2] = bad[bad.size() / 2] == 'A' ? 'B' : 'A';
    CHECK_FALSE(SignCsr(*ca, bad, granted).ok());
  }
}

TEST_CASE("certificate fingerprints are stable SHA-256 digests", "[common][x509]") {
  absl::StatusOr<Identity> ca = MakeCa("ppn.test", absl::Hours(1));
  REQUIRE(ca.ok());
  CHECK(Fingerprint(ca->cert_pem)->size() == 32);
  CHECK(*Fingerprint(ca->cert_pem) == *Fingerprint(ca->cert_pem));
  CHECK(Fingerprint("junk").status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppn::x509
