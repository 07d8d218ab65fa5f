#include "ledger/ledger_store.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ppn::ledger {
namespace {

std::string WormTriggers(const std::string& table) {
  return absl::StrCat("CREATE TRIGGER ", table, "_no_update BEFORE UPDATE ON ", table,
                      " BEGIN SELECT RAISE(ABORT, 'ledger ", table, " are append-only'); END;", "CREATE TRIGGER ",
                      table, "_no_delete BEFORE DELETE ON ", table, " BEGIN SELECT RAISE(ABORT, 'ledger ", table,
                      " are append-only'); END;");
}

}  // namespace

const std::vector<std::string>& LedgerStore::Schema() {
  static const std::vector<std::string> schema = {
      absl::StrCat("CREATE TABLE entries (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
                   "leaf BLOB NOT NULL, idempotency_key TEXT UNIQUE);"
                   "CREATE INDEX entries_kind ON entries (kind, idx);"
                   "CREATE TABLE nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
                   "hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;"
                   "CREATE TABLE checkpoints (tree_size INTEGER PRIMARY KEY, note TEXT NOT NULL);"
                   "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
                   WormTriggers("entries"), WormTriggers("nodes"), WormTriggers("checkpoints"), WormTriggers("meta")),
  };
  return schema;
}

absl::StatusOr<std::unique_ptr<LedgerStore>> LedgerStore::Open(const std::string& path) {
  std::unique_ptr<LedgerStore> store(new LedgerStore());
  absl::MutexLock w(&store->write_mu_);
  absl::MutexLock r(&store->read_mu_);
  PPN_ASSIGN_OR_RETURN(store->writer_, Database::Open(path));
  PPN_RETURN_IF_ERROR(store->writer_->Migrate(Schema()));
  PPN_ASSIGN_OR_RETURN(store->reader_, Database::Open(path));
  PPN_ASSIGN_OR_RETURN(Statement node, store->reader_->Prepare("SELECT hash FROM nodes WHERE level = ? AND idx = ?"));
  store->read_node_.emplace(std::move(node));
  PPN_ASSIGN_OR_RETURN(Statement count, store->writer_->Prepare("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries"));
  PPN_ASSIGN_OR_RETURN(bool row, count.Step());
  (void)row;
  {
    absl::MutexLock s(&store->size_mu_);
    store->size_ = static_cast<uint64_t>(count.ColumnInt(0));
  }
  PPN_RETURN_IF_ERROR(store->LoadFrontier());
  return store;
}

absl::Status LedgerStore::LoadFrontier() {
  PPN_ASSIGN_OR_RETURN(Statement stmt, writer_->Prepare("SELECT n.level, n.hash FROM nodes n JOIN "
                                                        "(SELECT level, MAX(idx) AS idx FROM nodes GROUP BY level) m "
                                                        "ON n.level = m.level AND n.idx = m.idx ORDER BY n.level"));
  frontier_.clear();
  while (true) {
    PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    size_t level = static_cast<size_t>(stmt.ColumnInt(0));
    if (frontier_.size() <= level) frontier_.resize(level + 1);
    frontier_[level] = stmt.ColumnBlob(1);
  }
  return absl::OkStatus();
}

uint64_t LedgerStore::size() const {
  absl::MutexLock l(&size_mu_);
  return size_;
}

absl::StatusOr<uint64_t> LedgerStore::Append(const std::vector<NewLeaf>& leaves, const StoredCheckpoint* checkpoint) {
  absl::MutexLock l(&write_mu_);
  const uint64_t first = size();
  std::vector<Hash> frontier = frontier_;  // committed only with the transaction
  Transaction tx(*writer_);
  PPN_RETURN_IF_ERROR(tx.Begin());
  PPN_ASSIGN_OR_RETURN(Statement insert_entry,
                       writer_->Prepare("INSERT INTO entries (idx, kind, leaf, idempotency_key) "
                                        "VALUES (?, ?, ?, ?)"));
  PPN_ASSIGN_OR_RETURN(Statement insert_node,
                       writer_->Prepare("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)"));
  auto put_node = [&](size_t level, uint64_t idx, const Hash& hash) -> absl::Status {
    insert_node.Reset();
    PPN_RETURN_IF_ERROR(
        insert_node.Bind(1, static_cast<int64_t>(level)).Bind(2, static_cast<int64_t>(idx)).BindBlob(3, hash).Run());
    if (frontier.size() <= level) frontier.resize(level + 1);
    frontier[level] = hash;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < leaves.size(); ++i) {
    uint64_t idx = first + i;
    insert_entry.Reset();
    insert_entry.Bind(1, static_cast<int64_t>(idx)).Bind(2, leaves[i].kind).BindBlob(3, leaves[i].leaf);
    if (leaves[i].idempotency_key.empty()) {
      insert_entry.BindNull(4);
    } else {
      insert_entry.Bind(4, leaves[i].idempotency_key);
    }
    PPN_RETURN_IF_ERROR(insert_entry.Run());
    // Store the leaf hash, then each parent it completes: a right child (odd index)
    // completes its parent with the left sibling, the previous node at its level.
    Hash hash = HashLeaf(leaves[i].leaf);
    size_t level = 0;
    uint64_t node = idx;
    while (true) {
      Hash left = (node & 1) ? frontier[level] : Hash();
      PPN_RETURN_IF_ERROR(put_node(level, node, hash));
      if (!(node & 1)) break;
      hash = HashChildren(left, hash);
      ++level;
      node >>= 1;
    }
  }
  if (checkpoint != nullptr) {
    PPN_ASSIGN_OR_RETURN(Statement insert_checkpoint, writer_->Prepare("INSERT OR IGNORE INTO checkpoints "
                                                                       "(tree_size, note) VALUES (?, ?)"));
    PPN_RETURN_IF_ERROR(
        insert_checkpoint.Bind(1, static_cast<int64_t>(checkpoint->tree_size)).Bind(2, checkpoint->note).Run());
  }
  PPN_RETURN_IF_ERROR(tx.Commit());
  frontier_ = std::move(frontier);
  absl::MutexLock s(&size_mu_);
  size_ = first + leaves.size();
  return first;
}

