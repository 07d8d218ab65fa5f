#pragma once

// A tenant's quota: what its VMs use (summed from the fleet's records of them) and whether
// one more VM fits within its limits, with the words a tenant sees when it does not.
// Pure C++ (protobuf messages as data only); stateless.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::proxy {

// The disk a VM with `disk_gib` 0 counts for: its root disk is the image's own, which is
// small, rounded up to a whole GiB.
inline constexpr uint32_t kImageOnlyDiskGib = 1;

// The GiB of disk `spec` counts for against `max_disk_gib`.
uint32_t CountedDiskGib(const ppn::types::v1::VmSpec& spec);

// What `vms` (one tenant's records, as the fleet lists them) consume. DESTROYED records, if
// any are passed, and LOST ones (their host no longer runs them) count for nothing; a STOPPED
// one counts as a VM and for its disk, not for vCPUs or memory in use.
ppn::tenancy::v1::Usage UsageOf(const std::vector<ppn::fleet::v1::VmRecord>& vms);

// OK if a VM with `spec` fits beside `usage` within `limits`. Otherwise RESOURCE_EXHAUSTED
// naming the first limit it would exceed, checked in this order:
//   "VM quota of 5 reached"
//   "vCPU quota of 16 would be exceeded (15 in use)"
//   "memory quota of 8192 MiB would be exceeded (8000 in use)"
//   "disk quota of 100 GiB would be exceeded (90 in use)"
// `max_vms`, `max_vcpus` and `max_memory_mib` 0 allow none; `max_disk_gib` 0 is no limit.
// Validate `spec` first (common/vm_spec.h): this only does the arithmetic.
absl::Status CheckQuota(const ppn::tenancy::v1::Limits& limits, const ppn::tenancy::v1::Usage& usage,
                        const ppn::types::v1::VmSpec& spec);

// The record in `vms` created with `request_id`, or nullptr (always for an empty id): a
// create that names it is a retry, which the fleet answers with that VM.
// Whether a STOPPED VM of `spec` may start again: it already counts as a VM and for its disk,
// so only vCPUs and memory in use are checked. RESOURCE_EXHAUSTED as CheckQuota words it.
absl::Status CheckStartQuota(const ppn::tenancy::v1::Limits& limits, const ppn::tenancy::v1::Usage& usage,
                             const ppn::types::v1::VmSpec& spec);

const ppn::fleet::v1::VmRecord* FindByRequestId(const std::vector<ppn::fleet::v1::VmRecord>& vms,
                                                absl::string_view request_id);

}  // namespace ppn::proxy
