#include "server/registry/grpc_status.h"

#include <gtest/gtest.h>

namespace qwha::registry {
namespace {

TEST(GrpcStatusTest, EveryCodeMapsOneToOneBothWays) {
  EXPECT_TRUE(ToGrpc(absl::OkStatus()).ok());
  for (int code = 1; code <= 16; ++code) {
    absl::Status status(static_cast<absl::StatusCode>(code), "path: outside the model root");
    grpc::Status g = ToGrpc(status);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "path: outside the model root");
    EXPECT_EQ(FromGrpc(g), status);
  }
  EXPECT_EQ(ToGrpc(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpc(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ToGrpc(absl::UnauthenticatedError("x")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace qwha::registry
