#include "tenant_proxy/proxy_core.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "catch2/catch.hpp"
#include "nlohmann/json.hpp"
#include "tenant_proxy/testing/fake_fleet_client.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::proxy {
namespace {

using ppn::tenancy::v1::CreateVmRequest;
using testing::FakeFleetClient;

ppn::types::v1::EgressRule Rule(const std::string& cidr, uint32_t first = 0, uint32_t last = 0) {
  ppn::types::v1::EgressRule r;
  r.set_cidr(cidr);
  r.set_port_first(first);
  r.set_port_last(last);
  return r;
}

ppn::tenancy::v1::ProxyConfig Config() {
  ppn::tenancy::v1::ProxyConfig config;
  auto* acme = config.add_tenants();
  acme->set_tenant_id("acme");
  acme->mutable_limits()->set_max_vms(2);
  acme->mutable_limits()->set_max_vcpus(4);
  acme->mutable_limits()->set_max_memory_mib(1024);
  acme->mutable_limits()->set_max_disk_gib(20);
  auto* slow = config.add_tenants();
  slow->set_tenant_id("slow");
  slow->mutable_limits()->set_max_vms(10);
  slow->mutable_limits()->set_max_vcpus(10);
  slow->mutable_limits()->set_max_memory_mib(10000);
  slow->mutable_limits()->set_requests_per_second(1);
  slow->mutable_limits()->set_burst(2);
  // A tenant whose guests reach only 203.0.113.0/24 on port 443 (not .66), at most 5 Mbit/s.
  auto* locked = config.add_tenants();
  locked->set_tenant_id("locked");
  locked->mutable_limits()->set_max_vms(4);
  locked->mutable_limits()->set_max_vcpus(4);
  locked->mutable_limits()->set_max_memory_mib(4096);
  locked->mutable_egress()->set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  *locked->mutable_egress()->add_allow() = Rule("203.0.113.0/24", 443, 443);
  *locked->mutable_egress()->add_deny() = Rule("203.0.113.66");
  locked->mutable_egress()->set_rate_limit_kbit(5000);
  return config;
}

CreateVmRequest Request(const std::string& name, const std::string& request_id = "", uint32_t disk_gib = 0) {
  CreateVmRequest req;
  req.mutable_spec()->set_display_name(name);
  req.mutable_spec()->set_vcpus(1);
  req.mutable_spec()->set_memory_mib(256);
  req.mutable_spec()->set_image("debian-12");
  req.mutable_spec()->set_disk_gib(disk_gib);
  req.set_request_id(request_id);
  return req;
}

std::vector<nlohmann::json> Lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

struct Fixture {
  explicit Fixture(std::string audit_file = "", ProxyOptions options = {}) : options(options) {
    audit = *AuditTrail::Open(audit_file.empty() ? dir.File("audit.jsonl") : audit_file, dir.File("spool.db"), &clock,
                              [this](const ppn::ledger::v1::AppendRequest& r) {
                                delivered.push_back(r);
                                return absl::OkStatus();
                              });
    core = std::make_unique<ProxyCore>(config, ProxyCore::Deps{&fleet, &limiter, audit.get()}, options);
  }
  Tenant Admit(const std::string& tenant) {
    absl::Duration retry;
    return *core->Admit({tenant, "tok" + tenant}, &retry);
  }
  std::vector<nlohmann::json> AuditLines() { return Lines(dir.File("audit.jsonl")); }
  // The ledger entries the trail has delivered so far.
  std::vector<ppn::ledger::v1::AppendRequest> Ledger() {
    while (audit->DeliverOnce() > 0) {
    }
    return delivered;
  }

