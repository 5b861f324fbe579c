// Test harness: a registry (SQLite store, blob store, RegistryServiceImpl) in
// a fresh temp directory, served by a real gRPC server on 127.0.0.1:0, with a
// client stub. Every RPC needs the metadata "authorization: Bearer secret".
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "qwha/v1/registry.grpc.pb.h"
#include "server/registry/registry_service.h"
#include "server/store/sqlite_db.h"

namespace qwha::registry::testing {

inline constexpr char kToken[] = "secret";

// tests/fixtures/demo in the runfiles (or the source tree outside Bazel).
std::string DemoDir();

// An empty directory under the test's temp dir, unique to this test.
std::string FreshDir(const std::string& tag);

class RegistryHarness {
 public:
  // Starts the server; `options.model_root` is used as given.
  explicit RegistryHarness(RegistryOptions options);
  ~RegistryHarness();

  v1::RegistryService::Stub& stub() { return *stub_; }
  // A client context carrying the token (or none).
  std::unique_ptr<grpc::ClientContext> Context(bool with_token = true) const;

  RegistryStore& store() { return *registry_; }
  BlobStore& blobs() { return *blobs_; }
  store::Db& db() { return *db_; }
  RegistryServiceImpl& service() { return *service_; }
  InferenceServerDirectory& servers() { return *servers_; }
  const std::shared_ptr<prometheus::Registry>& metrics() const { return metrics_; }
  const std::string& dir() const { return dir_; }

  // Stores `files` (name → content) as blobs and commits an adapter of job
  // `job_id` naming them.
  absl::StatusOr<v1::Adapter> AddAdapter(const std::string& job_id,
                                         const std::map<std::string, std::string>& files);

 private:
  std::string dir_;
  std::shared_ptr<prometheus::Registry> metrics_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<store::Db> db_;
  std::unique_ptr<RegistryStore> registry_;
  std::unique_ptr<InferenceServerDirectory> servers_;
  std::unique_ptr<RegistryServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::RegistryService::Stub> stub_;
};

// Streams an upload: the header, then each file of `contents` in pieces of
// `piece` bytes. Returns the call's status; fills `response`.
template <typename Response, typename Open>
grpc::Status Upload(Open open, const v1::UploadHeader& header,
                    const std::map<std::string, std::string>& contents, Response* response,
                    size_t piece = 64 * 1024) {
  auto writer = open(response);
  v1::UploadChunk chunk;
  *chunk.mutable_header() = header;
  bool open_stream = writer->Write(chunk);
  for (const auto& [name, content] : contents) {
    for (size_t at = 0; open_stream && at < content.size(); at += piece) {
      v1::UploadChunk data;
      data.mutable_data()->set_name(name);
      data.mutable_data()->set_data(content.substr(at, piece));
      open_stream = writer->Write(data);
    }
  }
  writer->WritesDone();
  return writer->Finish();
}

}  // namespace qwha::registry::testing
