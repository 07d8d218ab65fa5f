// A VM on a dead node, end to end over real processes: the tenant proxy and fleet binaries, a
// real host agent running a real guest, and a ledger. The agent dies; the VM goes UNKNOWN; the
// tenant destroys it through the proxy by the name it chose, at once; the quota it held is
// free; the ledger records all of it; when the agent returns, the guest and its files go.

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/str_join.h"
#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ledger/ledger_server.h"
#include "ppn/tenancy/v1/tenant_service.grpc.pb.h"
#include "tenant_proxy/token_authenticator.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using namespace ppn::tenancy::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::CountProcessesMentioning;
using ppn::testing::StartAgent;
using ppn::testing::StartService;

const char kToken[] = "acme-dead-node-token-31c7";

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return done();
}

struct Tenant {
  std::unique_ptr<TenantService::Stub> stub;
  void Prepare(grpc::ClientContext* ctx) const {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ctx->AddMetadata("authorization", std::string("Bearer ") + kToken);
  }
  grpc::Status Create(const std::string& id, Vm* out) const {
    CreateVmRequest req;
    req.set_vm_id(id);
    req.mutable_spec()->set_vcpus(1);
    req.mutable_spec()->set_memory_mib(128);
    req.mutable_spec()->set_image("ppn-test-guest");
    CreateVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub->CreateVm(&ctx, req, &resp);
    *out = resp.vm();
    return s;
  }
  grpc::Status Get(const std::string& name, Vm* out) const {
    GetVmRequest req;
    req.set_name(name);
    GetVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub->GetVm(&ctx, req, &resp);
    *out = resp.vm();
    return s;
  }
  grpc::Status Destroy(const std::string& name, Vm* out) const {
    DestroyVmRequest req;
    req.set_name(name);
    DestroyVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub->DestroyVm(&ctx, req, &resp);
    *out = resp.vm();
    return s;
  }
  std::vector<std::string> List() const {
    ListVmsResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    REQUIRE(stub->ListVms(&ctx, {}, &resp).ok());
    std::vector<std::string> names;
    for (const auto& vm : resp.vms()) names.push_back(vm.name());
    return names;
  }
  Usage Used() const {
    GetQuotaResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    REQUIRE(stub->GetQuota(&ctx, {}, &resp).ok());
    return resp.usage();
  }
};

