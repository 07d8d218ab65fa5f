#include "host_agent/host_agent_server.h"

#include "catch2/catch.hpp"

namespace ppn::host {
namespace {

TEST_CASE("the scheduler may move VMs on an agent but not create them or set their networks", "[host_agent][authz]") {
  RolePolicy policy = HostAgentRolePolicy("ppn.local");
  SpiffeId scheduler{"ppn.local", "scheduler", "scheduler"}, fleet{"ppn.local", "fleet", "fleet"};
  for (const char* m : {"PrepareIncoming", "MigrateOut", "DestroyVm", "ListVms", "ResumeVm"}) {
    CHECK(policy.Check(std::string("/ppn.host.v1.HostAgent/") + m, scheduler).ok());
  }
  for (const char* m : {"SpawnVm", "UpdateVmNetwork", "SetNetworkPeers", "SetBalloon", "WatchHeartbeats"}) {
    INFO(m);
    CHECK(policy.Check(std::string("/ppn.host.v1.HostAgent/") + m, scheduler).code() ==
          absl::StatusCode::kPermissionDenied);
    CHECK(policy.Check(std::string("/ppn.host.v1.HostAgent/") + m, fleet).ok());
  }
  CHECK(policy.Check("/ppn.host.v1.HostAgent/SpawnVm", {"ppn.local", "tenant-proxy", "p"}).code() ==
        absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace ppn::host
