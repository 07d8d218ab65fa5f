#pragma once

// TestPki is a throw-away mesh CA in a temp dir that issues certificates for tests.
// Failures throw (tests only).

#include <string>
#include <vector>

#include "common/tls_credentials.h"
#include "common/x509.h"
#include "tests/harness/temp_dir.h"

namespace ppn::testing {

class TestPki {
 public:
  explicit TestPki(std::string mesh = "ppn.test");

  // A certificate with SPIFFE id spiffe://<mesh>/<role>/<name> (plus localhost SANs).
  TlsFiles Issue(const std::string& role, const std::string& name);
  // A certificate with exactly these URI SANs (none, several, foreign) for negative tests.
  TlsFiles IssueWithUris(const std::string& file_stem, const std::vector<std::string>& uris,
                         const std::string& name = "");

  const std::string& mesh() const { return mesh_; }
  const std::string& ca_cert_path() const { return ca_path_; }
  const x509::Identity& ca() const { return ca_; }
  const std::string& dir() const { return dir_.path(); }

 private:
  TlsFiles Write(const std::string& stem, const x509::Identity& id);

  std::string mesh_;
  TempDir dir_;
  x509::Identity ca_;
  std::string ca_path_;
};

}  // namespace ppn::testing
