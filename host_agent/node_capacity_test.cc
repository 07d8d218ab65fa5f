#include "host_agent/node_capacity.h"

#include "catch2/catch.hpp"

namespace ppn::host {
namespace {

constexpr uint64_t kMib = uint64_t{1} << 20;

TEST_CASE("disk left for VMs is free space minus what live overlays may still grow into", "[host_agent][capacity]") {
  DiskSpace space{100000 * kMib, 50000 * kMib};
  CHECK(DiskTotalMib(space, 0) == 100000);
  CHECK(DiskAvailableMib(space, 0, {}) == 50000);
  // A 10 GiB overlay holding 1 GiB may take 9 GiB more.
  CHECK(DiskAvailableMib(space, 0, {{10240 * kMib, 1024 * kMib}}) == 50000 - 9216);
  CHECK(DiskAvailableMib(space, 0, {{40000 * kMib, 0}, {20000 * kMib, 0}}) == 0);  // never wraps
}

TEST_CASE("an advertised disk is what the node offers but never more than is free", "[host_agent][capacity]") {
  DiskSpace space{100000 * kMib, 50000 * kMib};
  CHECK(DiskTotalMib(space, 4096) == 4096);
  CHECK(DiskAvailableMib(space, 4096, {{1024 * kMib, 512 * kMib}}) == 4096 - 512 - 512);
  CHECK(DiskAvailableMib(DiskSpace{100000 * kMib, 1000 * kMib}, 4096, {}) == 1000);
}

TEST_CASE("a VM that does not fit is refused with the node's numbers", "[host_agent][capacity]") {
  CHECK(CheckMemoryRoom("laptop-b", 1024, 512, 384, 128).ok());
  absl::Status memory = CheckMemoryRoom("laptop-b", 1024, 512, 384, 192);
  CHECK(memory.code() == absl::StatusCode::kResourceExhausted);
  CHECK(memory.message() ==
        "node laptop-b has 128 MiB available for VMs (1024 MiB total, 512 MiB safety margin, 384 MiB in use); the "
        "VM needs 192 MiB");
  CHECK(CheckDiskRoom("laptop-b", 2048, 2048 * kMib).ok());
  absl::Status disk = CheckDiskRoom("laptop-b", 1000, (uint64_t{2} << 30) + 1);
  CHECK(disk.code() == absl::StatusCode::kResourceExhausted);
  CHECK(disk.message() == "node laptop-b has 1000 MiB of disk available for VMs; the VM's disk needs 2049 MiB");
}

TEST_CASE("the state directory's file system has a size", "[host_agent][capacity]") {
  DiskSpace space = ReadDiskSpace("/");
  CHECK(space.total_bytes > 0);
  CHECK(space.free_bytes <= space.total_bytes);
  CHECK(ReadDiskSpace("/nonexistent/dir").total_bytes == 0);
}

}  // namespace
}  // namespace ppn::host
