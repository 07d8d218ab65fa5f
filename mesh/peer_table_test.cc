#include "mesh/peer_table.h"

#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "mesh/wireguard_key.h"

namespace ppn::mesh {
namespace {

using ppn::ledger::v1::Entry;

std::string Key() { return GenerateKeyPair()->public_key; }

struct Ledger {
  std::vector<Entry> entries;
  Entry& Join(const std::string& name, const std::string& key, const std::string& address,
              const std::string& endpoint = "") {
    Entry& e = entries.emplace_back();
    e.set_index(entries.size() - 1);
    e.set_kind("node.join");
    e.set_subject(name);
    e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
    (*e.mutable_attributes())["wireguard_public_key"] = key;
    (*e.mutable_attributes())["mesh_address"] = address;
    if (!endpoint.empty()) (*e.mutable_attributes())["wireguard_endpoint"] = endpoint;
    return e;
  }
  Entry& Revoke(const std::string& name) {
    Entry& e = entries.emplace_back();
    e.set_index(entries.size() - 1);
    e.set_kind("node.revoke");
    e.set_subject(name);
    e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
    return e;
  }
  Entry& Other(const std::string& kind) {
    Entry& e = entries.emplace_back();
    e.set_index(entries.size() - 1);
    e.set_kind(kind);
    e.set_subject("vm-1");
    e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
    return e;
  }
  // The table after every entry; the rejections are in the table.
  PeerTable Fold(PeerTableOptions o) const {
    PeerTable t = *PeerTable::Create(std::move(o));
    for (const Entry& e : entries) t.Apply(e);
    return t;
  }
};

PeerTableOptions For(const std::string& self, const std::string& hub = "") {
  PeerTableOptions o;
  o.self = self;
  o.hub = hub;
  return o;
}

std::string LastReason(const PeerTable& t) { return t.rejections().empty() ? "" : t.rejections().back().reason; }

TEST_CASE("every other live node is a peer with its /32 and its endpoint", "[mesh][peer_table]") {
  Ledger l;
  std::string a = Key(), b = Key(), c = Key();
  l.Join("cloud", a, "10.8.0.1", "203.0.113.7:51820");
  l.Other("tenant.vm.create");
  l.Join("laptop-a", b, "10.8.0.2", "192.0.2.10:51820");
  l.Join("laptop-b", c, "10.8.0.3");  // behind NAT
  PeerTableView v = l.Fold(For("laptop-a")).Compute();
  REQUIRE(v.self.has_value());
  CHECK(v.self->mesh_address == "10.8.0.2");
  REQUIRE(v.peers.size() == 2);
  CHECK(v.peers[0].node_name == "cloud");
  CHECK(v.peers[0].public_key == a);
  CHECK(v.peers[0].endpoint == "203.0.113.7:51820");
  CHECK(v.peers[0].allowed_ips == std::vector<std::string>{"10.8.0.1/32"});
  CHECK(v.peers[0].persistent_keepalive_seconds == 0);  // both sides reachable
  CHECK(v.peers[1].node_name == "laptop-b");
  CHECK(v.peers[1].endpoint.empty());
  CHECK(v.peers[1].persistent_keepalive_seconds == kNatKeepaliveSeconds);
  CHECK(!v.forwarding);
  CHECK(v.unreachable.empty());

  SECTION("a node behind NAT keeps every peer alive from its side") {
    PeerTableView nat = l.Fold(For("laptop-b")).Compute();
    REQUIRE(nat.peers.size() == 2);
    for (const MeshPeer& p : nat.peers) CHECK(p.persistent_keepalive_seconds == kNatKeepaliveSeconds);
  }
  SECTION("a node whose own join is not in yet has no peers") {
    PeerTableView none = l.Fold(For("laptop-c")).Compute();
    CHECK(!none.self.has_value());
    CHECK(none.peers.empty());
    CHECK(!none.self_revoked);
  }
}

TEST_CASE("two nodes without endpoints reach each other only through the hub", "[mesh][peer_table]") {
  Ledger l;
  l.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");
  l.Join("laptop-a", Key(), "10.8.0.2");
  l.Join("laptop-b", Key(), "10.8.0.3");

  SECTION("without a hub they are unreachable, and say why") {
    PeerTableView v = l.Fold(For("laptop-a")).Compute();
    REQUIRE(v.peers.size() == 1);
    CHECK(v.peers[0].node_name == "cloud");
    CHECK(v.peers[0].allowed_ips == std::vector<std::string>{"10.8.0.1/32"});
    REQUIRE(v.unreachable.size() == 1);
    CHECK(v.unreachable[0].node_name == "laptop-b");
    CHECK(absl::StrContains(v.unreachable[0].reason, "no hub"));
  }
  SECTION("with the hub, spokes route the whole prefix to it and have no direct peer") {
    PeerTableView a = l.Fold(For("laptop-a", "cloud")).Compute();
    REQUIRE(a.peers.size() == 1);
    CHECK(a.peers[0].node_name == "cloud");
    CHECK(a.peers[0].hub);
    CHECK(a.peers[0].allowed_ips == std::vector<std::string>{"10.8.0.0/24"});
    CHECK(a.peers[0].persistent_keepalive_seconds == kNatKeepaliveSeconds);
    CHECK(a.via_hub == std::vector<std::string>{"laptop-b"});
    CHECK(a.unreachable.empty());
    CHECK(!a.forwarding);

    PeerTableView hub = l.Fold(For("cloud", "cloud")).Compute();
    CHECK(hub.forwarding);
    REQUIRE(hub.peers.size() == 2);
    CHECK(hub.peers[0].allowed_ips == std::vector<std::string>{"10.8.0.2/32"});
    CHECK(hub.peers[1].allowed_ips == std::vector<std::string>{"10.8.0.3/32"});
  }
  SECTION("a hub without an endpoint cannot help nodes without endpoints") {
    Ledger m;
    m.Join("hub", Key(), "10.8.0.1");
    m.Join("laptop-a", Key(), "10.8.0.2");
    PeerTableView v = m.Fold(For("laptop-a", "hub")).Compute();
    CHECK(v.peers.empty());
    REQUIRE(v.unreachable.size() == 1);
    CHECK(absl::StrContains(v.unreachable[0].reason, "the hub hub has none either"));
  }
  SECTION("a hub that is not a member changes nothing") {
    PeerTableView v = l.Fold(For("laptop-a", "nobody")).Compute();
    REQUIRE(v.peers.size() == 1);
    CHECK(v.peers[0].allowed_ips == std::vector<std::string>{"10.8.0.1/32"});
  }
}

TEST_CASE("a revoked node never comes back with its old key", "[mesh][peer_table]") {
  Ledger l;
  std::string old_key = Key(), new_key = Key();
  l.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");
  l.Join("laptop-b", old_key, "10.8.0.3", "192.0.2.3:51820");
  l.Revoke("laptop-b");
  PeerTable t = l.Fold(For("cloud"));
  CHECK(t.Compute().peers.empty());
  CHECK(t.rejections().empty());

  SECTION("a later join with the old key is refused") {
    l.Join("laptop-b", old_key, "10.8.0.4", "192.0.2.3:51820");
    PeerTable again = l.Fold(For("cloud"));
    CHECK(again.Compute().peers.empty());
    CHECK(LastReason(again) == "the key was revoked with node laptop-b and stays refused");
    l.Join("laptop-z", old_key, "10.8.0.9");  // nor under another name
    CHECK(l.Fold(For("cloud")).Compute().peers.empty());
  }
  SECTION("a join of the same name with a new key and address is a new node") {
    l.Join("laptop-b", new_key, "10.8.0.4", "192.0.2.3:51820");
    PeerTableView v = l.Fold(For("cloud")).Compute();
    REQUIRE(v.peers.size() == 1);
    CHECK(v.peers[0].public_key == new_key);
    CHECK(v.peers[0].mesh_address == "10.8.0.4");
  }
  SECTION("the revoked node itself gets no peers") {
    PeerTableView v = l.Fold(For("laptop-b")).Compute();
    CHECK(v.self_revoked);
    CHECK(v.peers.empty());
  }
  SECTION("revoking a node that is not a member is refused") {
    l.Revoke("laptop-b");
    CHECK(LastReason(l.Fold(For("cloud"))) == "node \"laptop-b\" is not a live member");
  }
}

TEST_CASE("bad joins are rejected with a reason and change nothing", "[mesh][peer_table]") {
  Ledger l;
  std::string cloud_key = Key(), a_key = Key();
  l.Join("cloud", cloud_key, "10.8.0.1", "203.0.113.7:51820");
  l.Join("laptop-a", a_key, "10.8.0.2", "192.0.2.2:51820");
  PeerTableOptions o = For("laptop-a");
  o.granted_keys = {{"cloud", cloud_key}, {"laptop-a", a_key}};
  std::string reason;
  Entry* bad = nullptr;

  SECTION("a key that is not 44 characters of base64 for 32 bytes") {
    bad = &l.Join("laptop-c", "not-a-key", "10.8.0.3");
    reason = "wireguard_public_key is not a WireGuard public key (44 characters of base64 for 32 bytes)";
    SECTION("or base64 of the wrong length") {
      (*bad->mutable_attributes())["wireguard_public_key"] = std::string(48, 'A');
    }
    SECTION("or with non-canonical padding bits") {
      (*bad->mutable_attributes())["wireguard_public_key"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=";
    }
  }
  SECTION("an address outside the mesh prefix") {
    bad = &l.Join("laptop-c", Key(), "10.9.0.3");
    reason = "mesh_address \"10.9.0.3\" is outside the mesh prefix 10.8.0.0/24";
    SECTION("or the prefix's broadcast address") { (*bad->mutable_attributes())["mesh_address"] = "10.8.0.255"; }
    SECTION("or an address with a space") { (*bad->mutable_attributes())["mesh_address"] = "10.8.0.3 "; }
    if (bad->attributes().at("mesh_address") != "10.9.0.3") {
      reason = "mesh_address \"" + bad->attributes().at("mesh_address") + "\" is outside the mesh prefix 10.8.0.0/24";
    }
  }
  SECTION("an address another live node holds") {
    bad = &l.Join("laptop-c", Key(), "10.8.0.1");
    reason = "mesh_address 10.8.0.1 is held by node cloud";
  }
  SECTION("a key another live node holds") {
    bad = &l.Join("laptop-c", cloud_key, "10.8.0.3");
    reason = "the key is held by node cloud";
  }
  SECTION("a key that differs from the grant's") {
    bad = &l.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");
    reason = "the key differs from the one this node's grant names for cloud";
  }
  SECTION("a new key for a live node") {
    o.granted_keys.clear();
    bad = &l.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");
    reason = "node cloud is a member with another key (joined at index 0); revoke it before it joins with a new one";
  }
  SECTION("an endpoint that is not host:port") {
    bad = &l.Join("laptop-c", Key(), "10.8.0.3", "192.0.2.3");
    reason = "wireguard_endpoint \"192.0.2.3\" is not host:port";
  }
  SECTION("a bad node name") {
    bad = &l.Join("Laptop C", Key(), "10.8.0.3");
    reason = "node name \"Laptop C\" is not valid";
  }
  PeerTable t = l.Fold(o);
  INFO(reason);
  REQUIRE(t.rejections().size() == 1);
  CHECK(t.rejections()[0].index == bad->index());
  CHECK(t.rejections()[0].kind == "node.join");
  CHECK(t.rejections()[0].reason == reason);
  PeerTableView v = t.Compute();
  REQUIRE(v.peers.size() == 1);  // only cloud, unchanged
  CHECK(v.peers[0].public_key == cloud_key);
  CHECK(v.peers[0].endpoint == "203.0.113.7:51820");
}

TEST_CASE("a repeated join with the same key moves the node's endpoint", "[mesh][peer_table]") {
  Ledger l;
  std::string key = Key();
  l.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");
  l.Join("laptop-a", key, "10.8.0.2", "192.0.2.2:51820");
  l.Join("laptop-a", key, "10.8.0.2", "198.51.100.2:51820");
  PeerTableView v = l.Fold(For("cloud")).Compute();
  REQUIRE(v.peers.size() == 1);
  CHECK(v.peers[0].endpoint == "198.51.100.2:51820");
}

TEST_CASE("entries repeated after a reconnect and entries that did not succeed change nothing", "[mesh][peer_table]") {
  Ledger l;
  l.Join("cloud", Key(), "10.8.0.1", "203.0.113.7:51820");
  l.Join("laptop-a", Key(), "10.8.0.2");
  l.Join("laptop-b", Key(), "10.8.0.3", "192.0.2.3:51820").set_outcome(ppn::ledger::v1::OUTCOME_FAILURE);
  PeerTable t = *PeerTable::Create(For("cloud"));
  for (const Entry& e : l.entries) t.Apply(e);
  for (const Entry& e : l.entries) CHECK(!t.Apply(e).has_value());  // a stream that started over
  CHECK(t.next_index() == 3);
  CHECK(t.LiveNodes().size() == 2);
  CHECK(t.rejections().empty());
}

TEST_CASE("the table refuses options it cannot work with", "[mesh][peer_table]") {
  CHECK(PeerTable::Create(For("")).status().code() == absl::StatusCode::kInvalidArgument);
  PeerTableOptions bad = For("a");
  bad.granted_keys["b"] = "x";
  CHECK(PeerTable::Create(bad).status().message() == "the granted key of node b is not a WireGuard key");
}

}  // namespace
}  // namespace ppn::mesh
