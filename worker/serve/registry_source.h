// RegistryAdapterSource: adapter versions from the scheduler's
// RegistryService (proto/qwha/v1/registry.proto) over gRPC.
//
// Describe is GetAdapter. Fetch downloads the two files serving needs
// (adapter.safetensors, adapter_config.json) into a fresh directory under
// `work_dir`, checks each file's size and sha256 against the registry's
// FileInfo, and checks that the FileInfo list hashes to the adapter's digest
// (io::Sha256OfFileSet) — so the bytes loaded are exactly the version the
// digest names. Any mismatch is DataLoss naming the file and both digests,
// and the directory is removed.
//
// Thread safety: calls may run concurrently (each uses its own RPCs).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "qwha/v1/registry.grpc.pb.h"
#include "worker/serve/adapter_source.h"

namespace qwha::serve {

class RegistryAdapterSource : public AdapterSource {
 public:
  // `token`, when non-empty, is sent as "authorization: Bearer <token>".
  RegistryAdapterSource(std::shared_ptr<grpc::Channel> channel, std::string token,
                        std::string work_dir);

  absl::StatusOr<AdapterDescription> Describe(const std::string& adapter_id) override;
  absl::StatusOr<FetchedAdapter> Fetch(const AdapterDescription& adapter) override;

 private:
  std::unique_ptr<grpc::ClientContext> Context() const;
  std::unique_ptr<v1::RegistryService::Stub> stub_;
  std::string token_;
  std::string work_dir_;
};

}  // namespace qwha::serve
