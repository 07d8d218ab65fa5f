#include "host_agent/node_capacity.h"

#include <sys/statvfs.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ppn::host {
namespace {

constexpr uint64_t kMib = uint64_t{1} << 20;

uint64_t CeilMib(uint64_t bytes) { return (bytes + kMib - 1) / kMib; }

}  // namespace

DiskSpace ReadDiskSpace(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return {};
  return {static_cast<uint64_t>(st.f_blocks) * st.f_frsize, static_cast<uint64_t>(st.f_bavail) * st.f_frsize};
}

uint64_t DiskTotalMib(const DiskSpace& space, uint64_t advertised_mib) {
  return advertised_mib != 0 ? advertised_mib : space.total_bytes / kMib;
}

uint64_t DiskAvailableMib(const DiskSpace& space, uint64_t advertised_mib, const std::vector<OverlayUse>& overlays) {
  uint64_t growth = 0, allocated = 0;
  for (const OverlayUse& o : overlays) {
    growth += o.virtual_bytes > o.allocated_bytes ? o.virtual_bytes - o.allocated_bytes : 0;
    allocated += o.allocated_bytes;
  }
  uint64_t free = space.free_bytes;
  if (advertised_mib != 0) {
    uint64_t advertised = advertised_mib * kMib;
    free = std::min(free, advertised > allocated ? advertised - allocated : 0);
  }
  return free > growth ? (free - growth) / kMib : 0;
}

absl::Status CheckMemoryRoom(const std::string& node_id, uint64_t total_mib, uint64_t safety_margin_mib,
                             uint64_t committed_mib, uint64_t need_mib) {
  uint64_t reserved = safety_margin_mib + committed_mib;
  uint64_t available = total_mib > reserved ? total_mib - reserved : 0;
  if (need_mib <= available) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat("node ", node_id, " has ", available, " MiB available for VMs (",
                                                   total_mib, " MiB total, ", safety_margin_mib, " MiB safety margin, ",
                                                   committed_mib, " MiB in use); the VM needs ", need_mib, " MiB"));
}

absl::Status CheckDiskRoom(const std::string& node_id, uint64_t available_mib, uint64_t need_bytes) {
  uint64_t need_mib = CeilMib(need_bytes);
  if (need_mib <= available_mib) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat("node ", node_id, " has ", available_mib,
                                                   " MiB of disk available for VMs; the VM's disk needs ", need_mib,
                                                   " MiB"));
}

}  // namespace ppn::host
