// FleetCore with a relay: each forwarded port of each VM gets a stable relay port at create
// (unique, kept across moves and restarts, freed at destroy), records show it, and the relay's
// route table leads to wherever the VM runs.

#include <set>

#include "catch2/catch.hpp"
#include "fleet/fleet_core.h"
#include "fleet/testing/core_fixture.h"

namespace ppn::fleet {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::fleet::v1::WatchRelayRoutesResponse;
using testing::Beat;
using testing::CoreFixture;
using testing::Spec;
using testing::With;

FleetCore::Options Relay(uint32_t first, uint32_t last, const std::string& address = "relay.example.org") {
  FleetCore::Options o{absl::Seconds(1)};
  o.relay_address = address;
  o.relay_first_port = first;
  o.relay_last_port = last;
  return o;
}

// A spec forwarding TCP 80 and, if asked, UDP 53.
ppn::types::v1::VmSpec Web(const std::string& name, bool udp = false) {
  ppn::types::v1::VmSpec s = Spec(name);
  s.add_port_forwards()->set_guest_port(80);
  if (udp) {
    auto* dns = s.add_port_forwards();
    dns->set_guest_port(53);
    dns->set_protocol(ppn::types::v1::PROTOCOL_UDP);
  }
  return s;
}

// "guest_port public_address:public_port" for each forwarded port.
std::vector<std::string> Public(const VmRecord& r) {
  std::vector<std::string> out;
  for (const auto& p : r.forwarded_ports()) {
    out.push_back(absl::StrCat(p.guest_port(), " ", p.public_address(), ":", p.public_port()));
  }
  return out;
}

// "protocol/public_port vm backend" for each route.
std::vector<std::string> Routes(FleetCore& core) {
  absl::StatusOr<WatchRelayRoutesResponse> table = core.RelayRoutes();
  REQUIRE(table.ok());
  std::vector<std::string> out;
  for (const auto& r : table->routes()) {
    out.push_back(absl::StrCat(r.protocol() == ppn::types::v1::PROTOCOL_UDP ? "udp/" : "tcp/", r.public_port(), " ",
                               r.vm_id(), " ", r.backend_address(), ":", r.backend_port()));
  }
  return out;
}

TEST_CASE("each forwarded port of each VM gets its own relay port at create and records show it", "[fleet][relay]") {
  CoreFixture f(Relay(30000, 30009));
  f.Nodes({Beat("a", 4000)});
  auto web = f.core->CreateVm("acme", Web("web", /*udp=*/true), "");
  REQUIRE(web.ok());
  auto db = f.core->CreateVm("globex", Web("db"), "");
  REQUIRE(db.ok());
  CHECK(Public(web->vm) == std::vector<std::string>{"80 relay.example.org:30000", "53 relay.example.org:30001"});
  CHECK(Public(db->vm) == std::vector<std::string>{"80 relay.example.org:30002"});
  // The node's own address stays in the record (the operator's view); the proxy hides it.
  CHECK(web->vm.forwarded_ports(0).host_address() == "127.0.0.1");
  CHECK(Public(f.Get(web->vm.vm_id())) == Public(web->vm));
  auto listed = f.core->ListVms(Scope{"acme"}, {});
  REQUIRE(listed.ok());
  CHECK(Public(listed->vms(0)) == Public(web->vm));

  std::string w = web->vm.vm_id(), d = db->vm.vm_id();
  uint32_t w80 = web->vm.forwarded_ports(0).host_port(), w53 = web->vm.forwarded_ports(1).host_port();
  uint32_t d80 = db->vm.forwarded_ports(0).host_port();
  CHECK(Routes(*f.core) == std::vector<std::string>{
                               absl::StrCat("tcp/30000 ", w, " 127.0.0.1:", w80),
                               absl::StrCat("tcp/30002 ", d, " 127.0.0.1:", d80),
                               absl::StrCat("udp/30001 ", w, " 127.0.0.1:", w53),
                           });
  CHECK(f.core->RelayRoutes()->public_address() == "relay.example.org");
}

TEST_CASE("a VM keeps its relay ports when it migrates and when its node reports it", "[fleet][relay][migration]") {
  CoreFixture f(Relay(30000, 30009));
  f.Nodes({Beat("a", 4000), Beat("b", 1000)});
  auto web = f.core->CreateVm("acme", Web("web"), "");
  REQUIRE(web.ok());
  REQUIRE(web->vm.node_id() == "a");
  std::string id = web->vm.vm_id();

  v1::RecordMigrationRequest moved;
  moved.set_vm_id(id);
  moved.set_source_node_id("a");
  moved.set_target_node_id("b");
  auto* port = moved.add_forwarded_ports();
  port->set_guest_port(80);
  port->set_host_address("10.8.0.3");
  port->set_host_port(21007);
  // Whatever the caller says of the relay counts for nothing: the fleet gives relay ports.
  port->set_public_address("evil.example.org");
  port->set_public_port(22);
  auto after = f.core->RecordMigration(moved);
  REQUIRE(after.ok());
  CHECK(Public(*after) == std::vector<std::string>{"80 relay.example.org:30000"});
  CHECK(Routes(*f.core) == std::vector<std::string>{absl::StrCat("tcp/30000 ", id, " 10.8.0.3:21007")});

  // The target's heartbeat carries the node's ports and no relay port: the record keeps its own.
  ppn::host::v1::VmInstance on_b = testing::Running(id, "acme");
  *on_b.mutable_forwarded_ports() = moved.forwarded_ports();
  on_b.mutable_forwarded_ports(0)->clear_public_address();
  on_b.mutable_forwarded_ports(0)->clear_public_port();
  f.core->OnHeartbeat(With(Beat("b", 1000), {on_b}));
  CHECK(Public(f.Get(id)) == std::vector<std::string>{"80 relay.example.org:30000"});
  CHECK(Routes(*f.core) == std::vector<std::string>{absl::StrCat("tcp/30000 ", id, " 10.8.0.3:21007")});
}

TEST_CASE("a destroyed VM's relay ports are freed and handed out again only after the others", "[fleet][relay]") {
  CoreFixture f(Relay(30000, 30002));
  f.Nodes({Beat("a", 4000)});
  auto one = f.core->CreateVm("acme", Web("one"), "");
  REQUIRE(one.ok());
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, one->vm.vm_id(), Actor::Tenant()).ok());
  CHECK(f.Get(one->vm.vm_id()).forwarded_ports_size() == 0);
  CHECK(Routes(*f.core).empty());
  auto two = f.core->CreateVm("acme", Web("two"), "");
  auto three = f.core->CreateVm("acme", Web("three"), "");
  auto four = f.core->CreateVm("acme", Web("four"), "");
  REQUIRE(two.ok());
  REQUIRE(three.ok());
  REQUIRE(four.ok());
  CHECK(two->vm.forwarded_ports(0).public_port() == 30001);
  CHECK(three->vm.forwarded_ports(0).public_port() == 30002);
  CHECK(four->vm.forwarded_ports(0).public_port() == 30000);  // one's, last
}

