// The fleet learns its nodes from the ledger's node.join entries and stops placing on
// revoked ones.

#include "catch2/catch.hpp"
#include "common/clock.h"
#include "common/random.h"
#include "fleet/ledger_node_watcher.h"
#include "fleet/testing/fake_agent_client.h"
#include "grpcpp/create_channel.h"
#include "ledger/ledger_server.h"
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

}  // namespace
}  // namespace ppn
