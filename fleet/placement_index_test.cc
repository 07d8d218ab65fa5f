#include "fleet/placement_index.h"

#include <random>

#include "catch2/catch.hpp"

namespace ppn::fleet {
namespace {

TEST_CASE("the placement index chooses exactly what a full scan chooses", "[fleet][placement]") {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 30; ++round) {
    std::vector<NodeView> nodes;
    PlacementIndex index;
    int n = 1 + static_cast<int>(rng() % 300);
    for (int i = 0; i < n; ++i) {
      NodeView v;
      v.node_id = "n" + std::to_string(i);
      v.alive = rng() % 10 != 0;
      v.revoked = rng() % 30 == 0;
      v.available_mib = rng() % 8192;
      v.reserved_mib = rng() % 4 == 0 ? rng() % 2048 : 0;
      v.kvm = rng() % 3 == 0
                  ? ppn::types::v1::KVM_SUPPORT_NONE
                  : (rng() % 2 ? ppn::types::v1::KVM_SUPPORT_AVAILABLE : ppn::types::v1::KVM_SUPPORT_SIMULATED);
      v.disk_known = rng() % 4 != 0;
      v.disk_available_mib = rng() % 20000;
      v.disk_reserved_mib = rng() % 4 == 0 ? rng() % 4096 : 0;
      v.catalog_known = rng() % 4 != 0;
      if (rng() % 2) v.images.push_back("alpine");
      if (rng() % 2) v.images.push_back("debian-12");
      nodes.push_back(v);
      index.Upsert(v);
    }
    // Updates, as heartbeats and reservations change nodes.
    for (int u = 0; u < n / 3; ++u) {
      NodeView& v = nodes[rng() % nodes.size()];
      v.available_mib = rng() % 8192;
      v.alive = rng() % 10 != 0;
      index.Upsert(v);
    }
    for (int q = 0; q < 50; ++q) {
      PlacementRequest r;
      r.memory_mib = rng() % 9000;
      r.require_kvm = rng() % 4 == 0;
      r.disk_mib = rng() % 3 == 0 ? rng() % 20000 : 2048;
      r.image = rng() % 3 == 0 ? "debian-12" : (rng() % 2 ? "alpine" : "");
      if (rng() % 5 == 0) r.excluded_node_ids.insert(nodes[rng() % nodes.size()].node_id);
      if (rng() % 10 == 0) r.pinned_node_id = nodes[rng() % nodes.size()].node_id;
      INFO("round " << round << " query " << q);
      CHECK(index.Best(r) == Place(nodes, r, false).chosen_node_id);
    }
  }
}

}  // namespace
}  // namespace ppn::fleet
