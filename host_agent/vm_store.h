#pragma once

// VmStore persists the agent's VM records in SQLite, so a restarted agent knows which QEMU
// processes are its own and who owns them. Thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/sqlite.h"
#include "ppn/host/v1/host_agent.pb.h"

namespace ppn::host {

struct StoredVm {
  ppn::host::v1::VmInstance instance;  // spec without user_data
  uint32_t migration_port = 0;         // held while an incoming migration is pending
};

class VmStore {
 public:
  static absl::StatusOr<std::unique_ptr<VmStore>> Open(const std::string& path);

  // Inserts or replaces the record of `vm.instance.vm_id()`, durably.
  absl::Status Put(const StoredVm& vm);
  absl::Status Delete(const std::string& vm_id);
  absl::StatusOr<std::vector<StoredVm>> LoadAll();

 private:
  explicit VmStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Mutex mu_;
  std::unique_ptr<Database> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::host
