// The fleet binary with real host agents and real QEMU: tenant identity only from the proxy,
// a registry that survives SIGKILL, a lost node's VMs reported UNKNOWN, creates cut short by
// SIGKILL settled without orphans, and WatchVm streams that hold no thread each.

#include <signal.h>

#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using namespace ppn::fleet::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::CountProcessesMentioning;
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
  VmRecord Destroy(const std::string& id) const {
    DestroyVmRequest req;
    req.set_vm_id(id);
    DestroyVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status st = stub->DestroyVm(&ctx, req, &resp);
    INFO(st.error_message());
    REQUIRE(st.ok());
    return resp.vm();
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

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return done();
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
    // RUNNING once its guest is ready (it may still be booting: STARTING until then).
    CHECK(WaitFor([&] { return acme2.Get(web.vm().vm_id()).state() == ppn::types::v1::VM_STATE_RUNNING; },
                  absl::Seconds(120)));
    acme = std::move(acme2);
  }

  SECTION("a killed host agent's VMs show UNKNOWN, are destroyed at once, and go from the node when it returns") {
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
    // Not known to run: the tenant is rid of it now, not when the node answers again.
    CHECK(acme.Destroy(web.vm().vm_id()).state() == ppn::types::v1::VM_STATE_DESTROYED);
    CHECK(acme.List().empty());
    CHECK(CountProcessesMentioning("ppn-" + web.vm().vm_id()) == 1);  // the guest outlived its agent

    // The agent comes back on its address and re-adopts the guest; the fleet, whose record
    // says DESTROYED, has it destroyed there.
    a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                   {"--kvm=simulate", "--advertised_memory_mib=2048", "--safety_margin_mib=256",
                    "--listen=127.0.0.1:" + std::to_string(agent_port)});
    WaitForNodes(op, 2);
    CHECK(WaitFor([&] { return CountProcessesMentioning("ppn-" + web.vm().vm_id()) == 0; }, absl::Seconds(30)));
  }

  DestroyVmRequest req;
  req.set_vm_id(web.vm().vm_id());
  DestroyVmResponse resp;
  grpc::ClientContext ctx;
  acme.Prepare(&ctx);
  REQUIRE(acme.stub->DestroyVm(&ctx, req, &resp).ok());
  CHECK(resp.vm().state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK(acme.List().empty());
}

// Threads of process `pid` now (what `ps -o nlwp` shows).
int ThreadsOf(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string text;
  while (std::getline(status, text)) {
    absl::string_view line = text;
    int n = 0;
    if (absl::ConsumePrefix(&line, "Threads:") && absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &n)) return n;
  }
  return -1;
}

// The tenant's VM with display name `name` as the operator sees it, or an empty record.
VmRecord Named(const Caller& op, const std::string& name) {
  ListVmsRequest req;
  req.set_include_stopped(true);
  ListVmsResponse resp;
  grpc::ClientContext ctx;
  op.Prepare(&ctx);
  if (!op.stub->ListVms(&ctx, req, &resp).ok()) return {};
  for (const auto& vm : resp.vms()) {
    if (vm.spec().display_name() == name) return vm;
  }
  return {};
}

TEST_CASE("the fleet binary serves 300 WatchVm streams without a thread each", "[fleet][qemu][watch]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a", {"--advertised_memory_mib=2048"});
  FleetProcess fleet = StartFleet(pki, guest.path(), {&a}, {"laptop-a"});
  WaitForNodes(As(pki, fleet.port, "operator", ""), 1);
  Caller acme = As(pki, fleet.port, "tenant-proxy", "acme");

  // An image the catalog lacks: the tenant's words, with no node and no other image in them.
  CreateVmResponse web;
  {
    CreateVmRequest req;
    req.mutable_spec()->set_display_name("nope");
    req.mutable_spec()->set_vcpus(1);
    req.mutable_spec()->set_memory_mib(128);
    req.mutable_spec()->set_image("hostile-guest");
    grpc::ClientContext ctx;
    acme.Prepare(&ctx);
    grpc::Status st = acme.stub->CreateVm(&ctx, req, &web);
    CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message() == "image hostile-guest is not offered");
  }
  REQUIRE(acme.Create("web", &web).ok());

  int before = ThreadsOf(fleet.process->pid());
  constexpr int kStreams = 300;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<WatchVmResponse>>> streams;
  WatchVmRequest req;
  req.set_vm_id(web.vm().vm_id());
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    acme.Prepare(contexts.back().get());
    streams.push_back(acme.stub->WatchVm(contexts.back().get(), req));
    WatchVmResponse first;
    REQUIRE(streams.back()->Read(&first));
  }
  int during = ThreadsOf(fleet.process->pid());
  WARN("fleet threads (ps -o nlwp): " << before << " before, " << during << " with " << kStreams
                                      << " WatchVm streams open");
  CHECK(during - before < 40);
  acme.Destroy(web.vm().vm_id());
  for (auto& stream : streams) {
    WatchVmResponse msg;
    while (stream->Read(&msg)) {
    }
    CHECK(stream->Finish().ok());
  }
}

