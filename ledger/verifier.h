#pragma once

// The offline verifier: re-derives every root from the stored leaves of a ledger file and
// checks every checkpoint against them and against the ledger's public key. No server, no
// trust in anything the file says about itself except the leaves.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace ppn::ledger {

struct VerifyOptions {
  // The ledger's note verifier key, obtained out of band. Empty: use the key the file names
  // (then only accidental damage is detected, not a forger who re-signed with a new key).
  std::string verifier_key;
  // A checkpoint seen earlier (signed note text): the file must still contain its tree.
  // Detects a truncation that also removed the later checkpoints.
  std::string witnessed_checkpoint;
};

struct VerifyReport {
  bool ok = false;
  uint64_t entries = 0;
  uint64_t checkpoints = 0;
  // Entries after the newest checkpoint (appended since, or just before a crash).
  uint64_t unanchored_entries = 0;
  // The first entry index known to be bad, when the problem can be pinned to one.
  std::optional<uint64_t> first_bad_index;
  // What is wrong, in words; empty when ok.
  std::string problem;
  std::string verifier_key;
};

// Verifies the ledger database at `path`. An error status means the file could not be read
// at all (missing, not a database: DATA_LOSS); a readable file that fails verification
// returns a report with ok = false.
absl::StatusOr<VerifyReport> VerifyLedgerFile(const std::string& path, const VerifyOptions& options);

}  // namespace ppn::ledger
