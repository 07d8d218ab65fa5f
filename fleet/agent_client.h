#pragma once

// The fleet's view of a host agent: what it asks of one node. Faked in unit tests
// (fleet/testing/fake_agent_client.h).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::fleet {

class AgentClient {
 public:
  virtual ~AgentClient() = default;
  // Starts the VM on the node; the agent's status comes back unchanged, except that
  // UNAVAILABLE and DEADLINE_EXCEEDED both arrive as UNAVAILABLE: the outcome is unknown.
  // Idempotent on the agent for the same (vm, tenant).
  // `nics`: its NICs on private networks (addresses from the fleet; one per spec.networks).
  virtual absl::StatusOr<ppn::host::v1::VmInstance> SpawnVm(
      const VmId& vm, const TenantId& tenant, const ppn::types::v1::VmSpec& spec,
      const google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>& nics) = 0;
  // Stops the VM and frees its resources. NOT_FOUND if the node does not have it.
  virtual absl::Status DestroyVm(const VmId& vm) = 0;
  // Continues a copy paused on the node (after an outgoing migration no node took over).
  // FAILED_PRECONDITION if it is not paused, NOT_FOUND if the node does not have it.
  virtual absl::StatusOr<ppn::host::v1::VmInstance> ResumeVm(const VmId& vm) = 0;
  // Replaces the VM's egress policy on the node, live. INVALID_ARGUMENT for a policy the node
  // refuses, NOT_FOUND if the node does not have it, FAILED_PRECONDITION if it cannot change
  // it (no network isolation there); UNAVAILABLE when the answer was lost (it may have applied).
  virtual absl::StatusOr<ppn::host::v1::VmInstance> UpdateVmNetwork(const VmId& vm,
                                                                    const ppn::types::v1::EgressPolicy& egress) = 0;
  // Replaces the peers of a private network's tunnel on the node.
  virtual absl::Status SetNetworkPeers(const ppn::host::v1::SetNetworkPeersRequest& request) = 0;
  // Powers the VM off (ACPI, then killed after `grace`; 0: the node's default), keeping its
  // disk there; the node's instance (STOPPED). Errors as the node's StopVm.
  virtual absl::StatusOr<ppn::host::v1::VmInstance> StopVm(const VmId& vm, absl::Duration grace) = 0;
  // Boots a stopped VM again on its kept disk (STARTING).
  virtual absl::StatusOr<ppn::host::v1::VmInstance> StartVm(const VmId& vm) = 0;
  // ACPI power-off and boot, or a reset after `grace`; `*how` says which.
  virtual absl::StatusOr<ppn::host::v1::VmInstance> RebootVm(const VmId& vm, absl::Duration grace,
                                                             std::string* how) = 0;
  // A bounded read of the VM's console log.
  virtual absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> GetConsoleOutput(const VmId& vm, uint64_t offset,
                                                                                   uint32_t max_bytes) = 0;
};

// Makes (and caches) the client of each node.
class AgentClientFactory {
 public:
  virtual ~AgentClientFactory() = default;
  virtual AgentClient* ForNode(const std::string& node_id, const std::string& address) = 0;
};

}  // namespace ppn::fleet
