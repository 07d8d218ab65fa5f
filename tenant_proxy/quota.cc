#include "tenant_proxy/quota.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ppn::proxy {

uint32_t CountedDiskGib(const ppn::types::v1::VmSpec& spec) {
  return spec.disk_gib() == 0 ? kImageOnlyDiskGib : spec.disk_gib();
}

ppn::tenancy::v1::Usage UsageOf(const std::vector<ppn::fleet::v1::VmRecord>& vms) {
  // Sums in 64 bits: records come from the fleet, and a corrupt one must not wrap the total
  // below a limit.
  uint64_t count = 0, vcpus = 0, memory_mib = 0, disk_gib = 0;
  for (const auto& vm : vms) {
    // A LOST VM's host no longer runs it: the tenant does not pay for what it cannot have.
    if (vm.state() == ppn::types::v1::VM_STATE_DESTROYED || vm.state() == ppn::types::v1::VM_STATE_LOST) continue;
    ++count;
    disk_gib += CountedDiskGib(vm.spec());  // a stopped VM keeps its overlay
    if (vm.state() == ppn::types::v1::VM_STATE_STOPPED) continue;
    vcpus += vm.spec().vcpus();
    memory_mib += vm.spec().memory_mib();
  }
  auto clamp32 = [](uint64_t v) { return static_cast<uint32_t>(std::min<uint64_t>(v, UINT32_MAX)); };
  ppn::tenancy::v1::Usage usage;
  usage.set_vms(clamp32(count));
  usage.set_vcpus(clamp32(vcpus));
  usage.set_memory_mib(memory_mib);
  usage.set_disk_gib(clamp32(disk_gib));
  return usage;
}

absl::Status CheckQuota(const ppn::tenancy::v1::Limits& limits, const ppn::tenancy::v1::Usage& usage,
                        const ppn::types::v1::VmSpec& spec) {
  if (uint64_t{usage.vms()} + 1 > limits.max_vms()) {
    return absl::ResourceExhaustedError(absl::StrCat("VM quota of ", limits.max_vms(), " reached"));
  }
  PPN_RETURN_IF_ERROR(CheckStartQuota(limits, usage, spec));
  if (limits.max_disk_gib() != 0 && uint64_t{usage.disk_gib()} + CountedDiskGib(spec) > limits.max_disk_gib()) {
    return absl::ResourceExhaustedError(absl::StrCat("disk quota of ", limits.max_disk_gib(),
                                                     " GiB would be exceeded (", usage.disk_gib(), " in use)"));
  }
  return absl::OkStatus();
}

absl::Status CheckStartQuota(const ppn::tenancy::v1::Limits& limits, const ppn::tenancy::v1::Usage& usage,
                             const ppn::types::v1::VmSpec& spec) {
  if (uint64_t{usage.vcpus()} + spec.vcpus() > limits.max_vcpus()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("vCPU quota of ", limits.max_vcpus(), " would be exceeded (", usage.vcpus(), " in use)"));
  }
  // memory_mib is at most 2^20 after validation; usage is a sum of such values.
  if (usage.memory_mib() > limits.max_memory_mib() ||
      spec.memory_mib() > limits.max_memory_mib() - usage.memory_mib()) {
    return absl::ResourceExhaustedError(absl::StrCat("memory quota of ", limits.max_memory_mib(),
                                                     " MiB would be exceeded (", usage.memory_mib(), " in use)"));
  }
  return absl::OkStatus();
}

const ppn::fleet::v1::VmRecord* FindByRequestId(const std::vector<ppn::fleet::v1::VmRecord>& vms,
                                                absl::string_view request_id) {
  if (request_id.empty()) return nullptr;
  for (const auto& vm : vms) {
    if (vm.request_id() == request_id) return &vm;
  }
  return nullptr;
}

}  // namespace ppn::proxy
