#pragma once

// What ListVms takes besides its page size: a filter, a small documented subset of AIP-160,
// and page tokens the fleet signs so a caller can only continue a list the fleet gave it.
//
// Filter grammar (docs/api.md shows it to tenants):
//   filter := term { " AND " term }      spaces around AND, any number of them
//   term   := field "=" value            no spaces around "="
//   field  := "state" | "name" | "labels." KEY
//   value  := [A-Za-z0-9_.-]+ | '"' any character but '"' '"'
// `state` takes a VmState without or with its prefix (RUNNING, VM_STATE_RUNNING); `name`
// matches the name the tenant chose or the vm_id; `labels.KEY` a label's exact value. Terms
// are ANDed; the empty filter matches everything.
//
// Page tokens: "<after>.<mac>", web-safe base64 of the last vm_id listed and an HMAC-SHA256
// over it, the caller's tenant (or the operator's scope) and everything else the request
// filters by, with a key the fleet keeps. A token altered, made for another tenant or another
// filter, or by another run of the fleet (a new key) does not verify. Pure C++.

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::fleet {

struct VmFilter {
  std::optional<ppn::types::v1::VmState> state;
  std::optional<std::string> name;
  std::map<std::string, std::string> labels;
  // True if `record` (as callers see it: its visible state) matches every term.
  bool Matches(const ppn::fleet::v1::VmRecord& record, ppn::types::v1::VmState visible_state) const;
};

// Parses `filter`. INVALID_ARGUMENT "filter: at position N: expected X, found Y" (N counts
// characters from 1) for anything outside the grammar, an unknown field or state, a term
// given twice.
absl::StatusOr<VmFilter> ParseVmFilter(const std::string& filter);

// Signs and checks ListVms page tokens with one key (at least 16 bytes, kept by the fleet).
class PageTokens {
 public:
  explicit PageTokens(std::string key) : key_(std::move(key)) {}

  // What a token is bound to: the caller's scope (a tenant id, or "" for the operator) and
  // every field of `request` that decides what the list holds (not its page size or token).
  static std::string Binding(const std::string& scope, const ppn::fleet::v1::ListVmsRequest& request);

  // The token that continues a list bound to `binding` after vm `after`.
  std::string Make(const std::string& binding, const std::string& after) const;
  // The vm_id to continue after. INVALID_ARGUMENT "page_token is not valid for this list ..."
  // for a token that does not verify, with the same words whatever is wrong with it.
  absl::StatusOr<std::string> Parse(const std::string& binding, const std::string& token) const;

 private:
  std::string Mac(const std::string& binding, const std::string& after) const;
  const std::string key_;
};

}  // namespace ppn::fleet
