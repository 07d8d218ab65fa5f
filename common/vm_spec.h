#pragma once

// The one validation of what a tenant asks for, shared by the tenant proxy (before quota),
// the fleet (before placement) and the host agent (before it spawns): the same rules and the
// same words everywhere. Every message names the field and the rule. Pure C++.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn {

inline constexpr uint32_t kMaxVcpus = 64;
inline constexpr uint32_t kMinMemoryMib = 64;
inline constexpr uint32_t kMaxMemoryMib = 1048576;
inline constexpr uint32_t kMaxDiskGib = 4096;
inline constexpr int kMaxPortForwards = 16;
inline constexpr int kMaxLabels = 32;
inline constexpr int kMaxSshKeys = 32;
inline constexpr size_t kMaxSshKeyBytes = 8 * 1024;
// Everything a VM's first-boot seed carries (user_data plus the ssh keys), as a whole.
inline constexpr size_t kMaxSeedBytes = 64 * 1024;
// The longest TTL a VM may ask for.
inline constexpr absl::Duration kMaxTtl = absl::Hours(24 * 3650);

// INVALID_ARGUMENT naming the field unless `spec` is a VM the control plane can run: a
// display name, 1-64 vCPUs, 64 MiB-1 TiB of memory, at most 4096 GiB of disk, an image name
// of [a-z0-9._-], guest ports 1-65535 with a defined protocol, labels, ssh keys and
// user_data within their limits (the seed as a whole at most 64 KiB), a TTL within 10 years.
// Never reaches a protobuf CHECK, whatever the input.
absl::Status ValidateVmSpec(const ppn::types::v1::VmSpec& spec);

// INVALID_ARGUMENT naming the field unless `policy` is well-formed: IPv4 CIDRs, ports 1-65535
// with first <= last (port_last without port_first refused), defined protocols, at most 64
// rules per list, a rate limit below 10 Gbit/s.
absl::Status ValidateEgressPolicy(const ppn::types::v1::EgressPolicy& policy);

// The policy a VM gets: `vm`'s request narrowed to its tenant's `tenant_default`. Internet
// access is denied if either denies it; deny lists add up; the rate limit is the lower one
// that is set; with internet denied by the tenant, every rule of `vm`'s allow list must lie
// within a rule of the tenant's (else PERMISSION_DENIED naming the rule), and without a VM
// allow list the tenant's applies. Both inputs must be valid.
absl::StatusOr<ppn::types::v1::EgressPolicy> NarrowEgress(const ppn::types::v1::EgressPolicy& tenant_default,
                                                          const ppn::types::v1::EgressPolicy& vm);

// A VM id: 1-64 characters of [a-z0-9-].
absl::Status ValidateVmId(absl::string_view vm_id);
// An id a tenant chooses for its VM (CreateVmRequest.vm_id, AIP-133): [a-z][a-z0-9-]{0,62}
// and not of the generated form (IsGeneratedVmId), so a name never reads as another VM's id.
// Every such id, and every generated one, passes ValidateVmId.
absl::Status ValidateChosenVmId(absl::string_view vm_id);
// True for the form the fleet generates: "vm-" and 19 lowercase hex digits.
bool IsGeneratedVmId(absl::string_view vm_id);
// A tenant id: 1-63 characters of [a-z0-9-].
absl::Status ValidateTenantId(absl::string_view tenant_id);

// True if `d` / `t` is within protobuf's documented range (what TimeUtil CHECKs on), with
// nanos of the same sign as seconds.
bool IsValidDuration(const google::protobuf::Duration& d);
bool IsValidTimestamp(const google::protobuf::Timestamp& t);

// Conversions that never CHECK: INVALID_ARGUMENT naming `field` when out of range.
absl::Status ToAbslDuration(const google::protobuf::Duration& d, absl::string_view field, absl::Duration* out);
// StopVm's and RebootVm's grace_period: 0 (the default) up to 10 minutes; INVALID_ARGUMENT
// "grace_period must be 0-600 s" otherwise.
absl::Status ToGracePeriod(const google::protobuf::Duration& d, absl::Duration* out);
// GetConsoleOutput's max_bytes: 0 means 64 KiB, more than 1 MiB is INVALID_ARGUMENT.
absl::StatusOr<size_t> ToConsoleReadBytes(uint32_t max_bytes);
google::protobuf::Timestamp ToProtoTimestamp(absl::Time t);
google::protobuf::Duration ToProtoDuration(absl::Duration d);

}  // namespace ppn
