#pragma once

// The tenant API. Every call is already authenticated (BearerAuthProcessor put the tenant in
// the auth context); this adapter rate-limits, applies quotas through a per-tenant gate,
// forwards to the fleet as the `tenant-proxy` role with the tenant in metadata, maps fleet
// records to the tenant's view (which never names a node), and audits creates and destroys.

#include <map>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "ppn/tenancy/v1/proxy_config.pb.h"
#include "ppn/tenancy/v1/tenant_service.grpc.pb.h"
#include "tenant_proxy/audit_trail.h"
#include "tenant_proxy/rate_limiter.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

class TenantServiceImpl final : public ppn::tenancy::v1::TenantService::Service {
 public:
  // All pointers must outlive the service.
  TenantServiceImpl(const ppn::tenancy::v1::ProxyConfig& config, const TokenAuthenticator* authenticator,
                    ppn::fleet::v1::FleetService::StubInterface* fleet, RateLimiter* limiter, AuditTrail* audit);

  grpc::Status CreateVm(grpc::ServerContext*, const tenancy::v1::CreateVmRequest*,
                        tenancy::v1::CreateVmResponse*) override;
  grpc::Status GetVm(grpc::ServerContext*, const tenancy::v1::GetVmRequest*, tenancy::v1::GetVmResponse*) override;
  grpc::Status ListVms(grpc::ServerContext*, const tenancy::v1::ListVmsRequest*,
                       tenancy::v1::ListVmsResponse*) override;
  grpc::Status DestroyVm(grpc::ServerContext*, const tenancy::v1::DestroyVmRequest*,
                         tenancy::v1::DestroyVmResponse*) override;
  grpc::Status WatchVm(grpc::ServerContext*, const tenancy::v1::WatchVmRequest*,
                       grpc::ServerWriter<tenancy::v1::WatchVmResponse>*) override;
  grpc::Status GetQuota(grpc::ServerContext*, const tenancy::v1::GetQuotaRequest*,
                        tenancy::v1::GetQuotaResponse*) override;

 private:
  struct Caller {
    std::string tenant_id;
    std::string token_id;
    const ppn::tenancy::v1::Limits* limits;
  };
  absl::StatusOr<Caller> Admit(grpc::ServerContext* context);
  absl::StatusOr<ppn::tenancy::v1::Usage> Usage(const std::string& tenant);
  void Forwarding(grpc::ClientContext* ctx, const std::string& tenant) const;
  absl::Mutex* GateOf(const std::string& tenant);

  std::map<std::string, ppn::tenancy::v1::Limits> limits_;
  const TokenAuthenticator* const authenticator_;
  ppn::fleet::v1::FleetService::StubInterface* const fleet_;
  RateLimiter* const limiter_;
  AuditTrail* const audit_;
  absl::Mutex gates_mu_;
  std::map<std::string, std::unique_ptr<absl::Mutex>> gates_ ABSL_GUARDED_BY(gates_mu_);
};

// "vms/<id>" or "<id>" → id; INVALID_ARGUMENT if malformed.
absl::StatusOr<std::string> ParseVmName(const std::string& name);

}  // namespace ppn::proxy
