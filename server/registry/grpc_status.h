// The gRPC edge of every qwha service: absl::Status ↔ grpc::Status, one to
// one. The canonical code spaces are identical (OK = 0 … UNAUTHENTICATED =
// 16), so the code is carried over unchanged and the message verbatim.
//
// Thread safety: a pure function.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace qwha::registry {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// The inverse, for clients of a qwha service.
inline absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace qwha::registry
