// Live migration through the scheduler binary with real agents, QEMU, fleet and ledger.

#include <signal.h>

#include <optional>
#include <regex>
#include <thread>

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

// Waits until the ledger holds at least `n` entries of `kind` (the scheduler appends through a
// durable outbox, delivered a moment after the call that made them) and returns them.
ppn::ledger::v1::GetEntriesResponse WaitForEntries(ppn::ledger::v1::Ledger::Stub* ledger, const std::string& kind,
                                                   int n) {
  ppn::ledger::v1::GetEntriesRequest req;
  req.set_kind(kind);
  ppn::ledger::v1::GetEntriesResponse entries;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    entries.Clear();
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    if (ledger->GetEntries(&ctx, req, &entries).ok() && entries.entries_size() >= n) break;
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < deadline);
  return entries;
}

// A ledger, two agents (laptop-a with more room), the fleet and the scheduler, all real
// binaries on 127.0.0.1, and one guest created through the fleet and answering on port 80.
struct Mesh {
  Mesh() : pki("ppn.test") {
    ledger = StartService(pki, guest.path(), "ledger/ledger", "ledger", "ledger",
                          {"--db=" + guest.path() + "/ledger.db", "--signing_key=" + guest.path() + "/note.key"});
    a = StartAgent(pki, guest.path(), guest.catalog(), "laptop-a",
                   {"--kvm=simulate", "--advertised_memory_mib=2048", "--safety_margin_mib=256"});
    b = StartAgent(
        pki, guest.path(), guest.catalog(), "laptop-b",
        {"--kvm=simulate", "--advertised_memory_mib=1536", "--safety_margin_mib=256", "--port_range=21000-21999"});
    StartFleet();
    StartScheduler();
    fleet_op = Connect<ppn::fleet::v1::FleetService>(pki, fleet.port, "operator");
    fleet_proxy = Connect<ppn::fleet::v1::FleetService>(pki, fleet.port, "tenant-proxy");
    ledger_op = Connect<ppn::ledger::v1::Ledger>(pki, ledger.port, "operator");
    WaitForNodes();

    ppn::fleet::v1::CreateVmRequest create;
    auto* spec = create.mutable_spec();
    spec->set_display_name("mover");
    spec->set_vcpus(1);
    spec->set_memory_mib(128);
    spec->set_image("ppn-test-guest");
    spec->add_port_forwards()->set_guest_port(80);
    create.set_wait_for_ready(true);  // only a RUNNING guest is moved
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(Deadline(180));
      ctx.AddMetadata("x-ppn-tenant-id", "acme");
      grpc::Status s = fleet_proxy->CreateVm(&ctx, create, &created);
      INFO(s.error_message());
      REQUIRE(s.ok());
    }
    vm = created.vm().vm_id();
    // laptop-a has more room, but a loaded machine may delay its heartbeat: accept either and
    // move the VM to the other one.
    first = created.vm().node_id();
    second = first == "laptop-a" ? "laptop-b" : "laptop-a";
    src = first == "laptop-a" ? &a : &b;
    dst = first == "laptop-a" ? &b : &a;
    port_a = static_cast<int>(created.vm().forwarded_ports(0).host_port());
    REQUIRE(HttpGet(port_a, "/cgi-bin/write?kept-across", absl::Seconds(60)) == "wrote kept-across\n");
    console_a = src->state_dir + "/vms/" + vm + "/console.log";
    REQUIRE(WaitForFileContaining(console_a, "PPN-TICK 2", absl::Seconds(30)));
  }

  // (Re)starts the fleet on `port` (0: any) with its database kept.
  void StartFleet(int port = 0) {
    std::vector<std::string> flags = {
        "--db=" + guest.path() + "/fleet.db", "--heartbeat_interval=1s",
        "--nodes=laptop-a=127.0.0.1:" + std::to_string(a.port) + ",laptop-b=127.0.0.1:" + std::to_string(b.port)};
    if (port != 0) flags.push_back("--listen=127.0.0.1:" + std::to_string(port));
    fleet = StartService(pki, guest.path(), "fleet/fleet", "fleet", "fleet", flags);
  }
  // (Re)starts the scheduler with its ledger spool kept.
  void StartScheduler() {
    scheduler = StartService(
        pki, guest.path(), "scheduler/scheduler", "scheduler", "scheduler",
        {"--fleet=127.0.0.1:" + std::to_string(fleet.port), "--ledger=127.0.0.1:" + std::to_string(ledger.port),
         "--state_dir=" + guest.path() + "/scheduler"});
    sched = Connect<ppn::scheduler::v1::Scheduler>(pki, scheduler.port, "operator");
  }
  void WaitForNodes() {
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
  }
  ppn::fleet::v1::VmRecord Record() {
    ppn::fleet::v1::GetVmRequest get;
    get.set_vm_id(vm);
    ppn::fleet::v1::GetVmResponse got;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    grpc::Status s = fleet_op->GetVm(&ctx, get, &got);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return got.vm();
  }
  // The VM as `node`'s agent reports it; nullopt if the agent does not have it or is down.
  std::optional<ppn::host::v1::VmInstance> OnAgent(const AgentProcess& node) {
    auto agent = ppn::host::v1::HostAgent::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(node.port), MtlsChannelCredentials(pki.Issue("scheduler", "scheduler"))));
    ppn::host::v1::ListVmsResponse there;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(10));
    if (!agent->ListVms(&ctx, {}, &there).ok()) return std::nullopt;
    for (const auto& v : there.vms()) {
      if (v.vm_id() == vm) return v;
    }
    return std::nullopt;
  }

  ppn::testing::GuestDir guest;
  ppn::testing::TestPki pki;
  AgentProcess ledger, a, b, fleet, scheduler;
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> fleet_op, fleet_proxy;
  std::unique_ptr<ppn::ledger::v1::Ledger::Stub> ledger_op;
  std::unique_ptr<ppn::scheduler::v1::Scheduler::Stub> sched;
  ppn::fleet::v1::CreateVmResponse created;
  std::string vm, first, second, console_a;
  AgentProcess* src = nullptr;
  AgentProcess* dst = nullptr;
  int port_a = 0;
};

