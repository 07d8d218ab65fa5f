// Private tenant networks, proved by hostile guests: two VMs of one tenant on a private
// network reach each other over it; a VM of another tenant on the same node reaches neither
// private address; nothing of a network outlives its last VM, a crashed QEMU or a killed agent.
// Real QEMU under a real host agent (and, in the last test, the fleet binary handing out the
// network and its addresses), real namespaces, bridges and taps.

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "common/process.h"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "host_agent/private_network.h"
#include "host_agent/vm_network.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"
#include "tests/harness/probe_guest.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using namespace ppn::host::v1;  // NOLINT: test brevity
using ppn::testing::AgentProcess;
using ppn::testing::HttpGet;
using ppn::testing::ReadAll;
using ppn::testing::StartAgent;

CommandRunner Run() { return SpawnerCommandRunner(PosixProcessSpawner::Get()); }

std::chrono::system_clock::time_point Deadline(int seconds = 90) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

using ppn::testing::ProbeRound;
using ppn::testing::ProbeSpec;

struct Node {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki{"ppn.test"};
  TlsFiles fleet_tls = pki.Issue("fleet", "fleet");
  AgentProcess agent = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a", {"--kvm=off"});
  std::unique_ptr<HostAgent::Stub> stub = HostAgent::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.port), MtlsChannelCredentials(fleet_tls)));

  VmInstance Spawn(const std::string& id, const std::string& tenant, ppn::types::v1::VmSpec spec,
                   const std::vector<std::pair<std::string, std::string>>& nics = {}) {
    SpawnVmRequest req;
    req.set_vm_id(id);
    req.set_tenant_id(tenant);
    for (const auto& [network, address] : nics) {
      spec.add_networks(network);
      auto* nic = req.add_private_nics();
      nic->set_network_id(network);
      nic->set_address(address);
      nic->set_prefix_length(24);
    }
    *req.mutable_spec() = spec;
    SpawnVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = stub->SpawnVm(&ctx, req, &resp);
    INFO(s.error_message() << "\n" << ReadAll(agent.state_dir + "/agent.log"));
    REQUIRE(s.ok());
    return resp.vm();
  }
  grpc::Status UpdateNetwork(const std::string& id, const ppn::types::v1::EgressPolicy& egress) {
    UpdateVmNetworkRequest req;
    req.set_vm_id(id);
    *req.mutable_egress() = egress;
    UpdateVmNetworkResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    return stub->UpdateVmNetwork(&ctx, req, &resp);
  }
  void Destroy(const std::string& id) {
    DestroyVmRequest req;
    req.set_vm_id(id);
    req.mutable_grace_period()->set_seconds(2);
    DestroyVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(stub->DestroyVm(&ctx, req, &resp).ok());
  }
};

// The private-network routers of the agent keeping its state in `state_dir`.
std::vector<std::string> Routers(const std::string& state_dir, const std::string& node = "laptop-a") {
  std::vector<std::string> out;
  if (!std::filesystem::exists("/run/netns")) return out;
  std::string prefix = "ppn." + ppn::host::NetworkScope(node, state_dir) + ".net.";
  for (const auto& e : std::filesystem::directory_iterator("/run/netns")) {
    std::string n = e.path().filename();
    if (absl::StartsWith(n, prefix)) out.push_back(n);
  }
  return out;
}

// wireguard-go processes running the tunnel of `network` for the agent of `node` in `state_dir`.
int Tunnels(const std::string& node, const std::string& state_dir, const std::string& network) {
  ppn::host::PrivateNetworks names(ppn::host::NetworkScope(node, state_dir), nullptr);
  return ppn::testing::CountProcessesMentioning(names.TunnelInterface(network));
}