TEST_CASE("a fleet SIGKILLed mid-create settles the VM after restart: one guest, no PENDING", "[fleet][qemu][crash]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a", {"--advertised_memory_mib=2048"});
  FleetProcess fleet = StartFleet(pki, guest.path(), {&a}, {"laptop-a"});
  Caller op = As(pki, fleet.port, "operator", "");
  WaitForNodes(op, 1);
  Caller acme = As(pki, fleet.port, "tenant-proxy", "acme");
  std::thread create([&] {
    CreateVmResponse ignored;
    acme.Create("web", &ignored);  // cut short by the kill
  });
  // Kill the fleet as soon as its record exists (durable before the node is asked).
  REQUIRE(WaitFor([&] { return !Named(op, "web").vm_id().empty(); }, absl::Seconds(30)));
  fleet.process->Signal(SIGKILL);
  fleet.process->Wait(absl::Seconds(10));
  create.join();

  fleet = StartFleet(pki, guest.path(), {&a}, {"laptop-a"});
  Caller op2 = As(pki, fleet.port, "operator", "");
  Caller acme2 = As(pki, fleet.port, "tenant-proxy", "acme");
  VmRecord vm;
  CHECK(WaitFor(
      [&] {
        vm = Named(op2, "web");
        return vm.state() == ppn::types::v1::VM_STATE_RUNNING || vm.state() == ppn::types::v1::VM_STATE_FAILED;
      },
      absl::Seconds(120)));  // RUNNING once its guest has booted and said so
  INFO("state " << ppn::types::v1::VmState_Name(vm.state()) << ": " << vm.state_message());
  CHECK(vm.state() == ppn::types::v1::VM_STATE_RUNNING);  // the agent finished the spawn
  CHECK(CountProcessesMentioning("ppn-" + vm.vm_id()) == 1);
  CHECK(acme2.Destroy(vm.vm_id()).state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK(WaitFor([&] { return CountProcessesMentioning("ppn-" + vm.vm_id()) == 0; }, absl::Seconds(30)));
}

// Needs the host agent of contract C1 (idempotent SpawnVm that records its intent before
// exec, and adopts or kills at start every QEMU it finds for its state dir).
TEST_CASE("a fleet and an agent both SIGKILLed mid-create leave no orphan guest and no PENDING",
          "[fleet][qemu][crash]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a", {"--advertised_memory_mib=2048"});
  int agent_port = a.port;
  FleetProcess fleet = StartFleet(pki, guest.path(), {&a}, {"laptop-a"});
  Caller op = As(pki, fleet.port, "operator", "");
  WaitForNodes(op, 1);
  Caller acme = As(pki, fleet.port, "tenant-proxy", "acme");
  std::thread create([&] {
    CreateVmResponse ignored;
    acme.Create("web", &ignored);
  });
  std::string vm_id;
  REQUIRE(WaitFor(
      [&] {
        vm_id = Named(op, "web").vm_id();
        return !vm_id.empty() && CountProcessesMentioning("ppn-" + vm_id) > 0;  // QEMU is being started
      },
      absl::Seconds(30)));
  a.process->Signal(SIGKILL);
  fleet.process->Signal(SIGKILL);
  a.process->Wait(absl::Seconds(10));
  fleet.process->Wait(absl::Seconds(10));
  create.join();

  a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                 {"--advertised_memory_mib=2048", "--listen=127.0.0.1:" + std::to_string(agent_port)});
  fleet = StartFleet(pki, guest.path(), {&a}, {"laptop-a"});
  Caller op2 = As(pki, fleet.port, "operator", "");
  Caller acme2 = As(pki, fleet.port, "tenant-proxy", "acme");
  VmRecord vm;
  CHECK(WaitFor(
      [&] {
        vm = Named(op2, "web");
        return vm.state() == ppn::types::v1::VM_STATE_RUNNING || vm.state() == ppn::types::v1::VM_STATE_FAILED;
      },
      absl::Seconds(120)));  // RUNNING once its guest has booted and said so
  CHECK(vm.state() != ppn::types::v1::VM_STATE_PENDING);
  CHECK(CountProcessesMentioning("ppn-" + vm_id) <= 1);  // never two QEMUs for one VM
  CHECK(acme2.Destroy(vm_id).state() == ppn::types::v1::VM_STATE_DESTROYED);
  CHECK(WaitFor([&] { return CountProcessesMentioning("ppn-" + vm_id) == 0; }, absl::Seconds(30)));
}

}  // namespace
}  // namespace ppn
