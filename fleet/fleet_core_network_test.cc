// FleetCore's private networks: create, get, list, delete, and the addresses a create gives
// each VM on them.

#include "fleet/fleet_core.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using testing::Beat;
using testing::CoreFixture;
using testing::Spec;

TEST_CASE("a tenant's VMs on its network get addresses of its /24, and the node is told them",
          "[fleet][private_networks]") {
  CoreFixture f;
  f.Nodes({Beat("a", 4000)});
  absl::StatusOr<ppn::types::v1::Network> net = f.core->CreateNetwork(Scope{"acme"}, "backend");
  REQUIRE(net.ok());
  CHECK(absl::StartsWith(net->network_id(), "net-"));
  CHECK(net->cidr() == "10.214.0.0/24");
  CHECK(f.core->CreateNetwork(Scope{"acme"}, "backend").status().code() == absl::StatusCode::kAlreadyExists);
  absl::StatusOr<ppn::types::v1::Network> other = f.core->CreateNetwork(Scope{"globex"}, "backend");
  REQUIRE(other.ok());
  CHECK(other->cidr() == "10.214.1.0/24");

  ppn::types::v1::VmSpec one = Spec("one");
  one.add_networks(net->network_id());
  auto a = f.core->CreateVm("acme", one, "");
  REQUIRE(a.ok());
  REQUIRE(a->vm.private_nics_size() == 1);
  CHECK(a->vm.private_nics(0).address() == "10.214.0.2");
  CHECK(a->vm.private_nics(0).prefix_length() == 24);
  ppn::types::v1::VmSpec two = Spec("two");
  two.add_networks(net->network_id());
  auto b = f.core->CreateVm("acme", two, "");
  REQUIRE(b.ok());
  CHECK(b->vm.private_nics(0).address() == "10.214.0.3");

  // Another tenant's network is not found, in the same words as one that never existed.
  ppn::types::v1::VmSpec sneaky = Spec("sneaky");
  sneaky.add_networks(net->network_id());
  absl::Status theirs = f.core->CreateVm("globex", sneaky, "").status();
  CHECK(theirs.code() == absl::StatusCode::kNotFound);
  CHECK(theirs.message() == absl::StrCat("network ", net->network_id(), " not found"));
  CHECK(f.core->GetNetwork(Scope{"globex"}, net->network_id()).status().message() == theirs.message());
  CHECK(f.core->GetNetwork(Scope{"globex"}, "net-nope").status().message() == "network net-nope not found");
  CHECK(f.core->DeleteNetwork(Scope{"globex"}, net->network_id()).message() == theirs.message());
  CHECK(f.core->ListNetworks(Scope{"acme"}).size() == 1);
  CHECK(f.core->ListNetworks(Scope{}).size() == 2);  // the operator's view

  absl::Status busy = f.core->DeleteNetwork(Scope{"acme"}, net->network_id());
  CHECK(busy.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StartsWith(busy.message(), absl::StrCat("network ", net->network_id(), " has VMs attached: ")));
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, a->vm.vm_id(), Actor::Tenant()).ok());
  // A freed address is handed out again.
  ppn::types::v1::VmSpec three = Spec("three");
  three.add_networks(net->network_id());
  auto c = f.core->CreateVm("acme", three, "");
  REQUIRE(c.ok());
  CHECK(c->vm.private_nics(0).address() == "10.214.0.2");
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, b->vm.vm_id(), Actor::Tenant()).ok());
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, c->vm.vm_id(), Actor::Tenant()).ok());
  CHECK(f.core->DeleteNetwork(Scope{"acme"}, net->network_id()).ok());
  CHECK(f.core->GetNetwork(Scope{"acme"}, net->network_id()).status().code() == absl::StatusCode::kNotFound);
}