TEST_CASE("the scheduler live-migrates a running guest, honours pins and survives a dying target or source",
          "[scheduler][qemu][migration]") {
  Mesh m;
  const std::string& vm = m.vm;
  const std::string& first = m.first;
  const std::string& second = m.second;
  AgentProcess& src = *m.src;
  AgentProcess& dst = *m.dst;
  auto& sched = m.sched;
  auto& fleet_op = m.fleet_op;
  int before = LastTick(m.console_a);

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

  auto& ledger_op = m.ledger_op;
  ppn::ledger::v1::GetEntriesResponse entries = WaitForEntries(ledger_op.get(), "vm.migrate", 1);
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
    ppn::ledger::v1::GetEntriesResponse after = WaitForEntries(ledger_op.get(), "vm.migrate", 2);
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
        "127.0.0.1:" + std::to_string(src.port), MtlsChannelCredentials(m.pki.Issue("scheduler", "scheduler"))));
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

// Waits until the fleet and `node`'s agent both say the VM runs there (after a failed attempt
// the source settles back to RUNNING within a heartbeat or two).
bool WaitRunningOn(Mesh& m, const AgentProcess& node, const std::string& node_id) {
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    std::optional<ppn::host::v1::VmInstance> there = m.OnAgent(node);
    ppn::fleet::v1::VmRecord r = m.Record();
    if (there.has_value() && there->state() == ppn::types::v1::VM_STATE_RUNNING && r.node_id() == node_id &&
        r.state() == ppn::types::v1::VM_STATE_RUNNING) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  return false;
}

