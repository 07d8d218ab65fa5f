#include "common/vm_spec.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

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

absl::Status ToGracePeriod(const google::protobuf::Duration& d, absl::Duration* out) {
  PPN_RETURN_IF_ERROR(ToAbslDuration(d, "grace_period", out));
  if (*out < absl::ZeroDuration() || *out > absl::Minutes(10)) {
    return absl::InvalidArgumentError("grace_period must be 0-600 s");
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> ToConsoleReadBytes(uint32_t max_bytes) {
  if (max_bytes > (1u << 20)) return absl::InvalidArgumentError("max_bytes must be at most 1048576");
  return max_bytes == 0 ? size_t{64} << 10 : size_t{max_bytes};
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

namespace {

// 1 to `max` ASCII digits, nothing else.
bool Digits(absl::string_view text, size_t max) {
  if (text.empty() || text.size() > max) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool ParseIpv4Cidr(absl::string_view text, uint32_t* addr, int* prefix) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits('/', 1));
  if (parts.empty() || parts[0].empty()) return false;
  std::vector<std::string> octets = absl::StrSplit(parts[0], '.');
  if (octets.size() != 4) return false;
  uint32_t a = 0;
  for (const std::string& o : octets) {
    uint32_t v;
    // Digits only: SimpleAtoi alone takes " 1" or "1\n", and these texts end up in nftables rules.
    if (!Digits(o, 3) || !absl::SimpleAtoi(o, &v) || v > 255) return false;
    a = (a << 8) | v;
  }
  *prefix = 32;
  if (parts.size() == 2 && (!Digits(parts[1], 2) || !absl::SimpleAtoi(parts[1], prefix) || *prefix > 32)) return false;
  *addr = a;
  return true;
}

absl::Status ValidateRules(const google::protobuf::RepeatedPtrField<ppn::types::v1::EgressRule>& rules,
                           absl::string_view field) {
  if (rules.size() > 64) return Invalid(field, "may hold at most 64 rules");
  for (const auto& r : rules) {
    uint32_t addr;
    int prefix;
    if (!ParseIpv4Cidr(r.cidr(), &addr, &prefix)) {
      return Invalid(field, absl::StrCat("rule \"", r.cidr().substr(0, 64), "\" is not an IPv4 address or CIDR"));
    }
    if (r.port_first() == 0 && r.port_last() != 0) return Invalid(field, "rules with port_last need port_first");
    if (r.port_first() > 65535 || r.port_last() > 65535 || (r.port_last() != 0 && r.port_last() < r.port_first())) {
      return Invalid(field, "rule ports must be 1-65535 with port_first <= port_last");
    }
    if (!ppn::types::v1::Protocol_IsValid(r.protocol())) {
      return Invalid(field, absl::StrCat("rule protocol ", static_cast<int>(r.protocol()), " is not TCP or UDP"));
    }
  }
  return absl::OkStatus();
}

// True if every destination `inner` names is also one of `outer`'s.
bool Within(const ppn::types::v1::EgressRule& inner, const ppn::types::v1::EgressRule& outer) {
  uint32_t ia, oa;
  int ip, op;
  if (!ParseIpv4Cidr(inner.cidr(), &ia, &ip) || !ParseIpv4Cidr(outer.cidr(), &oa, &op) || ip < op) return false;
  uint32_t mask = op == 0 ? 0 : ~uint32_t{0} << (32 - op);
  if ((ia & mask) != (oa & mask)) return false;
  if (outer.port_first() == 0) return true;  // every port
  if (inner.port_first() == 0) return false;
  bool udp = inner.protocol() == ppn::types::v1::PROTOCOL_UDP;
  bool outer_udp = outer.protocol() == ppn::types::v1::PROTOCOL_UDP;
  uint32_t il = inner.port_last() == 0 ? inner.port_first() : inner.port_last();
  uint32_t ol = outer.port_last() == 0 ? outer.port_first() : outer.port_last();
  return udp == outer_udp && inner.port_first() >= outer.port_first() && il <= ol;
}

}  // namespace

absl::Status ValidateEgressPolicy(const ppn::types::v1::EgressPolicy& policy) {
  if (!ppn::types::v1::InternetAccess_IsValid(policy.internet())) {
    return Invalid("egress.internet", absl::StrCat(static_cast<int>(policy.internet()), " is not ALLOWED or DENIED"));
  }
  PPN_RETURN_IF_ERROR(ValidateRules(policy.allow(), "egress.allow"));
  PPN_RETURN_IF_ERROR(ValidateRules(policy.deny(), "egress.deny"));
  if (policy.rate_limit_kbit() >= 10000000) return Invalid("egress.rate_limit_kbit", "must be below 10000000");
  return absl::OkStatus();
}

absl::StatusOr<ppn::types::v1::EgressPolicy> NarrowEgress(const ppn::types::v1::EgressPolicy& tenant_default,
                                                          const ppn::types::v1::EgressPolicy& vm) {
  using ppn::types::v1::INTERNET_ACCESS_ALLOWED;
  using ppn::types::v1::INTERNET_ACCESS_DENIED;
  ppn::types::v1::EgressPolicy out;
  bool tenant_denies = tenant_default.internet() == INTERNET_ACCESS_DENIED;
  out.set_internet(tenant_denies || vm.internet() == INTERNET_ACCESS_DENIED ? INTERNET_ACCESS_DENIED
                                                                            : INTERNET_ACCESS_ALLOWED);
  if (vm.allow_size() == 0) {
    *out.mutable_allow() = tenant_default.allow();
  } else {
    for (const auto& rule : vm.allow()) {
      bool ok = !tenant_denies;
      for (const auto& t : tenant_default.allow()) ok = ok || Within(rule, t);
      if (!ok) {
        return absl::PermissionDeniedError(
            absl::StrCat("egress.allow rule ", rule.cidr(), " is outside what this tenant may reach"));
      }
      *out.add_allow() = rule;
    }
  }
  *out.mutable_deny() = tenant_default.deny();
  for (const auto& rule : vm.deny()) *out.add_deny() = rule;
  if (out.deny_size() > 64) return Invalid("egress.deny", "with the tenant's own holds more than 64 rules");
  uint64_t t = tenant_default.rate_limit_kbit(), v = vm.rate_limit_kbit();
  out.set_rate_limit_kbit(t == 0 ? v : (v == 0 ? t : std::min(t, v)));
  return out;
}

absl::Status ValidateVmId(absl::string_view vm_id) {
  if (vm_id.empty() || vm_id.size() > 64 || !AllOf(vm_id, LowerDigitDash)) {
    return Invalid("vm_id", "must be 1-64 characters of [a-z0-9-]");
  }
  return absl::OkStatus();
}

bool IsGeneratedVmId(absl::string_view vm_id) {
  if (vm_id.size() != 22 || !absl::StartsWith(vm_id, "vm-")) return false;
  return AllOf(vm_id.substr(3), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

absl::Status ValidateChosenVmId(absl::string_view vm_id) {
  if (vm_id.empty() || vm_id.size() > 63 || !(vm_id[0] >= 'a' && vm_id[0] <= 'z') || !AllOf(vm_id, LowerDigitDash)) {
    return Invalid("vm_id", "must be 1-63 characters of [a-z0-9-] starting with a letter");
  }
  if (IsGeneratedVmId(vm_id)) return Invalid("vm_id", "has the form of a generated id (vm- and 19 hex digits)");
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
  if (spec.max_memory_mib() != 0 &&
      (spec.max_memory_mib() < spec.memory_mib() || spec.max_memory_mib() > kMaxMemoryMib ||
       (spec.max_memory_mib() - spec.memory_mib()) % 2 != 0)) {
    return Invalid("max_memory_mib", absl::StrCat("must be memory_mib (", spec.memory_mib(),
                                                  ") plus a multiple of 2, at most ", kMaxMemoryMib));
  }
  if (spec.min_memory_mib() > spec.memory_mib()) {
    return Invalid("min_memory_mib", absl::StrCat("must be at most memory_mib (", spec.memory_mib(), ")"));
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
  if (spec.has_egress()) PPN_RETURN_IF_ERROR(ValidateEgressPolicy(spec.egress()));
  if (spec.networks_size() > 4) return Invalid("networks", "may list at most 4 private networks");
  std::set<std::string> networks;
  for (const std::string& id : spec.networks()) {
    if (id.empty() || id.size() > 40 || !AllOf(id, LowerDigitDash))
      return Invalid("networks", "entries must be network ids: 1-40 characters of [a-z0-9-]");
    if (!networks.insert(id).second) return Invalid("networks", absl::StrCat("names ", id, " twice"));
  }
  if (spec.has_ttl()) {
    absl::Duration ttl;
    if (!ToAbslDuration(spec.ttl(), "ttl", &ttl).ok() || ttl <= absl::ZeroDuration() || ttl > kMaxTtl) {
      return Invalid("ttl", "must be positive and at most 3650 days");
    }
  }
  return absl::OkStatus();
}

}  // namespace ppn
