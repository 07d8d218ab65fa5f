#pragma once

// The gRPC adapter of TenantAdmin (tenant_admin.h): served on the proxy's mTLS admin listener
// to the operator role only (StartTenantAdminServer); the tenant-facing listener never has it.

#include "ppn/tenancy/v1/tenant_admin.grpc.pb.h"
#include "tenant_proxy/tenant_admin.h"

namespace ppn::proxy {

class TenantAdminService final : public ppn::tenancy::v1::TenantAdmin::Service {
 public:
  explicit TenantAdminService(TenantAdmin* core) : core_(core) {}
  grpc::Status AddTenant(grpc::ServerContext*, const ppn::tenancy::v1::AddTenantRequest*,
                         ppn::tenancy::v1::AddTenantResponse*) override;
  grpc::Status ListTenants(grpc::ServerContext*, const ppn::tenancy::v1::ListTenantsRequest*,
                           ppn::tenancy::v1::ListTenantsResponse*) override;
  grpc::Status RotateToken(grpc::ServerContext*, const ppn::tenancy::v1::RotateTokenRequest*,
                           ppn::tenancy::v1::RotateTokenResponse*) override;
  grpc::Status RevokeToken(grpc::ServerContext*, const ppn::tenancy::v1::RevokeTokenRequest*,
                           ppn::tenancy::v1::RevokeTokenResponse*) override;
  grpc::Status SetLimits(grpc::ServerContext*, const ppn::tenancy::v1::SetLimitsRequest*,
                         ppn::tenancy::v1::SetLimitsResponse*) override;

 private:
  TenantAdmin* const core_;
};

}  // namespace ppn::proxy
