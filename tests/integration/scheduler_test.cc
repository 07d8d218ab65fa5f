// Live migration through the scheduler binary with real agents, QEMU, fleet and ledger.

#include <signal.h>

#include <regex>

#include "catch2/catch.hpp"
#include "common/tls_credentials.h"
#include "grpcpp/create_channel.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"
#include "ppn/ledger/v1/ledger_service.grpc.pb.h"
#include "ppn/scheduler/v1/scheduler_service.grpc.pb.h"
#include "tests/harness/qemu_harness.h"

namespace ppn {
namespace {

using ppn::testing::AgentProcess;
using ppn::testing::HttpGet;
using ppn::testing::ReadAll;
using ppn::testing::StartAgent;
using ppn::testing::StartService;
using ppn::testing::WaitForFileContaining;

std::chrono::system_clock::time_point Deadline(int s = 60) {
  return std::chrono::system_clock::now() + std::chrono::seconds(s);
}

template <typename Service>
std::unique_ptr<typename Service::Stub> Connect(ppn::testing::TestPki& pki, int port, const std::string& role) {
  return Service::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), MtlsChannelCredentials(pki.Issue(role, role))));
}

int LastTick(const std::string& console) {
  std::string text = ReadAll(console);
  std::regex re("PPN-TICK ([0-9]+)");
  int last = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    last = std::stoi((*it)[1]);
  }
  return last;
}

struct MigrateOutcome {
  grpc::Status status;
  ppn::types::v1::MigrationProgress last;
  std::set<int> phases;
};

MigrateOutcome Migrate(ppn::scheduler::v1::Scheduler::Stub* stub, const std::string& vm, const std::string& target,
                       uint64_t bandwidth = 0,
                       std::function<void(const ppn::types::v1::MigrationProgress&)> on = nullptr) {
  ppn::scheduler::v1::MigrateRequest req;
  req.set_vm_id(vm);
  req.set_target_node_id(target);
  req.set_max_bandwidth_mib_per_second(bandwidth);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(300));
  auto reader = stub->Migrate(&ctx, req);
  ppn::scheduler::v1::MigrateResponse msg;
  MigrateOutcome out;
  while (reader->Read(&msg)) {
    out.last = msg.progress();
    out.phases.insert(msg.progress().phase());
    if (on) on(msg.progress());
  }
  out.status = reader->Finish();
  return out;
}

// A progress callback that kills `node` (its agent and every process of its state directory,
// guests included) at the first report after PREPARING, when the copy is under way.
std::function<void(const ppn::types::v1::MigrationProgress&)> KillOnceCopying(AgentProcess& node, bool* killed) {
  return [&node, killed](const ppn::types::v1::MigrationProgress& p) {
    if (*killed || p.phase() == ppn::types::v1::MIGRATION_PHASE_PREPARING) return;
    *killed = true;
    node.process->Signal(SIGKILL);
    ppn::testing::KillProcessesMentioning(node.state_dir + "/");
  };
}

