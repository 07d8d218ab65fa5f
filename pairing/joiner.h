#pragma once

// JoinerCore is the new node's side of the Genesis ceremony: it answers the admin's CPace
// message with the code as password and its TLS fingerprint in the channel identifier,
// checks key confirmation, sends its enrollment request (name, WireGuard public key, CSR)
// sealed, and accepts the sealed grant. Three failed confirmations or the end of the window
// end the ceremony for good. Thread-safe. `*clock` and `*random` must outlive it.

#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/random.h"
#include "ppn/pairing/v1/pairing_service.pb.h"

namespace ppn::pairing {

class JoinerCore {
 public:
  struct Options {
    std::string code;             // canonical 9 symbols (ParseShortCode)
    std::string tls_fingerprint;  // SHA-256 of this joiner's TLS certificate
    absl::Duration window = absl::Seconds(600);
    int max_attempts = 3;
  };
  // `private_key_pem` is the node identity key the CSR in `request` was made with: the grant's
  // certificate must carry its public key.
  JoinerCore(Options options, ppn::pairing::v1::EnrollmentRequest request, std::string private_key_pem, Clock* clock,
             RandomSource* random);

  absl::StatusOr<ppn::pairing::v1::ExchangeResponse> Exchange(const ppn::pairing::v1::ExchangeRequest& r);
  absl::StatusOr<ppn::pairing::v1::ConfirmResponse> Confirm(const ppn::pairing::v1::ConfirmRequest& r);
  absl::StatusOr<ppn::pairing::v1::CompleteResponse> Complete(const ppn::pairing::v1::CompleteRequest& r);

  // Blocks until the ceremony ended (success, three failures or expiry) or `timeout`.
  // OK with the grant on success; the reason otherwise.
  absl::StatusOr<ppn::pairing::v1::EnrollmentGrant> WaitForOutcome(absl::Duration timeout);
  int failed_attempts();
  // Every message received and sent, serialized (tests scan it for key material).
  std::vector<std::string> TranscriptForTest();

 private:
  absl::Status CheckOpenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndLocked(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const ppn::pairing::v1::EnrollmentRequest request_;
  const std::string private_key_pem_;
  Clock* const clock_;
  RandomSource* const random_;
  const absl::Time started_;

  absl::Mutex mu_;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::string isk_ ABSL_GUARDED_BY(mu_);  // set by Exchange, cleared by a failed Confirm
  std::string transcript_ ABSL_GUARDED_BY(mu_);
  bool confirmed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::StatusOr<ppn::pairing::v1::EnrollmentGrant>> outcome_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> wire_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ppn::pairing
