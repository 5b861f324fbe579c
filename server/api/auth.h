// Bearer-token check shared by every service of a process: when a token is
// configured, each call must carry the metadata "authorization: Bearer <token>".
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace qwha::api {

// OK when `token` is empty or the call carries it; Unauthenticated otherwise.
absl::Status CheckToken(const grpc::ServerContext* context, const std::string& token);

}  // namespace qwha::api
