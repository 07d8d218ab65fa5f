#include "host_agent/vm_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace ppn::host {
namespace {

constexpr absl::Duration kToolTimeout = absl::Minutes(2);

// A YAML double-quoted scalar.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c != '\n' && c != '\r') out.push_back(c);
  }
  return out + "\"";
}

std::string KeysConfig(const ppn::types::v1::VmSpec& spec) {
  std::string out = "#cloud-config\n";
  if (spec.ssh_authorized_keys_size() == 0) return out;
  out += "ssh_authorized_keys:\n";
  for (const auto& key : spec.ssh_authorized_keys()) out += "  - " + Quote(key) + "\n";
  return out;
}

}  // namespace

std::string DiskPath(const std::string& vm_dir) { return vm_dir + "/disk.qcow2"; }
std::string SeedPath(const std::string& vm_dir) { return vm_dir + "/seed.iso"; }
std::string QmpSocketPath(const std::string& vm_dir) { return vm_dir + "/qmp.sock"; }
std::string ConsoleLogPath(const std::string& vm_dir) { return vm_dir + "/console.log"; }
std::string QemuLogPath(const std::string& vm_dir) { return vm_dir + "/qemu.log"; }
std::string IdentitySocketPath(const std::string& vm_dir) { return vm_dir + "/identity.sock"; }

SeedFiles BuildSeed(const std::string& vm_id, const ppn::types::v1::VmSpec& spec) {
  SeedFiles seed;
  std::string hostname = spec.display_name().empty() ? vm_id : spec.display_name();
  seed.meta_data = absl::StrCat("instance-id: ", vm_id, "\nlocal-hostname: ", hostname, "\n");
  if (spec.user_data().empty()) {
    seed.user_data = KeysConfig(spec);
  } else {
    seed.user_data = spec.user_data();
    if (spec.ssh_authorized_keys_size() > 0) seed.vendor_data = KeysConfig(spec);
  }
  return seed;
}

VmFiles::VmFiles(ProcessSpawner* spawner, std::string vms_dir, std::optional<RunAs> owner)
    : spawner_(spawner), vms_dir_(std::move(vms_dir)), owner_(std::move(owner)) {}

absl::Status VmFiles::WriteSeed(const std::string& vm_id, const ppn::types::v1::VmSpec& spec,
                                const std::string& network_config) {
  std::string dir = Dir(vm_id) + "/seed";
  if (mkdir(dir.c_str(), 0700) != 0) return absl::InternalError(absl::StrCat("cannot create ", dir));
  SeedFiles seed = BuildSeed(vm_id, spec);
  absl::Status s = WriteFileAtomically(dir + "/meta-data", seed.meta_data);
  if (s.ok()) s = WriteFileAtomically(dir + "/user-data", seed.user_data, 0600);
  if (s.ok() && !seed.vendor_data.empty()) s = WriteFileAtomically(dir + "/vendor-data", seed.vendor_data, 0600);
  if (s.ok() && !network_config.empty()) s = WriteFileAtomically(dir + "/network-config", network_config);
  if (s.ok()) {
    s = RunTool(spawner_,
                {"genisoimage", "-quiet", "-output", SeedPath(Dir(vm_id)), "-volid", "cidata", "-joliet", "-rock", dir},
                kToolTimeout);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);  // the ISO holds it; user-data is not left lying around
  return s;
}

