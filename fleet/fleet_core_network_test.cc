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

}  // namespace
}  // namespace ppn::fleet