// A progress callback that runs `kill` once, at the first report after PREPARING, when the
// copy is under way.
std::function<void(const ppn::types::v1::MigrationProgress&)> OnceCopying(std::function<void()> kill, bool* done) {
  return [kill, done](const ppn::types::v1::MigrationProgress& p) {
    if (*done || p.phase() == ppn::types::v1::MIGRATION_PHASE_PREPARING) return;
    *done = true;
    kill();
  };
}

// Issue 15 items 12-14: a crash in the middle of a migration must leave the guest running on
// exactly one node, the fleet saying which, and the next attempt free to succeed.
TEST_CASE("a migration survives the crash of the scheduler, of the source's agent or of the fleet",
          "[scheduler][qemu][migration][crash]") {
  Mesh m;
  AgentProcess& src = *m.src;
  AgentProcess& dst = *m.dst;

  SECTION("a scheduler SIGKILLed mid-migration: the same Migrate again succeeds") {
    // The source cancels its half of the copy when the scheduler's stream goes; the target's
    // copy fails and is waited out by the retry.
    bool killed = false;
    MigrateOutcome broken = Migrate(m.sched.get(), m.vm, m.second, /*bandwidth=*/1,
                                    OnceCopying([&] { m.scheduler.process->Signal(SIGKILL); }, &killed));
    REQUIRE(killed);
    CHECK_FALSE(broken.status.ok());
    m.scheduler.process->Wait(absl::Seconds(10));
    m.StartScheduler();
    REQUIRE(WaitRunningOn(m, src, m.first));
    MigrateOutcome again = Migrate(m.sched.get(), m.vm, m.second);
    INFO(again.status.error_message() << " / " << again.last.message() << "\n"
                                      << ReadAll(dst.state_dir + "/agent.log"));
    REQUIRE(again.status.ok());
    REQUIRE(again.last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK(m.Record().node_id() == m.second);
    REQUIRE(again.last.forwarded_ports_size() == 1);
    CHECK(HttpGet(static_cast<int>(again.last.forwarded_ports(0).host_port()), "/cgi-bin/read", absl::Seconds(30)) ==
          "kept-across\n");
  }

  SECTION("a scheduler that died between preparing the target and sending: the same Migrate again succeeds") {
    // Needs the host agent of branch h1 (contract C1): PrepareIncoming replaces a copy that is
    // only waiting for a stream. What the dead scheduler left: a target prepared, nothing sent.
    auto target = ppn::host::v1::HostAgent::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(dst.port), MtlsChannelCredentials(m.pki.Issue("scheduler", "scheduler"))));
    ppn::host::v1::PrepareIncomingRequest prep;
    prep.set_vm_id(m.vm);
    prep.set_tenant_id("acme");
    *prep.mutable_spec() = m.created.vm().spec();
    prep.set_accelerator(m.created.vm().accelerator());
    prep.set_source_node_id(m.first);
    ppn::host::v1::PrepareIncomingResponse prepared;
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(Deadline(90));
      grpc::Status s = target->PrepareIncoming(&ctx, prep, &prepared);
      INFO(s.error_message());
      REQUIRE(s.ok());
    }
    absl::Time start = absl::Now();
    MigrateOutcome again = Migrate(m.sched.get(), m.vm, m.second);
    INFO(again.status.error_message() << " / " << again.last.message());
    REQUIRE(again.status.ok());
    REQUIRE(again.last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK(absl::Now() - start < absl::Seconds(30));  // replaced, not waited out
    CHECK(m.Record().node_id() == m.second);
    REQUIRE(again.last.forwarded_ports_size() == 1);
    CHECK(HttpGet(static_cast<int>(again.last.forwarded_ports(0).host_port()), "/cgi-bin/read", absl::Seconds(30)) ==
          "kept-across\n");
  }

  SECTION("a source agent SIGKILLed during the copy: the guest goes on to run on the target, recorded there") {
    // Only the agent dies: its QEMU, with nobody to cancel it, goes on sending. The target must
    // not be removed while it receives; it takes over, and the move is recorded.
    bool killed = false;
    MigrateOutcome out = Migrate(m.sched.get(), m.vm, m.second, /*bandwidth=*/2,
                                 OnceCopying([&] { src.process->Signal(SIGKILL); }, &killed));
    REQUIRE(killed);
    INFO(out.status.error_message() << " / " << out.last.message());
    REQUIRE(out.status.ok());
    REQUIRE(out.last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK(out.last.message().find("running on " + m.second + " (the source's stream ended: ") == 0);
    ppn::fleet::v1::VmRecord r = m.Record();
    CHECK(r.node_id() == m.second);
    CHECK(r.state() == ppn::types::v1::VM_STATE_RUNNING);
    REQUIRE(out.last.forwarded_ports_size() == 1);
    int port_b = static_cast<int>(out.last.forwarded_ports(0).host_port());
    INFO("source agent:\n"
         << ReadAll(src.state_dir + "/agent.log") << "\ntarget agent:\n"
         << ReadAll(dst.state_dir + "/agent.log") << "\ntarget console:\n"
         << ReadAll(dst.state_dir + "/vms/" + m.vm + "/console.log"));
    CHECK(HttpGet(port_b, "/cgi-bin/read", absl::Seconds(30)) == "kept-across\n");
    std::optional<ppn::host::v1::VmInstance> there = m.OnAgent(dst);
    REQUIRE(there.has_value());
    CHECK(there->state() == ppn::types::v1::VM_STATE_RUNNING);
    ppn::ledger::v1::GetEntriesResponse entries = WaitForEntries(m.ledger_op.get(), "vm.migrate", 1);
    REQUIRE(entries.entries_size() == 1);
    CHECK(entries.entries(0).outcome() == ppn::ledger::v1::OUTCOME_SUCCESS);
  }

  SECTION("a fleet SIGKILLed mid-migration and back later ends with the VM recorded on the target") {
    const int fleet_port = m.fleet.port;
    bool killed = false;
    std::thread restarter;
    MigrateOutcome out = Migrate(m.sched.get(), m.vm, m.second, /*bandwidth=*/2,
                                 OnceCopying(
                                     [&] {
                                       m.fleet.process->Signal(SIGKILL);
                                       m.fleet.process->Wait(absl::Seconds(10));
                                       // Back only once the copy completed while it was down, and
                                       // the scheduler has found it gone.
                                       restarter = std::thread([&m, &dst, fleet_port] {
                                         absl::Time until = absl::Now() + absl::Seconds(240);
                                         while (absl::Now() < until) {
                                           std::optional<ppn::host::v1::VmInstance> v = m.OnAgent(dst);
                                           if (v.has_value() && v->state() == ppn::types::v1::VM_STATE_RUNNING) break;
                                           absl::SleepFor(absl::Milliseconds(200));
                                         }
                                         absl::SleepFor(absl::Seconds(5));
                                         m.StartFleet(fleet_port);
                                       });
                                     },
                                     &killed));
    REQUIRE(killed);
    restarter.join();
    INFO(out.status.error_message() << " / " << out.last.message() << "\n"
                                    << ReadAll(m.scheduler.state_dir + "/service.log"));
    REQUIRE(out.status.ok());
    REQUIRE(out.last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);
    CHECK(out.last.message() == "running on " + m.second);
    // The fleet really was down when the scheduler first tried to record the move.
    CHECK(ReadAll(m.scheduler.state_dir + "/service.log").find("migration.record_retry") != std::string::npos);
    ppn::fleet::v1::VmRecord r = m.Record();
    CHECK(r.node_id() == m.second);
    CHECK(r.state() == ppn::types::v1::VM_STATE_RUNNING);
    REQUIRE(r.forwarded_ports_size() == 1);
    CHECK(r.forwarded_ports(0).host_port() == out.last.forwarded_ports(0).host_port());
    CHECK(HttpGet(static_cast<int>(r.forwarded_ports(0).host_port()), "/cgi-bin/read", absl::Seconds(30)) ==
          "kept-across\n");
    ppn::ledger::v1::GetEntriesResponse entries = WaitForEntries(m.ledger_op.get(), "vm.migrate", 1);
    REQUIRE(entries.entries_size() == 1);
    CHECK(entries.entries(0).attributes().at("fleet_recorded") == "true");
  }
}

