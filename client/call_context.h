// Internal to client/: per-call gRPC context and status conversion shared by
// client.cc and transfers.cc. Not part of the client's contract.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/status.h"
#include "client/client.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace qwha::client {

// The generated stubs behind a Client (shared by client.cc and transfers.cc).
struct Client::Stubs {
  std::unique_ptr<qwha::v1::JobService::Stub> jobs;
  std::unique_ptr<qwha::v1::RegistryService::Stub> registry;
};

namespace internal {

// gRPC status → absl status: same code (the enums agree value for value),
// same message.
absl::Status FromGrpc(const grpc::Status& status);

// A context carrying the bearer token; with the unary deadline when
// `unary` is true (and options.timeout > 0).
std::unique_ptr<grpc::ClientContext> MakeContext(const ClientOptions& options, bool unary);

}  // namespace internal
}  // namespace qwha::client
