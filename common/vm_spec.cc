#include "common/vm_spec.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ppn {
namespace {

using ppn::types::v1::VmSpec;

// protobuf's range for Duration and Timestamp (google/protobuf/duration.proto, timestamp.proto).
constexpr int64_t kMaxDurationSeconds = 315576000000;
constexpr int64_t kMinTimestampSeconds = -62135596800;  // 0001-01-01T00:00:00Z
constexpr int64_t kMaxTimestampSeconds = 253402300799;  // 9999-12-31T23:59:59Z

bool AllOf(absl::string_view s, bool (*ok)(char)) {
  for (char c : s) {
    if (!ok(c)) return false;
  }
  return true;
}
bool LowerDigitDash(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }
bool ImageChar(char c) { return LowerDigitDash(c) || c == '.' || c == '_'; }
bool LabelKeyChar(char c) { return LowerDigitDash(c) || c == '.' || c == '_' || c == '/'; }
bool LabelValueChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}
bool Printable(char c) { return c >= 0x20 && c < 0x7f; }

absl::Status Invalid(absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", rule));
}

}  // namespace

bool IsValidDuration(const google::protobuf::Duration& d) {
  if (d.seconds() < -kMaxDurationSeconds || d.seconds() > kMaxDurationSeconds) return false;
  if (d.nanos() <= -1000000000 || d.nanos() >= 1000000000) return false;
  return !((d.seconds() < 0 && d.nanos() > 0) || (d.seconds() > 0 && d.nanos() < 0));
}

bool IsValidTimestamp(const google::protobuf::Timestamp& t) {
  return t.seconds() >= kMinTimestampSeconds && t.seconds() <= kMaxTimestampSeconds && t.nanos() >= 0 &&
         t.nanos() < 1000000000;
}

absl::Status ToAbslDuration(const google::protobuf::Duration& d, absl::string_view field, absl::Duration* out) {
  if (!IsValidDuration(d)) return Invalid(field, "is not a valid duration");
  *out = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  return absl::OkStatus();
}

google::protobuf::Timestamp ToProtoTimestamp(absl::Time t) {
  google::protobuf::Timestamp out;
  int64_t micros = absl::ToUnixMicros(t);
  int64_t seconds = micros / 1000000, rem = micros % 1000000;
  if (rem < 0) {
    --seconds;
    rem += 1000000;
  }
  if (seconds < kMinTimestampSeconds) seconds = kMinTimestampSeconds, rem = 0;
  if (seconds > kMaxTimestampSeconds) seconds = kMaxTimestampSeconds, rem = 0;
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(rem * 1000));
  return out;
}

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  google::protobuf::Duration out;
  int64_t micros = absl::ToInt64Microseconds(d);
  int64_t seconds = micros / 1000000;
  if (seconds > kMaxDurationSeconds) return ToProtoDuration(absl::Seconds(kMaxDurationSeconds));
  if (seconds < -kMaxDurationSeconds) return ToProtoDuration(absl::Seconds(-kMaxDurationSeconds));
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>((micros % 1000000) * 1000));
  return out;
}

absl::Status ValidateVmId(absl::string_view vm_id) {
  if (vm_id.empty() || vm_id.size() > 64 || !AllOf(vm_id, LowerDigitDash)) {
    return Invalid("vm_id", "must be 1-64 characters of [a-z0-9-]");
  }
  return absl::OkStatus();
}

absl::Status ValidateTenantId(absl::string_view tenant_id) {
  if (tenant_id.empty() || tenant_id.size() > 63 || !AllOf(tenant_id, LowerDigitDash)) {
    return Invalid("tenant_id", "must be 1-63 characters of [a-z0-9-]");
  }
  return absl::OkStatus();
}

absl::Status ValidateVmSpec(const VmSpec& spec) {
  const std::string& name = spec.display_name();
  if (name.empty() || name.size() > 63 || !(name[0] >= 'a' && name[0] <= 'z') || !AllOf(name, LowerDigitDash)) {
    return Invalid("display_name", "must be 1-63 characters of [a-z0-9-] starting with a letter");
  }
  if (spec.vcpus() < 1 || spec.vcpus() > kMaxVcpus) return Invalid("vcpus", absl::StrCat("must be 1-", kMaxVcpus));
  if (spec.memory_mib() < kMinMemoryMib || spec.memory_mib() > kMaxMemoryMib) {
    return Invalid("memory_mib", absl::StrCat("must be ", kMinMemoryMib, "-", kMaxMemoryMib));
  }
  if (spec.disk_gib() > kMaxDiskGib) return Invalid("disk_gib", absl::StrCat("must be at most ", kMaxDiskGib));
  const std::string& image = spec.image();
  if (image.empty()) return Invalid("image", "is required");
  if (image.size() > 64 || !AllOf(image, ImageChar) || image[0] == '.' || image[0] == '-') {
    return Invalid("image", "must be 1-64 characters of [a-z0-9._-], starting with a letter or digit");
  }
  if (spec.port_forwards_size() > kMaxPortForwards) {
    return Invalid("port_forwards", absl::StrCat("may list at most ", kMaxPortForwards));
  }
  for (const auto& f : spec.port_forwards()) {
    if (f.guest_port() < 1 || f.guest_port() > 65535) {
      return Invalid("port_forwards", absl::StrCat("guest_port ", f.guest_port(), " is not 1-65535"));
    }
    if (!ppn::types::v1::Protocol_IsValid(f.protocol())) {
      return Invalid("port_forwards", absl::StrCat("protocol ", static_cast<int>(f.protocol()), " is not TCP or UDP"));
    }
  }
  if (spec.labels_size() > kMaxLabels) return Invalid("labels", absl::StrCat("may hold at most ", kMaxLabels));
  for (const auto& [k, v] : spec.labels()) {
    if (k.empty() || k.size() > 63 || !AllOf(k, LabelKeyChar) || k[0] == '.' || k[0] == '/' || k[0] == '-') {
      return Invalid("labels", "keys must be 1-63 characters of [a-z0-9._/-], starting with a letter or digit");
    }
    if (v.size() > 63 || !AllOf(v, LabelValueChar)) {
      return Invalid("labels", "values must be at most 63 characters of [A-Za-z0-9._-]");
    }
  }
  if (spec.ssh_authorized_keys_size() > kMaxSshKeys) {
    return Invalid("ssh_authorized_keys", absl::StrCat("may list at most ", kMaxSshKeys));
  }
  size_t seed = spec.user_data().size();
  for (const std::string& key : spec.ssh_authorized_keys()) {
    if (key.empty() || key.size() > kMaxSshKeyBytes || !AllOf(key, Printable)) {
      return Invalid("ssh_authorized_keys",
                     absl::StrCat("entries must be one line of printable ASCII, 1-", kMaxSshKeyBytes, " bytes"));
    }
    seed += key.size();
  }
  if (spec.user_data().size() > kMaxSeedBytes) return Invalid("user_data", "exceeds 64 KiB");
  if (seed > kMaxSeedBytes) return Invalid("user_data and ssh_authorized_keys", "together exceed 64 KiB");
  if (spec.has_ttl()) {
    absl::Duration ttl;
    if (!ToAbslDuration(spec.ttl(), "ttl", &ttl).ok() || ttl <= absl::ZeroDuration() || ttl > kMaxTtl) {
      return Invalid("ttl", "must be positive and at most 3650 days");
    }
  }
  return absl::OkStatus();
}

}  // namespace ppn
