#include "host_agent/image_catalog.h"

#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "common/files.h"
#include "tests/harness/temp_dir.h"

namespace ppn::host {
namespace {

std::string CatalogWithMarker(const std::string& base, const std::string& marker_json) {
  return "{\"images\": {\"web\": {\"base_image\": \"" + base + "\", \"ready_marker\": " + marker_json + "}}}";
}

TEST_CASE("an image's ready marker is read from the catalog and checked", "[agent][catalog]") {
  ppn::testing::TempDir dir;
  std::string base = dir.File("base.qcow2");
  REQUIRE(WriteFileAtomically(base, "x", 0644).ok());
  absl::StatusOr<ImageCatalog> ok = ImageCatalog::Parse(CatalogWithMarker(base, "\"web login:\""));
  REQUIRE(ok.ok());
  CHECK(ok->Find("web")->ready_marker == "web login:");

  for (const std::string& bad :
       std::vector<std::string>{"\"ab\"", "42", "\"login:\\u001b[2J\"", "\"" + std::string(129, 'x') + "\""}) {
    absl::StatusOr<ImageCatalog> c = ImageCatalog::Parse(CatalogWithMarker(base, bad));
    CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(c.status().message().find("image web: ready_marker must be") == 0);
  }
}

}  // namespace
}  // namespace ppn::host
