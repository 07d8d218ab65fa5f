// The fleet learns its nodes from the ledger's node.join entries and stops placing on
// revoked ones; and its own vm.* lifecycle entries reach the real ledger, once each.

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/grpc_ledger_appender.h"
#include "common/ledger_outbox.h"
#include "common/random.h"
#include "fleet/ledger_node_watcher.h"
#include "fleet/testing/fake_agent_client.h"
#include "grpcpp/create_channel.h"
#include "ledger/ledger_server.h"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"
#include "tests/harness/test_pki.h"

namespace ppn {
namespace {

TEST_CASE("node.join entries in the ledger register nodes and node.revoke revokes them", "[fleet][ledger]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  auto store = *ledger::LedgerStore::Open(dir.File("ledger.db"));
  ledger::MerkleLog log(store.get(), *ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'n')),
                        RealClock::Get(), ledger::MerkleLog::Options{"ppn.test/ledger"});
  REQUIRE(log.Start().ok());
  ledger::LedgerService service(&log);
  StartedServer server = *ledger::StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &service);

  fleet::testing::FakeAgentClientFactory agents;
  auto vms = *fleet::VmStore::Open(dir.File("fleet.db"));
  fleet::FleetCore core({vms.get(), &agents, RealClock::Get(), OpenSslRandom::Get()}, {absl::Seconds(10)});
  fleet::LedgerNodeWatcher watcher(&core, "127.0.0.1:" + std::to_string(server.port), pki.Issue("fleet", "fleet"));

  SpiffeId admin{"ppn.test", "pairing-admin", "admin"};
  ledger::v1::AppendRequest join;
  join.set_kind("node.join");
  join.set_subject("laptop-c");
  join.set_outcome(ledger::v1::OUTCOME_SUCCESS);
  (*join.mutable_attributes())["agent_address"] = "10.8.0.4:7112";
  REQUIRE(log.Append(admin, join).ok());
  watcher.Start();

  auto wait_for = [&](auto pred) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  };
  REQUIRE(wait_for([&] { return core.ListNodes().size() == 1; }));
  CHECK(core.ListNodes()[0].node_id() == "laptop-c");
  CHECK(core.ListNodes()[0].agent_address() == "10.8.0.4:7112");

  ppn::host::v1::Heartbeat hb;
  hb.set_node_id("laptop-c");
  hb.set_available_memory_mib(4096);
  core.OnHeartbeat(hb);
  ppn::types::v1::VmSpec spec;
  spec.set_memory_mib(128);
  CHECK(core.Explain(spec, {}).chosen_node_id == "laptop-c");

  ledger::v1::AppendRequest revoke = join;
  revoke.set_kind("node.revoke");
  REQUIRE(log.Append(admin, revoke).ok());
  REQUIRE(wait_for([&] { return core.ListNodes()[0].state() == fleet::v1::NODE_STATE_REVOKED; }));
  core.OnHeartbeat(hb);  // a revoked node's heartbeats do not make it a target again
  CHECK(core.Explain(spec, {}).chosen_node_id.empty());
  CHECK(core.Explain(spec, {}).verdicts[0].reason == "revoked in the ledger");

  watcher.Stop();
  server.server->Shutdown();
  log.Stop();
}

