#include "tools/ppnctl/ledger_verify.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ledger/entry_codec.h"
#include "ledger/merkle.h"
#include "ledger/signed_note.h"

namespace ppn::ppnctl {
namespace {

namespace v1 = ppn::ledger::v1;

constexpr int kPageSize = 1000;

LedgerVerifyReport Failed(LedgerVerifyReport report, std::string problem) {
  report.ok = false;
  report.problem = std::move(problem);
  return report;
}

std::string Short(const std::string& root) { return ledger::ToHex(root).substr(0, 16); }

}  // namespace

absl::StatusOr<LedgerVerifyReport> VerifyLedger(LedgerReader& reader, const LedgerVerifyOptions& options,
                                                KnownLedgers* known) {
  PPN_ASSIGN_OR_RETURN(v1::GetCheckpointResponse cp, reader.GetCheckpoint());
  LedgerVerifyReport report;
  report.signed_note = cp.signed_note();
  // The origin is read before the signature is checked only to find which key to check it
  // with; nothing else is taken from the note until it verifies.
  report.origin = cp.signed_note().substr(0, cp.signed_note().find('\n'));
  const KnownLedger* before = known->Find(report.origin);
  const std::string file = known->path();

  if (const KnownLedger* there = known->FindByEndpoint(options.endpoint);
      there != nullptr && there->origin != report.origin) {
    return Failed(report,
                  absl::StrCat("the ledger at ", options.endpoint, " was \"", there->origin, "\" (key ",
                               there->verifier_key, ") when last verified, but now answers as \"", report.origin,
                               "\" (key ", cp.verifier_key(), "): a different ledger. If that is expected, delete ",
                               options.endpoint, " from the line of \"", there->origin, "\" in ", file));
  }

  std::string source;
  if (!options.ledger_key.empty()) {
    report.verifier_key = options.ledger_key;
    source = "--ledger_key";
  } else if (before != nullptr) {
    report.verifier_key = before->verifier_key;
    source = absl::StrCat("its key pinned in ", file);
  } else {
    report.verifier_key = cp.verifier_key();
    report.first_use = true;
    source = "the key it presents";
  }
  absl::StatusOr<ledger::NoteVerifier> verifier = ledger::ParseVerifierKey(report.verifier_key);
  if (!verifier.ok()) {
    if (!options.ledger_key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--ledger_key: ", verifier.status().message()));
    }
    return Failed(report, absl::StrCat("ledger \"", report.origin, "\": ", source,
                                       " is not a verifier key: ", verifier.status().message()));
  }
  std::string text;
  switch (ledger::OpenNote(*verifier, cp.signed_note(), &text)) {
    case ledger::NoteVerdict::kVerified: break;
    case ledger::NoteVerdict::kUnverified:
      if (!options.ledger_key.empty()) {
        return Failed(report,
                      absl::StrCat("the checkpoint of ledger \"", report.origin, "\" is not signed by --ledger_key ",
                                   report.verifier_key, " (the ledger presents key ", cp.verifier_key(), ")"));
      }
      return Failed(report, absl::StrCat("ledger \"", report.origin, "\" is pinned to key ", report.verifier_key,
                                         ", but its checkpoint is not signed by that key (the ledger presents key ",
                                         cp.verifier_key(),
                                         "): this is a different ledger, or its key was replaced. If the change is "
                                         "expected, delete the line of \"",
                                         report.origin, "\" from ", file, " or pass --ledger_key"));
    case ledger::NoteVerdict::kInvalid:
      return Failed(report, absl::StrCat("the signature of ledger \"", report.origin, "\"'s checkpoint by key ",
                                         report.verifier_key, " does not verify: the checkpoint was altered"));
    case ledger::NoteVerdict::kMalformed:
      return Failed(report, absl::StrCat("the checkpoint of ledger \"", report.origin, "\" is not a signed note"));
  }
  absl::StatusOr<ledger::Checkpoint> checkpoint = ledger::ParseCheckpoint(text);
  if (!checkpoint.ok()) return Failed(report, std::string(checkpoint.status().message()));
  if (checkpoint->size != cp.tree_size() || checkpoint->root_hash != cp.root_hash()) {
    return Failed(report, "the tree size and root the ledger reports differ from those its key signed");
  }
  const uint64_t size = checkpoint->size;
  report.tree_size = size;

  // Every leaf hash is recomputed from the entry's own fields: a hash the server sends is
  // only compared, never used.
  ledger::CompactRange range;
  while (range.size() < size) {
    v1::GetEntriesRequest page;
    page.set_start_index(range.size());
    page.set_page_size(kPageSize);
    PPN_ASSIGN_OR_RETURN(v1::GetEntriesResponse got, reader.GetEntries(page));
    if (got.entries().empty()) break;
    for (const v1::Entry& e : got.entries()) {
      if (range.size() == size) break;
      if (e.index() != range.size()) {
        return Failed(report, absl::StrCat("the ledger served entry ", e.index(), " where entry ", range.size(),
                                           " belongs: entries are missing or out of order"));
      }
      ledger::Hash leaf = ledger::HashLeaf(ledger::EncodeLeaf(e));
      if (!e.leaf_hash().empty() && e.leaf_hash() != leaf) {
        return Failed(report, absl::StrCat("entry ", e.index(),
                                           ": the leaf hash the ledger sends is not the hash of the entry's contents"));
      }
      range.AppendLeafHash(leaf);
    }
  }
  if (range.size() != size) {
    return Failed(report,
                  absl::StrCat("the ledger served ", range.size(), " entries, but its checkpoint commits to ", size));
  }
  if (range.Root() != checkpoint->root_hash) {
    return Failed(report, absl::StrCat("the ", size,
                                       " entries served do not reproduce the signed root: an entry was altered, "
                                       "dropped or reordered"));
  }

  if (before != nullptr && before->tree_size > 0) {
    const std::string was = absl::StrCat("the checkpoint verified before (size ", before->tree_size, ", root ",
                                         Short(before->root_hash), "...)");
    if (size < before->tree_size) {
      return Failed(report,
                    absl::StrCat("ledger \"", report.origin, "\" now commits to ", size, " entries, fewer than ", was,
                                 ": its history was truncated or rewritten, "
                                 "or this is a different ledger"));
    }
    if (size == before->tree_size && checkpoint->root_hash != before->root_hash) {
      return Failed(report, absl::StrCat("ledger \"", report.origin, "\"'s root at size ", size, " is ",
                                         Short(checkpoint->root_hash), "..., not that of ", was,
                                         ": its history was rewritten, or this is a different ledger"));
    }
    if (size > before->tree_size) {
      v1::GetConsistencyProofRequest req;
      req.set_first_tree_size(before->tree_size);
      req.set_second_tree_size(size);
      PPN_ASSIGN_OR_RETURN(v1::GetConsistencyProofResponse proof, reader.GetConsistencyProof(req));
      std::vector<ledger::Hash> hashes(proof.hashes().begin(), proof.hashes().end());
      absl::Status consistent =
          proof.first_tree_size() != before->tree_size || proof.second_tree_size() != size
              ? absl::DataLossError("the proof is for other tree sizes")
              : ledger::VerifyConsistency(before->tree_size, size, before->root_hash, checkpoint->root_hash, hashes);
      if (!consistent.ok()) {
        return Failed(report, absl::StrCat("ledger \"", report.origin, "\"'s checkpoint at size ", size,
                                           " is not consistent with ", was, " (", consistent.message(),
                                           "): its history was rewritten, or this is a different ledger"));
      }
    }
    report.consistent_with = before->tree_size;
  }

  KnownLedger remembered = before != nullptr ? *before : KnownLedger{};
  remembered.origin = report.origin;
  remembered.verifier_key = report.verifier_key;
  remembered.tree_size = size;
  remembered.root_hash = checkpoint->root_hash;
  if (!options.endpoint.empty() && known->FindByEndpoint(options.endpoint) == nullptr) {
    remembered.endpoints.push_back(options.endpoint);
  }
  absl::Status put = known->Put(std::move(remembered));
  if (!put.ok()) return Failed(report, std::string(put.message()));
  report.ok = true;
  return report;
}

}  // namespace ppn::ppnctl