TEST_CASE("a tenant's VMs reach each other on its private network and another tenant's VM reaches neither",
          "[network][private_network][qemu][netns]") {
  REQUIRE(geteuid() == 0);  // namespaces, bridges and taps; CI runs as root
  Node n;
  VmInstance a1 = n.Spawn("vm-a1", "acme", ProbeSpec("aone", {}), {{"net-acme1", "10.214.0.2"}});
  REQUIRE(a1.private_nics_size() == 1);
  CHECK(a1.private_nics(0).address() == "10.214.0.2");
  CHECK(absl::StartsWith(a1.private_nics(0).mac(), "02:"));
  VmInstance a2 = n.Spawn("vm-a2", "acme", ProbeSpec("atwo", {"http 10.214.0.2 80", "tcp 10.214.0.3 80"}),
                          {{"net-acme1", "10.214.0.3"}});
  // Tenant B probes both private addresses, and A's VM's forwarded port as a control.
  VmInstance b = n.Spawn("vm-b", "globex", ProbeSpec("bee", {"http 10.214.0.2 80", "http 10.214.0.3 80"}));
  CHECK(Routers(n.agent.state_dir).size() == 1);  // one router for the network, shared by its two VMs

  int round = 0;
  std::map<std::string, std::string> seen = ProbeRound(a2.console_log_path(), 0, &round);
  {
    INFO(ReadAll(a2.console_log_path()));
    CHECK(absl::StrContains(ReadAll(a2.console_log_path()), "PPN-PRIVATE-NIC eth1 10.214.0.3/24"));
    CHECK(seen["http 10.214.0.2:80"] == "hello from aone");
    CHECK(seen["tcp 10.214.0.3:80"] == "open");  // itself, over its own private address
  }
  seen = ProbeRound(b.console_log_path(), 0, &round);
  {
    INFO(ReadAll(b.console_log_path()));
    CHECK(seen["http 10.214.0.2:80"] == "closed");
    CHECK(seen["http 10.214.0.3:80"] == "closed");
    CHECK(seen.size() == 2);
  }

  SECTION("the network's router goes with its last VM on the node") {
    n.Destroy("vm-a1");
    CHECK(Routers(n.agent.state_dir).size() == 1);
    n.Destroy("vm-a2");
    CHECK(Routers(n.agent.state_dir).empty());
    n.Destroy("vm-b");
  }

  SECTION("a crashed QEMU and a killed agent leave no router behind") {
    n.Destroy("vm-b");
    // A QEMU dies: its record stays (FAILED), its private NIC goes; the network stays for a2.
    REQUIRE(ppn::testing::KillProcessesMentioning(n.agent.state_dir + "/vms/vm-a1/") == 1);
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    std::string router = Routers(n.agent.state_dir).at(0);
    // Only a2's port remains on the bridge (ports are v<hash>; the router also has its tunnel).
    auto ports = [&] {
      std::string text = Run()({"ip", "-n", router, "-o", "link", "show", "master", "br0"}, "").value_or("");
      return std::vector<std::string>(absl::StrSplit(text, '\n', absl::SkipEmpty())).size();
    };
    while (ports() > 1 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(200));
    CHECK(ports() == 1);
    // The agent SIGKILLed and the last VM's QEMU killed meanwhile: the next start sweeps.
    n.agent.process->Signal(SIGKILL);
    n.agent.process->Wait(absl::Seconds(10));
    REQUIRE(ppn::testing::KillProcessesMentioning(n.agent.state_dir + "/vms/vm-a2/") == 1);
    absl::SleepFor(absl::Milliseconds(300));
    CHECK(Routers(n.agent.state_dir).size() == 1);                    // nobody has cleaned up yet
    CHECK(Tunnels("laptop-a", n.agent.state_dir, "net-acme1") == 1);  // the router's tunnel outlived it
    AgentProcess restarted = StartAgent(n.pki, n.guest.path(), n.guest.catalog(), "laptop-a", {"--kvm=off"});
    CHECK(Routers(n.agent.state_dir).empty());
    CHECK(Tunnels("laptop-a", n.agent.state_dir, "net-acme1") == 0);  // and went with it
  }
}

