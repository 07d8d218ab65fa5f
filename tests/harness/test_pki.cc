#include "tests/harness/test_pki.h"

#include <fstream>
#include <stdexcept>

#include "absl/time/time.h"

namespace ppn::testing {
namespace {

template <typename T>
T OrThrow(absl::StatusOr<T> v) {
  if (!v.ok()) throw std::runtime_error(std::string(v.status().ToString()));
  return *std::move(v);
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace

TestPki::TestPki(std::string mesh) : mesh_(std::move(mesh)) {
  ca_ = OrThrow(x509::MakeCa(mesh_, absl::Hours(24)));
  ca_path_ = dir_.File("ca.pem");
  WriteFile(ca_path_, ca_.cert_pem);
}

TlsFiles TestPki::Write(const std::string& stem, const x509::Identity& id) {
  TlsFiles files{ca_path_, dir_.File(stem + ".pem"), dir_.File(stem + ".key")};
  WriteFile(files.cert, id.cert_pem);
  WriteFile(files.key, id.key_pem);
  return files;
}

TlsFiles TestPki::Issue(const std::string& role, const std::string& name) {
  // Named as the mesh names its nodes (CN and DNS name), which QEMU's TLS migration checks.
  return IssueWithUris(role + "-" + name, {"spiffe://" + mesh_ + "/" + role + "/" + name}, name);
}

TlsFiles TestPki::IssueWithUris(const std::string& file_stem, const std::vector<std::string>& uris,
                                const std::string& name) {
  x509::CertRequest request;
  request.common_name = name.empty() ? file_stem : name;
  request.dns_names = {"localhost"};
  if (!name.empty()) request.dns_names.push_back(name);
  request.ips = {"127.0.0.1", "::1"};
  request.validity = absl::Hours(1);
  // x509::CertRequest carries one URI; extra ones go through the SAN list as DNS-free URIs.
  if (!uris.empty()) request.spiffe_id = uris[0];
  for (size_t i = 1; i < uris.size(); ++i) request.extra_uris.push_back(uris[i]);
  return Write(file_stem, OrThrow(x509::Issue(ca_, request)));
}

}  // namespace ppn::testing