TEST_CASE("the fleet's lifecycle entries reach the ledger under its certificate, once each", "[fleet][ledger]") {
  ppn::testing::TempDir dir;
  ppn::testing::TestPki pki("ppn.test");
  ppn::testing::FakeClock clock;
  auto store = *ledger::LedgerStore::Open(dir.File("ledger.db"));
  ledger::MerkleLog log(store.get(), *ledger::NoteSigner::FromSeed("ppn.test/ledger", std::string(32, 'n')),
                        RealClock::Get(), ledger::MerkleLog::Options{"ppn.test/ledger"});
  REQUIRE(log.Start().ok());
  ledger::LedgerService service(&log);
  StartedServer server = *ledger::StartLedgerServer("ppn.test", "127.0.0.1:0", pki.Issue("ledger", "ledger"), &service);
  std::string address = "127.0.0.1:" + std::to_string(server.port);

  fleet::testing::FakeAgentClientFactory agents;
  auto outbox = *LedgerOutbox::Open(dir.File("fleet.db.ledger-spool"), "fleet",
                                    GrpcLedgerAppender(address, pki.Issue("fleet", "fleet")));
  auto vms = *fleet::VmStore::Open(dir.File("fleet.db"));
  fleet::FleetCore core({vms.get(), &agents, &clock, OpenSslRandom::Get(), outbox.get()}, {absl::Seconds(1)});
  REQUIRE(core.Load().ok());
  core.AddNode("laptop-a", "unused:1");
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id("laptop-a");
  hb.set_available_memory_mib(4096);
  core.OnHeartbeat(hb);

  ppn::types::v1::VmSpec spec;
  spec.set_display_name("web");
  spec.set_vcpus(1);
  spec.set_memory_mib(128);
  spec.set_image("ppn-test-guest");
  spec.set_user_data("secret-user-data");
  auto web = core.CreateVm("acme", spec, "req-1");
  REQUIRE(web.ok());
  REQUIRE(core.CreateVm("acme", spec, "req-1")->replayed);  // not a second create
  spec.set_display_name("short");
  spec.mutable_ttl()->set_seconds(5);
  auto short_lived = core.CreateVm("acme", spec, "");
  REQUIRE(short_lived.ok());

  // The node reports both, plus one the fleet never created.
  for (const std::string& id : {web->vm.vm_id(), short_lived->vm.vm_id()}) {
    auto* vm = hb.add_vms();
    vm->set_vm_id(id);
    vm->set_tenant_id("acme");
    vm->set_state(ppn::types::v1::VM_STATE_RUNNING);
  }
  auto* stray = hb.add_vms();
  stray->set_vm_id("vm-stray");
  stray->set_tenant_id("globex");
  stray->set_state(ppn::types::v1::VM_STATE_RUNNING);
  clock.Advance(absl::Seconds(6));
  core.OnHeartbeat(hb);
  core.RunOnce();  // the TTL has run out
  REQUIRE(core.DestroyVm(fleet::Scope{}, web->vm.vm_id(), fleet::Actor::Operator()).ok());
  clock.Advance(absl::Seconds(4));
  core.RunOnce();  // the node went silent: vm-stray is UNKNOWN

  outbox->DeliverOnce();
  CHECK(outbox->Pending() == 0);
  CHECK(outbox->Refused() == 0);  // the ledger takes every vm.* kind from the fleet's role
  auto entries = *log.GetEntries(0, 100, "");
  std::vector<std::string> got;
  for (const auto& e : entries) {
    CHECK(e.actor() == "spiffe://ppn.test/fleet/fleet");
    for (const auto& [k, v] : e.attributes()) CHECK(v.find("secret-user-data") == std::string::npos);
    std::string line = e.kind() + " " + e.tenant_id() + " " + e.subject();
    if (e.attributes().count("who")) line += " who=" + e.attributes().at("who");
    if (e.attributes().count("to")) line += " to=" + e.attributes().at("to");
    got.push_back(line);
  }
  CHECK(got == std::vector<std::string>{
                   "vm.create acme " + web->vm.vm_id(),
                   "vm.create acme " + short_lived->vm.vm_id(),
                   "vm.adopt globex vm-stray",
                   "vm.expire acme " + short_lived->vm.vm_id(),
                   "vm.destroy acme " + short_lived->vm.vm_id() + " who=ttl",
                   "vm.destroy acme " + web->vm.vm_id() + " who=operator",
                   "vm.state globex vm-stray to=UNKNOWN",
               });
  server.server->Shutdown();
  log.Stop();
}

}  // namespace
}  // namespace ppn
