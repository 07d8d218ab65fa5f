#include "common/role_policy.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace ppn {
namespace {

// Services every mesh member may call: liveness probes and API discovery.
constexpr absl::string_view kOpenServices[] = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
};

// "/pkg.Service/Method" -> "pkg.Service"; empty if malformed.
absl::string_view ServiceOf(absl::string_view method) {
  if (!absl::ConsumePrefix(&method, "/")) return {};
  size_t slash = method.find('/');
  if (slash == absl::string_view::npos || slash == 0 || slash + 1 == method.size()) return {};
  return method.substr(0, slash);
}

}  // namespace

RolePolicy::RolePolicy(std::string mesh) : mesh_(std::move(mesh)) {}

RolePolicy& RolePolicy::Allow(absl::string_view method, std::initializer_list<absl::string_view> roles) {
  auto& allowed = methods_[method];
  for (absl::string_view r : roles) allowed.emplace(r);
  return *this;
}

RolePolicy& RolePolicy::AllowService(absl::string_view service, std::initializer_list<absl::string_view> roles) {
  auto& allowed = services_[service];
  for (absl::string_view r : roles) allowed.emplace(r);
  return *this;
}

absl::Status RolePolicy::Check(absl::string_view method, const SpiffeId& peer) const {
  if (peer.mesh != mesh_) {
    return absl::PermissionDeniedError(absl::StrCat("peer ", peer.ToString(), " is not a member of mesh ", mesh_));
  }
  absl::string_view service = ServiceOf(method);
  if (service.empty()) {
    return absl::PermissionDeniedError(absl::StrCat("malformed method \"", method, "\""));
  }
  for (absl::string_view open : kOpenServices) {
    if (service == open) return absl::OkStatus();
  }
  if (auto it = methods_.find(method); it != methods_.end() && it->second.contains(peer.role)) {
    return absl::OkStatus();
  }
  if (auto it = services_.find(service); it != services_.end() && it->second.contains(peer.role)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat("role ", peer.role, " may not call ", method));
}

}  // namespace ppn
