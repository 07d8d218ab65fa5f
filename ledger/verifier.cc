#include "ledger/verifier.h"

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/sqlite.h"
#include "common/status_macros.h"
#include "ledger/entry_codec.h"
#include "ledger/merkle.h"
#include "ledger/signed_note.h"

namespace ppn::ledger {
namespace {

struct CheckpointRow {
  uint64_t size;
  std::string note;
};

VerifyReport Bad(VerifyReport report, std::string problem, std::optional<uint64_t> index = {}) {
  report.ok = false;
  report.problem = std::move(problem);
  report.first_bad_index = index;
  return report;
}

}  // namespace

absl::StatusOr<VerifyReport> VerifyLedgerFile(const std::string& path, const VerifyOptions& options) {
  Database::Options db_options;
  db_options.read_only = true;
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path, db_options));
  VerifyReport report;

  // The key: given out of band, else the one the file names.
  std::string vkey = options.verifier_key;
  if (vkey.empty()) {
    PPN_ASSIGN_OR_RETURN(Statement meta, db->Prepare("SELECT value FROM meta WHERE key = 'verifier_key'"));
    absl::StatusOr<bool> row = meta.Step();
    if (!row.ok() || !*row) return Bad(report, "the file names no verifier key; pass one");
    vkey = meta.ColumnText(0);
  }
  report.verifier_key = vkey;
  absl::StatusOr<NoteVerifier> verifier = ParseVerifierKey(vkey);
  if (!verifier.ok()) return Bad(report, absl::StrCat("verifier key: ", verifier.status().message()));

  // Every checkpoint must carry a valid signature and a well-formed body.
  std::map<uint64_t, Hash> roots_wanted;  // tree size -> signed root
  std::string origin;
  auto open = [&](const std::string& note, Checkpoint* out) -> std::string {
    std::string text;
    NoteVerdict verdict = OpenNote(*verifier, note, &text);
    if (verdict != NoteVerdict::kVerified) return "signature does not verify with the ledger key";
    absl::StatusOr<Checkpoint> c = ParseCheckpoint(text);
    if (!c.ok()) return std::string(c.status().message());
    *out = *c;
    return "";
  };
  {
    PPN_ASSIGN_OR_RETURN(Statement stmt, db->Prepare("SELECT tree_size, note FROM checkpoints ORDER BY tree_size"));
    while (true) {
      absl::StatusOr<bool> row = stmt.Step();
      if (!row.ok()) return Bad(report, absl::StrCat("checkpoints unreadable: ", row.status().message()));
      if (!*row) break;
      uint64_t size = static_cast<uint64_t>(stmt.ColumnInt(0));
      Checkpoint c;
      std::string why = open(stmt.ColumnText(1), &c);
      if (!why.empty()) return Bad(report, absl::StrCat("checkpoint at size ", size, ": ", why));
      if (c.size != size) {
        return Bad(report, absl::StrCat("checkpoint filed under size ", size, " signs size ", c.size));
      }
      if (!origin.empty() && c.origin != origin) {
        return Bad(report, absl::StrCat("checkpoint at size ", size, " has origin ", c.origin,
                                        " but earlier ones have ", origin));
      }
      origin = c.origin;
      roots_wanted[size] = c.root_hash;
      ++report.checkpoints;
    }
  }
  if (!options.witnessed_checkpoint.empty()) {
    Checkpoint c;
    std::string why = open(options.witnessed_checkpoint, &c);
    if (!why.empty()) return Bad(report, absl::StrCat("witnessed checkpoint: ", why));
    auto it = roots_wanted.find(c.size);
    if (it != roots_wanted.end() && it->second != c.root_hash) {
      return Bad(report, absl::StrCat("the file's checkpoint at size ", c.size,
                                      " differs from the witnessed one (a forked log)"));
    }
    roots_wanted[c.size] = c.root_hash;
  }

  // Re-derive every leaf hash, every complete subtree and every checkpointed root.
  PPN_ASSIGN_OR_RETURN(Statement entries, db->Prepare("SELECT idx, kind, leaf FROM entries ORDER BY idx"));
  PPN_ASSIGN_OR_RETURN(Statement nodes, db->Prepare("SELECT level, idx, hash FROM nodes ORDER BY level, idx"));
  std::vector<std::vector<Hash>> levels(1);
  CompactRange range;
  auto next_root = roots_wanted.begin();
  uint64_t last_anchor = 0;
  if (next_root != roots_wanted.end() && next_root->first == 0) {
    if (next_root->second != EmptyRoot()) return Bad(report, "the checkpoint of the empty log has a wrong root");
    ++next_root;
  }
  while (true) {
    absl::StatusOr<bool> row = entries.Step();
    if (!row.ok()) {
      return Bad(report, absl::StrCat("entries unreadable after index ", range.size(), ": ", row.status().message()),
                 range.size());
    }
    if (!*row) break;
    uint64_t idx = static_cast<uint64_t>(entries.ColumnInt(0));
    if (idx != range.size()) {
      return Bad(report, absl::StrCat("entry ", range.size(), " is missing"), range.size());
    }
    std::string leaf = entries.ColumnBlob(2);
    absl::StatusOr<ppn::ledger::v1::Entry> entry = DecodeLeaf(leaf);
    if (!entry.ok()) return Bad(report, absl::StrCat("entry ", idx, ": ", entry.status().message()), idx);
    if (entry->kind() != entries.ColumnText(1)) {
      return Bad(report, absl::StrCat("entry ", idx, ": kind column differs from the signed leaf"), idx);
    }
    Hash hash = HashLeaf(leaf);
    // Level-0 subtree rows are the stored leaf hashes: compare them in step, so an edited
    // or moved leaf is pinned to its index even before a checkpoint disagrees.
    absl::StatusOr<bool> node = nodes.Step();
    if (!node.ok() || !*node || nodes.ColumnInt(0) != 0 || static_cast<uint64_t>(nodes.ColumnInt(1)) != idx ||
        nodes.ColumnBlob(2) != hash) {
      return Bad(report, absl::StrCat("entry ", idx, " does not match its stored leaf hash"), idx);
    }
    levels[0].push_back(hash);
    for (size_t level = 0; levels[level].size() % 2 == 0; ++level) {
      if (levels.size() == level + 1) levels.emplace_back();
      const auto& lv = levels[level];
      levels[level + 1].push_back(HashChildren(lv[lv.size() - 2], lv[lv.size() - 1]));
    }
    range.AppendLeafHash(std::move(hash));
    if (next_root != roots_wanted.end() && next_root->first == range.size()) {
      if (range.Root() != next_root->second) {
        return Bad(report, absl::StrCat("entries [", last_anchor, ", ", range.size(),
                                        ") do not match the signed checkpoint at size ", range.size()));
      }
      last_anchor = range.size();
      ++next_root;
    }
  }
  report.entries = range.size();
  if (next_root != roots_wanted.end()) {
    return Bad(report,
               absl::StrCat("a signed checkpoint covers ", next_root->first, " entries but the file holds only ",
                            range.size(), " (truncated)"),
               range.size());
  }

  // The stored subtree hashes serve every proof: each must equal the re-derived one.
  uint64_t stored = levels[0].size();
  while (true) {
    absl::StatusOr<bool> row = nodes.Step();
    if (!row.ok()) return Bad(report, absl::StrCat("subtree hashes unreadable: ", row.status().message()));
    if (!*row) break;
    uint64_t level = static_cast<uint64_t>(nodes.ColumnInt(0));
    uint64_t idx = static_cast<uint64_t>(nodes.ColumnInt(1));
    if (level >= levels.size() || idx >= levels[level].size() || nodes.ColumnBlob(2) != levels[level][idx]) {
      return Bad(report,
                 absl::StrCat("stored subtree hash at level ", level, " index ", idx, " does not match the leaves"),
                 level < 64 ? std::optional<uint64_t>(idx << level) : std::nullopt);
    }
    ++stored;
  }
  uint64_t expected = 0;
  for (const auto& lv : levels) expected += lv.size();
  if (stored != expected) {
    return Bad(report, absl::StrCat(expected - stored, " subtree hashes are missing"));
  }
  report.unanchored_entries = range.size() - last_anchor;
  report.ok = true;
  return report;
}

}  // namespace ppn::ledger
