// The operator manages tenants live on the real tenant_proxy binary: a tenant added and a token
// rotated without a restart (the old token refused at once, the new one served), the admin
// service reachable only on its own mTLS listener and only by the operator role, and every
// change still there after a restart.

#include <signal.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ppn/tenancy/v1/tenant_admin.grpc.pb.h"
#include "ppn/tenancy/v1/tenant_service.grpc.pb.h"
#include "tenant_proxy/token_authenticator.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using namespace ppn::tenancy::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::StartService;

std::chrono::system_clock::time_point Deadline() { return std::chrono::system_clock::now() + std::chrono::seconds(10); }

struct Proxy {
  AgentProcess process;
  int admin_port = 0;
};

grpc::Status ListAsTenant(ppn::testing::TestPki& pki, int port, const std::string& token) {
  auto stub = TenantService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), TlsChannelCredentials(pki.ca_cert_path())));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  ctx.AddMetadata("authorization", "Bearer " + token);
  ListVmsResponse resp;
  return stub->ListVms(&ctx, {}, &resp);
}

TEST_CASE("a tenant added and a token rotated apply at once without a restart, for the operator only",
          "[proxy][tenant_admin][integration]") {
  ppn::testing::GuestDir dir;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess fleet =
      StartService(pki, dir.path(), "fleet/fleet", "fleet", "fleet", {"--db=" + dir.path() + "/fleet.db"});
  const std::string config = dir.path() + "/tenants.textproto";
  std::ofstream(config) << "tenants { tenant_id: \"acme\" token_sha256: \"" << proxy::TokenHash("acme-old-token")
                        << "\" limits { max_vms: 2 max_vcpus: 4 max_memory_mib: 2048 } }\n";
  auto start_proxy = [&] {
    Proxy p;
    const std::string admin_port_file = dir.path() + "/admin.port";
    std::remove(admin_port_file.c_str());
    p.process = StartService(pki, dir.path(), "tenant_proxy/tenant_proxy", "tenant-proxy", "proxy",
                             {"--config=" + config, "--fleet=127.0.0.1:" + std::to_string(fleet.port),
                              "--ledger=127.0.0.1:1", "--state_dir=" + dir.path() + "/proxy-state",
                              "--admin_listen=127.0.0.1:0", "--admin_port_file=" + admin_port_file});
    absl::StatusOr<std::string> text = ReadFile(admin_port_file);
    REQUIRE(text.ok());
    REQUIRE(absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &p.admin_port));
    return p;
  };
  Proxy proxy = start_proxy();
  auto admin_as = [&](const std::string& role, int port) {
    return TenantAdmin::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(pki.Issue(role, role))));
  };
  auto op = admin_as("operator", proxy.admin_port);
  REQUIRE(ListAsTenant(pki, proxy.process.port, "acme-old-token").ok());

  AddTenantRequest add;
  add.set_tenant_id("globex");
  add.mutable_limits()->set_max_vms(3);
  AddTenantResponse added;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = op->AddTenant(&ctx, add, &added);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  CHECK(ListAsTenant(pki, proxy.process.port, added.token()).ok());

  RotateTokenRequest rotate;
  rotate.set_tenant_id("acme");
  RotateTokenResponse rotated;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(op->RotateToken(&ctx, rotate, &rotated).ok());
  }
  CHECK(ListAsTenant(pki, proxy.process.port, "acme-old-token").error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(ListAsTenant(pki, proxy.process.port, rotated.token()).ok());
  // Only hashes reach the file.
  std::string file = *ReadFile(config);
  CHECK(file.find(rotated.token()) == std::string::npos);
  CHECK(file.find(proxy::TokenHash(rotated.token())) != std::string::npos);

  {
    ListTenantsResponse list;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(op->ListTenants(&ctx, {}, &list).ok());
    REQUIRE(list.tenants_size() == 2);
    CHECK(list.tenants(0).tenant_id() == "acme");
    CHECK(list.tenants(0).has_usage());
    CHECK(list.tenants(1).limits().max_vms() == 3);
  }

  // Another role on the admin listener, or a tenant's token on the tenant listener: refused.
  {
    auto proxy_role = admin_as("tenant-proxy", proxy.admin_port);
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    ListTenantsResponse list;
    CHECK(proxy_role->ListTenants(&ctx, {}, &list).error_code() == grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    auto on_tenant_port = TenantAdmin::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(proxy.process.port),
                                                                   TlsChannelCredentials(pki.ca_cert_path())));
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    ctx.AddMetadata("authorization", "Bearer " + rotated.token());
    ListTenantsResponse list;
    grpc::Status s = on_tenant_port->ListTenants(&ctx, {}, &list);
    CHECK(s.error_code() == grpc::StatusCode::UNIMPLEMENTED);
  }

  // A restart reads what the operator changed.
  proxy.process.process->Signal(SIGTERM);
  REQUIRE(proxy.process.process->Wait(absl::Seconds(20)) >= 0);
  proxy = start_proxy();
  CHECK(ListAsTenant(pki, proxy.process.port, added.token()).ok());
  CHECK(ListAsTenant(pki, proxy.process.port, rotated.token()).ok());
  CHECK(ListAsTenant(pki, proxy.process.port, "acme-old-token").error_code() == grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace ppn
