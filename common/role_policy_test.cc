#include "common/role_policy.h"

#include "catch2/catch.hpp"

namespace ppn {
namespace {

SpiffeId Peer(const std::string& role, const std::string& mesh = "ppn.local") { return SpiffeId{mesh, role, "x"}; }

TEST_CASE("the role policy allows listed roles and denies everything else", "[common][authz]") {
  RolePolicy policy("ppn.local");
  policy.Allow("/ppn.ledger.v1.Ledger/Append", {"tenant-proxy", "pairing-admin"});
  policy.AllowService("ppn.ledger.v1.Ledger", {"operator"});

  CHECK(policy.Check("/ppn.ledger.v1.Ledger/Append", Peer("tenant-proxy")).ok());
  CHECK(policy.Check("/ppn.ledger.v1.Ledger/GetEntries", Peer("operator")).ok());
  CHECK(policy.Check("/ppn.ledger.v1.Ledger/Append", Peer("operator")).ok());

  absl::Status denied = policy.Check("/ppn.ledger.v1.Ledger/GetEntries", Peer("tenant-proxy"));
  CHECK(denied.code() == absl::StatusCode::kPermissionDenied);
  CHECK(denied.message() == "role tenant-proxy may not call /ppn.ledger.v1.Ledger/GetEntries");

  SECTION("unknown methods are denied to everyone") {
    CHECK(policy.Check("/ppn.fleet.v1.FleetService/CreateVm", Peer("operator")).code() ==
          absl::StatusCode::kPermissionDenied);
  }
  SECTION("a peer of another mesh is denied even on an allowed method") {
    CHECK(policy.Check("/ppn.ledger.v1.Ledger/Append", Peer("tenant-proxy", "evil")).code() ==
          absl::StatusCode::kPermissionDenied);
  }
  SECTION("health and reflection are open to every mesh member") {
    CHECK(policy.Check("/grpc.health.v1.Health/Check", Peer("host")).ok());
    CHECK(policy.Check("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Peer("host")).ok());
  }
  SECTION("malformed method paths are denied") {
    for (const char* m : {"", "/", "//", "/svc/", "svc/Method", "/svc"}) {
      INFO(m);
      CHECK(policy.Check(m, Peer("operator")).code() == absl::StatusCode::kPermissionDenied);
    }
  }
}

}  // namespace
}  // namespace ppn
