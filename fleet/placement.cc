#include "fleet/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppn::fleet {

bool HasKvm(ppn::types::v1::KvmSupport kvm) {
  return kvm == ppn::types::v1::KVM_SUPPORT_AVAILABLE || kvm == ppn::types::v1::KVM_SUPPORT_SIMULATED;
}

std::string Decision::Explain() const {
  std::vector<std::string> parts;
  for (const Verdict& v : verdicts) parts.push_back(absl::StrCat(v.node_id, ": ", v.reason));
  if (!chosen_node_id.empty()) return absl::StrCat("placed on ", chosen_node_id, " (", absl::StrJoin(parts, "; "), ")");
  if (parts.empty()) return "no nodes are known";
  return absl::StrCat("no node can take the VM: ", absl::StrJoin(parts, "; "));
}

namespace {

// True if `a` ranks before `b`.
bool Better(const NodeView& a, uint64_t free_a, const NodeView& b, uint64_t free_b) {
  bool ka = HasKvm(a.kvm), kb = HasKvm(b.kvm);
  if (ka != kb) return ka;
  if (free_a != free_b) return free_a > free_b;
  return a.node_id < b.node_id;
}

// Cheap numeric tests first: this runs for every node on every placement.
bool Fits(const NodeView& n, uint64_t free, const PlacementRequest& r) {
  return free >= r.memory_mib && n.alive && !n.revoked && (!r.require_kvm || HasKvm(n.kvm)) &&
         (r.pinned_node_id.empty() || n.node_id == r.pinned_node_id) &&
         (r.excluded_node_ids.empty() || r.excluded_node_ids.count(n.node_id) == 0);
}

}  // namespace

Decision Place(const std::vector<NodeView>& nodes, const PlacementRequest& request, bool explain) {
  if (!explain) {
    const NodeView* best = nullptr;
    uint64_t best_free = 0;
    for (const NodeView& n : nodes) {
      uint64_t free = n.available_mib > n.reserved_mib ? n.available_mib - n.reserved_mib : 0;
      if (Fits(n, free, request) && (best == nullptr || Better(n, free, *best, best_free))) {
        best = &n;
        best_free = free;
      }
    }
    if (best != nullptr) {
      Decision d;
      d.chosen_node_id = best->node_id;
      d.verdicts.push_back(
          {best->node_id, true,
           absl::StrCat("chosen: ", HasKvm(best->kvm) ? "KVM, " : "no KVM, ", best_free, " MiB free")});
      return d;
    }
    // Nothing fits: say why for every node.
  }
  struct Candidate {
    const NodeView* node;
    uint64_t free_mib;
  };
  std::vector<Candidate> eligible;
  Decision decision;
  std::vector<Verdict> rejected;
  for (const NodeView& n : nodes) {
    uint64_t free = n.available_mib > n.reserved_mib ? n.available_mib - n.reserved_mib : 0;
    std::string why;
    if (request.excluded_node_ids.count(n.node_id) != 0) {
      why = "excluded";
    } else if (!request.pinned_node_id.empty() && n.node_id != request.pinned_node_id) {
      why = absl::StrCat("the VM is pinned to ", request.pinned_node_id);
    } else if (n.revoked) {
      why = "revoked in the ledger";
    } else if (!n.alive) {
      why = "not alive (no recent heartbeat)";
    } else if (request.require_kvm && !HasKvm(n.kvm)) {
      why = "no KVM";
    } else if (free < request.memory_mib) {
      why = absl::StrCat("only ", free, " MiB free (", n.available_mib, " available, ", n.reserved_mib,
                         " reserved), needs ", request.memory_mib);
    }
    if (!why.empty()) {
      rejected.push_back({n.node_id, false, why});
    } else {
      eligible.push_back({&n, free});
    }
  }
  std::sort(eligible.begin(), eligible.end(),
            [](const Candidate& a, const Candidate& b) { return Better(*a.node, a.free_mib, *b.node, b.free_mib); });
  for (size_t i = 0; i < eligible.size(); ++i) {
    const Candidate& c = eligible[i];
    decision.verdicts.push_back({c.node->node_id, true,
                                 absl::StrCat(i == 0 ? "chosen: " : absl::StrCat("rank ", i + 1, ": "),
                                              HasKvm(c.node->kvm) ? "KVM, " : "no KVM, ", c.free_mib, " MiB free")});
  }
  if (!eligible.empty()) decision.chosen_node_id = eligible[0].node->node_id;
  decision.verdicts.insert(decision.verdicts.end(), rejected.begin(), rejected.end());
  return decision;
}

}  // namespace ppn::fleet
