#pragma once

// How much of this node's memory and disk is left for new VMs, and the refusals that say so.
// Pure arithmetic apart from ReadDiskSpace.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ppn::host {

// Size and free space (for unprivileged users) of the file system holding `path`, in bytes;
// zeros if it cannot be read.
struct DiskSpace {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};
DiskSpace ReadDiskSpace(const std::string& path);

// One VM's overlay: what it may grow to and what it holds now.
struct OverlayUse {
  uint64_t virtual_bytes = 0;
  uint64_t allocated_bytes = 0;
};

// MiB left for new disks: free space minus what the overlays of live VMs may still grow into.
// With `advertised_mib` (simulation) the node has that much disk, and never more than is free.
uint64_t DiskTotalMib(const DiskSpace& space, uint64_t advertised_mib);
uint64_t DiskAvailableMib(const DiskSpace& space, uint64_t advertised_mib, const std::vector<OverlayUse>& overlays);

// RESOURCE_EXHAUSTED naming the node and the numbers unless `need_mib` of memory fits.
absl::Status CheckMemoryRoom(const std::string& node_id, uint64_t total_mib, uint64_t safety_margin_mib,
                             uint64_t committed_mib, uint64_t need_mib);
// RESOURCE_EXHAUSTED unless a disk that may grow to `need_bytes` fits in `available_mib`.
absl::Status CheckDiskRoom(const std::string& node_id, uint64_t available_mib, uint64_t need_bytes);

}  // namespace ppn::host
