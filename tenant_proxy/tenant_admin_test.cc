#include "tenant_proxy/tenant_admin.h"

#include "catch2/catch.hpp"
#include "common/files.h"
#include "common/random.h"
#include "tenant_proxy/testing/fake_fleet_client.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::proxy {
namespace {

struct World {
  World() {
    auto* acme = config.add_tenants();
    acme->set_tenant_id("acme");
    acme->add_token_sha256(TokenHash("acme-token"));
    acme->mutable_limits()->set_max_vms(2);
    auth = std::make_unique<TokenAuthenticator>(*TokenAuthenticator::Create(config));
    audit = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock,
                              [](const ppn::ledger::v1::AppendRequest&) { return absl::OkStatus(); });
    core = std::make_unique<ProxyCore>(config, ProxyCore::Deps{&fleet, &limiter, audit.get()});
    admin = std::make_unique<TenantAdmin>(dir.File("tenants.textproto"), config, auth.get(), core.get(),
                                          OpenSslRandom::Get());
  }
  // Authenticates and admits `token` as a call would.
  absl::StatusOr<Tenant> Call(const std::string& token) {
    absl::StatusOr<Authenticated> who = auth->Authenticate("Bearer " + token);
    if (!who.ok()) return who.status();
    absl::Duration retry;
    return core->Admit(*who, &retry);
  }

  ppn::testing::TempDir dir;
  ppn::testing::FakeClock clock;
  testing::FakeFleetClient fleet;
  RateLimiter limiter{&clock};
  ppn::tenancy::v1::ProxyConfig config;
  std::unique_ptr<TokenAuthenticator> auth;
  std::unique_ptr<AuditTrail> audit;
  std::unique_ptr<ProxyCore> core;
  std::unique_ptr<TenantAdmin> admin;
};

TEST_CASE("a tenant added live is admitted at once and written to the config file with its hash only",
          "[proxy][tenant_admin]") {
  World w;
  ppn::tenancy::v1::AddTenantRequest add;
  add.set_tenant_id("globex");
  add.mutable_limits()->set_max_vms(3);
  absl::StatusOr<ppn::tenancy::v1::AddTenantResponse> added = w.admin->AddTenant(add);
  REQUIRE(added.ok());
  const std::string token = added->token();
  CHECK(token.rfind("ppn_", 0) == 0);
  CHECK(token.size() == 4 + 43);  // 32 bytes, base64url without padding
  absl::StatusOr<Tenant> admitted = w.Call(token);
  REQUIRE(admitted.ok());
  CHECK(admitted->tenant_id.value() == "globex");
  CHECK(admitted->limits->max_vms() == 3);

  std::string file = *ReadFile(w.dir.File("tenants.textproto"));
  CHECK(file.find(TokenHash(token)) != std::string::npos);
  CHECK(file.find(token) == std::string::npos);
  absl::StatusOr<ppn::tenancy::v1::ProxyConfig> reread = LoadProxyConfig(w.dir.File("tenants.textproto"));
  REQUIRE(reread.ok());
  CHECK(reread->tenants_size() == 2);

  CHECK(w.admin->AddTenant(add).status().code() == absl::StatusCode::kAlreadyExists);
  add.set_tenant_id("Bad.Name");
  CHECK(w.admin->AddTenant(add).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(w.admin->ListTenants().tenants_size() == 2);
}

TEST_CASE("a rotated token replaces the old one at once and revoke refuses one token", "[proxy][tenant_admin]") {
  World w;
  REQUIRE(w.Call("acme-token").ok());
  absl::StatusOr<ppn::tenancy::v1::RotateTokenResponse> rotated = w.admin->RotateToken("acme", false);
  REQUIRE(rotated.ok());
  REQUIRE(rotated->revoked_token_ids_size() == 1);
  CHECK(rotated->revoked_token_ids(0) == TokenHash("acme-token").substr(0, 8));
  CHECK(w.Call("acme-token").status().code() == absl::StatusCode::kUnauthenticated);
  REQUIRE(w.Call(rotated->token()).ok());

  // Keeping the existing one, then revoking it by id.
  absl::StatusOr<ppn::tenancy::v1::RotateTokenResponse> second = w.admin->RotateToken("acme", true);
  REQUIRE(second.ok());
  CHECK(w.Call(rotated->token()).ok());
  CHECK(w.Call(second->token()).ok());
  absl::StatusOr<ppn::tenancy::v1::TenantSummary> after = w.admin->RevokeToken("acme", rotated->token_id());
  REQUIRE(after.ok());
  REQUIRE(after->token_ids_size() == 1);
  CHECK(after->token_ids(0) == second->token_id());
  CHECK(w.Call(rotated->token()).status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(w.Call(second->token()).ok());

  CHECK(w.admin->RotateToken("nobody", false).status().code() == absl::StatusCode::kNotFound);
  CHECK(w.admin->RevokeToken("acme", "00000000").status().code() == absl::StatusCode::kNotFound);
  CHECK(w.admin->RevokeToken("acme", "short").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("new limits apply to the next call and the tenant list shows usage against them", "[proxy][tenant_admin]") {
  World w;
  ppn::tenancy::v1::Limits limits;
  limits.set_max_vms(7);
  limits.set_max_memory_mib(4096);
  REQUIRE(w.admin->SetLimits("acme", limits).ok());
  CHECK(w.Call("acme-token")->limits->max_vms() == 7);
  ppn::fleet::v1::VmRecord vm;
  vm.set_vm_id("vm-1");
  vm.set_tenant_id("acme");
  vm.set_state(ppn::types::v1::VM_STATE_RUNNING);
  vm.mutable_spec()->set_vcpus(2);
  vm.mutable_spec()->set_memory_mib(512);
  w.fleet.Put(vm);
  ppn::tenancy::v1::ListTenantsResponse list = w.admin->ListTenants();
  REQUIRE(list.tenants_size() == 1);
  CHECK(list.usage_error().empty());
  CHECK(list.tenants(0).usage().vms() == 1);
  CHECK(list.tenants(0).usage().memory_mib() == 512);
  CHECK(list.tenants(0).limits().max_vms() == 7);
  CHECK(list.tenants(0).token_ids_size() == 1);
  CHECK(w.admin->SetLimits("nobody", limits).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("a change that cannot be written applies nowhere", "[proxy][tenant_admin]") {
  World w;
  TenantAdmin broken(w.dir.File("no-such-dir/tenants.textproto"), w.config, w.auth.get(), w.core.get(),
                     OpenSslRandom::Get());
  CHECK_FALSE(broken.RotateToken("acme", false).ok());
  CHECK(w.Call("acme-token").ok());
  ppn::tenancy::v1::AddTenantRequest add;
  add.set_tenant_id("globex");
  CHECK_FALSE(broken.AddTenant(add).ok());
  CHECK(broken.ListTenants().tenants_size() == 1);
}

}  // namespace
}  // namespace ppn::proxy
