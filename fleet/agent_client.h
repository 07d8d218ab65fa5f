#pragma once

// The fleet's view of a host agent: what it asks of one node. Faked in unit tests.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::fleet {

class AgentClient {
 public:
  virtual ~AgentClient() = default;
  // Starts the VM on the node; the agent's status comes back unchanged.
  virtual absl::StatusOr<ppn::host::v1::VmInstance> SpawnVm(const std::string& vm_id, const std::string& tenant_id,
                                                            const ppn::types::v1::VmSpec& spec) = 0;
  // Stops the VM and frees its resources. NOT_FOUND if the node does not have it.
  virtual absl::Status DestroyVm(const std::string& vm_id) = 0;
};

// Makes (and caches) the client of each node.
class AgentClientFactory {
 public:
  virtual ~AgentClientFactory() = default;
  virtual AgentClient* ForNode(const std::string& node_id, const std::string& address) = 0;
};

}  // namespace ppn::fleet
