#pragma once

// AgentClient over mTLS gRPC, presenting the fleet's certificate.

#include <map>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "common/tls_credentials.h"
#include "fleet/agent_client.h"
#include "grpcpp/channel.h"
#include "ppn/host/v1/host_agent.grpc.pb.h"

namespace ppn::fleet {

class GrpcAgentClientFactory final : public AgentClientFactory {
 public:
  explicit GrpcAgentClientFactory(TlsFiles tls) : tls_(std::move(tls)) {}
  AgentClient* ForNode(const std::string& node_id, const std::string& address) override;
  // A channel to `address` with the fleet's credentials (the heartbeat watcher uses it too).
  std::shared_ptr<grpc::Channel> Channel(const std::string& address);

 private:
  const TlsFiles tls_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<AgentClient>> clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::fleet
