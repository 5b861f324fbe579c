#include "server/api/auth.h"

#include <openssl/crypto.h>

namespace qwha::api {

absl::Status CheckToken(const grpc::ServerContext* context, const std::string& token) {
  if (token.empty()) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end())
    return absl::UnauthenticatedError("authorization: missing bearer token");
  std::string value(it->second.data(), it->second.size());
  std::string expected = "Bearer " + token;
  if (value.size() != expected.size() ||
      CRYPTO_memcmp(value.data(), expected.data(), value.size()) != 0) {
    return absl::UnauthenticatedError("authorization: wrong token");
  }
  return absl::OkStatus();
}

void AddToken(grpc::ClientContext* call, const std::string& token) {
  if (!token.empty()) call->AddMetadata("authorization", "Bearer " + token);
}

}  // namespace qwha::api
