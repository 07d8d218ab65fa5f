#include "host_agent/testing/bench_guest.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace ppn::host::testing {

absl::StatusOr<ImageCatalog> StageTestGuest(const std::string& guest_dir, const std::string& dir,
                                            const std::string& append) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  std::filesystem::permissions(dir, std::filesystem::perms(0755), ec);
  std::string g = std::filesystem::absolute(guest_dir, ec);
  for (const char* f : {"vmlinuz", "initramfs.cpio.gz", "base.qcow2"}) {
    if (!std::filesystem::copy_file(g + "/" + f, dir + "/" + f, ec)) {
      return absl::NotFoundError(
          absl::StrCat("cannot copy ", g, "/", f, ": ", ec.message(), " (build it: bazel build //tools:test_guest)"));
    }
    std::filesystem::permissions(dir + "/" + f, std::filesystem::perms(0644), ec);
  }
  std::string catalog =
      absl::StrCat("{\"images\": {\"ppn-test-guest\": {\"base_image\": \"", dir, "/base.qcow2\", \"kernel\": \"", dir,
                   "/vmlinuz\", \"initrd\": \"", dir, "/initramfs.cpio.gz\", \"append\": \"", append, "\"}}}");
  absl::Status written = WriteFileAtomically(dir + "/catalog.json", catalog);
  if (!written.ok()) return written;
  return ImageCatalog::Load(dir + "/catalog.json");
}

}  // namespace ppn::host::testing
