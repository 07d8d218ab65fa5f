#include "tenant_proxy/quota.h"

#include "catch2/catch.hpp"

namespace ppn::proxy {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::tenancy::v1::Limits;
using ppn::tenancy::v1::Usage;
using ppn::types::v1::VmSpec;

VmSpec Spec(uint32_t vcpus, uint32_t memory_mib, uint32_t disk_gib = 0) {
  VmSpec spec;
  spec.set_vcpus(vcpus);
  spec.set_memory_mib(memory_mib);
  spec.set_disk_gib(disk_gib);
  return spec;
}

VmRecord Record(const VmSpec& spec, ppn::types::v1::VmState state = ppn::types::v1::VM_STATE_RUNNING,
                const std::string& request_id = "") {
  VmRecord r;
  *r.mutable_spec() = spec;
  r.set_state(state);
  r.set_request_id(request_id);
  return r;
}

Limits TheLimits(uint32_t vms, uint32_t vcpus, uint64_t memory_mib, uint32_t disk_gib = 0) {
  Limits l;
  l.set_max_vms(vms);
  l.set_max_vcpus(vcpus);
  l.set_max_memory_mib(memory_mib);
  l.set_max_disk_gib(disk_gib);
  return l;
}

TEST_CASE("usage sums every VM that is not destroyed and counts an image-only disk as 1 GiB", "[proxy][quota]") {
  std::vector<VmRecord> vms = {Record(Spec(2, 512, 10)), Record(Spec(1, 256)),
                               Record(Spec(8, 8192, 100), ppn::types::v1::VM_STATE_DESTROYED),
                               Record(Spec(1, 128, 3), ppn::types::v1::VM_STATE_PENDING)};
  Usage u = UsageOf(vms);
  CHECK(u.vms() == 3);
  CHECK(u.vcpus() == 4);
  CHECK(u.memory_mib() == 896);
  CHECK(u.disk_gib() == 10 + kImageOnlyDiskGib + 3);
  CHECK(UsageOf({}).vms() == 0);
}

TEST_CASE("a stopped VM counts as a VM and for its disk but not for vCPUs or memory in use", "[proxy][quota]") {
  Usage u = UsageOf({Record(Spec(2, 512, 10)), Record(Spec(4, 4096, 20), ppn::types::v1::VM_STATE_STOPPED)});
  CHECK(u.vms() == 2);
  CHECK(u.vcpus() == 2);
  CHECK(u.memory_mib() == 512);
  CHECK(u.disk_gib() == 30);
}

TEST_CASE("the quota check names the first limit a VM would exceed", "[proxy][quota]") {
  Usage used;
  used.set_vms(2);
  used.set_vcpus(15);
  used.set_memory_mib(8000);
  used.set_disk_gib(90);
  CHECK(CheckQuota(TheLimits(3, 16, 8192, 100), used, Spec(1, 192, 10)).ok());

  absl::Status s = CheckQuota(TheLimits(2, 16, 8192), used, Spec(1, 64));
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(s.message() == "VM quota of 2 reached");
  s = CheckQuota(TheLimits(3, 16, 8192), used, Spec(2, 64));
  CHECK(s.message() == "vCPU quota of 16 would be exceeded (15 in use)");
  s = CheckQuota(TheLimits(3, 16, 8192), used, Spec(1, 256));
  CHECK(s.message() == "memory quota of 8192 MiB would be exceeded (8000 in use)");
  s = CheckQuota(TheLimits(3, 16, 8192, 100), used, Spec(1, 64, 11));
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(s.message() == "disk quota of 100 GiB would be exceeded (90 in use)");
}

TEST_CASE("a disk limit of zero is no limit while zero VMs vCPUs or memory allow none", "[proxy][quota]") {
  Usage none;
  CHECK(CheckQuota(TheLimits(1, 1, 64, 0), none, Spec(1, 64, 4096)).ok());
  CHECK(CheckQuota(TheLimits(0, 1, 64), none, Spec(1, 64)).message() == "VM quota of 0 reached");
  CHECK(CheckQuota(TheLimits(1, 0, 64), none, Spec(1, 64)).message() == "vCPU quota of 0 would be exceeded (0 in use)");
  CHECK(CheckQuota(TheLimits(1, 1, 0), none, Spec(1, 64)).message() ==
        "memory quota of 0 MiB would be exceeded (0 in use)");
  SECTION("an image-only disk counts against a disk limit") {
    Usage used;
    used.set_disk_gib(10);
    CHECK(CheckQuota(TheLimits(5, 5, 1024, 10), used, Spec(1, 64, 0)).message() ==
          "disk quota of 10 GiB would be exceeded (10 in use)");
  }
}

TEST_CASE("usage reported above a limit never wraps into room", "[proxy][quota]") {
  Usage used;
  used.set_vms(UINT32_MAX);
  used.set_vcpus(UINT32_MAX);
  used.set_memory_mib(UINT64_MAX);
  used.set_disk_gib(UINT32_MAX);
  CHECK(!CheckQuota(TheLimits(UINT32_MAX, UINT32_MAX, UINT64_MAX, UINT32_MAX), used, Spec(1, 64)).ok());
  used.set_vms(0);
  CHECK(CheckQuota(TheLimits(1, UINT32_MAX, UINT64_MAX), used, Spec(1, 64)).message().find("vCPU") == 0);
  used.set_vcpus(0);
  CHECK(CheckQuota(TheLimits(1, 1, UINT64_MAX), used, Spec(1, 64)).message().find("memory") == 0);
}

TEST_CASE("a VM is found by the request id that created it and never by an empty one", "[proxy][quota]") {
  std::vector<VmRecord> vms = {Record(Spec(1, 64)), Record(Spec(1, 64), ppn::types::v1::VM_STATE_RUNNING, "r-1")};
  vms[0].set_vm_id("vm-a");
  vms[1].set_vm_id("vm-b");
  REQUIRE(FindByRequestId(vms, "r-1") != nullptr);
  CHECK(FindByRequestId(vms, "r-1")->vm_id() == "vm-b");
  CHECK(FindByRequestId(vms, "r-2") == nullptr);
  CHECK(FindByRequestId(vms, "") == nullptr);
}

}  // namespace
}  // namespace ppn::proxy
