#pragma once

// ProxyCore makes every decision of the tenant API, behind the thin gRPC adapter
// (tenant_service.h): the rate limit, validation before quota, the quota (tenant_proxy/quota.h),
// each VM's egress policy narrowed to its tenant's default (common/vm_spec.h NarrowEgress), the
// audit trail (the intent of a create, destroy or network change recorded before it is
// forwarded, the outcome after), a cap on concurrent WatchVm streams, and the tenant's view of
// the fleet's records (never a node). The fleet is reached through FleetClient, whose errors are already
// tenant-safe. Pure C++. Thread-safe. Everything in Deps must outlive the core.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ppn/tenancy/v1/proxy_config.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"
#include "tenant_proxy/audit_trail.h"
#include "tenant_proxy/fleet_client.h"
#include "tenant_proxy/rate_limiter.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

// One tenant's settings as the configuration said when a call was admitted.
struct TenantSettings {
  ppn::tenancy::v1::Limits limits;
  ppn::types::v1::EgressPolicy egress;
};

// A caller the proxy admitted.
struct Tenant {
  TenantId tenant_id;
  std::string token_id;
  const ppn::tenancy::v1::Limits* limits = nullptr;      // in `settings`
  const ppn::types::v1::EgressPolicy* egress = nullptr;  // the tenant's default; in `settings`
  // Keeps what the call was admitted with alive while the configuration changes under it.
  std::shared_ptr<const TenantSettings> settings;
};

struct ProxyOptions {
  // Concurrent WatchVm streams one tenant may hold.
  int max_watch_streams_per_tenant = 32;
};

class ProxyCore {
 public:
  struct Deps {
    FleetClient* fleet;
    RateLimiter* limiter;
    AuditTrail* audit;
  };
  // `config` must be valid (LoadProxyConfig checks it): every tenant's egress default too.
  ProxyCore(const ppn::tenancy::v1::ProxyConfig& config, Deps deps, ProxyOptions options = {});

  // Replaces every tenant's limits and egress default (TenantAdmin's changes, live): calls
  // admitted from then on see the new ones; a tenant no longer listed is UNAUTHENTICATED.
  // `config` must be valid as for the constructor.
  void ApplyConfig(const ppn::tenancy::v1::ProxyConfig& config);

  // `who` (authenticated by its token) as a tenant the proxy serves, after taking one token
  // from its rate limit. UNAUTHENTICATED if the proxy has no limits for it; when over its
  // rate, RESOURCE_EXHAUSTED "rate limit of R requests/s (burst B) reached; retry in N ms"
  // with `*retry_after` set (zero otherwise); such refusals are audited aggregated.
  absl::StatusOr<Tenant> Admit(const Authenticated& who, absl::Duration* retry_after);

