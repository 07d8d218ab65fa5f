#include "tools/ppnctl/egress.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/vm_spec.h"
#include "google/protobuf/util/json_util.h"

namespace ppn::ppnctl {
namespace {

using ppn::types::v1::EgressPolicy;
using ppn::types::v1::EgressRule;

constexpr char kSyntax[] = "want CIDR[:PORT[-PORT]][/udp], e.g. 203.0.113.0/24:443";

absl::Status Malformed(const std::string& text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" ", why, "; ", kSyntax));
}

bool ParsePort(absl::string_view text, uint32_t* port) {
  return !text.empty() && absl::ascii_isdigit(text[0]) && absl::SimpleAtoi(text, port) && *port >= 1 && *port <= 65535;
}

// The rule as JSON for its request field, after the shared validation has seen it in the
// list it will go to.
absl::StatusOr<std::string> RuleFlagValue(const std::string& value, bool allow) {
  absl::StatusOr<EgressRule> rule = ParseEgressRule(value);
  if (!rule.ok()) return rule.status();
  EgressPolicy check;
  *(allow ? check.add_allow() : check.add_deny()) = *rule;
  absl::Status valid = ValidateEgressPolicy(check);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(valid.message(), "; ", kSyntax));
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(*rule, &json, options);
  return json;
}

std::string Count(uint64_t n, absl::string_view unit) { return absl::StrCat(n, " ", unit, n == 1 ? "" : "s"); }

std::string Rules(const google::protobuf::RepeatedPtrField<EgressRule>& rules) {
  std::vector<std::string> out;
  for (const EgressRule& r : rules) out.push_back(FormatEgressRule(r));
  return absl::StrJoin(out, ", ");
}

}  // namespace

absl::StatusOr<std::string> InternetFlagValue(const std::string& value) {
  std::string v = absl::AsciiStrToLower(value);
  if (v == "allow" || v == "allowed") return std::string("INTERNET_ACCESS_ALLOWED");
  if (v == "deny" || v == "denied") return std::string("INTERNET_ACCESS_DENIED");
  return absl::InvalidArgumentError(absl::StrCat("\"", value, "\": want allow or deny"));
}

absl::StatusOr<std::string> AllowFlagValue(const std::string& value) { return RuleFlagValue(value, true); }

absl::StatusOr<std::string> DenyFlagValue(const std::string& value) { return RuleFlagValue(value, false); }

absl::StatusOr<EgressRule> ParseEgressRule(const std::string& text) {
  absl::string_view rest = text;
  EgressRule rule;
  bool protocol = false;
  std::string lower = absl::AsciiStrToLower(text);
  if (absl::EndsWith(lower, "/udp") || absl::EndsWith(lower, "/tcp")) {
    protocol = true;
    rule.set_protocol(absl::EndsWith(lower, "/udp") ? ppn::types::v1::PROTOCOL_UDP : ppn::types::v1::PROTOCOL_TCP);
    rest.remove_suffix(4);
  }
  size_t colon = rest.find(':');
  absl::string_view cidr = rest.substr(0, colon);
  if (cidr.empty()) return Malformed(text, "names no address");
  rule.set_cidr(std::string(cidr));
  if (colon == absl::string_view::npos) {
    if (protocol) return Malformed(text, "has a protocol but no port");
    return rule;
  }
  absl::string_view ports = rest.substr(colon + 1);
  size_t dash = ports.find('-');
  uint32_t first = 0, last = 0;
  if (!ParsePort(ports.substr(0, dash), &first) ||
      (dash != absl::string_view::npos && !ParsePort(ports.substr(dash + 1), &last))) {
    return Malformed(text, "has a port that is not 1-65535");
  }
  if (dash != absl::string_view::npos && last < first) return Malformed(text, "has a port range that runs backwards");
  rule.set_port_first(first);
  if (last != first) rule.set_port_last(last);
  return rule;
}

std::string FormatEgressRule(const EgressRule& r) {
  std::string out = r.cidr();
  if (r.port_first() == 0) return out;
  absl::StrAppend(&out, ":", r.port_first());
  if (r.port_last() != 0 && r.port_last() != r.port_first()) absl::StrAppend(&out, "-", r.port_last());
  if (r.protocol() == ppn::types::v1::PROTOCOL_UDP) absl::StrAppend(&out, "/udp");
  return out;
}

std::string DescribeNetwork(const ppn::tenancy::v1::Vm& vm) {
  const EgressPolicy& p = vm.spec().egress();
  std::vector<std::string> parts;
  switch (p.internet()) {
    case ppn::types::v1::INTERNET_ACCESS_ALLOWED: parts.push_back("internet allowed"); break;
    case ppn::types::v1::INTERNET_ACCESS_DENIED: parts.push_back("internet denied"); break;
    default: parts.push_back("internet as the tenant's default"); break;
  }
  if (p.allow_size() > 0) parts.push_back(absl::StrCat("allow ", Rules(p.allow())));
  if (p.deny_size() > 0) parts.push_back(absl::StrCat("deny ", Rules(p.deny())));
  parts.push_back(p.rate_limit_kbit() == 0 ? "no rate limit"
                                           : absl::StrCat("rate limit ", p.rate_limit_kbit(), " kbit/s"));
  const ppn::types::v1::NetworkCounters& n = vm.network();
  return absl::StrCat("egress: ", absl::StrJoin(parts, "; "), "\ntraffic: sent ", Count(n.tx_bytes(), "byte"), " (",
                      Count(n.tx_packets(), "packet"), "), received ", Count(n.rx_bytes(), "byte"), " (",
                      Count(n.rx_packets(), "packet"), ")\n");
}

}  // namespace ppn::ppnctl