TEST_CASE("a create the relay has no port for is RESOURCE_EXHAUSTED and leaves nothing", "[fleet][relay]") {
  CoreFixture f(Relay(30000, 30001));
  f.Nodes({Beat("a", 4000)});
  ppn::types::v1::VmSpec three = Web("three", /*udp=*/true);
  three.add_port_forwards()->set_guest_port(443);
  auto refused = f.core->CreateVm("acme", three, "");
  CHECK(refused.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("the relay has no port left for 1 of the VM's port forwards") == 0);
  CHECK(f.core->ListVms(Scope{}, {})->vms_size() == 0);
  CHECK(f.agents.calls().empty());  // no node was asked
  CHECK(f.Reserved("a") == 0);

  auto two = f.core->CreateVm("acme", Web("two", /*udp=*/true), "");
  REQUIRE(two.ok());
  CHECK(f.core->CreateVm("acme", Web("more"), "").status().code() == absl::StatusCode::kResourceExhausted);
  REQUIRE(f.core->DestroyVm(Scope{"acme"}, two->vm.vm_id(), Actor::Tenant()).ok());
  CHECK(f.core->CreateVm("acme", Web("more"), "").ok());
}

TEST_CASE("relay ports survive a fleet restart and new ones continue after them", "[fleet][relay][crash]") {
  CoreFixture f(Relay(30000, 30009));
  f.Nodes({Beat("a", 4000)});
  auto web = f.core->CreateVm("acme", Web("web", /*udp=*/true), "");
  REQUIRE(web.ok());
  f.Open();  // a restart on the same store
  f.Nodes({With(Beat("a", 4000), f.agents.Instances("a"))});
  CHECK(Public(f.Get(web->vm.vm_id())) == Public(web->vm));
  auto db = f.core->CreateVm("acme", Web("db"), "");
  REQUIRE(db.ok());
  CHECK(Public(db->vm) == std::vector<std::string>{"80 relay.example.org:30002"});
}

