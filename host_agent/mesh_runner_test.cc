// The host agent's mesh unit against a fake device and a fake ledger: the grant as pairing
// writes it, the founding node as the first peer, faults as problems in the heartbeat's
// MeshStatus. The real interface is mesh/'s netns tests and the compose mesh's.

#include "host_agent/mesh_runner.h"

#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "common/files.h"
#include "mesh/testing/fake_device.h"
#include "mesh/testing/fake_membership_source.h"
#include "mesh/wireguard_key.h"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_clock.h"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

using mesh::testing::FakeDevice;
using mesh::testing::FakeLedger;

std::string Key() { return mesh::GenerateKeyPair()->public_key; }

bool WaitFor(const std::function<bool()>& pred) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

std::string Problems(const ppn::types::v1::MeshStatus& s) { return absl::StrJoin(s.problems(), "\n"); }

// node.json as the joiner (pairing/joiner_main.cc) writes it.
nlohmann::json GrantJson(const std::string& self_key, const std::string& cloud_key) {
  return {{"name", "laptop-a"},
          {"mesh", "ppn.local"},
          {"mesh_address", "10.8.0.2"},
          {"mesh_prefix_length", 24},
          {"wireguard_public_key", self_key},
          {"wireguard_key_file", "wireguard.key"},
          {"wireguard_endpoint", "192.0.2.2:51820"},
          {"granted_wireguard_keys", {{"cloud", cloud_key}, {"laptop-a", self_key}}},
          {"founding_node",
           {{"name", "cloud"},
            {"mesh_address", "10.8.0.1"},
            {"wireguard_public_key", cloud_key},
            {"wireguard_endpoint", "203.0.113.7:51820"}}}};
}

TEST_CASE("the grant is read from the pairing out dir with its founding node and keys", "[mesh_runner]") {
  ppn::testing::TempDir dir;
  std::string self = Key(), cloud = Key();
  REQUIRE(WriteFileAtomically(dir.File("node.json"), GrantJson(self, cloud).dump(2)).ok());
  absl::StatusOr<MeshGrant> g = LoadMeshGrant(dir.File("node.json"));
  INFO(g.status().message());
  REQUIRE(g.ok());
  CHECK(g->node_name == "laptop-a");
  CHECK(g->mesh_address == "10.8.0.2");
  CHECK(g->prefix_length == 24);
  CHECK(g->key_file == dir.File("wireguard.key"));  // relative to the grant's directory
  CHECK(g->endpoint == "192.0.2.2:51820");
  CHECK(g->granted_keys == std::map<std::string, std::string>{{"cloud", cloud}, {"laptop-a", self}});
  REQUIRE(g->founding.has_value());
  CHECK(g->founding->endpoint == "203.0.113.7:51820");
  CHECK(g->founding->public_key == cloud);
}

TEST_CASE("a grant that cannot be trusted or used is refused, saying what is wrong", "[mesh_runner]") {
  ppn::testing::TempDir dir;
  std::string self = Key(), cloud = Key();
  nlohmann::json grant = GrantJson(self, cloud);
  std::string want;
  SECTION("a grant from before the founding node was recorded in it") {
    grant.erase("founding_node");
    want = "does not name the founding node (a grant from before the mesh ran WireGuard): pair this node again";
  }
  SECTION("a founding node whose key is not the one granted") {
    grant["founding_node"]["wireguard_public_key"] = Key();
    want = "founding_node: its key is not the one the grant names for cloud";
  }
  SECTION("a malformed granted key") {
    grant["granted_wireguard_keys"]["laptop-b"] = "not-a-key";
    want = "the granted key of laptop-b is not a WireGuard public key";
  }
  SECTION("no mesh address") {
    grant.erase("mesh_address");
    want = "\"mesh_address\" is missing or not a string";
  }
  REQUIRE(WriteFileAtomically(dir.File("node.json"), grant.dump()).ok());
  absl::StatusOr<MeshGrant> g = LoadMeshGrant(dir.File("node.json"));
  CHECK(g.status().code() == absl::StatusCode::kInvalidArgument);
  INFO(g.status().message());
  CHECK(absl::StrContains(g.status().message(), want));
  CHECK(LoadMeshGrant(dir.File("absent.json")).status().code() == absl::StatusCode::kNotFound);
}

