// The fleet binary with real host agents and real QEMU: tenant identity only from the proxy,
// a registry that survives SIGKILL, and a lost node's VMs reported UNKNOWN.

#include <signal.h>

#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using namespace ppn::fleet::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::StartAgent;
using ppn::testing::Subprocess;

struct FleetProcess {
  std::unique_ptr<Subprocess> process;
  int port = 0;
};

FleetProcess StartFleet(ppn::testing::TestPki& pki, const std::string& dir, const std::vector<AgentProcess*>& agents,
                        const std::vector<std::string>& names) {
  TlsFiles tls = pki.Issue("fleet", "fleet");
  std::string nodes;
  for (size_t i = 0; i < agents.size(); ++i) {
    nodes += (i ? "," : "") + names[i] + "=127.0.0.1:" + std::to_string(agents[i]->port);
  }
  std::string port_file = dir + "/fleet.port";
  std::remove(port_file.c_str());
  FleetProcess f;
  f.process = std::make_unique<Subprocess>(
      std::vector<std::string>{ppn::testing::RunfilePath("fleet/fleet"), "--mesh=" + pki.mesh(), "--listen=127.0.0.1:0",
                               "--tls_ca=" + tls.ca_cert, "--tls_cert=" + tls.cert, "--tls_key=" + tls.key,
                               "--db=" + dir + "/fleet.db", "--nodes=" + nodes, "--heartbeat_interval=1s",
                               "--port_file=" + port_file},
      dir + "/fleet.log");
  f.port = ppn::testing::WaitForPortFile(port_file, absl::Seconds(30));
  return f;
}

struct Caller {
  std::unique_ptr<FleetService::Stub> stub;
  std::string tenant;  // sent as metadata; only honoured from a tenant-proxy certificate
  void Prepare(grpc::ClientContext* ctx) const {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!tenant.empty()) ctx->AddMetadata("x-ppn-tenant-id", tenant);
  }
  grpc::Status Create(const std::string& name, CreateVmResponse* out, const std::string& label_tenant = "") const {
    CreateVmRequest req;
    auto* s = req.mutable_spec();
    s->set_display_name(name);
    s->set_vcpus(1);
    s->set_memory_mib(128);
    s->set_image("ppn-test-guest");
    s->add_port_forwards()->set_guest_port(80);
    if (!label_tenant.empty()) (*s->mutable_labels())["tenant_id"] = label_tenant;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    return stub->CreateVm(&ctx, req, out);
  }
  std::vector<std::string> List() const {
    ListVmsRequest req;
    ListVmsResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    REQUIRE(stub->ListVms(&ctx, req, &resp).ok());
    std::vector<std::string> ids;
    for (const auto& vm : resp.vms()) ids.push_back(vm.vm_id() + "/" + vm.tenant_id());
    return ids;
  }
  VmRecord Get(const std::string& id) const {
    GetVmRequest req;
    req.set_vm_id(id);
    GetVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    REQUIRE(stub->GetVm(&ctx, req, &resp).ok());
    return resp.vm();
  }
};

Caller As(ppn::testing::TestPki& pki, int port, const std::string& role, const std::string& tenant) {
  return {FleetService::NewStub(
              grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(pki.Issue(role, role)))),
          tenant};
}

