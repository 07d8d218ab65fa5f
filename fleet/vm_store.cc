#include "fleet/vm_store.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ppn::fleet {

absl::StatusOr<std::unique_ptr<VmStore>> VmStore::Open(const std::string& path) {
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path));
  PPN_RETURN_IF_ERROR(db->Migrate({
      "CREATE TABLE vms (vm_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, request_id TEXT NOT NULL, "
      "record BLOB NOT NULL); CREATE INDEX vms_tenant ON vms (tenant_id, vm_id);",
      "ALTER TABLE vms ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''",
      "ALTER TABLE vms ADD COLUMN relay_ports TEXT NOT NULL DEFAULT ''",
      "CREATE TABLE networks (network_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL, "
      "pool_index INTEGER NOT NULL, create_time INTEGER NOT NULL)",
      // Rows written before VM_STATE_DESTROYED existed, when STOPPED meant destroyed.
      "ALTER TABLE vms ADD COLUMN legacy_states INTEGER NOT NULL DEFAULT 1",
      "CREATE TABLE node_cordons (node_id TEXT PRIMARY KEY, reason TEXT NOT NULL)",
  }));
  PPN_RETURN_IF_ERROR(RewriteLegacyStates(*db));
  return std::unique_ptr<VmStore>(new VmStore(std::move(db)));
}

absl::Status VmStore::RewriteLegacyStates(Database& db) {
  // One transaction: a crash leaves every row either old (flag set, rewritten next time) or
  // new, so a STOPPED row is never read with the wrong meaning.
  Transaction tx(db);
  PPN_RETURN_IF_ERROR(tx.Begin());
  std::vector<std::pair<std::string, ppn::fleet::v1::VmRecord>> legacy;
  {
    PPN_ASSIGN_OR_RETURN(Statement select, db.Prepare("SELECT vm_id, record FROM vms WHERE legacy_states = 1"));
    while (true) {
      PPN_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      ppn::fleet::v1::VmRecord record;
      if (!record.ParseFromString(select.ColumnBlob(1))) {
        return absl::DataLossError(absl::StrCat("VM record ", select.ColumnText(0), " is corrupt"));
      }
      legacy.emplace_back(select.ColumnText(0), std::move(record));
    }
  }
  for (auto& [vm_id, record] : legacy) {
    if (record.state() == ppn::types::v1::VM_STATE_STOPPED) record.set_state(ppn::types::v1::VM_STATE_DESTROYED);
    PPN_ASSIGN_OR_RETURN(Statement update, db.Prepare("UPDATE vms SET record = ?, legacy_states = 0 WHERE vm_id = ?"));
    PPN_RETURN_IF_ERROR(update.BindBlob(1, record.SerializeAsString()).Bind(2, vm_id).Run());
  }
  return tx.Commit();
}

absl::Status VmStore::Put(const StoredVm& vm) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt,
                       db_->Prepare("INSERT OR REPLACE INTO vms (vm_id, tenant_id, request_id, record, fingerprint, "
                                    "relay_ports, legacy_states) VALUES (?, ?, ?, ?, ?, ?, 0)"));
  return stmt.Bind(1, vm.record.vm_id())
      .Bind(2, vm.record.tenant_id())
      .Bind(3, vm.record.request_id())
      .BindBlob(4, vm.record.SerializeAsString())
      .Bind(5, vm.fingerprint)
      .Bind(6, FormatRelayPorts(vm.relay_ports))
      .Run();
}

absl::Status VmStore::Delete(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("DELETE FROM vms WHERE vm_id = ?"));
  return stmt.Bind(1, vm_id).Run();
}

absl::StatusOr<std::vector<StoredVm>> VmStore::LoadAll() {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt,
                       db_->Prepare("SELECT vm_id, request_id, record, fingerprint, relay_ports FROM vms"));
  std::vector<StoredVm> out;
  while (true) {
    PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    StoredVm vm;
    if (!vm.record.ParseFromString(stmt.ColumnBlob(2))) {
      return absl::DataLossError(absl::StrCat("VM record ", stmt.ColumnText(0), " is corrupt"));
    }
    // Records written before VmRecord carried it keep the key only in its column.
    if (vm.record.request_id().empty()) vm.record.set_request_id(stmt.ColumnText(1));
    vm.fingerprint = stmt.ColumnText(3);
    absl::StatusOr<std::vector<RelayPort>> relay = ParseRelayPorts(stmt.ColumnText(4));
    if (!relay.ok()) {
      return absl::DataLossError(absl::StrCat("VM record ", stmt.ColumnText(0), ": ", relay.status().message()));
    }
    vm.relay_ports = *std::move(relay);
    out.push_back(std::move(vm));
  }
  return out;
}

absl::Status VmStore::PutNetwork(const StoredNetwork& n) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("INSERT OR REPLACE INTO networks (network_id, tenant_id, name, "
                                                    "pool_index, create_time) VALUES (?, ?, ?, ?, ?)"));
  return stmt.Bind(1, n.network_id)
      .Bind(2, n.tenant_id)
      .Bind(3, n.name)
      .Bind(4, int64_t{n.index})
      .Bind(5, n.create_unix_seconds)
      .Run();
}

absl::Status VmStore::DeleteNetwork(const std::string& network_id) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("DELETE FROM networks WHERE network_id = ?"));
  return stmt.Bind(1, network_id).Run();
}

absl::StatusOr<std::vector<StoredNetwork>> VmStore::LoadNetworks() {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt,
                       db_->Prepare("SELECT network_id, tenant_id, name, pool_index, create_time FROM networks"));
  std::vector<StoredNetwork> out;
  while (true) {
    PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    int64_t index = stmt.ColumnInt(3);
    if (index < 0 || index > (1 << 16)) {
      return absl::DataLossError(absl::StrCat("network record ", stmt.ColumnText(0), " has a corrupt pool index"));
    }
    out.push_back(
        {stmt.ColumnText(0), stmt.ColumnText(1), stmt.ColumnText(2), static_cast<uint32_t>(index), stmt.ColumnInt(4)});
  }
  return out;
}

absl::Status VmStore::PutCordon(const std::string& node_id, const std::string& reason) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt,
                       db_->Prepare("INSERT OR REPLACE INTO node_cordons (node_id, reason) VALUES (?, ?)"));
  return stmt.Bind(1, node_id).Bind(2, reason).Run();
}

absl::Status VmStore::DeleteCordon(const std::string& node_id) {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("DELETE FROM node_cordons WHERE node_id = ?"));
  return stmt.Bind(1, node_id).Run();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> VmStore::LoadCordons() {
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("SELECT node_id, reason FROM node_cordons ORDER BY node_id"));
  std::vector<std::pair<std::string, std::string>> out;
  while (true) {
    PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    out.emplace_back(stmt.ColumnText(0), stmt.ColumnText(1));
  }
  return out;
}

}  // namespace ppn::fleet
