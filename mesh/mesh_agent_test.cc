// The mesh agent's logic against a fake device and a fake ledger, one pass at a time. The
// real thing (devices in namespaces, latency) is in mesh_agent_netns_test.cc.

#include "mesh/mesh_agent.h"

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "mesh/testing/fake_device.h"
#include "mesh/testing/fake_membership_source.h"
#include "mesh/wireguard_key.h"
#include "tests/fakes/fake_clock.h"

namespace ppn::mesh {
namespace {

using testing::FakeDevice;
using testing::FakeLedger;

std::string Key() { return GenerateKeyPair()->public_key; }

struct Fixture {
  std::string self_key = Key(), cloud_key = Key(), b_key = Key();
  FakeLedger ledger;
  std::unique_ptr<MembershipSource> source = ledger.Reader();
  FakeDevice device{self_key};
  ppn::testing::FakeClock clock;
  MeshAgentOptions options;
  std::unique_ptr<MeshAgent> agent;

  explicit Fixture(const std::string& hub = "") {
    options.table.self = "laptop-a";
    options.table.hub = hub;
    options.table.granted_keys = {{"laptop-a", self_key}, {"cloud", cloud_key}};
    ledger.Join("cloud", cloud_key, "10.8.0.1", "203.0.113.7:51820");
    ledger.Join("laptop-a", self_key, "10.8.0.2", "192.0.2.2:51820");
  }
  MeshAgent& Agent() {
    if (agent == nullptr) agent = *MeshAgent::Create(options, &device, source.get(), &clock);
    return *agent;
  }
  void Pass() { Agent().RunOnce(absl::ZeroDuration()); }
};

TEST_CASE("the agent makes the device's peers the table's once it has caught up", "[mesh][mesh_agent]") {
  Fixture f;
  std::string stale = Key();
  f.device.AddPeerForTest({stale, "198.51.100.9:51820", {"10.8.0.9/32"}});  // left by a previous run
  f.ledger.HoldCatchUp(true);
  f.Pass();
  CHECK(f.device.up_calls() == 1);
  CHECK(f.device.calls().empty());  // still reading the ledger's history: nothing changes
  CHECK(f.device.peers().count(stale) == 1);
  CHECK(!f.Agent().Snapshot().caught_up);

  f.ledger.HoldCatchUp(false);
  f.Pass();
  std::map<std::string, PeerState> peers = f.device.peers();
  REQUIRE(peers.size() == 1);
  const PeerState& cloud = peers.at(f.cloud_key);
  CHECK(cloud.endpoint == "203.0.113.7:51820");
  CHECK(cloud.allowed_ips == std::vector<std::string>{"10.8.0.1/32"});
  CHECK(cloud.persistent_keepalive_seconds == 0);
  MeshStatus s = f.Agent().Snapshot();
  CHECK(s.caught_up);
  CHECK(s.tunnel_up);
  CHECK(s.joined);
  CHECK(s.mesh_address == "10.8.0.2");
  REQUIRE(s.peers.size() == 1);
  CHECK(s.peers[0].node_name == "cloud");
  CHECK(s.peers[0].configured);

  SECTION("nothing is rewritten when nothing changed") {
    size_t calls = f.device.calls().size();
    f.Pass();
    f.clock.Advance(absl::Seconds(11));  // the periodic resync finds nothing to repair
    f.Pass();
    CHECK(f.device.calls().size() == calls);
  }
}

TEST_CASE("a join and a revoke reach the device on the next pass", "[mesh][mesh_agent]") {
  Fixture f;
  f.Pass();
  f.ledger.Join("laptop-b", f.b_key, "10.8.0.3");  // behind NAT
  f.Pass();
  std::map<std::string, PeerState> peers = f.device.peers();
  REQUIRE(peers.count(f.b_key) == 1);
  CHECK(peers.at(f.b_key).endpoint.empty());
  CHECK(peers.at(f.b_key).allowed_ips == std::vector<std::string>{"10.8.0.3/32"});
  CHECK(peers.at(f.b_key).persistent_keepalive_seconds == kNatKeepaliveSeconds);
  f.ledger.Revoke("laptop-b");
  f.Pass();
  CHECK(f.device.peers().count(f.b_key) == 0);
  CHECK(f.device.peers().size() == 1);

  SECTION("and a revoke of this node empties its interface") {
    f.ledger.Revoke("laptop-a");
    f.Pass();
    CHECK(f.device.peers().empty());
    MeshStatus s = f.Agent().Snapshot();
    CHECK(s.revoked);
    CHECK(!s.joined);
  }
}

TEST_CASE("a roamed endpoint is kept and an endpoint changed in the ledger is applied", "[mesh][mesh_agent]") {
  Fixture f;
  f.Pass();
  f.device.Roam(f.cloud_key, "198.51.100.77:40000");  // WireGuard heard the peer from there
  f.clock.Advance(absl::Seconds(11));
  f.Pass();
  CHECK(f.device.peers().at(f.cloud_key).endpoint == "198.51.100.77:40000");
  CHECK(f.Agent().Snapshot().peers[0].endpoint == "198.51.100.77:40000");
  f.ledger.Join("cloud", f.cloud_key, "10.8.0.1", "203.0.113.8:51820");  // the node moved
  f.Pass();
  CHECK(f.device.peers().at(f.cloud_key).endpoint == "203.0.113.8:51820");
}

TEST_CASE("rejected entries are in the snapshot with their reasons and change nothing", "[mesh][mesh_agent]") {
  Fixture f;
  f.Pass();
  f.ledger.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");  // not the key of the grant
  f.ledger.Join("laptop-c", Key(), "10.8.0.2");                    // this node's address
  f.Pass();
  CHECK(f.device.peers().size() == 1);
  CHECK(f.device.peers().count(f.cloud_key) == 1);
  MeshStatus s = f.Agent().Snapshot();
  REQUIRE(s.rejected.size() == 2);
  CHECK(s.rejected[0].index == 2);
  CHECK(s.rejected[0].reason == "the key differs from the one this node's grant names for cloud");
  CHECK(s.rejected[1].subject == "laptop-c");
  CHECK(s.rejected[1].reason == "mesh_address 10.8.0.2 is held by node laptop-a");
}

TEST_CASE("a device that cannot come up is retried and its error is in the snapshot", "[mesh][mesh_agent]") {
  Fixture f;
  f.device.SetUpError(absl::FailedPreconditionError("WireGuard interface ppn-wg (wireguard-go) needs the tun device"));
  f.Pass();
  MeshStatus s = f.Agent().Snapshot();
  CHECK(!s.tunnel_up);
  CHECK(s.tunnel_error == "WireGuard interface ppn-wg (wireguard-go) needs the tun device");
  CHECK(s.caught_up);  // the ledger is read regardless
  f.Pass();
  CHECK(f.device.up_calls() == 1);  // not before up_retry
  f.device.SetUpError(absl::OkStatus());
  f.clock.Advance(absl::Seconds(5));
  f.Pass();
  CHECK(f.device.up_calls() == 2);
  CHECK(f.device.peers().count(f.cloud_key) == 1);
  s = f.Agent().Snapshot();
  CHECK(s.tunnel_up);
  CHECK(s.tunnel_error.empty());
}

TEST_CASE("an interface that vanished is made again with its peers", "[mesh][mesh_agent]") {
  Fixture f;
  f.Pass();
  f.device.Vanish();
  f.clock.Advance(absl::Seconds(11));
  f.Pass();  // the resync notices
  CHECK(absl::StrContains(f.Agent().Snapshot().tunnel_error, "disappeared"));
  f.Pass();
  CHECK(f.device.up_calls() == 2);
  CHECK(f.device.peers().count(f.cloud_key) == 1);
}

TEST_CASE("a failed peer update is retried on the next pass", "[mesh][mesh_agent]") {
  Fixture f;
  f.device.SetUpdateError(absl::UnavailableError("updating the peers of ppn-wg: boom"));
  f.Pass();
  CHECK(f.Agent().Snapshot().tunnel_error == "updating the peers of ppn-wg: boom");
  f.device.SetUpdateError(absl::OkStatus());
  f.Pass();
  CHECK(f.device.peers().count(f.cloud_key) == 1);
  CHECK(f.Agent().Snapshot().tunnel_error.empty());
}

TEST_CASE("an unreachable ledger is in the snapshot and the peers stay", "[mesh][mesh_agent]") {
  Fixture f;
  f.Pass();
  f.ledger.SetUnavailable(absl::UnavailableError("the ledger's membership stream is down"));
  f.Pass();
  MeshStatus s = f.Agent().Snapshot();
  CHECK(s.membership_error == "the ledger's membership stream is down");
  CHECK(f.device.peers().count(f.cloud_key) == 1);
  f.ledger.SetUnavailable(absl::OkStatus());
  f.Pass();
  CHECK(f.Agent().Snapshot().membership_error.empty());
}

TEST_CASE("the hub forwards, and spokes route the mesh through it", "[mesh][mesh_agent]") {
  SECTION("on the hub") {
    Fixture f("laptop-a");
    f.Pass();
    CHECK(f.device.forwarding());
    CHECK(f.Agent().Snapshot().forwarding);
  }
  SECTION("on a spoke behind NAT") {
    Fixture f("cloud");
    f.options.table.self = "laptop-b";
    f.options.table.granted_keys = {{"laptop-b", f.b_key}};
    f.ledger.Join("laptop-b", f.b_key, "10.8.0.3");
    f.ledger.Join("laptop-c", Key(), "10.8.0.4");
    f.Pass();
    CHECK(!f.device.forwarding());
    std::map<std::string, PeerState> peers = f.device.peers();
    CHECK(peers.size() == 2);  // cloud (the hub) and laptop-a (which has an endpoint)
    CHECK(peers.at(f.cloud_key).allowed_ips == std::vector<std::string>{"10.8.0.0/24"});
    MeshStatus s = f.Agent().Snapshot();
    CHECK(s.via_hub == std::vector<std::string>{"laptop-c"});
  }
}

}  // namespace
}  // namespace ppn::mesh