TEST_CASE("the scheduler live-migrates a running guest, honours pins and survives a dying target or source",
          "[scheduler][qemu][migration]") {
  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki("ppn.test");
  AgentProcess ledger =
      StartService(pki, guest.path(), "ledger/ledger", "ledger", "ledger",
                   {"--db=" + guest.path() + "/ledger.db", "--signing_key=" + guest.path() + "/note.key"});
  AgentProcess a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                              {"--kvm=simulate", "--advertised_memory_mib=2048", "--safety_margin_mib=256"});
  AgentProcess b = StartAgent(
      pki, guest.path(), guest.catalog(), "laptop-b",
      {"--kvm=simulate", "--advertised_memory_mib=1536", "--safety_margin_mib=256", "--port_range=21000-21999"});
  AgentProcess fleet = StartService(
      pki, guest.path(), "fleet/fleet", "fleet", "fleet",
      {"--db=" + guest.path() + "/fleet.db", "--heartbeat_interval=1s",
       "--nodes=laptop-a=127.0.0.1:" + std::to_string(a.port) + ",laptop-b=127.0.0.1:" + std::to_string(b.port)});
  AgentProcess scheduler = StartService(
      pki, guest.path(), "scheduler/scheduler", "scheduler", "scheduler",
      {"--fleet=127.0.0.1:" + std::to_string(fleet.port), "--ledger=127.0.0.1:" + std::to_string(ledger.port)});
  auto fleet_op = Connect<ppn::fleet::v1::FleetService>(pki, fleet.port, "operator");
  auto fleet_proxy = Connect<ppn::fleet::v1::FleetService>(pki, fleet.port, "tenant-proxy");
  auto sched = Connect<ppn::scheduler::v1::Scheduler>(pki, scheduler.port, "operator");

  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    ppn::fleet::v1::ListNodesResponse nodes;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    if (fleet_op->ListNodes(&ctx, {}, &nodes).ok() && nodes.nodes_size() == 2 &&
        nodes.nodes(0).state() == ppn::fleet::v1::NODE_STATE_ALIVE &&
        nodes.nodes(1).state() == ppn::fleet::v1::NODE_STATE_ALIVE) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }

  ppn::fleet::v1::CreateVmRequest create;
  auto* spec = create.mutable_spec();
  spec->set_display_name("mover");
  spec->set_vcpus(1);
  spec->set_memory_mib(128);
  spec->set_image("ppn-test-guest");
  spec->add_port_forwards()->set_guest_port(80);
  ppn::fleet::v1::CreateVmResponse created;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    ctx.AddMetadata("x-ppn-tenant-id", "acme");
    grpc::Status s = fleet_proxy->CreateVm(&ctx, create, &created);
    INFO(s.error_message());
    REQUIRE(s.ok());
  }
  const std::string vm = created.vm().vm_id();
  // laptop-a has more room, but a loaded machine may delay its heartbeat: accept either and
  // move the VM to the other one.
  const std::string first = created.vm().node_id();
  const std::string second = first == "laptop-a" ? "laptop-b" : "laptop-a";
  AgentProcess& src = first == "laptop-a" ? a : b;
  AgentProcess& dst = first == "laptop-a" ? b : a;
  int port_a = static_cast<int>(created.vm().forwarded_ports(0).host_port());
  REQUIRE(HttpGet(port_a, "/cgi-bin/write?kept-across", absl::Seconds(60)) == "wrote kept-across\n");
  std::string console_a = src.state_dir + "/vms/" + vm + "/console.log";
  REQUIRE(WaitForFileContaining(console_a, "PPN-TICK 2", absl::Seconds(30)));
  int before = LastTick(console_a);

  MigrateOutcome moved = Migrate(sched.get(), vm, second);
  INFO(moved.last.message());
  REQUIRE(moved.status.ok());
  REQUIRE(moved.last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
  CHECK(moved.phases.count(ppn::types::v1::MIGRATION_PHASE_PREPARING) == 1);
  CHECK(moved.last.has_downtime());
  REQUIRE(moved.last.forwarded_ports_size() == 1);
  int port_b = static_cast<int>(moved.last.forwarded_ports(0).host_port());

  ppn::fleet::v1::GetVmRequest get;
  get.set_vm_id(vm);
  ppn::fleet::v1::GetVmResponse got;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(fleet_op->GetVm(&ctx, get, &got).ok());
  }
  CHECK(got.vm().node_id() == second);
  CHECK(got.vm().forwarded_ports(0).host_port() == static_cast<uint32_t>(port_b));
  CHECK(HttpGet(port_b, "/cgi-bin/read", absl::Seconds(30)) == "kept-across\n");
  std::string console_b = dst.state_dir + "/vms/" + vm + "/console.log";
  REQUIRE(WaitForFileContaining(console_b, "PPN-TICK", absl::Seconds(20)));
  CHECK(LastTick(console_b) > before);  // the counter went on; the guest did not reboot
  CHECK(ReadAll(console_b).find("PPN-GUEST-BOOTED") == std::string::npos);

  auto ledger_op = Connect<ppn::ledger::v1::Ledger>(pki, ledger.port, "operator");
  ppn::ledger::v1::GetEntriesRequest entries_req;
  entries_req.set_kind("vm.migrate");
  ppn::ledger::v1::GetEntriesResponse entries;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(ledger_op->GetEntries(&ctx, entries_req, &entries).ok());
  }
  REQUIRE(entries.entries_size() == 1);
  CHECK(entries.entries(0).subject() == vm);
  CHECK(entries.entries(0).attributes().at("target") == second);
  CHECK(entries.entries(0).actor() == "spiffe://ppn.test/scheduler/scheduler");

  SECTION("a pinned VM is refused by Migrate and skipped by Drain and Rebalance") {
    ppn::scheduler::v1::PinRequest pin;
    pin.set_vm_id(vm);
    pin.set_node_id(second);
    ppn::scheduler::v1::PinResponse pinned;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(sched->Pin(&ctx, pin, &pinned).ok());
    MigrateOutcome refused = Migrate(sched.get(), vm, first);
    CHECK(refused.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(refused.status.error_message() == "vm " + vm + " is pinned to node " + second + "; unpin it to move it");
    CHECK(Migrate(sched.get(), vm, "").status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);

    ppn::scheduler::v1::DrainRequest drain;
    drain.set_node_id(second);
    grpc::ClientContext dctx;
    dctx.set_deadline(Deadline());
    auto reader = sched->Drain(&dctx, drain);
    ppn::scheduler::v1::DrainResponse first;
    REQUIRE(reader->Read(&first));
    CHECK(first.plan_size() == 0);
    REQUIRE(first.pinned_vm_ids_size() == 1);
    CHECK(first.pinned_vm_ids(0) == vm);
    ppn::scheduler::v1::DrainResponse more;
    CHECK_FALSE(reader->Read(&more));
    CHECK(reader->Finish().ok());

    ppn::scheduler::v1::RebalanceRequest rebalance;
    rebalance.set_dry_run(true);
    grpc::ClientContext rctx;
    rctx.set_deadline(Deadline());
    auto rreader = sched->Rebalance(&rctx, rebalance);
    ppn::scheduler::v1::RebalanceResponse plan;
    REQUIRE(rreader->Read(&plan));
    for (const auto& m : plan.plan()) CHECK(m.vm_id() != vm);
    while (rreader->Read(&plan)) {
    }
    CHECK(rreader->Finish().ok());
  }

  SECTION("a target that dies mid-migration leaves the VM running on the source") {
    bool killed = false;
    // The target node dies: its agent and the half-received guest.
    MigrateOutcome broken = Migrate(sched.get(), vm, first, /*bandwidth=*/1, KillOnceCopying(src, &killed));
    INFO(broken.status.error_message() << " / " << broken.last.message());
    REQUIRE(killed);
    CHECK(broken.last.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(fleet_op->GetVm(&ctx, get, &got).ok());
    CHECK(got.vm().node_id() == second);
    CHECK(HttpGet(port_b, "/cgi-bin/read", absl::Seconds(30)) == "kept-across\n");
    // The attempt is in the ledger, as a failure with its reason.
    ppn::ledger::v1::GetEntriesResponse after;
    grpc::ClientContext lctx;
    lctx.set_deadline(Deadline());
    REQUIRE(ledger_op->GetEntries(&lctx, entries_req, &after).ok());
    REQUIRE(after.entries_size() == 2);
    CHECK(after.entries(1).outcome() == ppn::ledger::v1::OUTCOME_FAILURE);
    CHECK(after.entries(1).attributes().at("target") == first);
    CHECK(!after.entries(1).attributes().at("reason").empty());
  }

  SECTION("a source that dies mid-migration leaves no copy on the target; the VM turns UNKNOWN") {
    bool killed = false;
    // The source node dies: its agent and the guest being sent.
    MigrateOutcome broken = Migrate(sched.get(), vm, first, /*bandwidth=*/1, KillOnceCopying(dst, &killed));
    INFO(broken.status.error_message() << " / " << broken.last.message());
    REQUIRE(killed);
    CHECK(broken.last.phase() == ppn::types::v1::MIGRATION_PHASE_FAILED);
    CHECK(broken.last.message().find("source " + second) == 0);
    // The half-received copy is gone from the target: no QEMU, no record.
    CHECK(ppn::testing::CountProcessesMentioning(src.state_dir + "/vms/" + vm) == 0);
    auto target_agent = ppn::host::v1::HostAgent::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(src.port), MtlsChannelCredentials(pki.Issue("scheduler", "scheduler"))));
    ppn::host::v1::ListVmsResponse there;
    grpc::ClientContext actx;
    actx.set_deadline(Deadline());
    REQUIRE(target_agent->ListVms(&actx, {}, &there).ok());
    CHECK(there.vms_size() == 0);
    // The fleet keeps the VM where it was, UNKNOWN while its node is silent: never lost.
    absl::Time until = absl::Now() + absl::Seconds(30);
    while (absl::Now() < until) {
      grpc::ClientContext ctx;
      ctx.set_deadline(Deadline());
      REQUIRE(fleet_op->GetVm(&ctx, get, &got).ok());
      if (got.vm().state() == ppn::types::v1::VM_STATE_UNKNOWN) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    CHECK(got.vm().state() == ppn::types::v1::VM_STATE_UNKNOWN);
    CHECK(got.vm().node_id() == second);
  }
}

}  // namespace
}  // namespace ppn
