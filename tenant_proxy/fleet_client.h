#pragma once

// FleetClient is the tenant proxy's view of the fleet: every call on behalf of one tenant,
// and every error already in words a tenant may see (TenantSafeError). The gRPC
// implementation (grpc_fleet_client.h) owns the deadline and the tenant metadata; tests use
// tenant_proxy/testing/fake_fleet_client.h. Pure C++ (no grpcpp).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/ids.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::proxy {

// Trailing metadata the fleet sets on a RESOURCE_EXHAUSTED create: which resource no node
// had ("memory", "disk" or "nodes").
inline constexpr char kShortageMetadata[] = "ppn-shortage";

// Receives one WatchVm stream. Calls are never concurrent: OnWatchMessage once per message
// (the first unasked, each later one after FleetWatch::ReadNext), then OnWatchDone exactly
// once, last. After OnWatchDone returns nothing calls the observer again and its FleetWatch
// may be destroyed.
class FleetWatchObserver {
 public:
  virtual ~FleetWatchObserver() = default;
  virtual void OnWatchMessage(const ppn::fleet::v1::WatchVmResponse& message) = 0;
  // OK when the stream ended normally (the VM was destroyed); CANCELLED after Cancel();
  // otherwise a tenant-safe error.
  virtual void OnWatchDone(const absl::Status& status) = 0;
};

// One WatchVm stream to the fleet; holds no thread. Destroy it only after OnWatchDone (or
// before Start).
class FleetWatch {
 public:
  virtual ~FleetWatch() = default;
  // Starts the stream. Once.
  virtual void Start() = 0;
  // Asks for the next message; once after each OnWatchMessage. A no-op after Cancel.
  virtual void ReadNext() = 0;
  // Ends the stream early; OnWatchDone follows (unless it already came). Thread-safe; any
  // number of times.
  virtual void Cancel() = 0;
};

class FleetClient {
 public:
  virtual ~FleetClient() = default;
  // The fleet's CreateVm; `replayed` in the response says a retry returned an earlier VM.
  virtual absl::StatusOr<ppn::fleet::v1::CreateVmResponse> CreateVm(const TenantId& tenant,
                                                                    const ppn::fleet::v1::CreateVmRequest& request) = 0;
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const TenantId& tenant, const VmId& vm_id) = 0;
  virtual absl::StatusOr<ppn::fleet::v1::ListVmsResponse> ListVms(const TenantId& tenant,
                                                                  const ppn::fleet::v1::ListVmsRequest& request) = 0;
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> DestroyVm(const TenantId& tenant, const VmId& vm_id) = 0;
  // The fleet's UpdateVmNetwork: `egress` (already narrowed to the tenant's default) replaces
  // the running VM's policy on its node; the record answered holds it in spec.egress.
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> UpdateVmNetwork(const TenantId& tenant, const VmId& vm_id,
                                                                   const ppn::types::v1::EgressPolicy& egress) = 0;
  // The tenant's private networks (the fleet's CreateNetwork, GetNetwork, ListNetworks,
  // DeleteNetwork); errors as NetworkSafeError words them.
  virtual absl::StatusOr<ppn::types::v1::Network> CreateNetwork(const TenantId& tenant, const std::string& name) = 0;
  virtual absl::StatusOr<ppn::types::v1::Network> GetNetwork(const TenantId& tenant, const std::string& network_id) = 0;
  virtual absl::StatusOr<std::vector<ppn::types::v1::Network>> ListNetworks(const TenantId& tenant) = 0;
  virtual absl::Status DeleteNetwork(const TenantId& tenant, const std::string& network_id) = 0;
  // The fleet's StopVm, StartVm, RebootVm (`*how` what was done) and GetConsoleOutput for one
  // of the tenant's VMs; errors as TenantSafeError words them (CallAbout.power).
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> StopVm(const TenantId& tenant, const VmId& vm_id,
                                                          absl::Duration grace) = 0;
  // `fresh_disk`: StartVmRequest.fresh_disk (boot it on another host from its image when its
  // host is gone).
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> StartVm(const TenantId& tenant, const VmId& vm_id,
                                                           bool fresh_disk) = 0;
  virtual absl::StatusOr<ppn::fleet::v1::VmRecord> RebootVm(const TenantId& tenant, const VmId& vm_id,
                                                            absl::Duration grace, std::string* how) = 0;
  virtual absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> GetConsoleOutput(const TenantId& tenant,
                                                                                    const VmId& vm_id, uint64_t offset,
                                                                                    uint32_t max_bytes) = 0;
  // A stream of `vm_id`'s states, not yet started. `*observer` must outlive OnWatchDone.
  virtual std::unique_ptr<FleetWatch> WatchVm(const TenantId& tenant, const VmId& vm_id,
                                              FleetWatchObserver* observer) = 0;
};

