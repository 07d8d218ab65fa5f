#pragma once

// The fleet's durable VM registry: every VM record, written before an RPC answers, so
// ownership and placement survive a fleet restart. Thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/sqlite.h"
#include "fleet/private_networks.h"
#include "fleet/relay_ports.h"
#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::fleet {

struct StoredVm {
  ppn::fleet::v1::VmRecord record;  // record.request_id is the creating call's idempotency key
  // SpecFingerprint of the creating request (user_data included, which the record does not
  // keep); empty for records written before fingerprints were kept.
  std::string fingerprint;
  // The relay's port for each of its forwarded ports (the record's forwarded ports are the
  // node's, replaced at every move; these stay for the VM's life). Empty when the fleet has no
  // relay, and once the VM is DESTROYED.
  std::vector<RelayPort> relay_ports;
};

class VmStore {
 public:
  // Opens (creating or migrating) the registry at `path`. A record written before
  // VM_STATE_DESTROYED existed, when STOPPED meant destroyed, is rewritten DESTROYED once.
  static absl::StatusOr<std::unique_ptr<VmStore>> Open(const std::string& path);
  absl::Status Put(const StoredVm& vm);
  absl::Status Delete(const std::string& vm_id);
  absl::StatusOr<std::vector<StoredVm>> LoadAll();

  // Tenants' private networks (NetworkPool's records).
  absl::Status PutNetwork(const StoredNetwork& network);
  absl::Status DeleteNetwork(const std::string& network_id);
  absl::StatusOr<std::vector<StoredNetwork>> LoadNetworks();

  // Cordoned nodes and why (node_id → reason).
  absl::Status PutCordon(const std::string& node_id, const std::string& reason);
  absl::Status DeleteCordon(const std::string& node_id);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadCordons();

 private:
  explicit VmStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  static absl::Status RewriteLegacyStates(Database& db);
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::fleet
