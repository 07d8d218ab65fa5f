#pragma once

// Serves a metrics Registry over plain HTTP (GET /metrics) for Prometheus to scrape: the one
// HTTP listener of a service, on the addresses the operator names (a node's mesh address and
// loopback, never a tenant-facing address). A few bounded threads; a slow or silent client is
// dropped after a few seconds and cannot hold up other scrapes.

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace ppn::metrics {

class MetricsServer {
 public:
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // "host:port[,host:port...]" (IPv4, or [IPv6]); port 0 picks one (tests). UNAVAILABLE naming
  // the address when one cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen, const Registry* registry);
  int port() const { return port_; }  // the first address's

 private:
  MetricsServer(const Registry* registry) : registry_(registry) {}
  void Accept(int fd);
  void Serve(int client);

  const Registry* registry_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::atomic<int> active_{0};
  int port_ = 0;
};

// Starts --metrics_listen's server on the default registry, once per process: StartServer
// calls it, so it listens when the service does (a host agent's mesh address exists only once
// its tunnel is up). Empty flag: none. UNAVAILABLE naming the address if it cannot bind.
absl::Status StartDefaultMetricsServer();

}  // namespace ppn::metrics
