#include "worker/serve/inference_service.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "server/api/auth.h"
#include "worker/serve/prompt.h"
#include "worker/serve/serving_adapter.h"

namespace qwha::serve {
namespace {

constexpr int64_t kDefaultMaxNewTokens = 128;
constexpr int kMaxStopStrings = 16;
constexpr size_t kMaxStopBytes = 256;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

void SetTime(std::chrono::system_clock::time_point t, google::protobuf::Timestamp* out) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

void ToProto(const AdapterInfo& info, v1::LoadedAdapter* out) {
  for (const std::string& n : info.names) out->add_names(n);
  out->set_adapter_id(info.adapter_id);
  out->set_digest(info.digest);
  out->set_adapter_type(info.adapter_type);
  out->set_memory_bytes(info.memory_bytes);
  SetTime(info.loaded_at, out->mutable_loaded_at());
  SetTime(info.last_used_at, out->mutable_last_used_at());
  out->set_active_requests(info.active_requests);
  out->set_load_seconds(info.load_seconds);
  out->set_cache_hit(info.cache_hit);
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    default:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
}

// Events of one request, handed from the engine thread to the RPC thread.
struct EventQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<GenerationEvent> events;
};

}  // namespace

grpc::Status InferenceServiceImpl::LoadAdapter(grpc::ServerContext* context,
                                               const v1::LoadAdapterRequest* request,
                                               v1::LoadedAdapter* response) {
  if (absl::Status auth = api::CheckToken(context, deps_.token); !auth.ok()) return ToGrpc(auth);
  if (request->adapter_id().empty())
    return ToGrpc(absl::InvalidArgumentError("adapter_id: required"));
  const std::string name = request->name().empty() ? request->adapter_id() : request->name();
  absl::StatusOr<AdapterInfo> info = deps_.cache->Load(name, request->adapter_id());
  if (!info.ok()) return ToGrpc(info.status());
  ToProto(*info, response);
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::UnloadAdapter(grpc::ServerContext* context,
                                                 const v1::UnloadAdapterRequest* request,
                                                 v1::UnloadAdapterResponse* response) {
  if (absl::Status auth = api::CheckToken(context, deps_.token); !auth.ok()) return ToGrpc(auth);
  if (request->name().empty()) return ToGrpc(absl::InvalidArgumentError("name: required"));
  std::optional<std::chrono::milliseconds> wait;
  const auto deadline = context->deadline();
  if (deadline < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::system_clock::now());
    if (wait->count() < 0) wait = std::chrono::milliseconds(0);
  }
  absl::StatusOr<UnloadResult> result = deps_.cache->Unload(request->name(), wait);
  if (!result.ok()) return ToGrpc(result.status());
  ToProto(result->adapter, response->mutable_adapter());
  response->set_freed_bytes(result->freed_bytes);
  return grpc::Status::OK;
}

grpc::Status InferenceServiceImpl::ListAdapters(grpc::ServerContext* context,
                                                const v1::ListLoadedAdaptersRequest*,
                                                v1::ListLoadedAdaptersResponse* response) {
  if (absl::Status auth = api::CheckToken(context, deps_.token); !auth.ok()) return ToGrpc(auth);
  for (const AdapterInfo& info : deps_.cache->List()) ToProto(info, response->add_adapters());
  response->set_memory_budget_bytes(deps_.cache->budget_bytes());
  response->set_memory_used_bytes(deps_.cache->used_bytes());
  response->set_base_model_digest(deps_.base_model_digest);
  const quant::QuantConfig& q = deps_.model->quant();
  response->mutable_quantization()->set_bits(q.bits);
  response->mutable_quantization()->set_group_size(q.group_size);
  response->mutable_quantization()->set_method(quant::QuantMethodName(q.method));
  return grpc::Status::OK;
}