  ppn::testing::TempDir dir;
  ppn::testing::FakeClock clock;
  ppn::tenancy::v1::ProxyConfig config = Config();
  FakeFleetClient fleet;
  RateLimiter limiter{&clock};
  ProxyOptions options;
  std::vector<ppn::ledger::v1::AppendRequest> delivered;
  std::unique_ptr<AuditTrail> audit;
  std::unique_ptr<ProxyCore> core;
};

TEST_CASE("a malformed spec is INVALID_ARGUMENT even when the quota is used up", "[proxy][core][quota]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  REQUIRE(f.core->CreateVm(acme, Request("a")).ok());
  REQUIRE(f.core->CreateVm(acme, Request("b")).ok());  // max_vms 2: full
  CreateVmRequest huge = Request("c");
  huge.mutable_spec()->set_memory_mib(1u << 31);
  CreateVmRequest wide = Request("d");
  wide.mutable_spec()->set_vcpus(65);
  for (const auto& req : {huge, wide}) {
    absl::StatusOr<ppn::tenancy::v1::Vm> vm = f.core->CreateVm(acme, req);
    INFO(vm.status().ToString());
    CHECK(vm.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(f.fleet.creates() == 2);
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 6);  // two creates (intent + outcome each), two refusals
  CHECK(lines[4]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[4]["detail"] == "INVALID_ARGUMENT");
  CHECK(lines[4].count("display_name") == 0);  // nothing of a malformed request is kept
}

TEST_CASE("the disk quota counts each VM's disk and refuses what would exceed it", "[proxy][core][quota]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  REQUIRE(f.core->CreateVm(acme, Request("a", "", 15)).ok());
  absl::StatusOr<ppn::tenancy::v1::Vm> over = f.core->CreateVm(acme, Request("b", "", 6));
  CHECK(over.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(over.status().message() == "disk quota of 20 GiB would be exceeded (15 in use)");
  CHECK(f.core->CreateVm(acme, Request("b", "", 5)).ok());
  auto quota = *f.core->GetQuota(acme);
  CHECK(quota.usage().disk_gib() == 20);
  CHECK(quota.limits().max_disk_gib() == 20);
  CHECK(f.fleet.creates() == 2);
}

TEST_CASE("the intent of a create is recorded before the fleet acts and the outcome after", "[proxy][core][audit]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  std::vector<nlohmann::json> at_the_fleet;
  f.fleet.OnCreate([&](const ppn::fleet::v1::VmRecord&) { at_the_fleet = f.AuditLines(); });
  auto vm = f.core->CreateVm(acme, Request("web", "r-1"));
  REQUIRE(vm.ok());
  REQUIRE(at_the_fleet.size() == 1);
  CHECK(at_the_fleet[0]["operation"] == "tenant.vm.create");
  CHECK(at_the_fleet[0]["outcome"] == "OUTCOME_PENDING");
  CHECK(at_the_fleet[0]["request_id"] == "r-1");
  CHECK(at_the_fleet[0]["display_name"] == "web");
  CHECK(at_the_fleet[0]["token_id"] == "tokacme");
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[1]["outcome"] == "OUTCOME_SUCCESS");
  CHECK(lines[1]["vm_id"] == vm->vm_id());
  CHECK(lines[1]["request_id"] == "r-1");
}

TEST_CASE("a proxy killed while the fleet creates leaves the intent naming the request",
          "[proxy][core][audit][crash]") {
  ppn::testing::TempDir dir;
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The proxy: dies (SIGKILL, no destructor, no flush) once the fleet has made the VM and
    // before it could hear back.
    ppn::testing::FakeClock clock;
    FakeFleetClient fleet;
    RateLimiter limiter(&clock);
    auto audit =
        *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock,
                          [](const ppn::ledger::v1::AppendRequest&) { return absl::UnavailableError("down"); });
    ProxyCore core(Config(), {&fleet, &limiter, audit.get()});
    fleet.OnCreate([](const ppn::fleet::v1::VmRecord&) { raise(SIGKILL); });
    absl::Duration retry;
    core.CreateVm(*core.Admit({"acme", "t"}, &retry), Request("web", "r-crash")).IgnoreError();
    _exit(0);  // not reached
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);

  std::vector<ppn::ledger::v1::AppendRequest> delivered;
  ppn::testing::FakeClock clock;
  auto reopened = *AuditTrail::Open(dir.File("audit.jsonl"), dir.File("spool.db"), &clock,
                                    [&](const ppn::ledger::v1::AppendRequest& r) {
                                      delivered.push_back(r);
                                      return absl::OkStatus();
                                    });
  auto lines = Lines(dir.File("audit.jsonl"));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["outcome"] == "OUTCOME_PENDING");
  CHECK(lines[0]["request_id"] == "r-crash");
  CHECK(reopened->DeliverOnce() == 1);
  REQUIRE(delivered.size() == 1);
  CHECK(delivered[0].kind() == "tenant.vm.create");
  CHECK(delivered[0].outcome() == ppn::ledger::v1::OUTCOME_PENDING);
  CHECK(delivered[0].attributes().at("request_id") == "r-crash");
}

TEST_CASE("nothing is forwarded when the intent cannot be recorded", "[proxy][core][audit]") {
  Fixture f("/dev/full");  // every write fails
  Tenant acme = f.Admit("acme");
  auto vm = f.core->CreateVm(acme, Request("web"));
  CHECK(vm.status().code() == absl::StatusCode::kInternal);
  CHECK(vm.status().message() == "the request could not be audited, so it was not forwarded");
  CHECK(f.fleet.creates() == 0);
  f.fleet.Put([] {
    ppn::fleet::v1::VmRecord r;
    r.set_vm_id("vm-x");
    r.set_tenant_id("acme");
    r.set_state(ppn::types::v1::VM_STATE_RUNNING);
    return r;
  }());
  auto destroyed = f.core->DestroyVm(acme, "vms/vm-x");
  CHECK(destroyed.status().code() == absl::StatusCode::kInternal);
  CHECK(f.fleet.destroys() == 0);
}