absl::StatusOr<std::optional<uint64_t>> LedgerStore::FindIdempotencyKey(const std::string& key) {
  absl::MutexLock l(&read_mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, reader_->Prepare("SELECT idx FROM entries WHERE idempotency_key = ?"));
  stmt.Bind(1, key);
  PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<uint64_t>();
  return std::optional<uint64_t>(static_cast<uint64_t>(stmt.ColumnInt(0)));
}

absl::StatusOr<std::vector<StoredLeaf>> LedgerStore::ReadLeaves(uint64_t start, int limit, const std::string& kind) {
  uint64_t committed = size();
  absl::MutexLock l(&read_mu_);
  PPN_ASSIGN_OR_RETURN(
      Statement stmt, reader_->Prepare(kind.empty() ? "SELECT idx, leaf FROM entries WHERE idx >= ?1 AND idx < ?2 "
                                                      "ORDER BY idx LIMIT ?3"
                                                    : "SELECT idx, leaf FROM entries WHERE kind = ?4 AND idx >= ?1 AND "
                                                      "idx < ?2 ORDER BY idx LIMIT ?3"));
  stmt.Bind(1, static_cast<int64_t>(start)).Bind(2, static_cast<int64_t>(committed)).Bind(3, limit);
  if (!kind.empty()) stmt.Bind(4, kind);
  std::vector<StoredLeaf> out;
  while (true) {
    PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    out.push_back({static_cast<uint64_t>(stmt.ColumnInt(0)), stmt.ColumnBlob(1)});
  }
  return out;
}

absl::StatusOr<Hash> LedgerStore::PerfectSubtree(int level, uint64_t index) {
  absl::MutexLock l(&read_mu_);
  read_node_->Reset();
  read_node_->Bind(1, level).Bind(2, static_cast<int64_t>(index));
  PPN_ASSIGN_OR_RETURN(bool row, read_node_->Step());
  if (!row) {
    return absl::NotFoundError(absl::StrCat("no subtree at level ", level, " index ", index));
  }
  Hash hash = read_node_->ColumnBlob(0);
  read_node_->Reset();
  if (hash.size() != kHashBytes) {
    return absl::DataLossError(
        absl::StrCat("stored subtree hash at level ", level, " index ", index, " is not 32 bytes"));
  }
  return hash;
}

absl::Status LedgerStore::AddCheckpoint(const StoredCheckpoint& checkpoint) {
  absl::MutexLock l(&write_mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, writer_->Prepare("INSERT OR IGNORE INTO checkpoints (tree_size, note) "
                                                        "VALUES (?, ?)"));
  return stmt.Bind(1, static_cast<int64_t>(checkpoint.tree_size)).Bind(2, checkpoint.note).Run();
}

absl::StatusOr<std::optional<StoredCheckpoint>> LedgerStore::LatestCheckpoint() {
  absl::MutexLock l(&read_mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, reader_->Prepare("SELECT tree_size, note FROM checkpoints "
                                                        "ORDER BY tree_size DESC LIMIT 1"));
  PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<StoredCheckpoint>();
  return std::optional<StoredCheckpoint>(
      StoredCheckpoint{static_cast<uint64_t>(stmt.ColumnInt(0)), stmt.ColumnText(1)});
}

absl::Status LedgerStore::PutMeta(const std::string& key, const std::string& value) {
  absl::MutexLock l(&write_mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, writer_->Prepare("INSERT INTO meta (key, value) VALUES (?, ?)"));
  return stmt.Bind(1, key).Bind(2, value).Run();
}

absl::StatusOr<std::optional<std::string>> LedgerStore::GetMeta(const std::string& key) {
  absl::MutexLock l(&read_mu_);
  PPN_ASSIGN_OR_RETURN(Statement stmt, reader_->Prepare("SELECT value FROM meta WHERE key = ?"));
  stmt.Bind(1, key);
  PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(stmt.ColumnText(0));
}

}  // namespace ppn::ledger