  // Validates the request (INVALID_ARGUMENT), narrows its spec.egress to the tenant's default
  // (PERMISSION_DENIED naming an allow rule beyond it), then the quota (RESOURCE_EXHAUSTED)
  // unless the request_id names one of the tenant's VMs (a retry: the fleet returns that VM);
  // records the intent, forwards the narrowed spec, records the outcome. A retry the fleet replays is recorded once,
  // by the original call. One create at a time per tenant, so quota races cannot overshoot.
  // INTERNAL if the trail cannot record (then nothing is forwarded, or nothing answered).
  absl::StatusOr<ppn::tenancy::v1::Vm> CreateVm(const Tenant& tenant, const ppn::tenancy::v1::CreateVmRequest& request);
  // Waits (CreateVm's wait_for_ready) until the tenant's VM `vm_id` is RUNNING and returns it:
  // DEADLINE_EXCEEDED at `deadline` (the VM stays, STARTING), FAILED_PRECONDITION if it ended
  // elsewhere (FAILED, LOST, ...); NOT_FOUND as GetVm. Holds no per-tenant gate while it waits.
  absl::StatusOr<ppn::tenancy::v1::Vm> WaitForReady(const Tenant& tenant, const std::string& vm_id,
                                                    absl::Time deadline);
  // NOT_FOUND for a VM that is absent or another tenant's, with the same words.
  absl::StatusOr<ppn::tenancy::v1::Vm> GetVm(const Tenant& tenant, const std::string& name);
  absl::StatusOr<ppn::tenancy::v1::ListVmsResponse> ListVms(const Tenant& tenant,
                                                            const ppn::tenancy::v1::ListVmsRequest& request);
  // Records the intent, forwards, records the outcome.
  absl::StatusOr<ppn::tenancy::v1::Vm> DestroyVm(const Tenant& tenant, const std::string& name);
  // Power (tenant.vm.stop, tenant.vm.start, tenant.vm.reboot: intent, then outcome, as a
  // destroy). StartVm first checks that the tenant's vCPU and memory quota has room for the
  // VM again (RESOURCE_EXHAUSTED), under the same per-tenant gate as creates. `grace` as the
  // request's (validated by the adapter). NOT_FOUND for a VM absent or another tenant's alike.
  absl::StatusOr<ppn::tenancy::v1::Vm> StopVm(const Tenant& tenant, const std::string& name, absl::Duration grace);
  // `fresh_disk` is forwarded (StartVmRequest.fresh_disk); the quota check is the same.
  absl::StatusOr<ppn::tenancy::v1::Vm> StartVm(const Tenant& tenant, const std::string& name, bool fresh_disk = false);
  absl::StatusOr<ppn::tenancy::v1::Vm> RebootVm(const Tenant& tenant, const std::string& name, absl::Duration grace,
                                                std::string* how);
  // Up to `max_bytes` of the VM's console from `offset`. NOT_FOUND as GetVm.
  absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> GetConsoleOutput(const Tenant& tenant,
                                                                            const std::string& name, uint64_t offset,
                                                                            uint32_t max_bytes);
  // Replaces the egress policy of one of the tenant's running VMs: validated (INVALID_ARGUMENT),
  // narrowed to the tenant's default as at create (PERMISSION_DENIED), then, like a destroy,
  // the intent recorded (kind tenant.vm.network, the policy's shape in its attributes), the
  // change forwarded, the outcome recorded. NOT_FOUND for a VM that is absent or another
  // tenant's, with the same words; FAILED_PRECONDITION unless it runs; UNAVAILABLE if its host
  // is unreachable. Answers the VM with the policy in effect in spec.egress.
  absl::StatusOr<ppn::tenancy::v1::Vm> UpdateVmNetwork(const Tenant& tenant,
                                                       const ppn::tenancy::v1::UpdateVmNetworkRequest& request);
  absl::StatusOr<ppn::tenancy::v1::GetQuotaResponse> GetQuota(const Tenant& tenant);
  // What `tenant`'s VMs use now (the operator's tenant list); the fleet's error otherwise.
  absl::StatusOr<ppn::tenancy::v1::Usage> UsageFor(const TenantId& tenant);
  // Private networks. Create and delete are audited as a destroy is (tenant.network.create,
  // tenant.network.delete; the network's id and name in the attributes): the intent recorded,
  // the call forwarded, the outcome recorded. Errors as NetworkSafeError words them; a
  // network that is absent or another tenant's is NOT_FOUND with the same words.
  absl::StatusOr<ppn::types::v1::Network> CreateNetwork(const Tenant& tenant,
                                                        const ppn::tenancy::v1::CreateNetworkRequest& request);
  absl::StatusOr<ppn::types::v1::Network> GetNetwork(const Tenant& tenant, const std::string& network_id);
  absl::StatusOr<ppn::tenancy::v1::ListNetworksResponse> ListNetworks(const Tenant& tenant);
  absl::Status DeleteNetwork(const Tenant& tenant, const std::string& network_id);
  // A stream of `name`'s states for `observer`, not yet started; it holds one of the
  // tenant's stream slots until destroyed. RESOURCE_EXHAUSTED "at most N WatchVm streams per
  // tenant; close one first" when all are taken.
  absl::StatusOr<std::unique_ptr<FleetWatch>> OpenWatch(const Tenant& tenant, const std::string& name,
                                                        FleetWatchObserver* observer);
  // Streams `tenant_id` holds now (tests).
  int WatchStreamsForTest(const std::string& tenant_id);

 private:
  class SlottedWatch;
  absl::StatusOr<std::vector<ppn::fleet::v1::VmRecord>> ListAll(const TenantId& tenant);
  // Records `audit` with the outcome of `status` and returns `status`, or INTERNAL if the
  // record could not be written.
  absl::Status Finish(AuditRecord audit, const absl::Status& status);
  // Records `audit` as an intent (outcome pending); INTERNAL if it could not be written, and
  // then the call must not be forwarded.
  absl::Status RecordIntent(const AuditRecord& audit);
  absl::Mutex* GateOf(const std::string& tenant_id);
  // A power call on the VM `name` names: audited as tenant.vm.<op> (intent, outcome).
  absl::StatusOr<ppn::tenancy::v1::Vm> Power(
      const Tenant& tenant, const std::string& name, const std::string& op,
      const std::function<absl::StatusOr<ppn::fleet::v1::VmRecord>(const VmId&)>& call);
  void ReleaseWatch(const std::string& tenant_id);

  const Deps deps_;
  const ProxyOptions options_;
  absl::Mutex settings_mu_;
  std::map<std::string, std::shared_ptr<const TenantSettings>> settings_ ABSL_GUARDED_BY(settings_mu_);
  absl::Mutex gates_mu_;
  std::map<std::string, std::unique_ptr<absl::Mutex>> gates_ ABSL_GUARDED_BY(gates_mu_);
  absl::Mutex watches_mu_;
  std::map<std::string, int> watches_ ABSL_GUARDED_BY(watches_mu_);
};

// The tenant's view of a fleet record: no node, no user_data, no request_id; its traffic
// counters (zero when its node reports none).
ppn::tenancy::v1::Vm TenantView(const ppn::fleet::v1::VmRecord& record);

// "vms/<id>" or "<id>" -> id; INVALID_ARGUMENT if malformed.
absl::StatusOr<std::string> ParseVmName(const std::string& name);

}  // namespace ppn::proxy