TEST_CASE("a retry with the same request_id at the quota returns the original VM and is recorded once",
          "[proxy][core][retry]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  REQUIRE(f.core->CreateVm(acme, Request("other")).ok());
  auto first = f.core->CreateVm(acme, Request("web", "r-1"));
  REQUIRE(first.ok());  // max_vms 2: now full
  REQUIRE(f.AuditLines().size() == 4);

  SECTION("the fleet says replayed") {}
  SECTION("a fleet that predates replayed returns the same VM") { f.fleet.SetReportsReplayed(false); }
  auto retry = f.core->CreateVm(acme, Request("web", "r-1"));
  INFO(retry.status().ToString());
  REQUIRE(retry.ok());
  CHECK(retry->vm_id() == first->vm_id());
  CHECK(f.AuditLines().size() == 4);  // nothing new: the original call recorded it
  CHECK(f.fleet.live_vms() == 2);

  // Another request_id is a new create, and the quota applies.
  auto fresh = f.core->CreateVm(acme, Request("web2", "r-2"));
  CHECK(fresh.status().message() == "VM quota of 2 reached");
}

TEST_CASE("the same request_id with another spec is ALREADY_EXISTS in plain words", "[proxy][core][retry]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  REQUIRE(f.core->CreateVm(acme, Request("web", "r-1")).ok());
  CreateVmRequest other = Request("web", "r-1");
  other.mutable_spec()->set_memory_mib(512);
  auto s = f.core->CreateVm(acme, other);
  CHECK(s.status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(s.status().message() ==
        "request_id r-1 was used for a different VM; use a new request_id for a new VM, or resend the original "
        "request");
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[2]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[2]["detail"] == "ALREADY_EXISTS");
}

TEST_CASE("a rate-limited burst is counted not recorded one by one", "[proxy][core][rate]") {
  Fixture f;
  absl::Duration retry;
  int refused = 0;
  for (int i = 0; i < 202; ++i) {
    absl::StatusOr<Tenant> t = f.core->Admit({"slow", "t"}, &retry);
    if (t.ok()) {
      CHECK(retry == absl::ZeroDuration());
      continue;
    }
    ++refused;
    CHECK(t.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK(t.status().message() == "rate limit of 1 requests/s (burst 2) reached; retry in 1000 ms");
    CHECK(retry == absl::Seconds(1));
  }
  CHECK(refused == 200);
  CHECK(f.AuditLines().empty());
  f.clock.Advance(absl::Seconds(10));
  CHECK(*f.audit->FlushRateLimited() == 1);
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["tenant"] == "slow");
  CHECK(lines[0]["count"] == 200);
}

TEST_CASE("an unknown tenant is not admitted", "[proxy][core]") {
  Fixture f;
  absl::Duration retry;
  CHECK(f.core->Admit({"nobody", "t"}, &retry).status().code() == absl::StatusCode::kUnauthenticated);
}

TEST_CASE("a destroy records its intent and its outcome", "[proxy][core][audit]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  auto vm = *f.core->CreateVm(acme, Request("web"));
  REQUIRE(f.core->DestroyVm(acme, vm.name()).ok());
  auto missing = f.core->DestroyVm(acme, "vms/vm-404");
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(missing.status().message() == "vm vm-404 not found");
  auto bad = f.core->DestroyVm(acme, "vms/Not Valid");
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 2 + 2 + 2 + 1);
  CHECK(lines[2]["operation"] == "tenant.vm.destroy");
  CHECK(lines[2]["outcome"] == "OUTCOME_PENDING");
  CHECK(lines[3]["outcome"] == "OUTCOME_SUCCESS");
  CHECK(lines[3]["vm_id"] == vm.vm_id());
  CHECK(lines[5]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[6]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[6]["vm_id"] == "");
}

TEST_CASE("the tenant's view names no node and echoes no user_data", "[proxy][core]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  CreateVmRequest req = Request("web", "r-9");
  req.mutable_spec()->set_user_data("#cloud-config\npassword: hunter2\n");
  auto vm = *f.core->CreateVm(acme, req);
  auto got = *f.core->GetVm(acme, vm.name());
  for (const auto& v : {vm, got}) {
    std::string bytes = v.SerializeAsString();
    CHECK(bytes.find("secret-node-7") == std::string::npos);
    CHECK(bytes.find("hunter2") == std::string::npos);
    CHECK(bytes.find("r-9") == std::string::npos);
  }
  CHECK(f.core->GetVm(f.Admit("slow"), vm.name()).status().message() == "vm " + vm.vm_id() + " not found");
}

