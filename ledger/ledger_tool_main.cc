// ledger_tool: the ledger's tree code over raw inputs, to compare with any other RFC 9162
// implementation, and an export of ledger entries as JSON lines.
//
//   ledger_tool root HEX_LEAF...                         MTH of the leaves (hex)
//   ledger_tool inclusion INDEX HEX_LEAF...              PATH(INDEX, leaves), one hash per line
//   ledger_tool consistency SIZE1 HEX_LEAF...            PROOF(SIZE1, leaves), one hash per line
//   ledger_tool export --db=ledger.db [--kind=node.join] entries as JSON lines (nodes.jsonl)

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "common/sqlite.h"
#include "google/protobuf/util/time_util.h"
#include "ledger/entry_codec.h"
#include "ledger/merkle.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, db, "", "Ledger SQLite file (export)");
ABSL_FLAG(std::string, kind, "", "Only entries of this kind (export)");

namespace {

int Usage(const char* why) {
  std::fprintf(stderr, "ledger_tool: %s\nusage: ledger_tool root|inclusion|consistency|export ...\n", why);
  return 2;
}

int Export() {
  ppn::Database::Options options;
  options.read_only = true;
  auto db = ppn::Database::Open(absl::GetFlag(FLAGS_db), options);
  if (!db.ok()) return Usage(std::string(db.status().message()).c_str());
  std::string kind = absl::GetFlag(FLAGS_kind);
  auto stmt = (*db)->Prepare(kind.empty() ? "SELECT idx, leaf FROM entries ORDER BY idx"
                                          : "SELECT idx, leaf FROM entries WHERE kind = ?1 ORDER BY idx");
  if (!stmt.ok()) return Usage(std::string(stmt.status().message()).c_str());
  if (!kind.empty()) stmt->Bind(1, kind);
  while (true) {
    absl::StatusOr<bool> row = stmt->Step();
    if (!row.ok()) return Usage(std::string(row.status().message()).c_str());
    if (!*row) break;
    std::string leaf = stmt->ColumnBlob(1);
    auto entry = ppn::ledger::DecodeLeaf(leaf);
    if (!entry.ok()) return Usage(std::string(entry.status().message()).c_str());
    nlohmann::json line = {
        {"index", stmt->ColumnInt(0)},
        {"kind", entry->kind()},
        {"actor", entry->actor()},
        {"time", google::protobuf::util::TimeUtil::ToString(entry->append_time())},
        {"tenant_id", entry->tenant_id()},
        {"subject", entry->subject()},
        {"outcome", ppn::ledger::v1::Outcome_Name(entry->outcome())},
        {"attributes",
         nlohmann::json(std::map<std::string, std::string>(entry->attributes().begin(), entry->attributes().end()))},
        {"leaf_hash", ppn::ledger::ToHex(ppn::ledger::HashLeaf(leaf))},
    };
    std::cout << line.dump() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("ledger_tool root|inclusion|consistency|export ...");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) return Usage("want a command");
  std::string command = args[1];
  if (command == "export") return Export();

  size_t first_leaf = 2;
  uint64_t number = 0;
  if (command == "inclusion" || command == "consistency") {
    if (args.size() < 3 || !absl::SimpleAtoi(args[2], &number)) return Usage("want a number");
    first_leaf = 3;
  } else if (command != "root") {
    return Usage("unknown command");
  }
  ppn::ledger::MemoryTree tree;
  for (size_t i = first_leaf; i < args.size(); ++i) {
    absl::StatusOr<std::string> leaf = ppn::ledger::FromHex(args[i]);
    if (!leaf.ok()) return Usage("leaves must be hex");
    tree.AppendLeaf(*leaf);
  }
  if (command == "root") {
    std::printf("%s\n", ppn::ledger::ToHex(*ppn::ledger::RootHash(tree, tree.size())).c_str());
    return 0;
  }
  auto proof = command == "inclusion" ? ppn::ledger::InclusionProof(tree, number, tree.size())
                                      : ppn::ledger::ConsistencyProof(tree, number, tree.size());
  if (!proof.ok()) return Usage(std::string(proof.status().message()).c_str());
  for (const auto& h : *proof) std::printf("%s\n", ppn::ledger::ToHex(h).c_str());
  return 0;
}
