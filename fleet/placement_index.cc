#include "fleet/placement_index.h"

#include <limits>
#include <vector>

namespace ppn::fleet {
PlacementIndex::Key PlacementIndex::KeyOf(const NodeView& n) {
  return Key(!HasKvm(n.kvm), -static_cast<int64_t>(FreeMemoryMib(n)), n.node_id);
}

void PlacementIndex::Upsert(const NodeView& node) {
  Remove(node.node_id);
  nodes_[node.node_id] = node;
  order_.insert(KeyOf(node));
}

void PlacementIndex::Remove(const std::string& node_id) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  order_.erase(KeyOf(it->second));
  nodes_.erase(it);
}

std::string PlacementIndex::Best(const PlacementRequest& r) const {
  if (!r.pinned_node_id.empty()) {
    // One candidate: no walk needed.
    auto it = nodes_.find(r.pinned_node_id);
    if (it == nodes_.end()) return "";
    std::vector<NodeView> one = {it->second};
    return Place(one, r, /*explain=*/false).chosen_node_id;
  }
  for (auto it = order_.begin(); it != order_.end(); ++it) {
    bool no_kvm = std::get<0>(*it);
    uint64_t free = static_cast<uint64_t>(-std::get<1>(*it));
    if (r.require_kvm && no_kvm) break;  // the rest have no KVM either
    if (free < r.memory_mib) {
      // Everything after this in the same KVM group has less room: jump to the other group.
      if (no_kvm) break;
      it = order_.lower_bound(Key(true, std::numeric_limits<int64_t>::min(), ""));
      if (it == order_.end()) break;
      --it;  // the loop's ++ lands on the first node without KVM
      continue;
    }
    const NodeView& n = nodes_.at(std::get<2>(*it));
    if (Fits(n, r)) return n.node_id;  // also disk, image, liveness and exclusions
  }
  return "";
}

}  // namespace ppn::fleet