TEST_CASE("a tenant sees only the relay's address for its forwarded ports never its node's", "[proxy][core][relay]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  ppn::fleet::v1::VmRecord r;
  r.set_vm_id("vm-7");
  r.set_tenant_id("acme");
  r.set_node_id("laptop-b");
  r.set_state(ppn::types::v1::VM_STATE_RUNNING);
  auto* web = r.add_forwarded_ports();
  web->set_guest_port(80);
  web->set_host_address("10.8.0.3");
  web->set_host_port(20417);
  web->set_public_address("relay.example.org");
  web->set_public_port(30000);
  auto* dns = r.add_forwarded_ports();
  dns->set_guest_port(53);
  dns->set_protocol(ppn::types::v1::PROTOCOL_UDP);
  dns->set_host_address("10.8.0.3");
  dns->set_host_port(20418);
  dns->set_public_address("relay.example.org");
  dns->set_public_port(30001);
  f.fleet.Put(r);

  auto got = f.core->GetVm(acme, "vms/vm-7");
  REQUIRE(got.ok());
  auto listed = f.core->ListVms(acme, {});
  REQUIRE(listed.ok());
  REQUIRE(listed->vms_size() == 1);
  for (const auto& vm : {*got, listed->vms(0)}) {
    REQUIRE(vm.forwarded_ports_size() == 2);
    CHECK(vm.forwarded_ports(0).host_address() == "relay.example.org");
    CHECK(vm.forwarded_ports(0).host_port() == 30000);
    CHECK(vm.forwarded_ports(0).public_port() == 30000);
    CHECK(vm.forwarded_ports(1).host_address() == "relay.example.org");
    CHECK(vm.forwarded_ports(1).host_port() == 30001);
    CHECK(vm.forwarded_ports(1).protocol() == ppn::types::v1::PROTOCOL_UDP);
    std::string bytes = vm.SerializeAsString();
    CHECK(bytes.find("10.8.0.3") == std::string::npos);
    CHECK(bytes.find("laptop-b") == std::string::npos);
    CHECK(vm.DebugString().find("2041") == std::string::npos);  // neither node port
  }

  // Without a relay (the one-machine mesh) the node's forward is the only way in.
  r.set_vm_id("vm-8");
  r.mutable_forwarded_ports()->Clear();
  auto* direct = r.add_forwarded_ports();
  direct->set_guest_port(80);
  direct->set_host_address("127.0.0.1");
  direct->set_host_port(20001);
  f.fleet.Put(r);
  auto plain = f.core->GetVm(acme, "vm-8");
  REQUIRE(plain.ok());
  CHECK(plain->forwarded_ports(0).host_address() == "127.0.0.1");
  CHECK(plain->forwarded_ports(0).host_port() == 20001);
}

TEST_CASE("usage counts every page of a long listing", "[proxy][core][quota]") {
  Fixture f;
  for (int i = 0; i < 1500; ++i) {
    ppn::fleet::v1::VmRecord r;
    r.set_vm_id("vm-" + std::to_string(100000 + i));
    r.set_tenant_id("slow");
    r.set_state(ppn::types::v1::VM_STATE_RUNNING);
    r.mutable_spec()->set_vcpus(1);
    f.fleet.Put(r);
  }
  CHECK(f.core->GetQuota(f.Admit("slow"))->usage().vms() == 1500);
  ppn::tenancy::v1::ListVmsRequest list;
  list.set_page_size(1001);
  CHECK(f.core->ListVms(f.Admit("slow"), list).status().message() == "page_size must be 0-1000");
}

