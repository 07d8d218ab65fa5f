#include "tenant_proxy/tenant_admin_service.h"

#include "common/rpc_log.h"

namespace ppn::proxy {

using namespace ppn::tenancy::v1;  // NOLINT

grpc::Status TenantAdminService::AddTenant(grpc::ServerContext*, const AddTenantRequest* request,
                                           AddTenantResponse* response) {
  absl::StatusOr<AddTenantResponse> r = core_->AddTenant(*request);
  if (!r.ok()) return RpcFailed("AddTenant", r.status(), {{"tenant", request->tenant_id().substr(0, 63)}});
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status TenantAdminService::ListTenants(grpc::ServerContext*, const ListTenantsRequest*,
                                             ListTenantsResponse* response) {
  *response = core_->ListTenants();
  return grpc::Status::OK;
}

grpc::Status TenantAdminService::RotateToken(grpc::ServerContext*, const RotateTokenRequest* request,
                                             RotateTokenResponse* response) {
  absl::StatusOr<RotateTokenResponse> r = core_->RotateToken(request->tenant_id(), request->keep_existing());
  if (!r.ok()) return RpcFailed("RotateToken", r.status(), {{"tenant", request->tenant_id().substr(0, 63)}});
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status TenantAdminService::RevokeToken(grpc::ServerContext*, const RevokeTokenRequest* request,
                                             RevokeTokenResponse* response) {
  absl::StatusOr<TenantSummary> r = core_->RevokeToken(request->tenant_id(), request->token_id());
  if (!r.ok()) return RpcFailed("RevokeToken", r.status(), {{"tenant", request->tenant_id().substr(0, 63)}});
  *response->mutable_tenant() = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status TenantAdminService::SetLimits(grpc::ServerContext*, const SetLimitsRequest* request,
                                           SetLimitsResponse* response) {
  absl::StatusOr<TenantSummary> r = core_->SetLimits(request->tenant_id(), request->limits());
  if (!r.ok()) return RpcFailed("SetLimits", r.status(), {{"tenant", request->tenant_id().substr(0, 63)}});
  *response->mutable_tenant() = *std::move(r);
  return grpc::Status::OK;
}

}  // namespace ppn::proxy