// Waits until the fleet has heard from every node.
void WaitForNodes(const Caller& op, size_t n) {
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    ListNodesResponse resp;
    grpc::ClientContext ctx;
    op.Prepare(&ctx);
    if (op.stub->ListNodes(&ctx, {}, &resp).ok()) {
      size_t alive = 0;
      for (const auto& node : resp.nodes()) alive += node.state() == NODE_STATE_ALIVE;
      if (alive == n) return;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  FAIL("nodes never became alive");
}

TEST_CASE("the fleet places real VMs, keeps tenants apart and survives SIGKILL", "[fleet][qemu]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                              {"--kvm=simulate", "--advertised_memory_mib=2048", "--safety_margin_mib=256"});
  AgentProcess b =
      StartAgent(pki, guest.path(), guest.catalog(), "cloud",
                 {"--kvm=off", "--advertised_memory_mib=4096", "--safety_margin_mib=256", "--port_range=21000-21999"});
  FleetProcess fleet = StartFleet(pki, guest.path(), {&a, &b}, {"laptop-a", "cloud"});
  Caller op = As(pki, fleet.port, "operator", "");
  WaitForNodes(op, 2);
  Caller acme = As(pki, fleet.port, "tenant-proxy", "acme");
  Caller globex = As(pki, fleet.port, "tenant-proxy", "globex");

  CreateVmResponse web, db;
  REQUIRE(acme.Create("web", &web, /*label_tenant=*/"globex").ok());
  CHECK(web.vm().tenant_id() == "acme");    // the body's claim counts for nothing
  CHECK(web.vm().node_id() == "laptop-a");  // KVM (simulated) beats more memory
  CHECK(web.decision().chosen_node_id() == "laptop-a");
  REQUIRE(globex.Create("db", &db).ok());
  CHECK(acme.List() == std::vector<std::string>{web.vm().vm_id() + "/acme"});
  CHECK(globex.List() == std::vector<std::string>{db.vm().vm_id() + "/globex"});
  CHECK(op.List().size() == 2);

  SECTION("callers other than the proxy cannot act as a tenant") {
    CreateVmResponse r;
    grpc::Status s = As(pki, fleet.port, "scheduler", "acme").Create("sneaky", &r);
    CHECK(s.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    Caller no_tenant = As(pki, fleet.port, "tenant-proxy", "");
    CHECK(no_tenant.Create("x", &r).error_code() == grpc::StatusCode::UNAUTHENTICATED);
    GetVmRequest req;
    req.set_vm_id(web.vm().vm_id());
    GetVmResponse resp;
    grpc::ClientContext ctx;
    globex.Prepare(&ctx);
    CHECK(globex.stub->GetVm(&ctx, req, &resp).error_code() == grpc::StatusCode::NOT_FOUND);
  }

  SECTION("a fleet killed with SIGKILL comes back with every tenant's list") {
    std::vector<std::string> before_acme = acme.List(), before_globex = globex.List();
    fleet.process->Signal(SIGKILL);
    fleet.process->Wait(absl::Seconds(10));
    fleet = StartFleet(pki, guest.path(), {&a, &b}, {"laptop-a", "cloud"});
    Caller acme2 = As(pki, fleet.port, "tenant-proxy", "acme");
    Caller globex2 = As(pki, fleet.port, "tenant-proxy", "globex");
    CHECK(acme2.List() == before_acme);
    CHECK(globex2.List() == before_globex);
    WaitForNodes(As(pki, fleet.port, "operator", ""), 2);
    CHECK(acme2.Get(web.vm().vm_id()).state() == ppn::types::v1::VM_STATE_RUNNING);
    acme = std::move(acme2);
  }

  SECTION("a killed host agent's node goes unreachable and its VMs show UNKNOWN until it returns") {
    int agent_port = a.port;
    a.process->Signal(SIGKILL);
    a.process->Wait(absl::Seconds(10));
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    VmRecord seen;
    do {
      seen = acme.Get(web.vm().vm_id());
      if (seen.state() == ppn::types::v1::VM_STATE_UNKNOWN) break;
      absl::SleepFor(absl::Milliseconds(100));
    } while (absl::Now() < deadline);
    CHECK(seen.state() == ppn::types::v1::VM_STATE_UNKNOWN);
    CHECK(seen.state_message() == "node laptop-a is unreachable");
    CHECK(acme.List().size() == 1);  // never silently dropped
    DestroyVmRequest req;
    req.set_vm_id(web.vm().vm_id());
    DestroyVmResponse resp;
    grpc::ClientContext ctx;
    acme.Prepare(&ctx);
    CHECK(acme.stub->DestroyVm(&ctx, req, &resp).error_code() == grpc::StatusCode::UNAVAILABLE);

    // The agent comes back on its address, re-adopts the guest, and the fleet sees it again.
    a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                   {"--kvm=simulate", "--advertised_memory_mib=2048", "--safety_margin_mib=256",
                    "--listen=127.0.0.1:" + std::to_string(agent_port)});
    WaitForNodes(op, 2);
    CHECK(acme.Get(web.vm().vm_id()).state() == ppn::types::v1::VM_STATE_RUNNING);
  }

  DestroyVmRequest req;
  req.set_vm_id(web.vm().vm_id());
  DestroyVmResponse resp;
  grpc::ClientContext ctx;
  acme.Prepare(&ctx);
  REQUIRE(acme.stub->DestroyVm(&ctx, req, &resp).ok());
  CHECK(resp.vm().state() == ppn::types::v1::VM_STATE_STOPPED);
  CHECK(acme.List().empty());
}

}  // namespace
}  // namespace ppn
