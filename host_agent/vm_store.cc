#include "host_agent/vm_store.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ppn::host {

absl::StatusOr<std::unique_ptr<VmStore>> VmStore::Open(const std::string& path) {
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path));
  PPN_RETURN_IF_ERROR(db->Migrate({
      "CREATE TABLE vms (vm_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, record BLOB NOT NULL, "
      "migration_port INTEGER NOT NULL DEFAULT 0)",
  }));
  return std::unique_ptr<VmStore>(new VmStore(std::move(db)));
}

absl::Status VmStore::Put(const StoredVm& vm) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("INSERT OR REPLACE INTO vms (vm_id, tenant_id, record, "
                                                    "migration_port) VALUES (?, ?, ?, ?)"));
  return stmt.Bind(1, vm.instance.vm_id())
      .Bind(2, vm.instance.tenant_id())
      .BindBlob(3, vm.instance.SerializeAsString())
      .Bind(4, vm.migration_port)
      .Run();
}

absl::Status VmStore::Delete(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("DELETE FROM vms WHERE vm_id = ?"));
  return stmt.Bind(1, vm_id).Run();
}

absl::StatusOr<std::vector<StoredVm>> VmStore::LoadAll() {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("SELECT vm_id, record, migration_port FROM vms ORDER BY vm_id"));
  std::vector<StoredVm> out;
  while (true) {
    PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    StoredVm vm;
    if (!vm.instance.ParseFromString(stmt.ColumnBlob(1))) {
      return absl::DataLossError(absl::StrCat("VM record ", stmt.ColumnText(0), " is corrupt"));
    }
    vm.migration_port = static_cast<uint32_t>(stmt.ColumnInt(2));
    out.push_back(std::move(vm));
  }
  return out;
}

}  // namespace ppn::host