absl::Status VmFiles::Create(const std::string& vm_id, const Image& image, const ppn::types::v1::VmSpec& spec,
                             const std::string& network_config) {
  std::string dir = Dir(vm_id);
  Remove(vm_id);
  std::error_code ec;
  if (!std::filesystem::create_directories(dir, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  chmod(dir.c_str(), 0750);
  auto made = [&]() -> absl::Status {
    std::vector<std::string> overlay = {
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", image.base_image, "-F", image.base_format, DiskPath(dir)};
    if (spec.disk_gib() > 0) overlay.push_back(absl::StrCat(spec.disk_gib(), "G"));
    absl::Status s = RunTool(spawner_, overlay, kToolTimeout);
    if (!s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create the disk overlay on image ", image.name, ": ", s.message()));
    }
    PPN_RETURN_IF_ERROR(WriteSeed(vm_id, spec, network_config));
    if (owner_.has_value()) {
      // QEMU drops to this user after opening its files; it must still reach them.
      for (const std::string& f : {dir, DiskPath(dir), SeedPath(dir)}) {
        if (chown(f.c_str(), owner_->uid, owner_->gid) != 0) {
          return absl::PermissionDeniedError(absl::StrCat("cannot hand ", f, " to ", owner_->name));
        }
      }
    }
    return absl::OkStatus();
  }();
  if (!made.ok()) Remove(vm_id);
  return made;
}

absl::Status VmFiles::EnsureSeed(const std::string& vm_id, const ppn::types::v1::VmSpec& spec,
                                 const std::string& network_config) {
  std::string dir = Dir(vm_id);
  if (!std::filesystem::exists(DiskPath(dir))) {
    return absl::NotFoundError(absl::StrCat("vm ", vm_id, " has no disk overlay on this node"));
  }
  if (std::filesystem::exists(SeedPath(dir))) return absl::OkStatus();
  PPN_RETURN_IF_ERROR(WriteSeed(vm_id, spec, network_config));
  if (owner_.has_value() && chown(SeedPath(dir).c_str(), owner_->uid, owner_->gid) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot hand ", SeedPath(dir), " to ", owner_->name));
  }
  return absl::OkStatus();
}

absl::Status VmFiles::CreateClone(const std::string& vm_id, const std::string& template_disk) {
  std::string dir = Dir(vm_id);
  Remove(vm_id);
  std::error_code ec;
  if (!std::filesystem::create_directories(dir, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  chmod(dir.c_str(), 0750);
  absl::Status s =
      RunTool(spawner_, {"qemu-img", "create", "-q", "-f", "qcow2", "-b", template_disk, "-F", "qcow2", DiskPath(dir)},
              kToolTimeout);
  if (!s.ok()) s = absl::FailedPreconditionError(absl::StrCat("cannot create the disk overlay: ", s.message()));
  if (s.ok() && owner_.has_value()) {
    for (const std::string& f : {dir, DiskPath(dir)}) {
      if (chown(f.c_str(), owner_->uid, owner_->gid) != 0) {
        s = absl::PermissionDeniedError(absl::StrCat("cannot hand ", f, " to ", owner_->name));
        break;
      }
    }
  }
  if (!s.ok()) Remove(vm_id);
  return s;
}

void VmFiles::Remove(const std::string& vm_id) {
  // A QEMU that has just exited may still be unlinking its socket: a vanished entry makes
  // remove_all give up, so try again.
  for (int i = 0; i < 5; ++i) {
    std::error_code ec;
    std::filesystem::remove_all(Dir(vm_id), ec);
    if (!std::filesystem::exists(Dir(vm_id), ec)) return;
  }
}

std::vector<std::string> VmFiles::ListVmIds() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(vms_dir_, ec)) {
    if (e.is_directory(ec)) out.push_back(e.path().filename().string());
  }
  return out;
}

absl::StatusOr<uint64_t> VmFiles::DiskVirtualBytes(const Image& image, const ppn::types::v1::VmSpec& spec) {
  if (spec.disk_gib() > 0) return uint64_t{spec.disk_gib()} << 30;
  {
    absl::MutexLock l(&mu_);
    auto it = image_bytes_.find(image.base_image);
    if (it != image_bytes_.end()) return it->second;
  }
  SpawnSpec info;
  info.argv = {"qemu-img", "info", "--output=json", "-U", "-f", image.base_format, image.base_image};
  PPN_ASSIGN_OR_RETURN(RunResult r, spawner_->Run(info, kToolTimeout));
  nlohmann::json j = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
  if (r.exit_code != 0 || !j.is_object() || !j.contains("virtual-size") || !j["virtual-size"].is_number_unsigned()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the size of image ", image.name, ": ", r.output.substr(0, 400)));
  }
  uint64_t bytes = j["virtual-size"].get<uint64_t>();
  absl::MutexLock l(&mu_);
  image_bytes_[image.base_image] = bytes;
  return bytes;
}

uint64_t VmFiles::DiskAllocatedBytes(const std::string& vm_id) const {
  struct stat st;
  if (stat(DiskPath(Dir(vm_id)).c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace ppn::host
