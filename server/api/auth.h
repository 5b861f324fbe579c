// Bearer tokens: the check shared by every service of a process (when a token
// is configured, each call must carry the metadata "authorization: Bearer
// <token>"), and the client side that attaches it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace qwha::api {

// OK when `token` is empty or the call carries it; Unauthenticated otherwise.
absl::Status CheckToken(const grpc::ServerContext* context, const std::string& token);

// Adds "authorization: Bearer <token>" to a call; nothing when `token` is empty.
void AddToken(grpc::ClientContext* call, const std::string& token);

}  // namespace qwha::api