ppn::host::v1::Heartbeat WithTunnel(ppn::host::v1::Heartbeat hb, const std::string& network, const std::string& key,
                                    const std::string& endpoint, const std::string& applied = "") {
  auto* t = hb.add_network_tunnels();
  t->set_network_id(network);
  t->set_public_key(key);
  t->set_endpoint(endpoint);
  t->set_peers_fingerprint(applied);
  return hb;
}

TEST_CASE("each node of a network gets the other nodes' tunnel ends with their VMs' addresses, until it has them",
          "[fleet][private_networks]") {
  CoreFixture f;
  // a (KVM, preferred) has room for one VM: the second goes to b.
  f.Nodes({Beat("a", 300, ppn::types::v1::KVM_SUPPORT_AVAILABLE), Beat("b", 4000)});
  ppn::types::v1::Network net = *f.core->CreateNetwork(Scope{"acme"}, "backend");
  ppn::types::v1::VmSpec one = Spec("one");
  one.add_networks(net.network_id());
  auto a1 = f.core->CreateVm("acme", one, "");
  REQUIRE(a1.ok());
  ppn::types::v1::VmSpec two = Spec("two");
  two.add_networks(net.network_id());
  auto b1 = f.core->CreateVm("acme", two, "");
  REQUIRE(b1.ok());
  REQUIRE(a1->vm.node_id() != b1->vm.node_id());
  const std::string na = a1->vm.node_id(), nb = b1->vm.node_id();

  const std::string ka(43, 'A'), kb(43, 'B');
  f.core->OnHeartbeat(
      WithTunnel(Beat(na, 100, ppn::types::v1::KVM_SUPPORT_AVAILABLE), net.network_id(), ka + "=", "10.215.0.2:52000"));
  f.core->OnHeartbeat(WithTunnel(Beat(nb, 3000), net.network_id(), kb + "=", "10.215.0.6:52001"));
  f.core->RunOnce();
  auto to_a = f.agents.peers(na, net.network_id());
  REQUIRE(to_a.has_value());
  REQUIRE(to_a->peers_size() == 1);
  CHECK(to_a->peers(0).public_key() == kb + "=");
  CHECK(to_a->peers(0).endpoint() == "10.215.0.6:52001");
  REQUIRE(to_a->peers(0).addresses_size() == 1);
  CHECK(to_a->peers(0).addresses(0) == b1->vm.private_nics(0).address());
  auto to_b = f.agents.peers(nb, net.network_id());
  REQUIRE(to_b.has_value());
  CHECK(to_b->peers(0).addresses(0) == a1->vm.private_nics(0).address());

  // A node that echoes the fingerprint is left alone; one that forgot (restarted) is told again.
  size_t calls = f.agents.calls().size();
  f.core->OnHeartbeat(WithTunnel(Beat(na, 100, ppn::types::v1::KVM_SUPPORT_AVAILABLE), net.network_id(), ka + "=",
                                 "10.215.0.2:52000", to_a->fingerprint()));
  f.core->RunOnce();
  CHECK(f.agents.calls().size() == calls);
  f.core->OnHeartbeat(WithTunnel(Beat(na, 100, ppn::types::v1::KVM_SUPPORT_AVAILABLE), net.network_id(), ka + "=",
                                 "10.215.0.2:52000", ""));
  f.core->RunOnce();
  CHECK(f.agents.calls().size() == calls + 1);

  // The VM on b goes: a's peer b keeps its end but no address.
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, b1->vm.vm_id(), Actor::Tenant()).ok());
  f.core->OnHeartbeat(WithTunnel(Beat(na, 100, ppn::types::v1::KVM_SUPPORT_AVAILABLE), net.network_id(), ka + "=",
                                 "10.215.0.2:52000", to_a->fingerprint()));
  f.core->RunOnce();
  auto after = f.agents.peers(na, net.network_id());
  REQUIRE(after.has_value());
  CHECK(after->fingerprint() != to_a->fingerprint());
  CHECK(after->peers(0).addresses_size() == 0);
}

}  // namespace
}  // namespace ppn::fleet