TEST_CASE("a migrated VM keeps its private address and MAC and its network follows it to the target",
          "[network][private_network][qemu][netns][migration]") {
  REQUIRE(geteuid() == 0);
  Node n;
  AgentProcess b =
      StartAgent(n.pki, n.guest.path(), n.guest.catalog(), "laptop-b", {"--kvm=off", "--port_range=21000-21999"});
  std::unique_ptr<HostAgent::Stub> sb = HostAgent::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(b.port), MtlsChannelCredentials(n.fleet_tls)));
  VmInstance mover = n.Spawn("vm-mover", "acme", ProbeSpec("mover", {}), {{"net-acme1", "10.214.0.2"}});
  REQUIRE(mover.private_nics_size() == 1);
  // A VM of the same network on the target: the mover's address answers it once the mover is there.
  SpawnVmRequest peer_req;
  peer_req.set_vm_id("vm-peer");
  peer_req.set_tenant_id("acme");
  *peer_req.mutable_spec() = ProbeSpec("peer", {"http 10.214.0.2 80"});
  peer_req.mutable_spec()->add_networks("net-acme1");
  auto* nic = peer_req.add_private_nics();
  nic->set_network_id("net-acme1");
  nic->set_address("10.214.0.9");
  nic->set_prefix_length(24);
  SpawnVmResponse peer;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = sb->SpawnVm(&ctx, peer_req, &peer);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  int round = 0;
  std::map<std::string, std::string> seen = ProbeRound(peer.vm().console_log_path(), 0, &round);
  CHECK(seen["http 10.214.0.2:80"] == "closed");  // on another node: no tunnel between nodes (yet)

  PrepareIncomingRequest prep;
  prep.set_vm_id("vm-mover");
  prep.set_tenant_id("acme");
  *prep.mutable_spec() = mover.spec();
  prep.set_accelerator(mover.accelerator());
  prep.set_source_node_id("laptop-a");
  *prep.mutable_private_nics() = mover.private_nics();
  PrepareIncomingResponse prepared;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = sb->PrepareIncoming(&ctx, prep, &prepared);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  MigrateOutRequest out;
  out.set_vm_id("vm-mover");
  out.set_migration_uri(prepared.migration_uri());
  out.set_migration_ticket(prepared.migration_ticket());
  out.set_target_node_id("laptop-b");
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(180));
    auto reader = n.stub->MigrateOut(&ctx, out);
    MigrateOutResponse msg;
    ppn::types::v1::MigrationProgress last;
    while (reader->Read(&msg)) last = msg.progress();
    REQUIRE(reader->Finish().ok());
    INFO(last.message());
    REQUIRE(last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  }
  // The source's router went with its last VM; the target's carries both.
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!Routers(n.agent.state_dir).empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(200));
  CHECK(Routers(n.agent.state_dir).empty());
  CHECK(Routers(b.state_dir, "laptop-b").size() == 1);
  ListVmsResponse listed;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(sb->ListVms(&ctx, ListVmsRequest(), &listed).ok());
  }
  bool found = false;
  for (const auto& vm : listed.vms()) {
    if (vm.vm_id() != "vm-mover") continue;
    found = true;
    REQUIRE(vm.private_nics_size() == 1);
    CHECK(vm.private_nics(0).address() == "10.214.0.2");
    CHECK(vm.private_nics(0).mac() == mover.private_nics(0).mac());
  }
  CHECK(found);
  // The guest was not rebooted: its eth1 still has the address, and now its peer reaches it.
  deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    seen = ProbeRound(peer.vm().console_log_path(), round, &round);
    if (seen["http 10.214.0.2:80"] == "hello from mover") break;
  }
  INFO(ReadAll(peer.vm().console_log_path()));
  CHECK(seen["http 10.214.0.2:80"] == "hello from mover");
  for (const char* id : {"vm-mover", "vm-peer"}) {
    DestroyVmRequest req;
    req.set_vm_id(id);
    req.mutable_grace_period()->set_seconds(2);
    DestroyVmResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    CHECK(sb->DestroyVm(&ctx, req, &resp).ok());
  }
  CHECK(Routers(b.state_dir, "laptop-b").empty());
}