TEST_CASE("pins, drains and rebalances reach the ledger with their reasons", "[scheduler][qemu][ledger]") {
  Mesh m;
  ppn::scheduler::v1::PinRequest pin;
  pin.set_vm_id(m.vm);
  pin.set_node_id(m.first);
  ppn::scheduler::v1::PinResponse pinned;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(m.sched->Pin(&ctx, pin, &pinned).ok());
  }
  {
    ppn::scheduler::v1::UnpinRequest unpin;
    unpin.set_vm_id(m.vm);
    ppn::scheduler::v1::UnpinResponse unpinned;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    REQUIRE(m.sched->Unpin(&ctx, unpin, &unpinned).ok());
  }
  ppn::scheduler::v1::DrainRequest drain;
  drain.set_node_id(m.first);
  grpc::ClientContext dctx;
  dctx.set_deadline(Deadline(300));
  auto reader = m.sched->Drain(&dctx, drain);
  ppn::scheduler::v1::DrainResponse msg, plan;
  REQUIRE(reader->Read(&plan));
  REQUIRE(plan.plan_size() == 1);
  CHECK(plan.plan(0).target_node_id() == m.second);
  CHECK(plan.plan(0).reason().find("drain " + m.first + ": placement chose " + m.second) == 0);
  ppn::types::v1::MigrationProgress last;
  while (reader->Read(&msg)) last = msg.progress();
  REQUIRE(reader->Finish().ok());
  INFO(last.message());
  CHECK(last.phase() == ppn::types::v1::MIGRATION_PHASE_COMPLETED);

  ppn::scheduler::v1::RebalanceRequest rebalance;
  grpc::ClientContext rctx;
  rctx.set_deadline(Deadline(300));
  auto rreader = m.sched->Rebalance(&rctx, rebalance);
  ppn::scheduler::v1::RebalanceResponse rmsg;
  while (rreader->Read(&rmsg)) {
  }
  REQUIRE(rreader->Finish().ok());

  const std::string actor = "spiffe://ppn.test/scheduler/scheduler";
  auto pins = WaitForEntries(m.ledger_op.get(), "vm.pin", 1);
  REQUIRE(pins.entries_size() == 1);
  CHECK(pins.entries(0).subject() == m.vm);
  CHECK(pins.entries(0).tenant_id() == "acme");
  CHECK(pins.entries(0).actor() == actor);
  CHECK(pins.entries(0).attributes().at("node") == m.first);
  CHECK(pins.entries(0).attributes().at("by") == "spiffe://ppn.test/operator/operator");
  CHECK(WaitForEntries(m.ledger_op.get(), "vm.unpin", 1).entries_size() == 1);
  auto drains = WaitForEntries(m.ledger_op.get(), "scheduler.drain", 1);
  REQUIRE(drains.entries_size() == 1);
  CHECK(drains.entries(0).subject() == m.first);
  CHECK(drains.entries(0).actor() == actor);
  CHECK(drains.entries(0).attributes().at("moves") == "1");
  CHECK(drains.entries(0).attributes().at("move.001").find(m.vm + " " + m.first + ">" + m.second + ": drain") == 0);
  auto rebalances = WaitForEntries(m.ledger_op.get(), "scheduler.rebalance", 1);
  REQUIRE(rebalances.entries_size() == 1);
  CHECK(rebalances.entries(0).actor() == actor);
  CHECK(WaitForEntries(m.ledger_op.get(), "vm.migrate", 1).entries_size() >= 1);
}

}  // namespace
}  // namespace ppn
