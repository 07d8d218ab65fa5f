#pragma once

// LedgerNodeWatcher feeds the node registry from the membership ledger: every `node.join`
// entry (subject = node name, attribute agent_address) registers a node, every
// `node.revoke` revokes one. It follows the ledger's live stream from the start, so a
// restarted fleet rebuilds membership from the ledger alone. Start/Stop.

#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/tls_credentials.h"
#include "fleet/fleet_core.h"
#include "grpcpp/client_context.h"

namespace ppn::fleet {

class LedgerNodeWatcher {
 public:
  LedgerNodeWatcher(FleetCore* core, std::string ledger_address, TlsFiles tls)
      : core_(core), address_(std::move(ledger_address)), tls_(std::move(tls)) {}
  ~LedgerNodeWatcher() { Stop(); }
  void Start();
  void Stop();

 private:
  void Loop();
  FleetCore* const core_;
  const std::string address_;
  const TlsFiles tls_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

}  // namespace ppn::fleet
