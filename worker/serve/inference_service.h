// qwha.v1.InferenceService over the serving core (proto/qwha/v1/inference.proto
// is the API reference). The service validates requests, encodes prompts,
// pins the adapter version through the AdapterCache and streams the Engine's
// events; absl::Status codes map one to one to gRPC codes.
//
//  - Generate: exactly one of prompt, messages, prompt_token_ids
//    (INVALID_ARGUMENT naming the fields otherwise); text prompts need the
//    model's tokenizer.json. max_new_tokens 0 means 128; stop: at most 16
//    strings of at most 256 bytes. Pieces that are ready together go out in
//    one message. A cancelled call (client gone, deadline) cancels the
//    request at the next engine step.
//  - UnloadAdapter waits for the version's requests until the call's
//    deadline (none: no limit); DEADLINE_EXCEEDED if they outlast it (the
//    version is still freed when they end).
//
// Thread safety: gRPC calls the methods concurrently; the engine, cache,
// model, tokenizer and metrics must outlive the service.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "qwha/v1/inference.grpc.pb.h"
#include "worker/serve/adapter_cache.h"
#include "worker/serve/engine.h"
#include "worker/serve/serve_metrics.h"
#include "worker/serve/serving_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace qwha::serve {

struct InferenceServiceDeps {
  Engine* engine = nullptr;
  AdapterCache* cache = nullptr;
  const ServingModel* model = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;  // may be null
  ServeMetrics* metrics = nullptr;                  // may be null
  std::string base_model_digest;                    // reported by ListAdapters
  // Non-empty: every call must carry "authorization: Bearer <token>"
  // (UNAUTHENTICATED otherwise, before anything else is looked at).
  std::string token;
};

class InferenceServiceImpl final : public v1::InferenceService::Service {
 public:
  explicit InferenceServiceImpl(InferenceServiceDeps deps) : deps_(std::move(deps)) {}

  grpc::Status LoadAdapter(grpc::ServerContext* context, const v1::LoadAdapterRequest* request,
                           v1::LoadedAdapter* response) override;
  grpc::Status UnloadAdapter(grpc::ServerContext* context, const v1::UnloadAdapterRequest* request,
                             v1::UnloadAdapterResponse* response) override;
  grpc::Status ListAdapters(grpc::ServerContext* context,
                            const v1::ListLoadedAdaptersRequest* request,
                            v1::ListLoadedAdaptersResponse* response) override;
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;

 private:
  absl::StatusOr<GenerationRequest> Prepare(const v1::GenerateRequest& request);
  InferenceServiceDeps deps_;
};

}  // namespace qwha::serve
