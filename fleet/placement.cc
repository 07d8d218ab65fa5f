#include "fleet/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppn::fleet {

bool HasKvm(ppn::types::v1::KvmSupport kvm) {
  return kvm == ppn::types::v1::KVM_SUPPORT_AVAILABLE || kvm == ppn::types::v1::KVM_SUPPORT_SIMULATED;
}

uint64_t DiskNeedMib(const ppn::types::v1::VmSpec& spec) {
  return spec.disk_gib() == 0 ? kDefaultDiskMib : uint64_t{spec.disk_gib()} * 1024;
}

const char* ShortageName(Shortage shortage) {
  switch (shortage) {
    case Shortage::kMemory: return "memory";
    case Shortage::kDisk: return "disk";
    case Shortage::kNodes: return "nodes";
    case Shortage::kNone: break;
  }
  return "";
}

std::string Decision::Explain() const {
  std::vector<std::string> parts;
  for (const Verdict& v : verdicts) parts.push_back(absl::StrCat(v.node_id, ": ", v.reason));
  if (!chosen_node_id.empty()) return absl::StrCat("placed on ", chosen_node_id, " (", absl::StrJoin(parts, "; "), ")");
  if (parts.empty()) return "no nodes are known";
  return absl::StrCat("no node can take the VM: ", absl::StrJoin(parts, "; "));
}

uint64_t FreeMemoryMib(const NodeView& n) {
  uint64_t room = n.available_mib + ReclaimedCreditMib(n.reclaimed_mib);
  return room > n.reserved_mib ? room - n.reserved_mib : 0;
}

namespace {

uint64_t FreeMemory(const NodeView& n) { return FreeMemoryMib(n); }

uint64_t FreeDisk(const NodeView& n) {
  return n.disk_available_mib > n.disk_reserved_mib ? n.disk_available_mib - n.disk_reserved_mib : 0;
}

bool Offers(const NodeView& n, const std::string& image) {
  return image.empty() || !n.catalog_known || std::binary_search(n.images.begin(), n.images.end(), image);
}

bool DiskFits(const NodeView& n, const PlacementRequest& r) { return !n.disk_known || FreeDisk(n) >= r.disk_mib; }

// True if `a` ranks before `b`.
bool Better(const NodeView& a, uint64_t free_a, const NodeView& b, uint64_t free_b) {
  bool ka = HasKvm(a.kvm), kb = HasKvm(b.kvm);
  if (ka != kb) return ka;
  if (free_a != free_b) return free_a > free_b;
  return a.node_id < b.node_id;
}

// Why `n` cannot take `r` whatever its room; empty if it could.
std::string Unsuitable(const NodeView& n, const PlacementRequest& r) {
  if (r.excluded_node_ids.count(n.node_id) != 0) return "excluded";
  if (!r.pinned_node_id.empty() && n.node_id != r.pinned_node_id) {
    return absl::StrCat("the VM is pinned to ", r.pinned_node_id);
  }
  if (n.revoked) return "revoked in the ledger";
  if (n.cordoned) return "cordoned";
  if (!n.alive) return "not alive (no recent heartbeat)";
  if (r.require_kvm && !HasKvm(n.kvm)) return "no KVM";
  if (!Offers(n, r.image)) return absl::StrCat("does not offer image ", r.image);
  return "";
}

}  // namespace

bool Fits(const NodeView& n, const PlacementRequest& r) {
  // Cheap numeric tests first: this runs for every node the hot path looks at.
  return FreeMemory(n) >= r.memory_mib && DiskFits(n, r) && n.alive && !n.revoked && !n.cordoned &&
         (!r.require_kvm || HasKvm(n.kvm)) && (r.pinned_node_id.empty() || n.node_id == r.pinned_node_id) &&
         (r.excluded_node_ids.empty() || r.excluded_node_ids.count(n.node_id) == 0) && Offers(n, r.image);
}

Decision Place(const std::vector<NodeView>& nodes, const PlacementRequest& request, bool explain) {
  if (!explain) {
    const NodeView* best = nullptr;
    uint64_t best_free = 0;
    for (const NodeView& n : nodes) {
      uint64_t free = FreeMemory(n);
      if (Fits(n, request) && (best == nullptr || Better(n, free, *best, best_free))) {
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
  bool suitable = false;         // some node could take it with more room
  bool memory_suffices = false;  // ... and one of those has the memory
  for (const NodeView& n : nodes) {
    uint64_t free = FreeMemory(n);
    std::string why = Unsuitable(n, request);
    if (why.empty()) {
      suitable = true;
      if (free < request.memory_mib) {
        why = absl::StrCat("only ", free, " MiB free (", n.available_mib, " available, ",
                           n.reclaimed_mib > 0 ? absl::StrCat(n.reclaimed_mib, " reclaimed, ") : "", n.reserved_mib,
                           " reserved), needs ", request.memory_mib);
      } else if (!DiskFits(n, request)) {
        memory_suffices = true;
        why = absl::StrCat("only ", FreeDisk(n), " MiB of disk free (", n.disk_available_mib, " available, ",
                           n.disk_reserved_mib, " reserved), needs ", request.disk_mib);
      }
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
  if (!eligible.empty()) {
    decision.chosen_node_id = eligible[0].node->node_id;
  } else {
    decision.shortage = !suitable ? Shortage::kNodes : memory_suffices ? Shortage::kDisk : Shortage::kMemory;
  }
  decision.verdicts.insert(decision.verdicts.end(), rejected.begin(), rejected.end());
  return decision;
}

}  // namespace ppn::fleet
