#include "fleet/placement.h"

#include "catch2/catch.hpp"

namespace ppn::fleet {
namespace {

using ppn::types::v1::KVM_SUPPORT_AVAILABLE;
using ppn::types::v1::KVM_SUPPORT_NONE;
using ppn::types::v1::KVM_SUPPORT_SIMULATED;

NodeView Node(std::string id, uint64_t available, ppn::types::v1::KvmSupport kvm, bool alive = true) {
  NodeView n;
  n.node_id = std::move(id);
  n.alive = alive;
  n.available_mib = available;
  n.kvm = kvm;
  return n;
}

TEST_CASE("the June 2026 scenario lands on the laptop with KVM and the most free memory", "[fleet][placement]") {
  // The cloud node has the most memory but no KVM; the laptops have KVM.
  std::vector<NodeView> nodes = {Node("cloud", 8000, KVM_SUPPORT_NONE), Node("laptop-a", 3000, KVM_SUPPORT_AVAILABLE),
                                 Node("laptop-b", 5000, KVM_SUPPORT_AVAILABLE)};
  Decision d = Place(nodes, {512});
  CHECK(d.chosen_node_id == "laptop-b");
  REQUIRE(d.verdicts.size() == 3);
  CHECK(d.verdicts[0].reason == "chosen: KVM, 5000 MiB free");
  CHECK(d.verdicts[1].node_id == "laptop-a");
  CHECK(d.verdicts[2].node_id == "cloud");
  CHECK(d.verdicts[2].reason == "rank 3: no KVM, 8000 MiB free");
}

TEST_CASE("placement filters nodes and says why", "[fleet][placement]") {
  struct Row {
    const char* name;
    std::vector<NodeView> nodes;
    PlacementRequest request;
    std::string chosen;
    std::string reason_of_first_rejected;
  };
  NodeView reserved = Node("busy", 2000, KVM_SUPPORT_AVAILABLE);
  reserved.reserved_mib = 1800;
  NodeView revoked = Node("evicted", 9000, KVM_SUPPORT_AVAILABLE);
  revoked.revoked = true;
  std::vector<Row> rows = {
      {"dead node",
       {Node("down", 9000, KVM_SUPPORT_AVAILABLE, false), Node("up", 600, KVM_SUPPORT_NONE)},
       {512},
       "up",
       "not alive (no recent heartbeat)"},
      {"below the memory",
       {Node("small", 500, KVM_SUPPORT_AVAILABLE), Node("big", 700, KVM_SUPPORT_NONE)},
       {512},
       "big",
       "only 500 MiB free (500 available, 0 reserved), needs 512"},
      {"in-flight reservations count",
       {reserved, Node("idle", 600, KVM_SUPPORT_NONE)},
       {512},
       "idle",
       "only 200 MiB free (2000 available, 1800 reserved), needs 512"},
      {"revoked node", {revoked, Node("ok", 600, KVM_SUPPORT_NONE)}, {512}, "ok", "revoked in the ledger"},
      {"KVM required",
       {Node("tcg", 9000, KVM_SUPPORT_NONE), Node("sim", 600, KVM_SUPPORT_SIMULATED)},
       {512, true},
       "sim",
       "no KVM"},
      {"pinned",
       {Node("a", 9000, KVM_SUPPORT_AVAILABLE), Node("b", 600, KVM_SUPPORT_NONE)},
       {512, false, "b"},
       "b",
       "the VM is pinned to b"},
      {"excluded source",
       {Node("src", 9000, KVM_SUPPORT_AVAILABLE), Node("dst", 600, KVM_SUPPORT_NONE)},
       {512, false, "", {"src"}},
       "dst",
       "excluded"},
      {"nothing fits",
       {Node("a", 100, KVM_SUPPORT_AVAILABLE)},
       {512},
       "",
       "only 100 MiB free (100 available, 0 reserved), needs 512"},
  };
  for (const Row& row : rows) {
    INFO(row.name);
    // The fast path chooses exactly what the explained one does.
    CHECK(Place(row.nodes, row.request, /*explain=*/false).chosen_node_id == row.chosen);
    Decision d = Place(row.nodes, row.request);
    CHECK(d.chosen_node_id == row.chosen);
    const Verdict* first_rejected = nullptr;
    for (const Verdict& v : d.verdicts) {
      if (!v.eligible) {
        first_rejected = &v;
        break;
      }
    }
    REQUIRE(first_rejected != nullptr);
    CHECK(first_rejected->reason == row.reason_of_first_rejected);
  }
}

TEST_CASE("equal nodes rank by id so decisions are repeatable", "[fleet][placement]") {
  std::vector<NodeView> nodes = {Node("n2", 1000, KVM_SUPPORT_NONE), Node("n1", 1000, KVM_SUPPORT_NONE)};
  CHECK(Place(nodes, {100}).chosen_node_id == "n1");
  CHECK(Place({}, {100}).Explain() == "no nodes are known");
}

NodeView WithDisk(NodeView n, uint64_t disk_available, uint64_t disk_reserved = 0) {
  n.disk_known = true;
  n.disk_available_mib = disk_available;
  n.disk_reserved_mib = disk_reserved;
  return n;
}

NodeView Offering(NodeView n, std::vector<std::string> images) {
  n.catalog_known = true;
  n.images = std::move(images);
  return n;
}

TEST_CASE("placement counts disk and says so when no node has room for the disk", "[fleet][placement]") {
  PlacementRequest r{512};
  r.disk_mib = 10240;
  std::vector<NodeView> nodes = {WithDisk(Node("full", 9000, KVM_SUPPORT_AVAILABLE), 4096),
                                 WithDisk(Node("busy", 9000, KVM_SUPPORT_NONE), 12000, 4000),
                                 WithDisk(Node("roomy", 1000, KVM_SUPPORT_NONE), 50000)};
  Decision d = Place(nodes, r);
  CHECK(d.chosen_node_id == "roomy");
  CHECK(Place(nodes, r, /*explain=*/false).chosen_node_id == "roomy");
  REQUIRE(d.verdicts.size() == 3);
  CHECK(d.verdicts[1].reason == "only 4096 MiB of disk free (4096 available, 0 reserved), needs 10240");
  CHECK(d.verdicts[2].reason == "only 8000 MiB of disk free (12000 available, 4000 reserved), needs 10240");

  SECTION("memory on a node without the disk is a disk shortage") {
    nodes.pop_back();
    Decision none = Place(nodes, r, /*explain=*/false);
    CHECK(none.chosen_node_id.empty());
    CHECK(none.shortage == Shortage::kDisk);
    CHECK(std::string(ShortageName(none.shortage)) == "disk");
  }
  SECTION("no node with the memory is a memory shortage") {
    r.memory_mib = 20000;
    CHECK(Place(nodes, r).shortage == Shortage::kMemory);
  }
  SECTION("a node that does not report its disk is not refused for it") {
    CHECK(Place({Node("old-agent", 9000, KVM_SUPPORT_NONE)}, r).chosen_node_id == "old-agent");
  }
  SECTION("a VM of the image's own size counts as the default disk") {
    ppn::types::v1::VmSpec spec;
    CHECK(DiskNeedMib(spec) == kDefaultDiskMib);
    spec.set_disk_gib(4096);
    CHECK(DiskNeedMib(spec) == 4096ull * 1024);
  }
}

TEST_CASE("placement only chooses nodes that offer the image", "[fleet][placement]") {
  PlacementRequest r{512};
  r.image = "debian-12";
  std::vector<NodeView> nodes = {Offering(Node("big", 9000, KVM_SUPPORT_AVAILABLE), {"alpine"}),
                                 Offering(Node("small", 600, KVM_SUPPORT_NONE), {"alpine", "debian-12"})};
  Decision d = Place(nodes, r);
  CHECK(d.chosen_node_id == "small");
  CHECK(Place(nodes, r, /*explain=*/false).chosen_node_id == "small");
  CHECK(d.verdicts[1].reason == "does not offer image debian-12");
  nodes.pop_back();
  Decision none = Place(nodes, r);
  CHECK(none.chosen_node_id.empty());
  CHECK(none.shortage == Shortage::kNodes);
  CHECK(Place({}, r).shortage == Shortage::kNodes);
  CHECK(Place({Node("dead", 9000, KVM_SUPPORT_NONE, false)}, r).shortage == Shortage::kNodes);
}

}  // namespace
}  // namespace ppn::fleet

namespace ppn::fleet {
namespace {

TEST_CASE("placement counts three quarters of a node's reclaimed memory as free", "[fleet][placement][balloon]") {
  NodeView a;
  a.node_id = "a";
  a.alive = true;
  a.available_mib = 256;
  a.reclaimed_mib = 1024;  // idle guests' balloons took this back
  CHECK(FreeMemoryMib(a) == 256 + 768);
  Decision d = Place({a}, {1024});
  CHECK(d.chosen_node_id == "a");
  // The credit never counts in full: the guests may want some of it back at once.
  d = Place({a}, {1025});
  CHECK(d.chosen_node_id.empty());
  CHECK(d.verdicts[0].reason == "only 1024 MiB free (256 available, 1024 reclaimed, 0 reserved), needs 1025");
  // And it ranks: the node with more reclaimed memory has more room.
  NodeView b = a;
  b.node_id = "b";
  b.reclaimed_mib = 0;
  b.available_mib = 900;
  CHECK(Place({b, a}, {512}).chosen_node_id == "a");
}

}  // namespace
}  // namespace ppn::fleet
