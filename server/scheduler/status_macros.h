// Early-return helpers for absl::Status / absl::StatusOr inside server/.
//   RETURN_IF_ERROR(expr);            returns the Status if it is not OK
//   ASSIGN_OR_RETURN(decl, expr);     `decl = std::move(*result)` or returns its Status
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QWHA_CONCAT_INNER(a, b) a##b
#define QWHA_CONCAT(a, b) QWHA_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status qwha_status_ = (expr);        \
    if (!qwha_status_.ok()) return qwha_status_; \
  } while (0)

#define QWHA_ASSIGN_OR_RETURN_IMPL(decl, tmp, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  decl = std::move(*tmp)

#define ASSIGN_OR_RETURN(decl, expr) \
  QWHA_ASSIGN_OR_RETURN_IMPL(decl, QWHA_CONCAT(qwha_result_, __LINE__), expr)
