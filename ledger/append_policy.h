#pragma once

// Which certificate roles may append which entry kinds. Pure C++.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ppn::ledger {

// AppendPolicy is a list of (kind pattern, roles). A pattern is an exact kind or a prefix
// ending in ".*" ("tenant.vm.*"). Each kind has one owner: the most specific matching rule
// alone decides (an exact kind over any prefix, a longer prefix over a shorter), so
// "vm.migrate" by the scheduler is not also open to the fleet through "vm.*". Immutable after
// construction; thread-safe.
class AppendPolicy {
 public:
  using Rule = std::pair<std::string, std::vector<std::string>>;
  explicit AppendPolicy(std::vector<Rule> rules) : rules_(std::move(rules)) {}

  // The mesh's policy, one writer per kind: tenant.* by the tenant proxy (what tenants asked
  // and were refused); node.* by the pairing admin (membership); vm.migrate, vm.pin and
  // vm.unpin and scheduler.* (drain and rebalance decisions) by the scheduler; every other
  // vm.* (the lifecycle as the fleet sees it) by the fleet; capability.* by the pairing admin
  // and the operator.
  static AppendPolicy Default();

  // OK if `role` may append `kind`; PERMISSION_DENIED naming both otherwise.
  absl::Status Check(absl::string_view role, absl::string_view kind) const;

 private:
  std::vector<Rule> rules_;
};

// OK if `kind` is 1-64 characters of [a-z0-9._-] starting with a letter; INVALID_ARGUMENT.
absl::Status ValidateKind(absl::string_view kind);

}  // namespace ppn::ledger
