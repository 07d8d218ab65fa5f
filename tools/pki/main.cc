// pki: makes a development mesh CA and certificates for each role.
//
//   pki init  --dir=DIR [--mesh=ppn.local]                 CA certificate and key
//   pki issue --dir=DIR --role=ROLE --name=NAME [--dns=a,b] [--ip=10.8.0.2]
//   pki dev   --dir=DIR [--mesh=ppn.local]                 CA plus one certificate per role
//
// Files: DIR/ca.pem, DIR/ca.key, DIR/<name>.pem, DIR/<name>.key. Keys are written 0600 and
// never printed. Certificates also name localhost, 127.0.0.1 and ::1 so local tests can
// verify the server's host name.

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/roles.h"
#include "common/spiffe_id.h"
#include "common/tls_credentials.h"
#include "common/x509.h"

ABSL_FLAG(std::string, dir, "", "Directory for the CA and certificates");
ABSL_FLAG(std::string, mesh, "ppn.local", "Mesh name (SPIFFE trust domain)");
ABSL_FLAG(std::string, role, "", "Role of the certificate (issue)");
ABSL_FLAG(std::string, name, "", "Name of the certificate holder (issue)");
ABSL_FLAG(std::vector<std::string>, dns, {}, "Extra DNS names (issue)");
ABSL_FLAG(std::vector<std::string>, ip, {}, "Extra IP addresses (issue)");
ABSL_FLAG(int, days, 365, "Validity in days");

namespace {

int Fail(absl::string_view message) {
  std::fprintf(stderr, "pki: %.*s\n", static_cast<int>(message.size()), message.data());
  return 1;
}

absl::Status Init(const std::string& dir) {
  std::string mesh = absl::GetFlag(FLAGS_mesh);
  if (!ppn::IsValidIdPart(mesh)) return absl::InvalidArgumentError("--mesh: bad mesh name");
  struct stat st;
  if (stat((dir + "/ca.key").c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(dir, "/ca.key exists; refusing to replace the CA"));
  }
  absl::StatusOr<ppn::x509::Identity> ca = ppn::x509::MakeCa(mesh, absl::Hours(24) * absl::GetFlag(FLAGS_days) * 10);
  if (!ca.ok()) return ca.status();
  absl::Status s = ppn::WriteFileAtomically(dir + "/ca.pem", ca->cert_pem, 0644);
  if (s.ok()) s = ppn::WriteFileAtomically(dir + "/ca.key", ca->key_pem, 0600);
  if (s.ok()) std::printf("pki: mesh CA for %s in %s/ca.pem\n", mesh.c_str(), dir.c_str());
  return s;
}

absl::Status Issue(const std::string& dir, const std::string& role, const std::string& name) {
  if (!ppn::IsValidIdPart(role) || !ppn::IsValidIdPart(name)) {
    return absl::InvalidArgumentError("--role and --name must be 1-63 characters of [a-z0-9.-]");
  }
  absl::StatusOr<std::string> cert = ppn::ReadFile(dir + "/ca.pem");
  if (!cert.ok()) return absl::NotFoundError(absl::StrCat(cert.status().message(), " (run pki init first)"));
  absl::StatusOr<std::string> key = ppn::ReadFile(dir + "/ca.key");
  if (!key.ok()) return key.status();
  ppn::x509::CertRequest request;
  request.common_name = name;
  request.spiffe_id = ppn::SpiffeId{absl::GetFlag(FLAGS_mesh), role, name}.ToString();
  request.dns_names = {"localhost", name};
  for (const std::string& d : absl::GetFlag(FLAGS_dns)) request.dns_names.push_back(d);
  request.ips = {"127.0.0.1", "::1"};
  for (const std::string& ip : absl::GetFlag(FLAGS_ip)) request.ips.push_back(ip);
  request.validity = absl::Hours(24) * absl::GetFlag(FLAGS_days);
  absl::StatusOr<ppn::x509::Identity> id = ppn::x509::Issue({*cert, *key}, request);
  if (!id.ok()) return id.status();
  absl::Status s = ppn::WriteFileAtomically(absl::StrCat(dir, "/", name, ".pem"), id->cert_pem, 0644);
  if (s.ok()) s = ppn::WriteFileAtomically(absl::StrCat(dir, "/", name, ".key"), id->key_pem, 0600);
  if (s.ok()) std::printf("pki: %s -> %s/%s.pem\n", request.spiffe_id.c_str(), dir.c_str(), name.c_str());
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("pki init|issue|dev --dir=DIR [...]  (see tools/pki/main.cc)");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) return Fail("want one command: init, issue or dev");
  std::string command = args[1];
  std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) return Fail("--dir is required");
  mkdir(dir.c_str(), 0755);

  absl::Status status;
  if (command == "init") {
    status = Init(dir);
  } else if (command == "issue") {
    status = Issue(dir, absl::GetFlag(FLAGS_role), absl::GetFlag(FLAGS_name));
  } else if (command == "dev") {
    status = Init(dir);
    namespace r = ppn::roles;
    const std::pair<const char*, const char*> kDev[] = {
        {r::kLedger, "ledger"},
        {r::kFleet, "fleet"},
        {r::kScheduler, "scheduler"},
        {r::kTenantProxy, "tenant-proxy"},
        {r::kPairingAdmin, "pairing-admin"},
        {r::kOperator, "operator"},
        {r::kRelay, "relay"},
        {r::kHost, "cloud"},
        {r::kHost, "laptop-a"},
        {r::kHost, "laptop-b"},
    };
    for (const auto& [role, name] : kDev) {
      if (status.ok()) status = Issue(dir, role, name);
    }
  } else {
    return Fail(absl::StrCat("unknown command \"", command, "\": want init, issue or dev"));
  }
  if (!status.ok()) return Fail(status.message());
  return 0;
}