// The fleet binary in front of the agent, called as the tenant proxy would (its certificate,
// the tenant in metadata).
struct Fleet {
  std::unique_ptr<ppn::testing::Subprocess> process;
  int port = 0;
  Fleet(ppn::testing::TestPki& pki, const std::string& dir, int agent_port)
      : Fleet(pki, dir, "laptop-a=127.0.0.1:" + std::to_string(agent_port)) {}
  Fleet(ppn::testing::TestPki& pki, const std::string& dir, const std::string& nodes) {
    TlsFiles tls = pki.Issue("fleet", "fleet");
    std::string port_file = dir + "/fleet.port";
    std::remove(port_file.c_str());
    process = std::make_unique<ppn::testing::Subprocess>(
        std::vector<std::string>{ppn::testing::RunfilePath("fleet/fleet"), "--mesh=" + pki.mesh(),
                                 "--listen=127.0.0.1:0", "--tls_ca=" + tls.ca_cert, "--tls_cert=" + tls.cert,
                                 "--tls_key=" + tls.key, "--db=" + dir + "/fleet.db", "--nodes=" + nodes,
                                 "--heartbeat_interval=1s", "--port_file=" + port_file,
                                 "--private_network_pool=10.214.8.0/22"},
        dir + "/fleet.log");
    port = ppn::testing::WaitForPortFile(port_file, absl::Seconds(30));
  }
};

struct TenantCaller {
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> stub;
  std::string tenant;
  void Prepare(grpc::ClientContext* ctx) const {
    ctx->set_deadline(Deadline());
    if (!tenant.empty()) ctx->AddMetadata("x-ppn-tenant-id", tenant);
  }
  grpc::Status CreateNetwork(const std::string& name, ppn::types::v1::Network* out) const {
    ppn::fleet::v1::CreateNetworkRequest req;
    req.set_name(name);
    ppn::fleet::v1::CreateNetworkResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub->CreateNetwork(&ctx, req, &resp);
    *out = resp.network();
    return s;
  }
  grpc::Status DeleteNetwork(const std::string& id) const {
    ppn::fleet::v1::DeleteNetworkRequest req;
    req.set_network_id(id);
    ppn::fleet::v1::DeleteNetworkResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    return stub->DeleteNetwork(&ctx, req, &resp);
  }
  ppn::fleet::v1::VmRecord Create(const ppn::types::v1::VmSpec& spec) const {
    ppn::fleet::v1::CreateVmRequest req;
    *req.mutable_spec() = spec;
    ppn::fleet::v1::CreateVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub->CreateVm(&ctx, req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp.vm();
  }
  grpc::Status TryCreate(const ppn::types::v1::VmSpec& spec) const {
    ppn::fleet::v1::CreateVmRequest req;
    *req.mutable_spec() = spec;
    ppn::fleet::v1::CreateVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    return stub->CreateVm(&ctx, req, &resp);
  }
  void Destroy(const std::string& id) const {
    ppn::fleet::v1::DestroyVmRequest req;
    req.set_vm_id(id);
    ppn::fleet::v1::DestroyVmResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    REQUIRE(stub->DestroyVm(&ctx, req, &resp).ok());
  }
};

TenantCaller As(ppn::testing::TestPki& pki, int port, const std::string& role, const std::string& tenant) {
  return {ppn::fleet::v1::FleetService::NewStub(
              grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(pki.Issue(role, role)))),
          tenant};
}

