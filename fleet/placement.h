#pragma once

// Placement policy: which node gets a VM. A pure library owned by the fleet, the one placement
// authority: it places new VMs with it, and the scheduler asks the fleet (ExplainPlacement)
// for migration and rebalance targets. Every decision explains itself.
//
// The rule (the seeds' June 2026 scenario): only nodes that are alive, trusted (not revoked),
// not cordoned, not excluded, allowed by a pin, KVM-capable when KVM is required, offering the image, and
// with room: available memory + credit for reclaimed memory − memory reserved for creates in
// flight ≥ the request (ReclaimedCreditMib: balloons of idle guests took some of their memory
// back; three quarters of it counts), and the
// same for disk (each overlay can grow to its whole virtual size, so a VM needs its disk_gib,
// or kDefaultDiskMib when it asks for the image's own size). A node that does not report its
// disk or its images (an older agent) is not refused for them. Among the nodes that fit,
// prefer KVM, then the most free memory, then the node id (so equal nodes rank the same way
// every time).

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ppn/types/v1/types.pb.h"

namespace ppn::fleet {

// What a VM whose disk_gib is 0 (the image's own size) is counted as on a node's disk.
inline constexpr uint64_t kDefaultDiskMib = 2048;

// The disk a VM of `spec` needs on its node, in MiB.
uint64_t DiskNeedMib(const ppn::types::v1::VmSpec& spec);

struct NodeView {
  std::string node_id;
  bool alive = false;
  bool revoked = false;
  bool cordoned = false;       // by an operator or a drain: nothing new lands there
  uint64_t available_mib = 0;  // after the node's safety margin and its running VMs
  uint64_t reclaimed_mib = 0;  // taken back from idle guests by their balloons
  uint64_t reserved_mib = 0;   // held by creates in flight
  ppn::types::v1::KvmSupport kvm = ppn::types::v1::KVM_SUPPORT_NONE;
  bool disk_known = false;          // the node reports its disk
  uint64_t disk_available_mib = 0;  // after what its VMs' overlays may still grow into
  uint64_t disk_reserved_mib = 0;   // held by creates in flight
  bool catalog_known = false;       // the node reports its images
  std::vector<std::string> images;  // sorted
};

struct PlacementRequest {
  uint64_t memory_mib = 0;
  bool require_kvm = false;
  std::string pinned_node_id;  // non-empty: only this node
  std::set<std::string> excluded_node_ids;
  uint64_t disk_mib = 0;
  std::string image;  // empty: any node
};

// Why nothing was chosen, as the tenant may be told (trailing metadata `ppn-shortage`).
enum class Shortage {
  kNone,
  kMemory,  // some node could take the VM but none has the memory
  kDisk,    // a node has the memory but none with it has the disk
  kNodes,   // no node could take the VM whatever its room (none alive, none offers the image, ...)
};
const char* ShortageName(Shortage shortage);  // "memory", "disk", "nodes" ("" for kNone)

struct Verdict {
  std::string node_id;
  bool eligible = false;
  std::string reason;
};

struct Decision {
  std::string chosen_node_id;           // empty when no node can take the VM
  std::vector<Verdict> verdicts;        // one per node, the winner first, then by rank
  Shortage shortage = Shortage::kNone;  // set when nothing was chosen
  // "no node can take a VM of N MiB: a: ..., b: ..." when nothing was chosen.
  std::string Explain() const;
};

// How much of the memory balloons took back counts as free: three quarters, so that guests
// taking some of it back before the next heartbeat do not overcommit the node past its safety
// margin. The host agent admits creates by the same rule (host_agent/balloon_controller.h).
inline uint64_t ReclaimedCreditMib(uint64_t reclaimed_mib) { return reclaimed_mib / 4 * 3; }

// Memory a new VM may have on `node`: available plus the reclaimed credit, minus reservations.
uint64_t FreeMemoryMib(const NodeView& node);

// Simulated KVM counts as KVM for placement: that is what simulation is for.
bool HasKvm(ppn::types::v1::KvmSupport kvm);

// True if `node` can take `request` now (every rule above but the ranking).
bool Fits(const NodeView& node, const PlacementRequest& request);

// With `explain` false only the winner's verdict is filled (the hot path: no per-node
// strings); when nothing fits, every node's reason is filled anyway.
Decision Place(const std::vector<NodeView>& nodes, const PlacementRequest& request, bool explain = true);

}  // namespace ppn::fleet