TEST_CASE("a VM on a dead node is destroyed at once through the proxy, frees its quota and goes when the node returns",
          "[fleet][proxy][qemu][dead-node]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki("ppn.test");
  // The ledger, in this process: the fleet's and the proxy's entries land here.
  auto ledger_store = *ledger::LedgerStore::Open(guest.path() + "/ledger.db");
  ledger::MerkleLog log(ledger_store.get(), *ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'd')),
                        RealClock::Get(), ledger::MerkleLog::Options{"ppn.test/ledger"});
  REQUIRE(log.Start().ok());
  ledger::LedgerService ledger_service(&log);
  StartedServer ledger_server =
      *ledger::StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &ledger_service);
  const std::string ledger_address = "127.0.0.1:" + std::to_string(ledger_server.port);

  const std::vector<std::string> agent_flags = {"--kvm=off", "--advertised_memory_mib=2048", "--safety_margin_mib=256"};
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a", agent_flags);
  const int agent_port = a.port;
  AgentProcess fleet =
      StartService(pki, guest.path(), "fleet/fleet", "fleet", "fleet",
                   {"--db=" + guest.path() + "/fleet.db", "--nodes=laptop-a=127.0.0.1:" + std::to_string(agent_port),
                    "--heartbeat_interval=1s", "--ledger=" + ledger_address});
  // One VM is all acme may have.
  std::ofstream(guest.path() + "/proxy.textproto")
      << "tenants { tenant_id: \"acme\" token_sha256: \"" << proxy::TokenHash(kToken)
      << "\" limits { max_vms: 1 max_vcpus: 1 max_memory_mib: 256 } }\n";
  AgentProcess proxy_process =
      StartService(pki, guest.path(), "tenant_proxy/tenant_proxy", "tenant-proxy", "proxy",
                   {"--config=" + guest.path() + "/proxy.textproto", "--fleet=127.0.0.1:" + std::to_string(fleet.port),
                    "--ledger=" + ledger_address, "--state_dir=" + guest.path() + "/proxy-state"});
  Tenant acme{TenantService::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(proxy_process.port),
                                                         TlsChannelCredentials(pki.ca_cert_path())))};

  Vm web;
  REQUIRE(WaitFor([&] { return acme.Create("web", &web).ok(); }, absl::Seconds(30)));  // once the node reported
  CHECK(web.name() == "vms/web");
  const std::string id = web.vm_id();
  const std::string vm_dir = a.state_dir + "/vms/" + id;
  CHECK(std::filesystem::exists(vm_dir));
  CHECK(CountProcessesMentioning("ppn-" + id) == 1);
  CHECK(acme.Used().vms() == 1);
  Vm refused;
  CHECK(acme.Create("db", &refused).error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);

  // The agent dies; its guest lives on, unwatched.
  a.process->Signal(SIGKILL);
  a.process->Wait(absl::Seconds(10));
  Vm seen;
  CHECK(WaitFor([&] { return acme.Get("web", &seen).ok() && seen.state() == ppn::types::v1::VM_STATE_UNKNOWN; },
                absl::Seconds(20)));
  CHECK(seen.state_message() == "the VM's host is unreachable");  // no node name for a tenant
  CHECK(acme.Used().vms() == 1);                                  // UNKNOWN still counts

  // The tenant is rid of it now, by its name, not when the node answers again.
  Vm destroyed;
  grpc::Status d = acme.Destroy("web", &destroyed);
  INFO(d.error_message());
  REQUIRE(d.ok());
  CHECK(destroyed.vm_id() == id);
  CHECK(acme.List().empty());
  CHECK(acme.Used().vms() == 0);
  CHECK(acme.Used().memory_mib() == 0);
  CHECK(CountProcessesMentioning("ppn-" + id) == 1);  // nobody could tell the node yet

  // The agent comes back on its address, adopts the guest it finds, and the fleet, whose record
  // says destroyed, has it destroyed there: the QEMU and the VM's files go.
  a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                 {"--kvm=off", "--advertised_memory_mib=2048", "--safety_margin_mib=256",
                  "--listen=127.0.0.1:" + std::to_string(agent_port)});
  CHECK(WaitFor([&] { return CountProcessesMentioning("ppn-" + id) == 0; }, absl::Seconds(30)));
  CHECK(WaitFor([&] { return !std::filesystem::exists(vm_dir); }, absl::Seconds(10)));
  // The freed quota holds a new VM, and the name is free again.
  Vm again;
  grpc::Status created = acme.Create("web", &again);
  INFO(created.error_message());
  REQUIRE(created.ok());
  CHECK(again.vm_id() != id);
  CHECK(acme.List() == std::vector<std::string>{"vms/web"});

  // The ledger has the whole story of the first VM.
  std::vector<std::string> story;
  CHECK(WaitFor(
      [&] {
        story.clear();
        absl::StatusOr<std::vector<ppn::ledger::v1::Entry>> entries = log.GetEntries(0, 1000, "");
        if (!entries.ok()) return false;
        for (const auto& e : *entries) {
          // The proxy records what the tenant named ("web"), the fleet the VM's id.
          if (e.subject() != id && !(e.kind() == "tenant.vm.destroy" && e.subject() == "web")) continue;
          const auto& at = e.attributes();
          auto attr = [&at](const char* k) { return at.count(k) ? at.at(k) : std::string(); };
          std::string line = e.kind();
          if (e.kind() == "vm.state") line += " to=" + attr("to");
          if (e.kind() == "vm.destroy") line += " who=" + attr("who");
          if (e.kind() == "vm.destroy" && attr("who") == "tenant") line += " prior=" + attr("prior_state");
          if (e.kind() == "tenant.vm.destroy") {
            line += " " + ppn::ledger::v1::Outcome_Name(e.outcome()) + " " + attr("resolved_vm_id");
          }
          story.push_back(line);
        }
        return std::find(story.begin(), story.end(), "vm.destroy who=fleet") != story.end();
      },
      absl::Seconds(30)));
  INFO(absl::StrJoin(story, "\n"));
  auto has = [&story](const std::string& line) { return std::find(story.begin(), story.end(), line) != story.end(); };
  CHECK(has("vm.create"));
  CHECK(has("vm.state to=UNKNOWN"));
  CHECK(has("vm.destroy who=tenant prior=UNKNOWN"));
  CHECK(has("tenant.vm.destroy OUTCOME_SUCCESS " + id));
  CHECK(has("vm.destroy who=fleet"));  // the node's copy, once it reported it

  // The fleet and the proxy still hold streams open on the ledger: end them, do not wait.
  ledger_server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  log.Stop();
}

}  // namespace
}  // namespace ppn
