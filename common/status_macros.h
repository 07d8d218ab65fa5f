#pragma once

// Early-return helpers for absl::Status / absl::StatusOr (Abseil 20220623 ships neither).

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns `expr`'s status from the enclosing function if it is not OK.
#define PPN_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status ppn_status_ = (expr);       \
    if (!ppn_status_.ok()) return ppn_status_; \
  } while (0)

#define PPN_STATUS_CONCAT_INNER_(a, b) a##b
#define PPN_STATUS_CONCAT_(a, b) PPN_STATUS_CONCAT_INNER_(a, b)

// `PPN_ASSIGN_OR_RETURN(auto x, StatusOrExpr());` declares and assigns `x` from the value,
// or returns the error from the enclosing function.
#define PPN_ASSIGN_OR_RETURN(lhs, expr) \
  PPN_ASSIGN_OR_RETURN_IMPL_(PPN_STATUS_CONCAT_(ppn_statusor_, __LINE__), lhs, expr)

#define PPN_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  if (!statusor.ok()) return statusor.status();         \
  lhs = std::move(statusor).value()
