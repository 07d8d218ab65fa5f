#pragma once

// Egress policies on ppnctl's command line and in its output: the short flags of `vm egress`
// and `vm create` (--internet=allow|deny, --allow=RULE, --deny=RULE, one rule a flag) turned
// into request fields, and a VM's policy and traffic told in one line each. A rule is written
// CIDR[:PORT[-PORT]][/udp] ("203.0.113.0/24:443", "198.51.100.7:5000-5100/udp"), the same way
// in and out. Pure.

#include <string>

#include "absl/status/statusor.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"
#include "ppn/types/v1/types.pb.h"

namespace ppn::ppnctl {

// "allow" or "deny" (or "allowed", "denied") as the InternetAccess value's name.
// INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> InternetFlagValue(const std::string& value);
// A rule of an allow or a deny list as the JSON of its EgressRule, checked by the shared
// validation (common/vm_spec.h): INVALID_ARGUMENT saying what was wrong and the syntax.
absl::StatusOr<std::string> AllowFlagValue(const std::string& value);
absl::StatusOr<std::string> DenyFlagValue(const std::string& value);

// Parses one rule, CIDR[:PORT[-PORT]][/udp|/tcp]; INVALID_ARGUMENT for a malformed one (the
// CIDR itself is checked by the shared validation, not here).
absl::StatusOr<ppn::types::v1::EgressRule> ParseEgressRule(const std::string& text);
// The rule as ParseEgressRule reads it.
std::string FormatEgressRule(const ppn::types::v1::EgressRule& rule);

// "egress: internet denied; allow 203.0.113.0/24:443; deny 203.0.113.66; rate limit 5000 kbit/s\n"
// "traffic: sent 4096 bytes (3 packets), received 0 bytes (0 packets)\n"
std::string DescribeNetwork(const ppn::tenancy::v1::Vm& vm);

}  // namespace ppn::ppnctl
