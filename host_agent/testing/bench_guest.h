#pragma once

// The benches' test guest: the built guest copied into a fresh, world-readable directory (QEMU
// runs as an unprivileged user that cannot read bazel-bin) and a catalog naming it.

#include <string>

#include "absl/status/statusor.h"
#include "host_agent/image_catalog.h"

namespace ppn::host::testing {

// Empties `dir`, copies `guest_dir`'s kernel, initramfs and base disk into it, writes
// dir/catalog.json naming the one image "ppn-test-guest" (booted with `append`) and loads it.
absl::StatusOr<ImageCatalog> StageTestGuest(const std::string& guest_dir, const std::string& dir,
                                            const std::string& append = "console=ttyS0 quiet");

}  // namespace ppn::host::testing
