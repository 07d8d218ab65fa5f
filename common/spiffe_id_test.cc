#include "common/spiffe_id.h"

#include "catch2/catch.hpp"

namespace ppn {
namespace {

TEST_CASE("a SPIFFE id parses into mesh role and name", "[common][spiffe]") {
  absl::StatusOr<SpiffeId> id = ParseSpiffeId("spiffe://ppn.local/host/laptop-a");
  REQUIRE(id.ok());
  CHECK(id->mesh == "ppn.local");
  CHECK(id->role == "host");
  CHECK(id->name == "laptop-a");
  CHECK(id->ToString() == "spiffe://ppn.local/host/laptop-a");
}

TEST_CASE("malformed SPIFFE ids are rejected with the input named", "[common][spiffe]") {
  for (const char* bad : {"", "https://ppn.local/host/a", "spiffe://ppn.local/host", "spiffe://ppn.local/host/a/b",
                          "spiffe://ppn.local//a", "spiffe://PPN/host/a", "spiffe://ppn.local/host/a b"}) {
    absl::StatusOr<SpiffeId> id = ParseSpiffeId(bad);
    INFO(bad);
    REQUIRE_FALSE(id.ok());
    CHECK(id.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(id.status().message()).find("bad SPIFFE id") == 0);
  }
}

}  // namespace
}  // namespace ppn
