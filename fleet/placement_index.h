#pragma once

// PlacementIndex keeps nodes ordered by placement rank (KVM first, then most free memory,
// then id), so choosing a node costs a short walk from the best end instead of a scan of the
// whole fleet (longer only past nodes short of disk or without the image). It answers exactly what Place(...,
// explain=false) would. Not thread-safe: the fleet guards it with its registry lock.

#include <map>
#include <set>
#include <string>
#include <tuple>

#include "fleet/placement.h"

namespace ppn::fleet {

class PlacementIndex {
 public:
  // Adds or replaces a node.
  void Upsert(const NodeView& node);
  void Remove(const std::string& node_id);
  // The node Place() would choose, or "" if none fits.
  std::string Best(const PlacementRequest& request) const;
  size_t size() const { return nodes_.size(); }

 private:
  // (no KVM, -free, id): ascending order is best first.
  using Key = std::tuple<bool, int64_t, std::string>;
  static Key KeyOf(const NodeView& n);
  std::set<Key> order_;
  std::map<std::string, NodeView> nodes_;
};

}  // namespace ppn::fleet
