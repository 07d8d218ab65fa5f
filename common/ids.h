#pragma once

// Small types for the ids that travel together through the control plane, so that a call
// with its VM and tenant ids swapped does not compile: `SpawnVm(VmId, TenantId, ...)`.
// Construction is explicit; `value()` gives the string back. Validation stays where input
// arrives (common/vm_spec.h); these only keep the kinds apart.

#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace ppn {

template <typename Tag>
class Id {
 public:
  Id() = default;
  explicit Id(std::string value) : value_(std::move(value)) {}
  explicit Id(absl::string_view value) : value_(value) {}
  explicit Id(const char* value) : value_(value) {}

  const std::string& value() const { return value_; }
  bool empty() const { return value_.empty(); }

  friend bool operator==(const Id& a, const Id& b) { return a.value_ == b.value_; }
  friend bool operator!=(const Id& a, const Id& b) { return a.value_ != b.value_; }
  friend bool operator<(const Id& a, const Id& b) { return a.value_ < b.value_; }
  template <typename H>
  friend H AbslHashValue(H h, const Id& id) {
    return H::combine(std::move(h), id.value_);
  }

 private:
  std::string value_;
};

using VmId = Id<struct VmIdTag>;
using TenantId = Id<struct TenantIdTag>;
using NodeId = Id<struct NodeIdTag>;

}  // namespace ppn