TEST_CASE("a create forwards the VM's egress narrowed to its tenant's default", "[proxy][core][egress]") {
  Fixture f;
  Tenant locked = f.Admit("locked");
  SECTION("without a policy of its own the VM gets the tenant's") {
    auto vm = f.core->CreateVm(locked, Request("web"));
    REQUIRE(vm.ok());
    auto specs = f.fleet.created_specs();
    REQUIRE(specs.size() == 1);
    const auto& sent = specs[0].egress();
    CHECK(sent.internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
    REQUIRE(sent.allow_size() == 1);
    CHECK(sent.allow(0).cidr() == "203.0.113.0/24");
    CHECK(sent.deny_size() == 1);
    CHECK(sent.rate_limit_kbit() == 5000);
    // What the tenant sees is what its node enforces.
    CHECK(vm->spec().egress().SerializeAsString() == sent.SerializeAsString());
    CHECK(f.core->GetVm(locked, vm->name())->spec().egress().rate_limit_kbit() == 5000);
  }
  SECTION("a VM may narrow it further") {
    CreateVmRequest req = Request("web");
    *req.mutable_spec()->mutable_egress()->add_allow() = Rule("203.0.113.7", 443, 443);
    *req.mutable_spec()->mutable_egress()->add_deny() = Rule("203.0.113.8");
    req.mutable_spec()->mutable_egress()->set_rate_limit_kbit(9000);  // above the tenant's: the lower one applies
    REQUIRE(f.core->CreateVm(locked, req).ok());
    auto specs = f.fleet.created_specs();
    REQUIRE(specs.size() == 1);
    const auto& sent = specs[0].egress();
    REQUIRE(sent.allow_size() == 1);
    CHECK(sent.allow(0).cidr() == "203.0.113.7");
    CHECK(sent.deny_size() == 2);
    CHECK(sent.rate_limit_kbit() == 5000);
  }
  SECTION("a tenant without a default keeps what the VM asks, internet allowed when unset") {
    auto vm = f.core->CreateVm(f.Admit("acme"), Request("web"));
    REQUIRE(vm.ok());
    CHECK(f.fleet.created_specs()[0].egress().internet() == ppn::types::v1::INTERNET_ACCESS_ALLOWED);
    CHECK(vm->spec().egress().internet() == ppn::types::v1::INTERNET_ACCESS_ALLOWED);
  }
}

TEST_CASE("a create that asks to reach more than its tenant may is PERMISSION_DENIED and audited",
          "[proxy][core][egress]") {
  Fixture f;
  Tenant locked = f.Admit("locked");
  CreateVmRequest req = Request("web", "r-1");
  *req.mutable_spec()->mutable_egress()->add_allow() = Rule("198.51.100.0/24");
  auto vm = f.core->CreateVm(locked, req);
  CHECK(vm.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(vm.status().message() == "egress.allow rule 198.51.100.0/24 is outside what this tenant may reach");
  CHECK(f.fleet.creates() == 0);
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 1);  // the refusal, and no intent: nothing was forwarded
  CHECK(lines[0]["operation"] == "tenant.vm.create");
  CHECK(lines[0]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[0]["detail"] == "PERMISSION_DENIED");
  CHECK(lines[0]["request_id"] == "r-1");
}

ppn::tenancy::v1::UpdateVmNetworkRequest Network(const std::string& name) {
  ppn::tenancy::v1::UpdateVmNetworkRequest req;
  req.set_name(name);
  return req;
}

TEST_CASE("a network change is narrowed forwarded and audited with the policy's shape", "[proxy][core][egress]") {
  Fixture f;
  Tenant locked = f.Admit("locked");
  auto vm = *f.core->CreateVm(locked, Request("web"));
  ppn::tenancy::v1::UpdateVmNetworkRequest req = Network(vm.name());
  *req.mutable_egress()->add_allow() = Rule("203.0.113.9", 443, 443);
  *req.mutable_egress()->add_deny() = Rule("203.0.113.10");
  *req.mutable_egress()->add_deny() = Rule("203.0.113.11");
  req.mutable_egress()->set_internet(ppn::types::v1::INTERNET_ACCESS_ALLOWED);  // the tenant's denial stands

  auto updated = f.core->UpdateVmNetwork(locked, req);
  INFO(updated.status().ToString());
  REQUIRE(updated.ok());
  auto sent = f.fleet.network_updates();
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].first == vm.vm_id());
  CHECK(sent[0].second.internet() == ppn::types::v1::INTERNET_ACCESS_DENIED);
  REQUIRE(sent[0].second.allow_size() == 1);
  CHECK(sent[0].second.allow(0).cidr() == "203.0.113.9");
  CHECK(sent[0].second.deny_size() == 3);  // the tenant's and the VM's two
  CHECK(sent[0].second.rate_limit_kbit() == 5000);
  CHECK(updated->spec().egress().SerializeAsString() == sent[0].second.SerializeAsString());
  CHECK(f.core->GetVm(locked, vm.name())->spec().egress().deny_size() == 3);

  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 4);  // the create's two, then the change's intent and outcome
  for (int i : {2, 3}) {
    INFO(lines[i].dump());
    CHECK(lines[i]["operation"] == "tenant.vm.network");
    CHECK(lines[i]["vm_id"] == vm.vm_id());
    CHECK(lines[i]["egress_internet"] == "denied");
    CHECK(lines[i]["egress_allow_rules"] == "1");
    CHECK(lines[i]["egress_deny_rules"] == "3");
    CHECK(lines[i]["egress_rate_limit_kbit"] == "5000");
    CHECK(lines[i].dump().find("203.0.113") == std::string::npos);  // the shape, not the destinations
  }
  CHECK(lines[2]["outcome"] == "OUTCOME_PENDING");
  CHECK(lines[3]["outcome"] == "OUTCOME_SUCCESS");
  auto ledger = f.Ledger();
  REQUIRE(ledger.size() == 4);
  CHECK(ledger[3].kind() == "tenant.vm.network");
  CHECK(ledger[3].subject() == vm.vm_id());
  CHECK(ledger[3].outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  CHECK(ledger[3].attributes().at("egress_deny_rules") == "3");
  CHECK(ledger[3].attributes().at("token_id") == "toklocked");
}

TEST_CASE("a network change beyond the tenant's default is PERMISSION_DENIED and forwards nothing",
          "[proxy][core][egress]") {
  Fixture f;
  Tenant locked = f.Admit("locked");
  auto vm = *f.core->CreateVm(locked, Request("web"));
  ppn::tenancy::v1::UpdateVmNetworkRequest req = Network(vm.vm_id());  // the bare id works too
  *req.mutable_egress()->add_allow() = Rule("203.0.113.0/24", 22, 22);
  auto refused = f.core->UpdateVmNetwork(locked, req);
  CHECK(refused.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(refused.status().message() == "egress.allow rule 203.0.113.0/24 is outside what this tenant may reach");
  CHECK(f.fleet.network_updates().empty());
  auto lines = f.AuditLines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[2]["operation"] == "tenant.vm.network");
  CHECK(lines[2]["outcome"] == "OUTCOME_DENIED");
  CHECK(lines[2]["detail"] == "PERMISSION_DENIED");
  CHECK(lines[2]["egress_allow_rules"] == "1");  // what was asked

  SECTION("a malformed policy is INVALID_ARGUMENT") {
    ppn::tenancy::v1::UpdateVmNetworkRequest bad = Network(vm.name());
    *bad.mutable_egress()->add_deny() = Rule("203.0.113.0/24", 90, 80);
    auto s = f.core->UpdateVmNetwork(locked, bad);
    CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.status().message() == "egress.deny rule ports must be 1-65535 with port_first <= port_last");
    CHECK(f.AuditLines().back()["detail"] == "INVALID_ARGUMENT");
    CHECK(f.fleet.network_updates().empty());
  }
}