struct Joiner {
  std::string self_key = Key(), cloud_key = Key(), b_key = Key();
  FakeLedger ledger;
  std::unique_ptr<mesh::MembershipSource> source = ledger.Reader();
  FakeDevice device{self_key};
  ppn::testing::FakeClock clock;
  MeshRunnerOptions options;

  Joiner() {
    options.node_id = "laptop-a";
    options.mesh_address = "10.8.0.2";
    options.public_key = self_key;
    MeshGrant g;
    g.node_name = "laptop-a";
    g.mesh_address = "10.8.0.2";
    g.endpoint = "192.0.2.2:51820";
    g.granted_keys = {{"laptop-a", self_key}, {"cloud", cloud_key}};
    g.founding = FoundingPeer{"cloud", "10.8.0.1", cloud_key, "203.0.113.7:51820"};
    options.grant = g;
    options.agent.poll = absl::Milliseconds(20);
    ledger.Join("cloud", cloud_key, "10.8.0.1", "203.0.113.7:51820");
    ledger.Join("laptop-a", self_key, "10.8.0.2", "192.0.2.2:51820");
  }
  std::unique_ptr<MeshRunner> Runner() {
    absl::StatusOr<std::unique_ptr<MeshRunner>> r = MeshRunner::Create(options, &device, source.get(), &clock);
    INFO(r.status().message());
    REQUIRE(r.ok());
    return *std::move(r);
  }
};

TEST_CASE("a joiner's tunnel comes up with the founding node as its first peer, then follows the ledger",
          "[mesh_runner]") {
  Joiner j;
  j.ledger.HoldCatchUp(true);  // the ledger is reached through the founding node only
  std::unique_ptr<MeshRunner> runner = j.Runner();
  REQUIRE(runner->Start().ok());
  std::map<std::string, mesh::PeerState> peers = j.device.peers();
  REQUIRE(peers.size() == 1);
  CHECK(peers.at(j.cloud_key).endpoint == "203.0.113.7:51820");
  CHECK(peers.at(j.cloud_key).allowed_ips == std::vector<std::string>{"10.8.0.1/32"});
  ppn::types::v1::MeshStatus s = runner->Status();
  CHECK(!s.tunnel_up());  // not configured from the whole ledger yet
  CHECK(absl::StrContains(Problems(s), "ledger: still reading the membership"));

  j.ledger.HoldCatchUp(false);
  REQUIRE(WaitFor([&] { return runner->Status().tunnel_up(); }));
  s = runner->Status();
  CHECK(s.mesh_address() == "10.8.0.2");
  CHECK(s.backend() == "wireguard-go");
  CHECK(s.problems().empty());
  REQUIRE(s.peers_size() == 1);
  CHECK(s.peers(0).node_id() == "cloud");
  CHECK(s.peers(0).mesh_address() == "10.8.0.1");
  CHECK(!s.peers(0).has_last_handshake_time());

  j.ledger.Join("laptop-b", j.b_key, "10.8.0.3", "192.0.2.3:51820");
  REQUIRE(WaitFor([&] { return j.device.peers().count(j.b_key) == 1; }));
  j.ledger.Revoke("laptop-b");
  REQUIRE(WaitFor([&] { return j.device.peers().count(j.b_key) == 0; }));
  CHECK(j.device.peers().count(j.cloud_key) == 1);
  runner->Stop();
}

TEST_CASE("an adopted interface keeps its peers and gets no second founding peer", "[mesh_runner]") {
  Joiner j;
  j.device.AddPeerForTest({j.cloud_key, "203.0.113.7:51820", {"10.8.0.1/32"}});
  j.ledger.HoldCatchUp(true);
  std::unique_ptr<MeshRunner> runner = j.Runner();
  REQUIRE(runner->Start().ok());
  CHECK(j.device.calls().empty());
  runner->Stop();
}

TEST_CASE("a tunnel that cannot come up stops the agent with the reason", "[mesh_runner]") {
  Joiner j;
  j.device.SetUpError(absl::FailedPreconditionError("wireguard-go needs the tun device /dev/net/tun"));
  std::unique_ptr<MeshRunner> runner = j.Runner();
  absl::Status s = runner->Start();
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(s.message() ==
        "the WireGuard interface ppn-wg cannot come up: wireguard-go needs the tun device /dev/net/tun (traffic "
        "between nodes never goes in clear: fix this, or run one machine's mesh without --wireguard)");
}

