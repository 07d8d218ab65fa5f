#pragma once

// The files of one VM on this node, all in STATE/vms/<id>/: the copy-on-write qcow2 overlay
// on its catalog image, the NoCloud first-boot seed, the QMP socket, the serial console and
// QEMU's own log. Nothing else in the agent builds these paths or writes these files.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/process.h"
#include "host_agent/image_catalog.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::host {

// Paths inside a VM directory.
std::string DiskPath(const std::string& vm_dir);
std::string SeedPath(const std::string& vm_dir);
std::string QmpSocketPath(const std::string& vm_dir);
std::string ConsoleLogPath(const std::string& vm_dir);
std::string QemuLogPath(const std::string& vm_dir);
std::string IdentitySocketPath(const std::string& vm_dir);

// The files of a NoCloud seed. `vendor_data` is empty unless the spec has both user_data and
// ssh keys: then the keys go there as a #cloud-config, so that neither is dropped.
struct SeedFiles {
  std::string meta_data;
  std::string user_data;  // SECRET: the tenant's user_data when given
  std::string vendor_data;
};
SeedFiles BuildSeed(const std::string& vm_id, const ppn::types::v1::VmSpec& spec);

// VmFiles makes and removes VM directories under `vms_dir`. Thread-safe. `*spawner` (for
// qemu-img and genisoimage) must outlive it.
class VmFiles {
 public:
  // `owner`: the user QEMU drops to, who must be able to use the files; unset to keep ours.
  VmFiles(ProcessSpawner* spawner, std::string vms_dir, std::optional<RunAs> owner);

  const std::string& vms_dir() const { return vms_dir_; }
  std::string Dir(const std::string& vm_id) const { return vms_dir_ + "/" + vm_id; }

  // A fresh directory for `vm_id` with the overlay (virtual size spec.disk_gib, or the
  // image's when 0) and the seed ISO, handed to the owner. FAILED_PRECONDITION when qemu-img
  // or genisoimage refuse (with their words), PERMISSION_DENIED when the files cannot be
  // handed over, INTERNAL otherwise. On error nothing is left.
  // `network_config`: the seed's network-config file (private networks); empty for none.
  absl::Status Create(const std::string& vm_id, const Image& image, const ppn::types::v1::VmSpec& spec,
                      const std::string& network_config = "");
  // A fresh directory for a clone of a template: the overlay on the template's disk
  // `template_disk` (which must stay unchanged while any clone uses it), no seed (the clone
  // uses its template's and gets its identity over the identity channel). Errors as Create.
  absl::Status CreateClone(const std::string& vm_id, const std::string& template_disk);
  // Makes the seed ISO of an existing VM directory if it has none (a template's clone);
  // errors as Create (NOT_FOUND if the directory or its overlay is gone).
  absl::Status EnsureSeed(const std::string& vm_id, const ppn::types::v1::VmSpec& spec,
                          const std::string& network_config);
  // Removes the VM's directory and everything in it; a missing one is fine.
  void Remove(const std::string& vm_id);
  // Ids that have a directory.
  std::vector<std::string> ListVmIds() const;

  // What the VM's overlay may grow to, in bytes: disk_gib, or the image's virtual size
  // (asked of qemu-img once per image). FAILED_PRECONDITION if qemu-img cannot tell.
  absl::StatusOr<uint64_t> DiskVirtualBytes(const Image& image, const ppn::types::v1::VmSpec& spec);
  // What the VM's overlay occupies on disk now, in bytes (0 when it has none).
  uint64_t DiskAllocatedBytes(const std::string& vm_id) const;

 private:
  absl::Status WriteSeed(const std::string& vm_id, const ppn::types::v1::VmSpec& spec,
                         const std::string& network_config);

  ProcessSpawner* const spawner_;
  const std::string vms_dir_;
  const std::optional<RunAs> owner_;
  absl::Mutex mu_;
  std::map<std::string, uint64_t> image_bytes_ ABSL_GUARDED_BY(mu_);  // base image path → virtual size
};

}  // namespace ppn::host
