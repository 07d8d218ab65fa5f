#include "fleet/fleet_server.h"

#include "common/roles.h"

namespace ppn::fleet {

RolePolicy FleetRolePolicy(const std::string& mesh) {
  namespace r = ppn::roles;
  const std::string svc = "/ppn.fleet.v1.FleetService/";
  RolePolicy policy(mesh);
  policy.Allow(svc + "CreateVm", {r::kTenantProxy});
  // The operator may destroy any VM (the ledger records who: vm.destroy who=operator).
  policy.Allow(svc + "DestroyVm", {r::kTenantProxy, r::kOperator});
  // The operator may change any running VM's egress policy (vm.network who=operator); the
  // tenant proxy only its tenant's, already narrowed to the tenant's default.
  policy.Allow(svc + "UpdateVmNetwork", {r::kTenantProxy, r::kOperator});
  // Power and console of any VM for the operator too (vm.stop/start/reboot record who).
  for (const char* power : {"StopVm", "StartVm", "RebootVm", "GetConsoleOutput", "StreamConsole"}) {
    policy.Allow(svc + power, {r::kTenantProxy, r::kOperator});
  }
  for (const char* read : {"GetVm", "ListVms", "WatchVm", "ListNodes", "ExplainPlacement"}) {
    policy.Allow(svc + read, {r::kTenantProxy, r::kScheduler, r::kOperator});
  }
  // Networks are a tenant's: created and deleted through the proxy; the operator may look.
  policy.Allow(svc + "CreateNetwork", {r::kTenantProxy});
  policy.Allow(svc + "DeleteNetwork", {r::kTenantProxy});
  policy.Allow(svc + "GetNetwork", {r::kTenantProxy, r::kOperator});
  policy.Allow(svc + "ListNetworks", {r::kTenantProxy, r::kOperator});
  policy.Allow(svc + "RecordMigration", {r::kScheduler});
  policy.Allow(svc + "SetPin", {r::kScheduler});
  for (const char* cordon : {"CordonNode", "UncordonNode"}) policy.Allow(svc + cordon, {r::kOperator, r::kScheduler});
  // Every VM's node address and port: for the relay that forwards to them, never a tenant.
  policy.Allow(svc + "WatchRelayRoutes", {r::kRelay, r::kOperator});
  return policy;
}

absl::StatusOr<StartedServer> StartFleetServer(const std::string& mesh, const std::string& listen, const TlsFiles& tls,
                                               FleetService* service, const RevocationList* revocations) {
  return StartMeshServer(listen, tls, FleetRolePolicy(mesh), {service}, revocations);
}

}  // namespace ppn::fleet