TEST_CASE("the fleet hands a tenant a network and its VMs their addresses on it, which only they reach",
          "[network][private_network][fleet][qemu][netns]") {
  REQUIRE(geteuid() == 0);
  Node n;
  Fleet fleet(n.pki, n.guest.path(), n.agent.port);
  TenantCaller op = As(n.pki, fleet.port, "operator", "");
  TenantCaller acme = As(n.pki, fleet.port, "tenant-proxy", "acme");
  TenantCaller globex = As(n.pki, fleet.port, "tenant-proxy", "globex");
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    ppn::fleet::v1::ListNodesResponse resp;
    grpc::ClientContext ctx;
    op.Prepare(&ctx);
    if (op.stub->ListNodes(&ctx, {}, &resp).ok() && resp.nodes_size() == 1 &&
        resp.nodes(0).state() == ppn::fleet::v1::NODE_STATE_ALIVE)
      break;
    absl::SleepFor(absl::Milliseconds(100));
  }

  ppn::types::v1::Network net;
  grpc::Status made = acme.CreateNetwork("backend", &net);
  INFO(made.error_message());
  REQUIRE(made.ok());
  CHECK(net.cidr() == "10.214.8.0/24");
  // globex cannot attach a VM to acme's network: not found, as one that never existed.
  ppn::types::v1::VmSpec sneaky = ProbeSpec("sneaky", {});
  sneaky.add_networks(net.network_id());
  grpc::Status refused = globex.TryCreate(sneaky);
  CHECK(refused.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(refused.error_message() == absl::StrCat("network ", net.network_id(), " not found"));

  ppn::types::v1::VmSpec one = ProbeSpec("aone", {});
  one.add_networks(net.network_id());
  ppn::fleet::v1::VmRecord a1 = acme.Create(one);
  REQUIRE(a1.private_nics_size() == 1);
  CHECK(a1.private_nics(0).address() == "10.214.8.2");
  ppn::types::v1::VmSpec two = ProbeSpec("atwo", {"http 10.214.8.2 80"});
  two.add_networks(net.network_id());
  ppn::fleet::v1::VmRecord a2 = acme.Create(two);
  CHECK(a2.private_nics(0).address() == "10.214.8.3");
  ppn::fleet::v1::VmRecord b = globex.Create(ProbeSpec("bee", {"http 10.214.8.2 80", "http 10.214.8.3 80"}));

  std::string a2_console = absl::StrCat(n.agent.state_dir, "/vms/", a2.vm_id(), "/console.log");
  std::string b_console = absl::StrCat(n.agent.state_dir, "/vms/", b.vm_id(), "/console.log");
  int round = 0;
  std::map<std::string, std::string> seen = ProbeRound(a2_console, 0, &round);
  {
    INFO(ReadAll(a2_console));
    CHECK(seen["http 10.214.8.2:80"] == "hello from aone");
  }
  seen = ProbeRound(b_console, 0, &round);
  {
    INFO(ReadAll(b_console));
    CHECK(seen["http 10.214.8.2:80"] == "closed");
    CHECK(seen["http 10.214.8.3:80"] == "closed");
  }

  grpc::Status busy = acme.DeleteNetwork(net.network_id());
  CHECK(busy.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(absl::StartsWith(busy.error_message(), absl::StrCat("network ", net.network_id(), " has VMs attached: ")));
  CHECK(globex.DeleteNetwork(net.network_id()).error_code() == grpc::StatusCode::NOT_FOUND);
  acme.Destroy(a1.vm_id());
  acme.Destroy(a2.vm_id());
  globex.Destroy(b.vm_id());
  CHECK(acme.DeleteNetwork(net.network_id()).ok());
  CHECK(Routers(n.agent.state_dir).empty());
}

void WaitForAlive(const TenantCaller& op, int nodes) {
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    ppn::fleet::v1::ListNodesResponse resp;
    grpc::ClientContext ctx;
    op.Prepare(&ctx);
    int alive = 0;
    if (op.stub->ListNodes(&ctx, {}, &resp).ok()) {
      for (const auto& node : resp.nodes()) alive += node.state() == ppn::fleet::v1::NODE_STATE_ALIVE;
    }
    if (alive == nodes) return;
    absl::SleepFor(absl::Milliseconds(100));
  }
  FAIL("nodes never became alive");
}

