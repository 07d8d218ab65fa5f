#include "scheduler/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppn::scheduler {

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

Decision Place(const std::vector<NodeView>& nodes, const PlacementRequest& request) {
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
  std::sort(eligible.begin(), eligible.end(), [](const Candidate& a, const Candidate& b) {
    bool ka = HasKvm(a.node->kvm), kb = HasKvm(b.node->kvm);
    if (ka != kb) return ka;
    if (a.free_mib != b.free_mib) return a.free_mib > b.free_mib;
    return a.node->node_id < b.node->node_id;
  });
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

}  // namespace ppn::scheduler