TEST_CASE("another tenant's VM is not found for a network change with the same words as a missing one",
          "[proxy][core][egress][isolation]") {
  Fixture f;
  auto vm = *f.core->CreateVm(f.Admit("acme"), Request("web"));
  Tenant locked = f.Admit("locked");
  auto theirs = f.core->UpdateVmNetwork(locked, Network(vm.name()));
  auto missing = f.core->UpdateVmNetwork(locked, Network("vms/vm-404"));
  CHECK(theirs.status().code() == absl::StatusCode::kNotFound);
  CHECK(theirs.status().message() == "vm " + vm.vm_id() + " not found");
  CHECK(missing.status().message() == "vm vm-404 not found");
  CHECK(f.fleet.network_updates().empty());
  auto lines = f.AuditLines();
  CHECK(lines.back()["outcome"] == "OUTCOME_DENIED");
  CHECK(lines.back()["detail"] == "NOT_FOUND");
  CHECK(f.core->UpdateVmNetwork(locked, Network("vms/Not Valid")).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a network change of a VM that does not run is FAILED_PRECONDITION", "[proxy][core][egress]") {
  Fixture f;
  Tenant locked = f.Admit("locked");
  ppn::fleet::v1::VmRecord r;
  r.set_vm_id("vm-x");
  r.set_tenant_id("locked");
  r.set_state(ppn::types::v1::VM_STATE_PENDING);
  f.fleet.Put(r);
  auto s = f.core->UpdateVmNetwork(locked, Network("vms/vm-x"));
  CHECK(s.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.status().message() == "vm vm-x must be running on a host with network isolation to change its network");
  CHECK(f.AuditLines().back()["outcome"] == "OUTCOME_FAILURE");
}

TEST_CASE("a tenant's malformed egress default refuses the whole config naming the tenant", "[proxy][config]") {
  ppn::testing::TempDir dir;
  std::ofstream(dir.File("good.textproto"))
      << "tenants { tenant_id: \"acme\" egress { internet: INTERNET_ACCESS_DENIED allow { cidr: \"203.0.113.0/24\" "
         "port_first: 443 } } }\n";
  CHECK(LoadProxyConfig(dir.File("good.textproto")).ok());
  std::ofstream(dir.File("bad.textproto")) << "tenants { tenant_id: \"acme\" }\n"
                                              "tenants { tenant_id: \"globex\" egress { allow { cidr: \"10.0.0.0/33\" "
                                              "} } }\n";
  auto bad = LoadProxyConfig(dir.File("bad.textproto"));
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bad.status().message() == dir.File("bad.textproto") +
                                      ": tenant globex's default egress.allow rule \"10.0.0.0/33\" is not an IPv4 "
                                      "address or CIDR");
}

class NullObserver final : public FleetWatchObserver {
 public:
  void OnWatchMessage(const ppn::fleet::v1::WatchVmResponse&) override {}
  void OnWatchDone(const absl::Status&) override {}
};

