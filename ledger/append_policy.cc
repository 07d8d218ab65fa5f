#include "ledger/append_policy.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/roles.h"

namespace ppn::ledger {

AppendPolicy AppendPolicy::Default() {
  namespace r = ppn::roles;
  return AppendPolicy({
      {"tenant.*", {r::kTenantProxy}},
      {"node.*", {r::kPairingAdmin}},
      // The fleet owns the cordon (its node records); operators and the scheduler ask it.
      {"node.cordon", {r::kFleet}},
      {"node.uncordon", {r::kFleet}},
      {"vm.migrate", {r::kScheduler}},
      {"vm.pin", {r::kScheduler}},
      {"vm.unpin", {r::kScheduler}},
      {"scheduler.*", {r::kScheduler}},
      {"vm.*", {r::kFleet}},
      {"capability.*", {r::kPairingAdmin, r::kOperator}},
  });
}

absl::Status AppendPolicy::Check(absl::string_view role, absl::string_view kind) const {
  const Rule* owner = nullptr;
  size_t best = 0;
  for (const Rule& rule : rules_) {
    const std::string& pattern = rule.first;
    bool prefix = absl::EndsWith(pattern, ".*");
    bool match = prefix ? absl::StartsWith(kind, pattern.substr(0, pattern.size() - 1)) : kind == pattern;
    size_t specificity = prefix ? pattern.size() - 1 : pattern.size() + 1;
    if (match && specificity > best) {
      owner = &rule;
      best = specificity;
    }
  }
  if (owner != nullptr) {
    for (const auto& allowed : owner->second) {
      if (allowed == role) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat("role ", role, " may not append entries of kind ", kind));
}

absl::Status ValidateKind(absl::string_view kind) {
  bool ok = !kind.empty() && kind.size() <= 64 && kind[0] >= 'a' && kind[0] <= 'z';
  for (char c : kind) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError("kind must be 1-64 characters of [a-z0-9._-] starting with a letter");
  }
  return absl::OkStatus();
}

}  // namespace ppn::ledger
