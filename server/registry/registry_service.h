// qwha.v1.RegistryService over a RegistryStore: adapters (list, get,
// download, delete), base models (register by path, upload, list, get,
// delete) and datasets (upload with validation, list, delete). The .proto
// comments are the API reference; this header adds what the server decides.
//
// Every RPC first calls the auth hook (if set) and returns its error as is.
// Errors map one to one to gRPC codes (grpc_status.h); messages name the
// field, file or line at fault.
//
//  - Names (model, dataset, file) must be non-empty, at most 200 bytes, not
//    start with '/', and hold no ".." component (INVALID_ARGUMENT naming it).
//  - RegisterModel resolves `path` (relative: under model_root) with links
//    followed and rejects anything outside the resolved model_root
//    (INVALID_ARGUMENT naming `path`); FAILED_PRECONDITION when model_root is
//    empty. It imports config.json, *.safetensors, *.index.json,
//    tokenizer.json, tokenizer_config.json and generation_config.json;
//    config.json and one *.safetensors are required.
//  - Uploads: the header comes first and declares every file with its size
//    (sha256 optional); data only for declared files, appended in order.
//    Declared sizes over max_upload_bytes / max_dataset_bytes, missing or
//    extra bytes, or a sha256 mismatch are INVALID_ARGUMENT naming the file.
//    UploadModel needs config.json and a *.safetensors like RegisterModel.
//    UploadDataset takes exactly one file and checks every JSONL line while
//    it streams ("dataset <name> line N: reason"). On any error nothing is
//    recorded and blobs committed for the upload that nothing names are
//    removed.
//  - DownloadAdapter streams ≤ 1 MiB chunks from `offset`; the first carries
//    the FileInfo (also when offset == size and no data follows). offset past
//    the end is OUT_OF_RANGE; an unknown adapter or file NOT_FOUND naming it.
//  - ListAdapters: page_size 0 means 50, above 1000 means 1000, negative is
//    INVALID_ARGUMENT.
//  - Lists of models and datasets are newest first.
//  - RegisterInferenceServer / ListInferenceServers go to the
//    InferenceServerDirectory given at construction (UNIMPLEMENTED without
//    one); its header says what is checked.
//
// Thread safety: gRPC calls the methods concurrently; the service is safe for
// that. The store must outlive the service.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "qwha/v1/registry.grpc.pb.h"
#include "server/registry/inference_servers.h"
#include "server/registry/registry_metrics.h"
#include "server/registry/registry_store.h"

namespace qwha::registry {

struct RegistryOptions {
  // The only directory tree RegisterModel may read. Empty: registering by
  // path is disabled (FAILED_PRECONDITION).
  std::string model_root;
  // Total bytes of one UploadModel.
  int64_t max_upload_bytes = int64_t{8} << 30;
  // Bytes of one UploadDataset.
  int64_t max_dataset_bytes = int64_t{1} << 30;
  // Files in one model.
  int max_model_files = 10000;
};

// Checks a caller's credentials; a non-OK status (e.g. UNAUTHENTICATED) ends
// the RPC with it. Called on gRPC's threads, concurrently.
using AuthHook = std::function<absl::Status(grpc::ServerContext*)>;

class RegistryServiceImpl final : public v1::RegistryService::Service {
 public:
  // Borrows `store` and `servers`. `auth` may be empty (no check); `metrics`
  // and `servers` may be null.
  RegistryServiceImpl(RegistryStore* store, RegistryOptions options, AuthHook auth,
                      std::shared_ptr<prometheus::Registry> metrics = nullptr,
                      InferenceServerDirectory* servers = nullptr);
  RegistryServiceImpl(const RegistryServiceImpl&) = delete;
  RegistryServiceImpl& operator=(const RegistryServiceImpl&) = delete;

  // Sets qwha_registry_bytes from the store; the service does it after its
  // own changes. Call it after committing an adapter elsewhere.
  void RefreshMetrics() { metrics_.RefreshBytes(*store_); }

  grpc::Status ListAdapters(grpc::ServerContext* context, const v1::ListAdaptersRequest* request,
                            v1::ListAdaptersResponse* response) override;
  grpc::Status GetAdapter(grpc::ServerContext* context, const v1::GetAdapterRequest* request,
                          v1::Adapter* response) override;
  grpc::Status DownloadAdapter(grpc::ServerContext* context, const v1::DownloadRequest* request,
                               grpc::ServerWriter<v1::Chunk>* writer) override;
  grpc::Status DeleteAdapter(grpc::ServerContext* context, const v1::DeleteAdapterRequest* request,
                             v1::DeleteResponse* response) override;

  grpc::Status RegisterModel(grpc::ServerContext* context, const v1::RegisterModelRequest* request,
                             v1::BaseModel* response) override;
  grpc::Status UploadModel(grpc::ServerContext* context,
                           grpc::ServerReader<v1::UploadChunk>* reader,
                           v1::BaseModel* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status GetModel(grpc::ServerContext* context, const v1::GetModelRequest* request,
                        v1::BaseModel* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* context, const v1::DeleteModelRequest* request,
                           v1::DeleteResponse* response) override;

  grpc::Status UploadDataset(grpc::ServerContext* context,
                             grpc::ServerReader<v1::UploadChunk>* reader,
                             v1::Dataset* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* context, const v1::ListDatasetsRequest* request,
                            v1::ListDatasetsResponse* response) override;
  grpc::Status DeleteDataset(grpc::ServerContext* context, const v1::DeleteDatasetRequest* request,
                             v1::DeleteResponse* response) override;

  grpc::Status RegisterInferenceServer(grpc::ServerContext* context,
                                       const v1::RegisterInferenceServerRequest* request,
                                       v1::RegisterInferenceServerResponse* response) override;
  grpc::Status ListInferenceServers(grpc::ServerContext* context,
                                    const v1::ListInferenceServersRequest* request,
                                    v1::ListInferenceServersResponse* response) override;

 private:
  absl::Status Authorize(grpc::ServerContext* context);
  absl::StatusOr<v1::BaseModel> DoRegisterModel(const v1::RegisterModelRequest& request);
  absl::StatusOr<v1::BaseModel> DoUploadModel(grpc::ServerContext* context,
                                              grpc::ServerReader<v1::UploadChunk>* reader);
  absl::StatusOr<v1::Dataset> DoUploadDataset(grpc::ServerContext* context,
                                              grpc::ServerReader<v1::UploadChunk>* reader);
  absl::Status DoDownload(grpc::ServerContext* context, const v1::DownloadRequest& request,
                          grpc::ServerWriter<v1::Chunk>* writer);

  RegistryStore* store_;
  const RegistryOptions options_;
  const AuthHook auth_;
  RegistryMetrics metrics_;
  InferenceServerDirectory* const servers_;
};

}  // namespace qwha::registry
