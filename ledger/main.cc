// ledger: the WORM Merkle log. Flags → MerkleLog → server → wait for SIGTERM → shutdown.

#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/metrics.h"
#include "common/random.h"
#include "common/revocation_follower.h"
#include "common/service_flags.h"
#include "common/tls_credentials.h"
#include "ledger/ledger_server.h"
#include "ledger/ledger_store.h"
#include "ledger/log_membership_source.h"
#include "ledger/merkle_log.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, db, "ledger.db", "SQLite file of the log");
ABSL_FLAG(std::string, signing_key, "ledger.note-key",
          "Ed25519 note signing key (Go sumdb PRIVATE+KEY form); created 0600 if missing");
ABSL_FLAG(std::string, origin, "", "Checkpoint origin line; default <mesh>/ledger");
ABSL_FLAG(absl::Duration, checkpoint_interval, absl::Seconds(1),
          "Sign a checkpoint after a commit when the last is this old");

namespace {

// Loads the signing key, or creates one named after the origin on first start.
ppn::ledger::NoteSigner LoadOrCreateKey(const std::string& path, const std::string& origin) {
  absl::StatusOr<std::string> text = ppn::ReadFile(path);
  if (text.ok()) {
    std::string trimmed(absl::StripAsciiWhitespace(*text));
    absl::StatusOr<ppn::ledger::NoteSigner> signer = ppn::ledger::NoteSigner::Parse(trimmed);
    if (!signer.ok()) ppn::ExitWithError(absl::StrCat(path, ": ", signer.status().message()));
    return *std::move(signer);
  }
  std::string seed(32, '\0');
  if (!ppn::OpenSslRandom::Get()->Fill(reinterpret_cast<uint8_t*>(seed.data()), seed.size()).ok()) {
    ppn::ExitWithError("no randomness for a signing key");
  }
  absl::StatusOr<ppn::ledger::NoteSigner> signer = ppn::ledger::NoteSigner::FromSeed(origin, seed);
  if (!signer.ok()) ppn::ExitWithError(signer.status().message());
  absl::Status written = ppn::WriteFileAtomically(path, signer->PrivateKeyString() + "\n", 0600);
  if (!written.ok()) ppn::ExitWithError(absl::StrCat("cannot write signing key: ", written.message()));
  spdlog::info("ledger.key_created path={} verifier_key={}", path, signer->VerifierKey());
  return *std::move(signer);
}

}  // namespace

int main(int argc, char** argv) {
  ppn::ServiceFlags flags = ppn::InitService("ledger", argc, argv);
  std::string origin = absl::GetFlag(FLAGS_origin);
  if (origin.empty()) origin = absl::StrCat(flags.mesh, "/ledger");

  ppn::ledger::NoteSigner signer = LoadOrCreateKey(absl::GetFlag(FLAGS_signing_key), origin);
  absl::StatusOr<std::unique_ptr<ppn::ledger::LedgerStore>> store =
      ppn::ledger::LedgerStore::Open(absl::GetFlag(FLAGS_db));
  if (!store.ok()) ppn::ExitWithError(store.status().message());

  ppn::ledger::MerkleLog::Options options;
  options.origin = origin;
  options.checkpoint_interval = absl::GetFlag(FLAGS_checkpoint_interval);
  ppn::ledger::MerkleLog log(store->get(), signer, ppn::RealClock::Get(), options);
  absl::Status started = log.Start();
  if (!started.ok()) ppn::ExitWithError(started.message());

  ppn::metrics::Default().AddCollector([&log](ppn::metrics::Snapshot& s) {
    s.Gauge("ppn_ledger_entries", "Entries in the ledger (its tree size).", {}, static_cast<double>(log.size()));
  });
  ppn::ledger::LedgerService service(&log);
  // The ledger holds the node.revoke entries itself: it reads them from its own log.
  absl::StatusOr<ppn::Revocations> revocations =
      ppn::OpenRevocations(absl::GetFlag(FLAGS_db) + ".revoked.json", flags.mesh, "", flags.tls);
  if (!revocations.ok()) ppn::ExitWithError(revocations.status().message());
  ppn::ledger::LogMembershipSource members(&log);
  revocations->follower = std::make_unique<ppn::RevocationFollower>(&members, revocations->list.get());
  revocations->follower->Start();
  absl::StatusOr<ppn::StartedServer> server =
      ppn::ledger::StartLedgerServer(flags.mesh, flags.listen, flags.tls, &service, revocations->list.get());
  if (!server.ok()) ppn::ExitWithError(server.status().message());
  absl::Status port = ppn::WritePortFile(server->port);
  if (!port.ok()) ppn::ExitWithError(port.message());
  spdlog::info("ledger.started port={} entries={} db={} verifier_key={}", server->port, log.size(),
               absl::GetFlag(FLAGS_db), signer.VerifierKey());

  std::string sig = ppn::WaitForShutdownSignal();
  spdlog::info("ledger.stopping signal={}", sig);
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  revocations->follower->Stop();
  log.Stop();
  spdlog::info("ledger.stopped entries={}", log.size());
  return 0;
}
