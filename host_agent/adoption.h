#pragma once

// What a restarted agent does with each VM it has a record of, given what it finds running:
// pure decisions, so that every case is tested without QEMU. A QEMU is never left running
// untracked and never reported as something it is not (a paused copy is not RUNNING).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/process.h"
#include "host_agent/vm_runtime.h"
#include "host_agent/vm_store.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::host {

// What the agent found for one record: whether its QEMU runs, and, when it answers QMP, its
// run state ("running", "postmigrate", ...) and migration status ("" for none).
struct FoundQemu {
  bool alive = false;
  bool answers_qmp = false;
  std::string run_state;
  std::string migration_status;
};

struct Adoption {
  bool remove = false;  // forget the VM: stop its QEMU, remove files, ports and record
  bool cont = false;    // continue a guest left paused by a migration that did not complete
  ppn::types::v1::VmState state = ppn::types::v1::VM_STATE_UNSPECIFIED;
  std::string state_message;
  bool migrated_out = false;
  bool incoming = false;  // still a target waiting for (or receiving) a migration
};

// The decision for `rec` (incoming when it holds a migration port) given `found`.
Adoption DecideAdoption(const StoredVm& rec, const FoundQemu& found);

// A VM kept at start: its record as decided (state, message, migrated_out, pid; no migration
// port unless still incoming) and its QEMU, if one runs.
struct AdoptedVm {
  StoredVm rec;
  std::shared_ptr<Process> process;
  bool incoming = false;
};

// Takes over what the agent ran before it stopped. Each record in `store` is decided with
// DecideAdoption against the QEMU running for it: a second QEMU for one id is killed, an
// outgoing migration nobody follows any more is cancelled, a guest it left paused is
// continued, and a VM to remove is discarded (QEMU, files, record). Every QEMU of this state
// directory without a record is killed and every VM directory without one removed. Returns
// the VMs to keep; the store's error if it cannot be read.
absl::StatusOr<std::vector<AdoptedVm>> AdoptAtStart(VmStore* store, VmRuntime* runtime);

}  // namespace ppn::host
