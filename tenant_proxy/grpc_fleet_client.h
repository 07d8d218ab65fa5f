#pragma once

// GrpcFleetClient: FleetClient over the fleet's gRPC API as the `tenant-proxy` role. Every
// call carries the tenant in metadata (common/call_metadata.h); unary calls are bounded by
// the deadline given here; WatchVm streams are callback-based (a ClientReadReactor each), so
// no thread is held per stream. Errors come back through TenantSafeError. Thread-safe.

#include <memory>

#include "absl/time/time.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"
#include "tenant_proxy/fleet_client.h"

namespace ppn::proxy {

// How long a unary call to the fleet may take (a create waits for QEMU to start).
inline constexpr absl::Duration kFleetTimeout = absl::Seconds(90);

class GrpcFleetClient final : public FleetClient {
 public:
  // `*stub` must outlive the client and every stream it started.
  explicit GrpcFleetClient(ppn::fleet::v1::FleetService::StubInterface* stub, absl::Duration timeout = kFleetTimeout)
      : stub_(stub), timeout_(timeout) {}

  absl::StatusOr<ppn::fleet::v1::CreateVmResponse> CreateVm(const TenantId& tenant,
                                                            const ppn::fleet::v1::CreateVmRequest& request) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const TenantId& tenant, const VmId& vm_id) override;
  absl::StatusOr<ppn::fleet::v1::ListVmsResponse> ListVms(const TenantId& tenant,
                                                          const ppn::fleet::v1::ListVmsRequest& request) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> DestroyVm(const TenantId& tenant, const VmId& vm_id) override;
  absl::StatusOr<ppn::types::v1::Network> CreateNetwork(const TenantId& tenant, const std::string& name) override;
  absl::StatusOr<ppn::types::v1::Network> GetNetwork(const TenantId& tenant, const std::string& network_id) override;
  absl::StatusOr<std::vector<ppn::types::v1::Network>> ListNetworks(const TenantId& tenant) override;
  absl::Status DeleteNetwork(const TenantId& tenant, const std::string& network_id) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> UpdateVmNetwork(const TenantId& tenant, const VmId& vm_id,
                                                           const ppn::types::v1::EgressPolicy& egress) override;
  std::unique_ptr<FleetWatch> WatchVm(const TenantId& tenant, const VmId& vm_id, FleetWatchObserver* observer) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> StopVm(const TenantId& tenant, const VmId& vm_id,
                                                  absl::Duration grace) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> StartVm(const TenantId& tenant, const VmId& vm_id, bool fresh_disk) override;
  absl::StatusOr<ppn::fleet::v1::VmRecord> RebootVm(const TenantId& tenant, const VmId& vm_id, absl::Duration grace,
                                                    std::string* how) override;
  absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> GetConsoleOutput(const TenantId& tenant, const VmId& vm_id,
                                                                            uint64_t offset,
                                                                            uint32_t max_bytes) override;

 private:
  // The deadline and the tenant every unary call carries.
  void Prepare(grpc::ClientContext* ctx, const TenantId& tenant) const;

  ppn::fleet::v1::FleetService::StubInterface* const stub_;
  const absl::Duration timeout_;
};

}  // namespace ppn::proxy
