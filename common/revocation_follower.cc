#include "common/revocation_follower.h"

#include "common/logging.h"
#include "common/rpc_interceptors.h"
#include "common/status_macros.h"
#include "mesh/grpc_membership_source.h"
#include "spdlog/spdlog.h"

namespace ppn {

std::unique_ptr<RevocationFollower> RevocationFollower::FollowLedger(const std::string& ledger_address,
                                                                     const TlsFiles& tls, RevocationList* list) {
  auto source = std::make_unique<mesh::GrpcMembershipSource>(MeshChannel(ledger_address, MtlsChannelCredentials(tls)));
  source->Start();
  auto follower = std::make_unique<RevocationFollower>(source.get(), list);
  follower->owned_ = std::move(source);
  follower->Start();
  return follower;
}

void RevocationFollower::Start() {
  thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock l(&mu_);
        if (stopping_) return;
      }
      RunOnce(absl::Milliseconds(500));
    }
  });
}

void RevocationFollower::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (owned_ != nullptr) owned_->Stop();
}

RevocationFollower::RevocationFollower(mesh::MembershipSource* source, RevocationList* list)
    : source_(source), list_(list) {}

RevocationFollower::~RevocationFollower() { Stop(); }

int RevocationFollower::RunOnce(absl::Duration wait) {
  absl::StatusOr<mesh::MembershipBatch> batch = source_->Next(wait);
  if (!batch.ok()) {
    // The source reconnects on its own; the list keeps what it has (persisted) meanwhile.
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), std::min(wait, absl::Milliseconds(200)));
    return 0;
  }
  int revoked = 0;
  for (const ppn::ledger::v1::Entry& entry : batch->entries) {
    absl::StatusOr<bool> changed = list_->Apply(entry);
    if (!changed.ok()) {
      spdlog::error("node.revocation_not_persisted index={} error={}", entry.index(),
                    LogValue(changed.status().message()));
      ++revoked;
      continue;
    }
    if (*changed) {
      spdlog::warn("node.certificate_revoked node={} index={}", LogValue(entry.subject()), entry.index());
      ++revoked;
    }
  }
  return revoked;
}

}  // namespace ppn

namespace ppn {

absl::StatusOr<Revocations> OpenRevocations(const std::string& path, const std::string& mesh,
                                            const std::string& ledger_address, const TlsFiles& tls) {
  Revocations r;
  PPN_ASSIGN_OR_RETURN(r.list, RevocationList::Open(path, mesh));
  if (!ledger_address.empty()) r.follower = RevocationFollower::FollowLedger(ledger_address, tls, r.list.get());
  return r;
}

}  // namespace ppn
