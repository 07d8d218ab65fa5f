// ledger_verify: checks a ledger database file offline.
//
//   ledger_verify --db=ledger.db --key='<verifier key>' [--witness=checkpoint.txt]
//
// Exit 0 and "OK ..." when every root re-derived from the leaves matches every signed
// checkpoint; exit 1 and "FAILED ..." naming the first bad index otherwise; exit 2 when the
// file cannot be read.

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/tls_credentials.h"
#include "ledger/verifier.h"

ABSL_FLAG(std::string, db, "", "Ledger SQLite file");
ABSL_FLAG(std::string, key, "", "Ledger verifier key (from GetCheckpoint or the ledger's log)");
ABSL_FLAG(std::string, key_file, "", "File holding the verifier key, instead of --key");
ABSL_FLAG(std::string, witness, "", "File with a checkpoint seen earlier (signed note)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("ledger_verify --db=FILE --key=VERIFIER_KEY [--witness=FILE]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_db).empty()) {
    std::fprintf(stderr, "ledger_verify: --db is required\n");
    return 2;
  }
  ppn::ledger::VerifyOptions options;
  options.verifier_key = absl::GetFlag(FLAGS_key);
  if (!absl::GetFlag(FLAGS_key_file).empty()) {
    absl::StatusOr<std::string> key = ppn::ReadFile(absl::GetFlag(FLAGS_key_file));
    if (!key.ok()) {
      std::fprintf(stderr, "ledger_verify: %s\n", std::string(key.status().message()).c_str());
      return 2;
    }
    options.verifier_key = std::string(absl::StripAsciiWhitespace(*key));
  }
  if (!absl::GetFlag(FLAGS_witness).empty()) {
    absl::StatusOr<std::string> w = ppn::ReadFile(absl::GetFlag(FLAGS_witness));
    if (!w.ok()) {
      std::fprintf(stderr, "ledger_verify: %s\n", std::string(w.status().message()).c_str());
      return 2;
    }
    options.witnessed_checkpoint = *w;
  }
  absl::Time start = absl::Now();
  absl::StatusOr<ppn::ledger::VerifyReport> report = ppn::ledger::VerifyLedgerFile(absl::GetFlag(FLAGS_db), options);
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!report.ok()) {
    std::printf("FAILED cannot read %s: %s\n", absl::GetFlag(FLAGS_db).c_str(),
                std::string(report.status().message()).c_str());
    return 2;
  }
  if (options.verifier_key.empty()) {
    std::fprintf(stderr, "ledger_verify: warning: no --key given; trusting the key the file names\n");
  }
  if (!report->ok) {
    std::printf("FAILED %s", report->problem.c_str());
    if (report->first_bad_index.has_value()) {
      std::printf(" (first bad index %llu)", static_cast<unsigned long long>(*report->first_bad_index));
    }
    std::printf("\n");
    return 1;
  }
  std::printf(
      "OK %llu entries, %llu signed checkpoints, %llu entries after the last checkpoint, "
      "%.2f s\n",
      static_cast<unsigned long long>(report->entries), static_cast<unsigned long long>(report->checkpoints),
      static_cast<unsigned long long>(report->unanchored_entries), seconds);
  return 0;
}