absl::StatusOr<GenerationRequest> InferenceServiceImpl::Prepare(
    const v1::GenerateRequest& request) {
  const int forms = !request.prompt().empty() + (request.messages_size() > 0) +
                    (request.prompt_token_ids_size() > 0);
  if (forms != 1) {
    return absl::InvalidArgumentError(
        "prompt, messages, prompt_token_ids: give exactly one of them");
  }
  GenerationRequest out;
  if (request.prompt_token_ids_size() > 0) {
    out.prompt.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
  } else if (deps_.tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "prompt: the served model has no tokenizer.json; send prompt_token_ids");
  } else if (!request.prompt().empty()) {
    auto ids = EncodeTextPrompt(*deps_.tokenizer, request.prompt());
    if (!ids.ok()) return ids.status();
    out.prompt = *std::move(ids);
  } else {
    std::vector<data::ChatMessage> messages;
    for (int i = 0; i < request.messages_size(); ++i) {
      auto role = data::ParseRole(request.messages(i).role());
      if (!role) {
        return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: '",
                                                       request.messages(i).role(),
                                                       "' is not system, user or assistant"));
      }
      messages.push_back({*role, request.messages(i).content()});
    }
    auto ids = EncodeChatPrompt(*deps_.tokenizer, messages);
    if (!ids.ok()) return ids.status();
    out.prompt = *std::move(ids);
  }
  if (request.max_new_tokens() < 0)
    return absl::InvalidArgumentError("max_new_tokens: must be >= 0");
  out.max_new_tokens =
      request.max_new_tokens() == 0 ? kDefaultMaxNewTokens : request.max_new_tokens();
  out.sampling.temperature = request.temperature();
  out.sampling.top_p = request.top_p() == 0 ? 1.0 : request.top_p();
  out.sampling.top_k = request.top_k();
  out.sampling.seed = request.seed();
  out.ignore_eos = request.ignore_eos();
  if (request.stop_size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat("stop: at most ", kMaxStopStrings, " strings"));
  }
  for (const std::string& s : request.stop()) {
    if (s.empty() || s.size() > kMaxStopBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop: each string must have 1 to ", kMaxStopBytes, " bytes"));
    }
    out.stop.push_back(s);
  }
  if (!request.adapter().empty()) {
    auto pinned = deps_.cache->Acquire(request.adapter());
    if (!pinned.ok()) return pinned.status();
    out.adapter = *std::move(pinned);
  }
  return out;
}

grpc::Status InferenceServiceImpl::Generate(grpc::ServerContext* context,
                                            const v1::GenerateRequest* request,
                                            grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (absl::Status auth = api::CheckToken(context, deps_.token); !auth.ok()) return ToGrpc(auth);
  absl::StatusOr<GenerationRequest> prepared = Prepare(*request);
  if (!prepared.ok()) {
    if (deps_.metrics) deps_.metrics->Rejected();
    return ToGrpc(prepared.status());
  }
  const std::string digest = prepared->adapter ? prepared->adapter->digest() : "";
  auto queue = std::make_shared<EventQueue>();
  prepared->on_event = [queue](const GenerationEvent& e) {
    {
      std::lock_guard<std::mutex> lock(queue->mu);
      queue->events.push_back(e);
    }
    queue->cv.notify_one();
  };
  absl::StatusOr<uint64_t> id = deps_.engine->Submit(*std::move(prepared));
  if (!id.ok()) {
    if (deps_.metrics) deps_.metrics->Rejected();
    return ToGrpc(id.status());
  }
  bool cancelled = false;
  while (true) {
    std::deque<GenerationEvent> ready;
    {
      std::unique_lock<std::mutex> lock(queue->mu);
      queue->cv.wait_for(lock, std::chrono::milliseconds(100),
                         [&] { return !queue->events.empty(); });
      ready.swap(queue->events);
    }
    if (!cancelled && context->IsCancelled()) {
      deps_.engine->Cancel(*id);
      cancelled = true;
    }
    if (ready.empty()) continue;
    // Everything ready goes out as one message.
    v1::GenerateResponse response;
    response.set_adapter_digest(digest);
    const GenerationEvent* final_event = nullptr;
    for (const GenerationEvent& e : ready) {
      response.mutable_text()->append(e.text);
      for (int32_t t : e.token_ids) response.add_token_ids(t);
      if (e.finished) final_event = &e;
    }
    if (final_event != nullptr) {
      if (!final_event->status.ok()) return ToGrpc(final_event->status);
      response.set_finish_reason(ToProto(final_event->reason));
      v1::GenerateUsage* usage = response.mutable_usage();
      usage->set_prompt_tokens(static_cast<int32_t>(final_event->usage.prompt_tokens));
      usage->set_completion_tokens(static_cast<int32_t>(final_event->usage.completion_tokens));
      usage->set_queue_seconds(final_event->usage.queue_seconds);
      usage->set_time_to_first_token_seconds(final_event->usage.time_to_first_token_seconds);
      usage->set_total_seconds(final_event->usage.total_seconds);
      writer->Write(response);
      return grpc::Status::OK;
    }
    if (!cancelled && !writer->Write(response)) {
      deps_.engine->Cancel(*id);  // the client is gone; drain until the final event
      cancelled = true;
    }
  }
}

}  // namespace qwha::serve