TEST_CASE("a runner whose options contradict the grant is refused", "[mesh_runner]") {
  Joiner j;
  std::string want;
  SECTION("another node's grant") {
    j.options.node_id = "laptop-b";
    want = "the grant is node laptop-a's, but this agent is --node_id=laptop-b";
  }
  SECTION("another mesh address") {
    j.options.mesh_address = "10.8.0.9";
    want = "the grant gives this node mesh address 10.8.0.2, but --mesh_address is 10.8.0.9";
  }
  SECTION("a key file the grant does not name") {
    j.options.public_key = Key();
    want = "the WireGuard key file does not hold the key the grant names for this node";
  }
  absl::StatusOr<std::unique_ptr<MeshRunner>> r = MeshRunner::Create(j.options, &j.device, j.source.get(), &j.clock);
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(r.status().message() == want);
}

TEST_CASE("faults of the membership are problems in the node's mesh status", "[mesh_runner]") {
  Joiner j;
  std::unique_ptr<MeshRunner> runner = j.Runner();
  REQUIRE(runner->Start().ok());
  REQUIRE(WaitFor([&] { return runner->Status().tunnel_up(); }));

  // A join naming another key for the founding node than the grant does, and one for an
  // address already in use: both refused, the tunnel untouched, the heartbeat says why.
  j.ledger.Join("cloud-2", Key(), "10.8.0.1", "203.0.113.8:51820");
  REQUIRE(WaitFor([&] { return runner->Status().problems_size() == 1; }));
  CHECK(Problems(runner->Status()) ==
        "ledger entry 2 (node.join cloud-2) refused: mesh_address 10.8.0.1 is held by node cloud");
  std::string forged = Key();
  j.ledger.Join("cloud", forged, "10.8.0.1", "203.0.113.9:51820");
  REQUIRE(WaitFor([&] { return runner->Status().problems_size() == 2; }));
  CHECK(absl::StrContains(Problems(runner->Status()),
                          "ledger entry 3 (node.join cloud) refused: the key differs from the one this node's grant "
                          "names for cloud"));
  CHECK(j.device.peers().count(forged) == 0);
  CHECK(runner->Status().tunnel_up());

  j.ledger.Revoke("laptop-a");
  REQUIRE(WaitFor([&] { return !runner->Status().tunnel_up(); }));
  CHECK(absl::StrContains(Problems(runner->Status()), "this node was revoked from the mesh: it has no peers"));
  CHECK(WaitFor([&] { return j.device.peers().empty(); }));
  runner->Stop();
}

TEST_CASE("the status names a disagreement between the ledger and the agent's address, and handshakes",
          "[mesh_runner]") {
  mesh::MeshStatus s;
  s.interface_name = "ppn-wg";
  s.tunnel_up = true;
  s.caught_up = true;
  s.joined = true;
  s.backend = "wireguard-go";
  s.mesh_address = "10.8.0.5";
  mesh::MeshPeerStatus p;
  p.node_name = "cloud";
  p.mesh_address = "10.8.0.1";
  p.endpoint = "203.0.113.7:51820";
  p.latest_handshake = absl::FromUnixSeconds(1795000000);
  p.rx_bytes = 10;
  p.tx_bytes = 20;
  s.peers.push_back(p);
  s.via_hub = {"laptop-c"};
  s.unreachable = {{"laptop-d", "neither node has a WireGuard endpoint"}};
  ppn::types::v1::MeshStatus out = MeshStatusProto(s, "10.8.0.2");
  CHECK(out.tunnel_up());
  CHECK(Problems(out) ==
        "the ledger gives this node mesh address 10.8.0.5, but it runs with 10.8.0.2\n"
        "no path to laptop-d: neither node has a WireGuard endpoint");
  REQUIRE(out.peers_size() == 2);
  CHECK(out.peers(0).last_handshake_time().seconds() == 1795000000);
  CHECK(out.peers(0).rx_bytes() == 10);
  CHECK(out.peers(1).node_id() == "laptop-c");
  CHECK(out.peers(1).via_hub());

  s.tunnel_up = false;
  s.tunnel_error = "interface ppn-wg disappeared";
  s.mesh_address = "10.8.0.2";
  s.unreachable.clear();
  CHECK(Problems(MeshStatusProto(s, "10.8.0.2")) == "tunnel: interface ppn-wg disappeared");
}

}  // namespace
}  // namespace ppn::host
