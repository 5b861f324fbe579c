// The inference servers (qwha-serve --advertise) that asked for new adapters
// to be pushed to them: one row per address in the scheduler's store
// (inference_servers), written by RegisterInferenceServer, which is also the
// servers' heartbeat. The deployer (server/scheduler/deployer.h) reads the
// live ones of a base model.
//
// Thread safety: safe for concurrent use (the Db serializes).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qwha/v1/registry.pb.h"
#include "server/store/sqlite_db.h"

namespace qwha::registry {

struct InferenceServerOptions {
  // Servers are told to register again this often.
  double heartbeat_seconds = 10;
  // A server last seen longer ago than this is not live: nothing is pushed to
  // it. Three heartbeats, so one lost heartbeat does not drop a server.
  double ttl_seconds = 30;
};

// OK, or InvalidArgument naming `field`: "host:port" with a non-empty host
// (IPv6 in brackets), a port in 1..65535, at most 256 bytes, no whitespace.
absl::Status ValidateServerAddress(const std::string& field, const std::string& address);

class InferenceServerDirectory {
 public:
  // Borrows db (it must outlive the directory).
  InferenceServerDirectory(store::Db* db, InferenceServerOptions options)
      : db_(db), options_(options) {}
  InferenceServerDirectory(const InferenceServerDirectory&) = delete;
  InferenceServerDirectory& operator=(const InferenceServerDirectory&) = delete;

  // Validates (InvalidArgument naming address, base_model_digest or name),
  // then records the server as seen now: a new address is inserted, a known
  // one replaced (digest, quantization and name may change; registered_at
  // is kept). Returns the heartbeat interval and TTL to the server.
  absl::StatusOr<v1::RegisterInferenceServerResponse> Register(
      const v1::RegisterInferenceServerRequest& request);

  // Every registered server (of `base_model_digest` when non-empty), most
  // recently seen first, with `live` set from the TTL.
  absl::StatusOr<std::vector<v1::InferenceServer>> List(const std::string& base_model_digest);

  // The live servers of `base_model_digest`, most recently seen first.
  absl::StatusOr<std::vector<v1::InferenceServer>> Live(const std::string& base_model_digest);

  // How many servers are live, for metrics.
  absl::StatusOr<int64_t> CountLive();

  const InferenceServerOptions& options() const { return options_; }

 private:
  absl::StatusOr<std::vector<v1::InferenceServer>> Query(const std::string& base_model_digest,
                                                         bool live_only);
  store::Db* db_;
  const InferenceServerOptions options_;
};

}  // namespace qwha::registry
