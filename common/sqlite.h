#pragma once

// The one SQLite wrapper: WAL, busy timeout, prepared statements, transactions and schema
// versioning (PRAGMA user_version). Errors are absl::Status values naming the statement.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ppn {

class Database;

// Statement is a prepared statement. Move-only; not thread-safe (use one per thread or
// guard it together with its Database).
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  ~Statement();

  // Binds parameter `index` (1-based).
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, absl::string_view text);
  Statement& BindBlob(int index, absl::string_view bytes);
  Statement& BindNull(int index);

  // Runs one step: true if a row is available, false when done. Errors name the SQL.
  absl::StatusOr<bool> Step();
  // Steps to completion, for statements that return no rows.
  absl::Status Run();
  // Clears the bindings and rewinds so the statement can run again.
  void Reset();

  int64_t ColumnInt(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  absl::Status bind_error_;
};

// Database is one connection. Not thread-safe: callers serialize access (a mutex around
// the connection), as each service's store does.
class Database {
 public:
  struct Options {
    // Wait this long for another connection's lock before failing with UNAVAILABLE.
    absl::Duration busy_timeout = absl::Seconds(5);
    // FULL: a committed transaction survives power loss (WAL fsync on commit).
    bool synchronous_full = true;
    // Open read-only (verifiers); the file must exist.
    bool read_only = false;
  };

  // Opens (creating unless read_only) the database at `path` in WAL mode.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path, const Options& options);
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path) { return Open(path, Options()); }
  ~Database();

  // Runs one or more statements that return no rows.
  absl::Status Exec(absl::string_view sql);
  // Prepares one statement.
  absl::StatusOr<Statement> Prepare(absl::string_view sql);

  // Brings the schema to version migrations.size(): migration i (0-based) takes the schema
  // from version i to i+1, each in its own transaction. A database newer than the code is
  // FAILED_PRECONDITION.
  absl::Status Migrate(const std::vector<std::string>& migrations);
  // PRAGMA user_version.
  absl::StatusOr<int> SchemaVersion();

  // BEGIN IMMEDIATE / COMMIT / ROLLBACK.
  absl::Status Begin();
  absl::Status Commit();
  absl::Status Rollback();

  int64_t LastInsertRowId() const;
  int Changes() const;
  const std::string& path() const { return path_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

// Transaction rolls back on destruction unless Commit() succeeded.
class Transaction {
 public:
  explicit Transaction(Database& db) : db_(db) {}
  ~Transaction();
  absl::Status Begin();
  absl::Status Commit();

 private:
  Database& db_;
  bool open_ = false;
};

// Maps a SQLite result code to a canonical status (BUSY/LOCKED -> UNAVAILABLE, CONSTRAINT ->
// FAILED_PRECONDITION, CORRUPT/NOTADB -> DATA_LOSS, FULL -> RESOURCE_EXHAUSTED).
absl::Status SqliteError(int code, absl::string_view what, sqlite3* db);

}  // namespace ppn