TEST_CASE("a tenant holds at most its cap of WatchVm streams", "[proxy][core][watch]") {
  ProxyOptions options;
  options.max_watch_streams_per_tenant = 3;
  Fixture f("", options);
  Tenant acme = f.Admit("acme");
  NullObserver observer;
  std::vector<std::unique_ptr<FleetWatch>> held;
  for (int i = 0; i < 3; ++i) held.push_back(*f.core->OpenWatch(acme, "vms/vm-1", &observer));
  auto fourth = f.core->OpenWatch(acme, "vms/vm-1", &observer);
  CHECK(fourth.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(fourth.status().message() == "at most 3 WatchVm streams per tenant; close one first");
  CHECK(f.core->OpenWatch(f.Admit("slow"), "vms/vm-1", &observer).ok());  // another tenant's slots
  CHECK(f.core->OpenWatch(acme, "vms/Bad", &observer).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.core->WatchStreamsForTest("acme") == 3);
  held.pop_back();  // a closed stream gives its slot back
  CHECK(f.core->WatchStreamsForTest("acme") == 2);
  CHECK(f.core->OpenWatch(acme, "vms/vm-1", &observer).ok());
}

TEST_CASE("a tenant's networks are audited, another tenant's is not found, and one with VMs is not deleted",
          "[proxy][core][private_networks]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  Tenant slow = f.Admit("slow");
  ppn::tenancy::v1::CreateNetworkRequest create;
  create.set_name("Bad Name");
  CHECK(f.core->CreateNetwork(acme, create).status().code() == absl::StatusCode::kInvalidArgument);
  create.set_name("backend");
  absl::StatusOr<ppn::types::v1::Network> net = f.core->CreateNetwork(acme, create);
  REQUIRE(net.ok());
  CHECK(f.core->CreateNetwork(acme, create).status().message() == "a network named backend already exists");
  CHECK(f.core->GetNetwork(acme, net->network_id())->cidr() == net->cidr());
  absl::Status theirs = f.core->GetNetwork(slow, net->network_id()).status();
  CHECK(theirs.code() == absl::StatusCode::kNotFound);
  CHECK(f.core->GetNetwork(slow, "net-nope").status().message() == "network net-nope not found");
  CHECK(f.core->DeleteNetwork(slow, net->network_id()).message() == theirs.message());
  CHECK(f.core->ListNetworks(slow)->networks_size() == 0);
  CHECK(f.core->ListNetworks(acme)->networks_size() == 1);
  CHECK(f.core->GetNetwork(acme, "../etc").status().code() == absl::StatusCode::kInvalidArgument);

  CreateVmRequest vm_req = Request("web");
  vm_req.mutable_spec()->add_networks(net->network_id());
  auto vm = f.core->CreateVm(acme, vm_req);
  REQUIRE(vm.ok());
  absl::Status busy = f.core->DeleteNetwork(acme, net->network_id());
  CHECK(busy.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(busy.message() == absl::StrCat("network ", net->network_id(), " has VMs attached: ", vm->vm_id()));
  REQUIRE(f.core->DestroyVm(acme, vm->name()).ok());
  CHECK(f.core->DeleteNetwork(acme, net->network_id()).ok());

  std::vector<std::string> ops;
  for (const auto& line : f.AuditLines()) {
    std::string op = line["operation"];
    if (op.rfind("tenant.network.", 0) == 0) ops.push_back(op + " " + std::string(line["outcome"]));
  }
  // Refused before forwarding (bad name) is one record; the rest an intent and an outcome each.
  CHECK(ops ==
        std::vector<std::string>{"tenant.network.create OUTCOME_DENIED", "tenant.network.create OUTCOME_PENDING",
                                 "tenant.network.create OUTCOME_SUCCESS", "tenant.network.create OUTCOME_PENDING",
                                 "tenant.network.create OUTCOME_DENIED", "tenant.network.delete OUTCOME_PENDING",
                                 "tenant.network.delete OUTCOME_DENIED", "tenant.network.delete OUTCOME_PENDING",
                                 "tenant.network.delete OUTCOME_FAILURE", "tenant.network.delete OUTCOME_PENDING",
                                 "tenant.network.delete OUTCOME_SUCCESS"});
}

TEST_CASE("network errors of the fleet reach the tenant in words of its own", "[proxy][private_networks]") {
  CHECK(NetworkSafeError(absl::NotFoundError("network net-1 not found on node laptop-a"), "net-1", "").message() ==
        "network net-1 not found");
  CHECK(NetworkSafeError(absl::FailedPreconditionError("network net-1 has VMs attached: vm-1, vm-2"), "net-1", "")
            .message() == "network net-1 has VMs attached: vm-1, vm-2");
  CHECK(NetworkSafeError(absl::FailedPreconditionError("network net-1 has VMs attached: /var/lib/x"), "net-1", "")
            .message() == "network net-1 has VMs attached; destroy them first");
  CHECK(NetworkSafeError(absl::InternalError("sqlite: disk I/O error at /var/lib/ppn"), "net-1", "").message() ==
        "the control plane failed (13)");
  ppn::types::v1::VmSpec spec;
  spec.add_networks("net-9");
  CallAbout about;
  about.spec = &spec;
  absl::Status s = TenantSafeError(absl::NotFoundError("network net-9 not found"), "", about);
  CHECK(s.code() == absl::StatusCode::kNotFound);
  CHECK(s.message() == "network net-9 not found");
}

}  // namespace
}  // namespace ppn::proxy

namespace ppn::proxy {
namespace {

TEST_CASE("a tenant's view names no node, path or QEMU output in any state", "[proxy][core][view]") {
  ppn::fleet::v1::VmRecord r;
  r.set_vm_id("vm-1");
  r.set_node_id("laptop-a");
  auto* port = r.add_forwarded_ports();
  port->set_guest_port(80);
  port->set_host_address("10.8.0.2");
  port->set_host_port(20001);
  port->set_public_address("203.0.113.7");
  port->set_public_port(30000);
  const std::pair<ppn::types::v1::VmState, const char*> cases[] = {
      {ppn::types::v1::VM_STATE_FAILED, "QEMU exited unexpectedly: /var/lib/ppn/agent/vms/vm-1 on laptop-a"},
      {ppn::types::v1::VM_STATE_LOST, "node laptop-a no longer reports this VM"},
      {ppn::types::v1::VM_STATE_UNKNOWN, "node laptop-a is unreachable"},
      {ppn::types::v1::VM_STATE_MIGRATING, "waiting for an incoming migration on laptop-b"},
      {ppn::types::v1::VM_STATE_RUNNING, "paused after migrating out"},
  };
  for (const auto& [state, message] : cases) {
    r.set_state(state);
    r.set_state_message(message);
    ppn::tenancy::v1::Vm vm = TenantView(r);
    INFO(ppn::types::v1::VmState_Name(state) << ": " << vm.state_message());
    std::string shown = vm.DebugString();
    CHECK(shown.find("laptop") == std::string::npos);
    CHECK(shown.find("QEMU") == std::string::npos);
    CHECK(shown.find("/var/lib") == std::string::npos);
    CHECK(shown.find("10.8.0.2") == std::string::npos);
  }
  r.set_state(ppn::types::v1::VM_STATE_FAILED);
  CHECK(TenantView(r).state_message() == "the VM failed: it could not start or stopped unexpectedly");
  CHECK(TenantView(r).forwarded_ports(0).host_address() == "203.0.113.7");
}

}  // namespace
}  // namespace ppn::proxy

