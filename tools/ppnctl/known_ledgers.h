#pragma once

// KnownLedgers is what `ppnctl ledger verify` remembers between runs, as ssh's known_hosts
// does for hosts: for each ledger (by its checkpoint origin) the verifier key it pinned, the
// last checkpoint it verified, and the endpoints it was reached at. One line per ledger:
//
//   <origin> <verifier key> <tree size> <root hash, hex> <endpoint>[,<endpoint>...]
//
// Removing a line makes the next verify trust that ledger's key again on first use.
// Not thread-safe; one verify owns it.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::ppnctl {

struct KnownLedger {
  std::string origin;        // the checkpoint's first line, e.g. "ppn.local/ledger"
  std::string verifier_key;  // "<name>+<hex id>+<base64 key>"
  uint64_t tree_size = 0;    // the last verified checkpoint ...
  std::string root_hash;     // ... and its root (32 raw bytes)
  std::vector<std::string> endpoints;
};

class KnownLedgers {
 public:
  // Reads `path`; a file that does not exist is an empty list. INVALID_ARGUMENT naming
  // PATH:LINE for a line that is not one of ours.
  static absl::StatusOr<KnownLedgers> Load(const std::string& path);

  const KnownLedger* Find(absl::string_view origin) const;
  // The ledger last verified at `endpoint`, if any.
  const KnownLedger* FindByEndpoint(absl::string_view endpoint) const;
  // Adds or replaces the ledger of `ledger.origin`. INVALID_ARGUMENT if a field would not
  // survive the file's format (empty, or holding whitespace or a comma).
  absl::Status Put(KnownLedger ledger);

  // The file's text.
  std::string Format() const;
  // Writes it atomically (mode 0600), creating its directory (0700) if needed.
  absl::Status Save() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<KnownLedger> ledgers_;
};

}  // namespace ppn::ppnctl
