#pragma once

// The tenant API's gRPC adapter. Every call is already authenticated (BearerAuthProcessor);
// this derives the caller from the same token, hands the request to ProxyCore, and answers
// with its result: a rate-limit refusal carries `retry-after-ms` (a bare integer) in the
// trailing metadata. WatchVm is served with the callback API (a ServerWriteReactor per stream
// relaying a FleetWatch, itself a client reactor), so an open stream holds no thread; the
// tenant's cancellation cancels the fleet stream. The unary methods stay synchronous.

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "ppn/tenancy/v1/tenant_service.grpc.pb.h"
#include "tenant_proxy/proxy_core.h"
#include "tenant_proxy/token_authenticator.h"

namespace ppn::proxy {

// Trailing metadata of a rate-limited call: milliseconds to wait, as a bare integer.
inline constexpr char kRetryAfterMetadata[] = "retry-after-ms";

// Only WatchVm is a callback method; gRPC serves the other, synchronous methods of the same
// service from its sync thread pool.
class TenantServiceImpl final
    : public ppn::tenancy::v1::TenantService::WithCallbackMethod_WatchVm<ppn::tenancy::v1::TenantService::Service> {
 public:
  // Both must outlive the service.
  TenantServiceImpl(const TokenAuthenticator* authenticator, ProxyCore* core)
      : authenticator_(authenticator), core_(core) {}

  grpc::Status CreateVm(grpc::ServerContext*, const tenancy::v1::CreateVmRequest*,
                        tenancy::v1::CreateVmResponse*) override;
  grpc::Status GetVm(grpc::ServerContext*, const tenancy::v1::GetVmRequest*, tenancy::v1::GetVmResponse*) override;
  grpc::Status ListVms(grpc::ServerContext*, const tenancy::v1::ListVmsRequest*,
                       tenancy::v1::ListVmsResponse*) override;
  grpc::Status DestroyVm(grpc::ServerContext*, const tenancy::v1::DestroyVmRequest*,
                         tenancy::v1::DestroyVmResponse*) override;
  grpc::ServerWriteReactor<tenancy::v1::WatchVmResponse>* WatchVm(grpc::CallbackServerContext*,
                                                                  const tenancy::v1::WatchVmRequest*) override;
  grpc::Status GetQuota(grpc::ServerContext*, const tenancy::v1::GetQuotaRequest*,
                        tenancy::v1::GetQuotaResponse*) override;
  grpc::Status UpdateVmNetwork(grpc::ServerContext*, const tenancy::v1::UpdateVmNetworkRequest*,
                               tenancy::v1::UpdateVmNetworkResponse*) override;
  grpc::Status CreateNetwork(grpc::ServerContext*, const tenancy::v1::CreateNetworkRequest*,
                             tenancy::v1::CreateNetworkResponse*) override;
  grpc::Status GetNetwork(grpc::ServerContext*, const tenancy::v1::GetNetworkRequest*,
                          tenancy::v1::GetNetworkResponse*) override;
  grpc::Status ListNetworks(grpc::ServerContext*, const tenancy::v1::ListNetworksRequest*,
                            tenancy::v1::ListNetworksResponse*) override;
  grpc::Status DeleteNetwork(grpc::ServerContext*, const tenancy::v1::DeleteNetworkRequest*,
                             tenancy::v1::DeleteNetworkResponse*) override;
  grpc::Status StopVm(grpc::ServerContext*, const tenancy::v1::StopVmRequest*, tenancy::v1::StopVmResponse*) override;
  grpc::Status StartVm(grpc::ServerContext*, const tenancy::v1::StartVmRequest*,
                       tenancy::v1::StartVmResponse*) override;
  grpc::Status RebootVm(grpc::ServerContext*, const tenancy::v1::RebootVmRequest*,
                        tenancy::v1::RebootVmResponse*) override;
  grpc::Status GetConsoleOutput(grpc::ServerContext*, const tenancy::v1::GetConsoleOutputRequest*,
                                tenancy::v1::GetConsoleOutputResponse*) override;
  // Synchronous (one thread per stream): at most kConsoleStreamsPerTenant open per tenant.
  grpc::Status StreamConsole(grpc::ServerContext*, const tenancy::v1::StreamConsoleRequest*,
                             grpc::ServerWriter<tenancy::v1::StreamConsoleResponse>*) override;
  static constexpr int kConsoleStreamsPerTenant = 4;

 private:
  // The caller as ProxyCore admits it; sets retry-after-ms when rate-limited.
  absl::StatusOr<Tenant> Admit(grpc::ServerContextBase* context);

  const TokenAuthenticator* const authenticator_;
  ProxyCore* const core_;
  absl::Mutex console_mu_;
  std::map<std::string, int> console_streams_ ABSL_GUARDED_BY(console_mu_);  // by tenant
};

}  // namespace ppn::proxy