namespace ppn::proxy {
namespace {

TEST_CASE("a tenant-chosen id becomes the VM's name and is checked before quota", "[proxy][core][names]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  CreateVmRequest req = Request("");
  req.set_vm_id("web");
  absl::StatusOr<ppn::tenancy::v1::Vm> vm = f.core->CreateVm(acme, req);
  REQUIRE(vm.ok());
  CHECK(vm->name() == "vms/web");
  CHECK(vm->vm_id() != "web");                // the generated id, still given
  CHECK(vm->spec().display_name() == "web");  // defaults to the chosen id
  CHECK(f.core->GetVm(acme, "web")->vm_id() == vm->vm_id());
  CHECK(f.core->GetVm(acme, "vms/web")->vm_id() == vm->vm_id());
  CHECK(f.core->GetVm(acme, vm->vm_id())->name() == "vms/web");
  CHECK(f.core->GetVm(f.Admit("slow"), "web").status().message() == "vm web not found");

  REQUIRE(f.core->CreateVm(acme, Request("b")).ok());  // max_vms 2: full
  for (const char* bad : {"Web", "9lives", "vm-0190a1b2c3d4e5f6a7b"}) {
    CreateVmRequest r = Request("c");
    r.set_vm_id(bad);
    auto refused = f.core->CreateVm(acme, r);
    INFO(bad);
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);  // not RESOURCE_EXHAUSTED
    CHECK(refused.status().message().find("vm_id ") == 0);
  }
  CHECK(f.fleet.creates() == 2);
  // A VM without a chosen id is named by its generated one.
  CHECK(f.core->ListVms(acme, {})->vms(1).name() == "vms/" + f.core->ListVms(acme, {})->vms(1).vm_id());
}

TEST_CASE("a chosen id the tenant already uses is ALREADY_EXISTS in its own words", "[proxy][core][names]") {
  CallAbout about;
  ppn::types::v1::VmSpec spec;
  spec.set_display_name("front");
  about.spec = &spec;
  about.chosen_id = "web";
  absl::Status s = TenantSafeError(absl::AlreadyExistsError("vm web already exists"), "", about);
  CHECK(s.code() == absl::StatusCode::kAlreadyExists);
  CHECK(s.message() == "vm web already exists");
  CHECK(TenantSafeError(absl::AlreadyExistsError("a VM named front already exists"), "", about).message() ==
        "a VM named front already exists");
}

TEST_CASE("a list's filter reaches the fleet and the fleet's filter and token words reach the tenant",
          "[proxy][core][filter]") {
  Fixture f;
  ppn::tenancy::v1::ListVmsRequest list;
  list.set_filter("state=RUNNING AND labels.env=ci");
  REQUIRE(f.core->ListVms(f.Admit("acme"), list).ok());
  CHECK(f.fleet.last_list().filter() == "state=RUNNING AND labels.env=ci");

  CallAbout about;
  about.list = true;
  const std::string filter_error = "filter: at position 15: expected \"AND\" (the only operator), found \"OR\"";
  CHECK(TenantSafeError(absl::InvalidArgumentError(filter_error), "", about).message() == filter_error);
  CHECK(
      TenantSafeError(absl::InvalidArgumentError("page_token is not valid for this list: ..."), "", about).message() ==
      "page_token is not valid for this list: ...");
  // Anything else the fleet says stays the fleet's.
  CHECK(TenantSafeError(absl::InvalidArgumentError("node laptop-a says no"), "", about).message() ==
        "the control plane refused this request as invalid");
}

TEST_CASE("a LOST VM never counts against the quota", "[proxy][core][quota]") {
  Fixture f;
  Tenant acme = f.Admit("acme");
  REQUIRE(f.core->CreateVm(acme, Request("a")).ok());
  absl::StatusOr<ppn::tenancy::v1::Vm> b = f.core->CreateVm(acme, Request("b"));
  REQUIRE(b.ok());
  CHECK(f.core->CreateVm(acme, Request("c")).status().code() == absl::StatusCode::kResourceExhausted);
  ppn::fleet::v1::VmRecord lost = *f.fleet.GetVm(TenantId("acme"), VmId(b->vm_id()));
  lost.set_state(ppn::types::v1::VM_STATE_LOST);
  f.fleet.Put(lost);
  CHECK(f.core->GetQuota(acme)->usage().vms() == 1);
  CHECK(f.core->GetQuota(acme)->usage().memory_mib() == 256);
  CHECK(f.core->CreateVm(acme, Request("c")).ok());
}

}  // namespace
}  // namespace ppn::proxy
