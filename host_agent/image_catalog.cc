#include "host_agent/image_catalog.h"

#include <unistd.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "nlohmann/json.hpp"

namespace ppn::host {

absl::StatusOr<ImageCatalog> ImageCatalog::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ImageCatalog> catalog = Parse(*text);
  if (!catalog.ok()) {
    return absl::Status(catalog.status().code(), absl::StrCat(path, ": ", catalog.status().message()));
  }
  return catalog;
}

absl::StatusOr<ImageCatalog> ImageCatalog::Parse(const std::string& json_text) {
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.contains("images") || !doc["images"].is_object()) {
    return absl::InvalidArgumentError("image catalog must be JSON with an \"images\" object");
  }
  ImageCatalog catalog;
  for (const auto& [name, entry] : doc["images"].items()) {
    if (!entry.is_object() || !entry.contains("base_image")) {
      return absl::InvalidArgumentError(absl::StrCat("image ", name, " has no base_image"));
    }
    Image image;
    image.name = name;
    image.base_image = entry.value("base_image", "");
    image.base_format = entry.value("base_format", "qcow2");
    image.kernel = entry.value("kernel", "");
    image.initrd = entry.value("initrd", "");
    image.append = entry.value("append", "");
    if (entry.contains("ready_marker")) {
      if (!entry["ready_marker"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("image ", name, ": ready_marker must be a string"));
      }
      image.ready_marker = entry["ready_marker"].get<std::string>();
      bool printable = image.ready_marker.size() >= 3 && image.ready_marker.size() <= kMaxReadyMarker;
      for (char c : image.ready_marker) printable = printable && c >= 0x20 && c < 0x7f;
      if (!printable) {
        return absl::InvalidArgumentError(absl::StrCat("image ", name, ": ready_marker must be 3 to ", kMaxReadyMarker,
                                                       " printable ASCII characters"));
      }
    }
    if (image.base_format != "qcow2" && image.base_format != "raw") {
      return absl::InvalidArgumentError(absl::StrCat("image ", name, ": base_format must be qcow2 or raw"));
    }
    for (const std::string* file : {&image.base_image, &image.kernel, &image.initrd}) {
      if (!file->empty() && access(file->c_str(), R_OK) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("image ", name, ": cannot read ", *file));
      }
    }
    catalog.images_[name] = image;
  }
  return catalog;
}

absl::StatusOr<Image> ImageCatalog::Find(const std::string& name) const {
  auto it = images_.find(name);
  if (it != images_.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [n, _] : images_) names.push_back(n);
  return absl::NotFoundError(absl::StrCat("image \"", name.substr(0, 64),
                                          "\" is not in this node's catalog (have: ", absl::StrJoin(names, ", "), ")"));
}

std::vector<std::string> ImageCatalog::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : images_) out.push_back(name);
  return out;
}

}  // namespace ppn::host
