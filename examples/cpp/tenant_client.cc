// tenant_client: a minimal C++ client of the PPN tenant API, for platform engineers to copy.
//
//   export PPN_TOKEN=...            (or --token_file; never on the command line, where ps shows it)
//   tenant_client --endpoint=127.0.0.1:7100 --ca=state/pki/ca.pem create web --memory_mib=256 --port=80
//   tenant_client ... list
//   tenant_client ... destroy vms/vm-...

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "ppn/tenancy/v1/tenant_service.grpc.pb.h"

ABSL_FLAG(std::string, endpoint, "127.0.0.1:7100", "Tenant proxy host:port");
ABSL_FLAG(std::string, ca, "", "PEM file of the CA that signed the proxy's certificate");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token (default: $PPN_TOKEN)");
ABSL_FLAG(std::string, image, "ppn-test-guest", "Image for create");
ABSL_FLAG(uint32_t, memory_mib, 128, "Memory for create");
ABSL_FLAG(uint32_t, port, 80, "Guest port to forward for create (0 for none)");

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Fail(const grpc::Status& s) {
  std::fprintf(stderr, "error: %d %s\n", static_cast<int>(s.error_code()), s.error_message().c_str());
  return 1;
}

void Print(const ppn::tenancy::v1::Vm& vm) {
  std::printf("%s  %s  %s", vm.name().c_str(), vm.spec().display_name().c_str(),
              ppn::types::v1::VmState_Name(vm.state()).c_str());
  for (const auto& p : vm.forwarded_ports())
    std::printf("  guest:%u -> %s:%u", p.guest_port(), p.host_address().c_str(), p.host_port());
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tenant_client [flags] create NAME | list | get NAME | destroy NAME");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: tenant_client [flags] create NAME | list | get NAME | destroy NAME\n");
    return 2;
  }
  std::string token = absl::GetFlag(FLAGS_token_file).empty()
                          ? (std::getenv("PPN_TOKEN") ? std::getenv("PPN_TOKEN") : "")
                          : Slurp(absl::GetFlag(FLAGS_token_file));
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) {
    std::fprintf(stderr, "no token: set PPN_TOKEN or --token_file\n");
    return 2;
  }
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = Slurp(absl::GetFlag(FLAGS_ca));
  auto stub = ppn::tenancy::v1::TenantService::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_endpoint), grpc::SslCredentials(tls)));
  auto context = [&](grpc::ClientContext* ctx) {
    ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  };
  std::string command = args[1];
  std::string name = args.size() > 2 ? args[2] : "";
  grpc::ClientContext ctx;
  context(&ctx);
  if (command == "create" && !name.empty()) {
    ppn::tenancy::v1::CreateVmRequest req;
    req.mutable_spec()->set_display_name(name);
    req.mutable_spec()->set_vcpus(1);
    req.mutable_spec()->set_memory_mib(absl::GetFlag(FLAGS_memory_mib));
    req.mutable_spec()->set_image(absl::GetFlag(FLAGS_image));
    if (absl::GetFlag(FLAGS_port) != 0)
      req.mutable_spec()->add_port_forwards()->set_guest_port(absl::GetFlag(FLAGS_port));
    ppn::tenancy::v1::CreateVmResponse resp;
    grpc::Status s = stub->CreateVm(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    Print(resp.vm());
  } else if (command == "list") {
    ppn::tenancy::v1::ListVmsResponse resp;
    grpc::Status s = stub->ListVms(&ctx, {}, &resp);
    if (!s.ok()) return Fail(s);
    for (const auto& vm : resp.vms()) Print(vm);
  } else if (command == "get" && !name.empty()) {
    ppn::tenancy::v1::GetVmRequest req;
    req.set_name(name);
    ppn::tenancy::v1::GetVmResponse resp;
    grpc::Status s = stub->GetVm(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    Print(resp.vm());
  } else if (command == "destroy" && !name.empty()) {
    ppn::tenancy::v1::DestroyVmRequest req;
    req.set_name(name);
    ppn::tenancy::v1::DestroyVmResponse resp;
    grpc::Status s = stub->DestroyVm(&ctx, req, &resp);
    if (!s.ok()) return Fail(s);
    Print(resp.vm());
  } else {
    std::fprintf(stderr, "usage: tenant_client [flags] create NAME | list | get NAME | destroy NAME\n");
    return 2;
  }
  return 0;
}
