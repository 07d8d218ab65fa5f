#include "pairing/joiner.h"

#include "absl/strings/str_cat.h"
#include "common/x509.h"
#include "pairing/ceremony_crypto.h"
#include "pairing/cpace.h"

namespace ppn::pairing {

using ppn::pairing::v1::CompleteRequest;
using ppn::pairing::v1::CompleteResponse;
using ppn::pairing::v1::ConfirmRequest;
using ppn::pairing::v1::ConfirmResponse;
using ppn::pairing::v1::EnrollmentGrant;
using ppn::pairing::v1::ExchangeRequest;
using ppn::pairing::v1::ExchangeResponse;

JoinerCore::JoinerCore(Options options, ppn::pairing::v1::EnrollmentRequest request, std::string private_key_pem,
                       Clock* clock, RandomSource* random)
    : options_(std::move(options)),
      request_(std::move(request)),
      private_key_pem_(std::move(private_key_pem)),
      clock_(clock),
      random_(random),
      started_(clock->Now()) {}

void JoinerCore::EndLocked(absl::Status why) {
  if (!outcome_.has_value()) outcome_ = absl::StatusOr<EnrollmentGrant>(why);
  isk_.clear();
}

absl::Status JoinerCore::CheckOpenLocked() {
  if (!outcome_.has_value() && clock_->Now() - started_ > options_.window) {
    EndLocked(absl::DeadlineExceededError(
        absl::StrCat("the pairing window of ", absl::FormatDuration(options_.window), " has passed; start again")));
  }
  if (outcome_.has_value()) {
    return outcome_->ok() ? absl::FailedPreconditionError("this ceremony has completed")
                          : absl::Status(outcome_->status().code(),
                                         absl::StrCat("this ceremony has ended: ", outcome_->status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExchangeResponse> JoinerCore::Exchange(const ExchangeRequest& r) {
  absl::MutexLock l(&mu_);
  wire_.push_back(r.SerializeAsString());
  absl::Status open = CheckOpenLocked();
  if (!open.ok()) return open;
  if (r.sid().size() != 16 || r.initiator_share().size() != 32) {
    return absl::InvalidArgumentError("sid must be 16 bytes and the share 32");
  }
  std::string scalar(32, '\0');
  absl::Status s = random_->Fill(reinterpret_cast<uint8_t*>(scalar.data()), scalar.size());
  if (!s.ok()) return s;
  CPaceParty me(options_.code, ChannelIdentifier(options_.tls_fingerprint), r.sid(), scalar, request_.node_name());
  absl::StatusOr<std::string> share = me.Share();
  if (!share.ok()) return share.status();
  absl::StatusOr<std::string> isk = me.Finish(r.initiator_share(), r.initiator_associated_data(), /*initiator=*/false);
  if (!isk.ok()) return absl::InvalidArgumentError(isk.status().message());
  isk_ = *isk;
  transcript_ = TranscriptIr(r.initiator_share(), r.initiator_associated_data(), *share, request_.node_name());
  confirmed_ = false;
  ExchangeResponse resp;
  resp.set_responder_share(*share);
  resp.set_responder_associated_data(request_.node_name());
  wire_.push_back(resp.SerializeAsString());
  return resp;
}

absl::StatusOr<ConfirmResponse> JoinerCore::Confirm(const ConfirmRequest& r) {
  absl::MutexLock l(&mu_);
  wire_.push_back(r.SerializeAsString());
  absl::Status open = CheckOpenLocked();
  if (!open.ok()) return open;
  if (isk_.empty()) return absl::FailedPreconditionError("Exchange must come first");
  if (!TagsEqual(r.initiator_confirmation(), ConfirmationTag(isk_, true, transcript_))) {
    ++failures_;
    isk_.clear();
    if (failures_ >= options_.max_attempts) {
      EndLocked(absl::PermissionDeniedError(absl::StrCat(failures_, " failed attempts")));
      return absl::PermissionDeniedError(absl::StrCat("key confirmation failed; that was the last of ",
                                                      options_.max_attempts, " attempts: the ceremony has ended"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("key confirmation failed (wrong code?); attempt ", failures_, " of ", options_.max_attempts));
  }
  confirmed_ = true;
  ConfirmResponse resp;
  resp.set_responder_confirmation(ConfirmationTag(isk_, false, transcript_));
  absl::StatusOr<SealedBox> sealed = Seal(isk_, /*from_initiator=*/false, 1, request_.SerializeAsString());
  if (!sealed.ok()) return sealed.status();
  resp.mutable_enrollment_request()->set_nonce(sealed->nonce);
  resp.mutable_enrollment_request()->set_ciphertext(sealed->ciphertext);
  wire_.push_back(resp.SerializeAsString());
  return resp;
}

absl::StatusOr<CompleteResponse> JoinerCore::Complete(const CompleteRequest& r) {
  absl::MutexLock l(&mu_);
  wire_.push_back(r.SerializeAsString());
  absl::Status open = CheckOpenLocked();
  if (!open.ok()) return open;
  if (!confirmed_) return absl::FailedPreconditionError("Confirm must succeed first");
  absl::StatusOr<std::string> plain = Open(isk_, {r.enrollment_grant().nonce(), r.enrollment_grant().ciphertext()});
  if (!plain.ok()) return plain.status();
  EnrollmentGrant grant;
  if (!grant.ParseFromString(*plain)) return absl::InvalidArgumentError("the grant does not parse");
  // The certificate must be for our key and chain to the CA we were given.
  absl::StatusOr<std::vector<std::string>> uris =
      x509::VerifyAndGetUris(grant.mesh_ca_pem(), grant.node_certificate_pem());
  if (!uris.ok()) return uris.status();
  if (*x509::PublicKeyDer(grant.node_certificate_pem()) != *x509::PublicKeyDer(private_key_pem_)) {
    return absl::InvalidArgumentError("the granted certificate is not for this node's key");
  }
  ppn::pairing::v1::EnrollmentAck ack;
  ack.set_stored(true);
  absl::StatusOr<SealedBox> sealed = Seal(isk_, false, 2, ack.SerializeAsString());
  if (!sealed.ok()) return sealed.status();
  CompleteResponse resp;
  resp.mutable_ack()->set_nonce(sealed->nonce);
  resp.mutable_ack()->set_ciphertext(sealed->ciphertext);
  wire_.push_back(resp.SerializeAsString());
  outcome_ = absl::StatusOr<EnrollmentGrant>(grant);
  isk_.clear();
  return resp;
}

absl::StatusOr<EnrollmentGrant> JoinerCore::WaitForOutcome(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock l(&mu_);
  while (true) {
    (void)CheckOpenLocked();
    if (outcome_.has_value()) return *outcome_;
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("still waiting for the admin");
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](std::optional<absl::StatusOr<EnrollmentGrant>>* o) { return o->has_value(); }, &outcome_),
        std::min(absl::Seconds(1), deadline - absl::Now()));
  }
}

int JoinerCore::failed_attempts() {
  absl::MutexLock l(&mu_);
  return failures_;
}

std::vector<std::string> JoinerCore::TranscriptForTest() {
  absl::MutexLock l(&mu_);
  return wire_;
}

}  // namespace ppn::pairing