// What a tenant's call was about, so a fleet error can be told in the tenant's own terms.
struct CallAbout {
  std::string vm_id;                             // GetVm, DestroyVm, WatchVm, UpdateVmNetwork
  const ppn::types::v1::VmSpec* spec = nullptr;  // CreateVm
  std::string request_id;                        // CreateVm
  std::string chosen_id;                         // CreateVm: the tenant's own id for the VM, if any
  bool network = false;                          // UpdateVmNetwork
  bool list = false;                             // ListVms
  std::string power;                             // "stop", "start", "reboot" (StopVm, StartVm, RebootVm)
};

// The fleet's `status` as a tenant may see it. Nothing of the fleet's own message reaches
// the tenant (it can name nodes, paths, QEMU's output or other images): each message is
// rebuilt from the code, `shortage` (kShortageMetadata, "" if absent) and the tenant's own
// request in `about`:
//   NOT_FOUND (a VM)             "vm X not found"
//   INVALID_ARGUMENT or NOT_FOUND about the image of a create
//                                INVALID_ARGUMENT "image X is not offered"
//   INVALID_ARGUMENT about a network change
//                                "the VM's host refused this egress policy"
//   INVALID_ARGUMENT of a list   the fleet's own "filter: ..." and "page_token ..." words,
//                                which are about the tenant's filter and token only
//   ALREADY_EXISTS               "request_id X was used for a different VM; ...",
//                                "vm X already exists" (a chosen id) or
//                                "a VM named X already exists"
//   RESOURCE_EXHAUSTED           "no host has disk space for this VM right now; ..." when the
//                                shortage is disk, else "no host has room for this VM ..."
//   UNAVAILABLE                  "the VM's host is unreachable right now; retry later"
//   FAILED_PRECONDITION          "the VM could not be started (check its image and spec) or
//                                is still being created; retry"; about a network change:
//                                "vm X must be running on a host with network isolation to
//                                change its network"
//   ABORTED about a network change
//                                "vm X moved to another host during the change; retry"
//   CANCELLED                    "the call was cancelled"
//   anything else                INTERNAL "the control plane failed (code)"
absl::Status TenantSafeError(const absl::Status& status, absl::string_view shortage, const CallAbout& about);

// The fleet's `status` of a network call about `network_id` (or, for a create, the name
// `name`), in words a tenant may see, rebuilt as TenantSafeError's are:
//   NOT_FOUND            "network X not found" (absent and another tenant's alike)
//   ALREADY_EXISTS       "a network named N already exists"
//   INVALID_ARGUMENT     "name must be 1-63 characters of [a-z0-9-], starting with a letter"
//   RESOURCE_EXHAUSTED   "no private network is left to hand out: delete a network, or ask the
//                        operator for a larger pool"
//   FAILED_PRECONDITION  "network X has VMs attached: <the tenant's VM ids>"
//   UNAVAILABLE          "the control plane is unreachable right now; retry later"
//   anything else        INTERNAL "the control plane failed (code)"
absl::Status NetworkSafeError(const absl::Status& status, const std::string& network_id, const std::string& name);

}  // namespace ppn::proxy
