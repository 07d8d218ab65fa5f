#include "ledger/ledger_server.h"

#include "common/roles.h"

namespace ppn::ledger {

RolePolicy LedgerRolePolicy(const std::string& mesh) {
  namespace r = ppn::roles;
  constexpr char kSvc[] = "/ppn.ledger.v1.Ledger/";
  RolePolicy policy(mesh);
  for (const char* append : {"Append", "AppendBatch"}) {
    policy.Allow(std::string(kSvc) + append,
                 {r::kTenantProxy, r::kPairingAdmin, r::kScheduler, r::kFleet, r::kOperator});
  }
  for (const char* read : {"GetEntries", "GetCheckpoint", "GetInclusionProof", "GetConsistencyProof", "WatchEntries"}) {
    policy.Allow(std::string(kSvc) + read,
                 {r::kTenantProxy, r::kPairingAdmin, r::kScheduler, r::kFleet, r::kOperator, r::kHost});
  }
  return policy;
}

absl::StatusOr<StartedServer> StartLedgerServer(const std::string& mesh, const std::string& listen, const TlsFiles& tls,
                                                LedgerService* service, const RevocationList* revocations) {
  return StartMeshServer(listen, tls, LedgerRolePolicy(mesh), {service}, revocations);
}

}  // namespace ppn::ledger
