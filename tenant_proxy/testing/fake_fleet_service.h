#pragma once

// FakeFleetService: a scripted fleet server for the proxy's gRPC client tests and for tests
// that run the real proxy binary against a fleet whose answers they choose (a shortage
// trailer, a create that blocks until the test has killed the proxy). Records what each call
// carried. Its WatchVm holds a thread per stream, as a sync fleet does. Thread-safe.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_server.h"
#include "ppn/fleet/v1/fleet_service.grpc.pb.h"

namespace ppn::proxy::testing {

class FakeFleetService final : public ppn::fleet::v1::FleetService::Service {
 public:
  // What one call carried.
  struct Seen {
    std::string rpc;
    std::string tenant;            // the x-ppn-tenant-id metadata
    absl::Duration deadline_left;  // InfiniteDuration when the call had none
    std::string request_id;        // CreateVm
  };

  // The next call (of any method) fails with `status`, these trailers attached.
  void FailNext(grpc::Status status, std::multimap<std::string, std::string> trailers = {});
  // Runs inside CreateVm once the VM exists, before the answer.
  void OnCreate(std::function<void(const ppn::fleet::v1::CreateVmRequest&)> hook);
  std::vector<Seen> seen();
  int creates();
  // The VM created with `request_id`, if any.
  std::optional<ppn::fleet::v1::VmRecord> FindByRequestId(const std::string& request_id);
  // WatchVm streams open now, and how many ended because the caller cancelled.
  int open_watches();
  int cancelled_watches();

  grpc::Status CreateVm(grpc::ServerContext*, const ppn::fleet::v1::CreateVmRequest*,
                        ppn::fleet::v1::CreateVmResponse*) override;
  grpc::Status GetVm(grpc::ServerContext*, const ppn::fleet::v1::GetVmRequest*,
                     ppn::fleet::v1::GetVmResponse*) override;
  grpc::Status ListVms(grpc::ServerContext*, const ppn::fleet::v1::ListVmsRequest*,
                       ppn::fleet::v1::ListVmsResponse*) override;
  grpc::Status DestroyVm(grpc::ServerContext*, const ppn::fleet::v1::DestroyVmRequest*,
                         ppn::fleet::v1::DestroyVmResponse*) override;
  grpc::Status WatchVm(grpc::ServerContext*, const ppn::fleet::v1::WatchVmRequest*,
                       grpc::ServerWriter<ppn::fleet::v1::WatchVmResponse>*) override;
  grpc::Status UpdateVmNetwork(grpc::ServerContext*, const ppn::fleet::v1::UpdateVmNetworkRequest*,
                               ppn::fleet::v1::UpdateVmNetworkResponse*) override;

 private:
  // Records the call; returns the scripted failure, if one is due.
  std::optional<grpc::Status> Begin(grpc::ServerContext* context, const char* rpc, const std::string& request_id = "");

  absl::Mutex mu_;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> fail_next_ ABSL_GUARDED_BY(mu_);
  std::multimap<std::string, std::string> fail_trailers_ ABSL_GUARDED_BY(mu_);
  std::function<void(const ppn::fleet::v1::CreateVmRequest&)> on_create_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ppn::fleet::v1::VmRecord> vms_ ABSL_GUARDED_BY(mu_);
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
  int creates_ ABSL_GUARDED_BY(mu_) = 0;
  int open_watches_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_watches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on every change, for WatchVm
  absl::CondVar changed_;
};

// Serves `service` in-process (no network): a channel to it.
struct InProcessFleet {
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};
InProcessFleet StartInProcess(FakeFleetService* service);

// Serves `service` on 127.0.0.1:0 with mTLS, admitting the tenant-proxy role to every method.
absl::StatusOr<StartedServer> StartMeshFleet(const std::string& mesh, const TlsFiles& tls, FakeFleetService* service);

}  // namespace ppn::proxy::testing