TEST_CASE("a tenant's VMs on two nodes reach each other over their network's tunnel and another tenant's do not",
          "[network][private_network][fleet][qemu][netns][wireguard]") {
  REQUIRE(geteuid() == 0);
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki{"ppn.test"};
  // pn-a (simulated KVM, preferred) has room for one VM: the second goes to pn-b.
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "pn-a",
                              {"--kvm=simulate", "--advertised_memory_mib=456", "--safety_margin_mib=256"});
  AgentProcess b =
      StartAgent(pki, guest.path(), guest.catalog(), "pn-b",
                 {"--kvm=off", "--advertised_memory_mib=4096", "--safety_margin_mib=256", "--port_range=21000-21999"});
  Fleet fleet(pki, guest.path(), absl::StrCat("pn-a=127.0.0.1:", a.port, ",pn-b=127.0.0.1:", b.port));
  TenantCaller op = As(pki, fleet.port, "operator", "");
  TenantCaller acme = As(pki, fleet.port, "tenant-proxy", "acme");
  TenantCaller globex = As(pki, fleet.port, "tenant-proxy", "globex");
  WaitForAlive(op, 2);

  ppn::types::v1::Network net;
  REQUIRE(acme.CreateNetwork("backend", &net).ok());
  ppn::types::v1::VmSpec one = ProbeSpec("aone", {});
  one.add_networks(net.network_id());
  ppn::fleet::v1::VmRecord a1 = acme.Create(one);
  CHECK(a1.node_id() == "pn-a");
  ppn::types::v1::VmSpec two = ProbeSpec("atwo", {absl::StrCat("http ", a1.private_nics(0).address(), " 80")});
  two.add_networks(net.network_id());
  ppn::fleet::v1::VmRecord a2 = acme.Create(two);
  CHECK(a2.node_id() == "pn-b");
  ppn::fleet::v1::VmRecord bee =
      globex.Create(ProbeSpec("bee", {absl::StrCat("http ", a1.private_nics(0).address(), " 80"),
                                      absl::StrCat("http ", a2.private_nics(0).address(), " 80")}));
  CHECK(bee.node_id() == "pn-b");

  std::string a2_console = absl::StrCat(b.state_dir, "/vms/", a2.vm_id(), "/console.log");
  std::string bee_console = absl::StrCat(b.state_dir, "/vms/", bee.vm_id(), "/console.log");
  const std::string target = absl::StrCat("http ", a1.private_nics(0).address(), ":80");
  int round = 0;
  std::map<std::string, std::string> seen;
  absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (absl::Now() < deadline) {  // the fleet hands each node the other's end within a heartbeat or two
    seen = ProbeRound(a2_console, round, &round);
    if (seen[target] == "hello from aone") break;
  }
  {
    INFO(ReadAll(a2_console) << "\n" << ReadAll(guest.path() + "/fleet.log"));
    CHECK(seen[target] == "hello from aone");
  }
  seen = ProbeRound(bee_console, 0, &round);
  {
    INFO(ReadAll(bee_console));
    CHECK(seen[target] == "closed");
    CHECK(seen[absl::StrCat("http ", a2.private_nics(0).address(), ":80")] == "closed");
  }
  CHECK(Routers(a.state_dir, "pn-a").size() == 1);
  CHECK(Routers(b.state_dir, "pn-b").size() == 1);

  // pn-b SIGKILLed and restarted: it takes over its router and tunnel, the fleet hands it its
  // peers again, and the guests never notice.
  b.process->Signal(SIGKILL);
  b.process->Wait(absl::Seconds(10));
  AgentProcess b2 = StartAgent(pki, guest.path(), guest.catalog(), "pn-b",
                               {"--kvm=off", "--advertised_memory_mib=4096", "--safety_margin_mib=256",
                                "--port_range=21000-21999", absl::StrCat("--listen=127.0.0.1:", b.port)});
  CHECK(Routers(b.state_dir, "pn-b").size() == 1);
  CHECK(Tunnels("pn-a", a.state_dir, net.network_id()) == 1);  // one tunnel per node, none twice
  CHECK(Tunnels("pn-b", b.state_dir, net.network_id()) == 1);
  seen = ProbeRound(a2_console, round, &round);
  CHECK(seen[target] == "hello from aone");

  acme.Destroy(a1.vm_id());
  acme.Destroy(a2.vm_id());
  globex.Destroy(bee.vm_id());
  CHECK(Routers(a.state_dir, "pn-a").empty());
  CHECK(Routers(b.state_dir, "pn-b").empty());
  CHECK(Tunnels("pn-a", a.state_dir, net.network_id()) == 0);  // every tunnel went with its router
  CHECK(Tunnels("pn-b", b.state_dir, net.network_id()) == 0);
}

}  // namespace
}  // namespace ppn