TEST_CASE("turning the relay on gives existing VMs ports and a new range replaces those outside it", "[fleet][relay]") {
  CoreFixture f;  // no relay
  f.Nodes({Beat("a", 4000)});
  auto web = f.core->CreateVm("acme", Web("web"), "");
  REQUIRE(web.ok());
  CHECK(Public(web->vm) == std::vector<std::string>{"80 :0"});
  CHECK(f.core->RelayRoutes().status().code() == absl::StatusCode::kFailedPrecondition);

  f.options = Relay(30000, 30009);
  f.Open();
  CHECK(Public(f.Get(web->vm.vm_id())) == std::vector<std::string>{"80 relay.example.org:30000"});
  f.options = Relay(31000, 31009, "203.0.113.7");
  f.Open();
  CHECK(Public(f.Get(web->vm.vm_id())) == std::vector<std::string>{"80 203.0.113.7:31000"});
  f.Open();  // and it stays
  CHECK(Public(f.Get(web->vm.vm_id())) == std::vector<std::string>{"80 203.0.113.7:31000"});
}

TEST_CASE("a route leads to its node only while the VM may be serving there", "[fleet][relay]") {
  CoreFixture f(Relay(30000, 30009));
  f.Nodes({Beat("a", 4000)});
  auto web = f.core->CreateVm("acme", Web("web"), "");
  REQUIRE(web.ok());
  std::string id = web->vm.vm_id();
  std::string to_a = absl::StrCat("tcp/30000 ", id, " 127.0.0.1:", web->vm.forwarded_ports(0).host_port());

  SECTION("its node goes silent: UNKNOWN, and the relay keeps trying it") {
    f.clock.Advance(absl::Seconds(4));
    f.core->RunOnce();
    REQUIRE(f.Get(id).state() == ppn::types::v1::VM_STATE_UNKNOWN);
    CHECK(Routes(*f.core) == std::vector<std::string>{to_a});
  }
  SECTION("its node no longer reports it: LOST, and the node's port may be another VM's") {
    f.clock.Advance(absl::Seconds(4));  // past the start-up grace
    f.core->OnHeartbeat(Beat("a", 4000));
    REQUIRE(f.Get(id).state() == ppn::types::v1::VM_STATE_LOST);
    CHECK(Routes(*f.core) == std::vector<std::string>{absl::StrCat("tcp/30000 ", id, " :0")});
    CHECK(Public(f.Get(id)) == std::vector<std::string>{"80 relay.example.org:30000"});  // still its own
  }
  SECTION("it is destroyed: no route") {
    REQUIRE(f.core->DestroyVm(Scope{"acme"}, id, Actor::Tenant()).ok());
    CHECK(Routes(*f.core).empty());
  }
}

}  // namespace
}  // namespace ppn::fleet

namespace ppn::fleet {
namespace {

TEST_CASE("the relay forwards only to the VM's own node, whatever a record names", "[fleet][relay][security]") {
  CoreFixture f(Relay(30000, 30009));
  f.core->AddNode("c", "10.8.0.4:7110");
  f.core->OnHeartbeat(Beat("c", 4000));
  auto web = f.core->CreateVm("acme", Web("web"), "");
  REQUIRE(web.ok());
  REQUIRE(web->vm.node_id() == "c");
  std::string id = web->vm.vm_id();
  // The agent's own report: its mesh address.
  ppn::host::v1::VmInstance on_c = testing::Running(id, "acme");
  auto* port = on_c.add_forwarded_ports();
  port->set_guest_port(80);
  port->set_host_address("10.8.0.4");
  port->set_host_port(21001);
  f.core->OnHeartbeat(With(Beat("c", 4000), {on_c}));
  CHECK(Routes(*f.core) == std::vector<std::string>{absl::StrCat("tcp/30000 ", id, " 10.8.0.4:21001")});
  // A stolen certificate's heartbeat (or RecordMigration) naming the founding node's loopback.
  port->set_host_address("127.0.0.1");
  port->set_host_port(7101);
  f.core->OnHeartbeat(With(Beat("c", 4000), {on_c}));
  CHECK(Routes(*f.core) == std::vector<std::string>{absl::StrCat("tcp/30000 ", id, " :0")});
}

}  // namespace
}  // namespace ppn::fleet
