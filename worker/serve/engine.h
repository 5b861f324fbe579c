// Engine: continuous batching of generation requests over one ServingModel.
//
// One engine thread runs steps. Each step admits waiting requests into free
// KV slots (up to max_batch running, at most max_prefill_tokens prompt tokens
// per step; longer prompts are split across steps), then runs ONE forward
// pass for every running request — prompt chunks of new requests and one
// token of each decoding request, whatever adapter each uses — and samples
// each request's next token with its own sampler. Requests that arrive while
// others decode join at the next step; a finished request frees its slot at
// once.
//
// Pinning: a request holds its adapter version (a shared_ptr handed out by
// the AdapterCache) from Submit until its last token; it drops it just before
// its final event. Nothing it computed (KV) is seen by any other request.
//
// Events: `on_event` is called on the engine thread, in order: zero or more
// pieces, then exactly one final event (finished = true), also for requests
// that fail or are cancelled. It must return quickly and must not destroy the
// engine; it may call Submit and Cancel.
//
// Thread safety: Submit, Cancel and stats may be called from any thread.
// The model and tokenizer must outlive the engine.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/serve/sampler.h"
#include "worker/serve/serving_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace qwha::serve {

class KvPool;
class ServingAdapter;

struct EngineOptions {
  int64_t max_batch = 32;             // running requests (KV slots)
  int64_t max_seq_len = 1024;         // prompt + completion tokens per request
  int64_t max_prefill_tokens = 2048;  // prompt tokens per step (all requests)
  // CUDA models: decode steps replay captured CUDA graphs (docs/serving.md).
  bool cuda_graphs = true;
  // Tokens that end a completion (FinishReason::kEos); empty: the model
  // config's eos ids and the tokenizer's.
  std::vector<int64_t> eos_token_ids;
};

enum class FinishReason { kNone, kLength, kEos, kStopString, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);  // "length", "eos", ...

struct GenerationUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double queue_seconds = 0;                // Submit → the step that started its prompt
  double time_to_first_token_seconds = 0;  // Submit → first token sampled
  double total_seconds = 0;                // Submit → finished
};

struct GenerationEvent {
  std::string text;                // new text (may be empty)
  std::vector<int32_t> token_ids;  // tokens sampled since the previous event
  bool finished = false;
  FinishReason reason = FinishReason::kNone;  // final event
  GenerationUsage usage;                      // final event
  absl::Status status;  // final event: Cancelled, Unavailable (shutdown) or Internal on failure
};

struct GenerationRequest {
  std::vector<int64_t> prompt;                    // token ids, at least one
  std::shared_ptr<const ServingAdapter> adapter;  // the pinned version; null: the base
  int64_t max_new_tokens = 128;                   // >= 1; capped by max_seq_len
  SamplingParams sampling;
  std::vector<std::string> stop;  // needs a tokenizer
  bool ignore_eos = false;        // run to max_new_tokens past EOS
  std::function<void(const GenerationEvent&)> on_event;
};

// Hooks for metrics, called on the engine thread.
struct EngineObserver {
  std::function<void(double seconds)> on_first_token;  // time to first token
  std::function<void(double seconds)> on_next_token;   // time since the request's previous token
  std::function<void(int64_t batch, double seconds)> on_step;
  std::function<void(FinishReason, const GenerationUsage&)> on_finish;
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_bytes = 0;
};

class Engine {
 public:
  // Allocates the KV pool (max_batch × max_seq_len positions) and starts the
  // engine thread. InvalidArgument naming the option for a bad value;
  // ResourceExhausted when the pool cannot be allocated. `tokenizer` may be
  // null (requests then get no text and may not use stop strings).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ServingModel* model,
                                                        const tokenizer::Tokenizer* tokenizer,
                                                        const EngineOptions& options,
                                                        EngineObserver observer = {});
  // Stops the thread; requests still waiting or running get a final event
  // with status Unavailable.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request and returns its id. InvalidArgument naming the field
  // for an empty prompt, ids outside the vocabulary, a prompt that leaves no
  // room for one new token, max_new_tokens < 1, bad sampling parameters, or
  // stop strings without a tokenizer. On error on_event is never called.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request);

  // Ends a request at the next step (final event: Cancelled). Unknown or
  // finished ids are ignored.
  void Cancel(uint64_t id);

  EngineStats stats() const;
  const EngineOptions& options() const { return options_; }

 private:
  struct Request;
  Engine(const ServingModel* model, const tokenizer::Tokenizer* tokenizer, EngineOptions options,
         EngineObserver observer);
  void Run();
  // One step over `running_`; returns false when there was nothing to do.
  bool Step();
  void Admit();
  void Finish(size_t index, FinishReason reason, absl::Status status);

  const ServingModel* model_;
  const tokenizer::Tokenizer* tokenizer_;
  EngineOptions options_;
  EngineObserver observer_;
  std::unique_ptr<KvPool> pool_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_id_ = 1;
  std::deque<std::unique_ptr<Request>> waiting_;  // guarded by mu_
  std::vector<uint64_t> cancelled_;               // guarded by mu_
  int64_t running_count_ = 0;                     // guarded by mu_ (mirror for stats)

  std::vector<std::unique_ptr<Request>> running_;  // engine thread only; slot i = running_[i]
  std::thread thread_;
};

}  // namespace qwha::serve
