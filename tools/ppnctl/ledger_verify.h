#pragma once

// `ppnctl ledger verify`: checks a running ledger without trusting anything it says about
// itself except what its key signed. Every leaf hash is recomputed from the entry itself
// (ledger/entry_codec.h), the root from those hashes (ledger/merkle.h); the checkpoint's
// signature is checked against a pinned key (configured, or pinned on first use, as ssh's
// known_hosts does); and the checkpoint must be consistent (RFC 9162 consistency proof) with
// the last one verified. A different ledger, a replaced key, a truncated or rewritten history
// all fail. Pure: the ledger is read through LedgerReader, the memory is KnownLedgers.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ppn/ledger/v1/ledger_service.pb.h"
#include "tools/ppnctl/known_ledgers.h"

namespace ppn::ppnctl {

// The reads verify makes, as the ledger's typed messages. Used from one thread.
class LedgerReader {
 public:
  virtual ~LedgerReader() = default;
  virtual absl::StatusOr<ppn::ledger::v1::GetCheckpointResponse> GetCheckpoint() = 0;
  virtual absl::StatusOr<ppn::ledger::v1::GetEntriesResponse> GetEntries(
      const ppn::ledger::v1::GetEntriesRequest& request) = 0;
  virtual absl::StatusOr<ppn::ledger::v1::GetConsistencyProofResponse> GetConsistencyProof(
      const ppn::ledger::v1::GetConsistencyProofRequest& request) = 0;
};

struct LedgerVerifyOptions {
  // Where the ledger was reached; remembered with it, so that another ledger answering there
  // later is noticed even under another name.
  std::string endpoint;
  // The verifier key to trust (--ledger_key or the config file). Empty: the key pinned in
  // KnownLedgers for the checkpoint's origin, or, the first time, the key the ledger presents.
  std::string ledger_key;
};

struct LedgerVerifyReport {
  bool ok = false;
  std::string origin;
  std::string verifier_key;  // the key the checkpoint's signature was checked with
  uint64_t tree_size = 0;
  std::string signed_note;
  bool first_use = false;        // the key was pinned by this run
  uint64_t consistent_with = 0;  // size of the checkpoint verified before; 0 if none
  std::string problem;           // why it failed, in words; empty when ok
};

// Verifies the ledger behind `reader`. When it verifies, `*known` is updated with its key,
// checkpoint and endpoint (the caller saves it); when it does not, `*known` is untouched and
// the report says why. An error status when the ledger could not be read (the RPC's error)
// or `options.ledger_key` is malformed (INVALID_ARGUMENT).
absl::StatusOr<LedgerVerifyReport> VerifyLedger(LedgerReader& reader, const LedgerVerifyOptions& options,
                                                KnownLedgers* known);

}  // namespace ppn::ppnctl
