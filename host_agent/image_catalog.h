#pragma once

// The operator's image catalog: image name → base disk and, optionally, a kernel and
// initrd for direct boot. Loaded from JSON:
//   {"images": {"debian-12": {"base_image": "/var/lib/ppn/images/debian-12.qcow2",
//                             "base_format": "qcow2"},
//               "ppn-test-guest": {"base_image": "...", "kernel": "...", "initrd": "...",
//                                  "append": "console=ttyS0"}}}
// Base images are only ever read: every VM writes to its own copy-on-write overlay.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ppn::host {

// The longest console ready marker an image may name.
inline constexpr size_t kMaxReadyMarker = 128;

struct Image {
  std::string name;
  std::string base_image;  // absolute path
  std::string base_format = "qcow2";
  std::string kernel;  // empty: boot from the disk
  std::string initrd;
  std::string append;  // kernel command line
  // The operator's word for "this image's guest is up": a text its guests print on their
  // serial console once booted (e.g. "login:"); empty: none (docs/guest-channel.md).
  std::string ready_marker;
};

class ImageCatalog {
 public:
  // Parses the catalog and checks every file exists. INVALID_ARGUMENT naming the image and
  // file otherwise.
  static absl::StatusOr<ImageCatalog> Load(const std::string& path);
  static absl::StatusOr<ImageCatalog> Parse(const std::string& json_text);

  // NOT_FOUND listing the known names if `name` is not in the catalog.
  absl::StatusOr<Image> Find(const std::string& name) const;
  // Every image name, sorted.
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, Image> images_;
};

}  // namespace ppn::host
