#pragma once

// The canonical leaf encoding of a ledger entry: the bytes the Merkle tree hashes. It is
// deterministic (attributes sorted by key), versioned, and strictly parsed, so one entry has
// exactly one encoding and any edit of stored bytes is either rejected or changes the hash.
//
// Layout (integers big-endian, str = u32 length then bytes):
//   u8 version (1) | str kind | str actor | i64 append_time (unix microseconds) |
//   str tenant_id | str subject | u8 outcome | u32 attribute count |
//   count x (str key | str value), keys strictly increasing

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ppn/ledger/v1/ledger_service.pb.h"

namespace ppn::ledger {

// Encodes every field of `entry` except index and leaf_hash.
std::string EncodeLeaf(const ppn::ledger::v1::Entry& entry);

// Decodes a leaf; DATA_LOSS naming what is wrong if the bytes are not a canonical encoding.
absl::StatusOr<ppn::ledger::v1::Entry> DecodeLeaf(absl::string_view leaf);

}  // namespace ppn::ledger
