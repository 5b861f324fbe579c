#include "worker/serve/engine.h"

#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <optional>

#ifdef QWHA_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "absl/strings/str_cat.h"
#include "worker/serve/kv_pool.h"
#include "worker/serve/serving_adapter.h"
#include "worker/serve/text_stream.h"

namespace qwha::serve {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStopString:
      return "stop_string";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "none";
}

struct Engine::Request {
  uint64_t id = 0;
  GenerationRequest spec;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<CompletionText> text;
  int64_t cached = 0;              // tokens in the KV slot
  std::vector<int32_t> generated;  // completion tokens
  Clock::time_point submitted, started, first_token, last_token;
  bool has_started = false;
};

Engine::Engine(const ServingModel* model, const tokenizer::Tokenizer* tokenizer,
               EngineOptions options, EngineObserver observer)
    : model_(model),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      observer_(std::move(observer)) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ServingModel* model,
                                                       const tokenizer::Tokenizer* tokenizer,
                                                       const EngineOptions& options,
                                                       EngineObserver observer) {
  if (options.max_batch < 1) return absl::InvalidArgumentError("max_batch: must be at least 1");
  if (options.max_seq_len < 2 || options.max_seq_len > model->max_seq_len()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_seq_len: must be in [2, ", model->max_seq_len(), "]"));
  }
  if (options.max_prefill_tokens < 1) {
    return absl::InvalidArgumentError("max_prefill_tokens: must be at least 1");
  }
  std::unique_ptr<Engine> engine(new Engine(model, tokenizer, options, std::move(observer)));
  if (engine->options_.eos_token_ids.empty()) {
    engine->options_.eos_token_ids = model->config().eos_token_ids;
    if (tokenizer != nullptr && tokenizer->eos_id().has_value() &&
        std::find(engine->options_.eos_token_ids.begin(), engine->options_.eos_token_ids.end(),
                  *tokenizer->eos_id()) == engine->options_.eos_token_ids.end()) {
      engine->options_.eos_token_ids.push_back(*tokenizer->eos_id());
    }
  }
  try {
    engine->pool_ = std::make_unique<KvPool>(*model, options.max_batch, options.max_seq_len);
    engine->pool_->set_cuda_graphs(options.cuda_graphs);
  } catch (const c10::Error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache of ", options.max_batch, " x ",
                                                     options.max_seq_len,
                                                     " positions: ", e.what_without_backtrace()));
  }
  engine->thread_ = std::thread([e = engine.get()] { e->Run(); });
  return engine;
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  const absl::Status down = absl::UnavailableError("the server is shutting down");
  while (!running_.empty()) Finish(running_.size() - 1, FinishReason::kCancelled, down);
  std::deque<std::unique_ptr<Request>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(waiting_);
  }
  for (auto& r : waiting) {
    GenerationEvent event;
    event.finished = true;
    event.reason = FinishReason::kCancelled;
    event.status = down;
    r->spec.on_event(event);
  }
}

absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest spec) {
  const int64_t vocab = model_->config().vocab_size;
  if (spec.prompt.empty()) return absl::InvalidArgumentError("prompt: empty");
  for (int64_t id : spec.prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt: token id ", id, " outside [0, ", vocab, ")"));
    }
  }
  const int64_t room = options_.max_seq_len - static_cast<int64_t>(spec.prompt.size());
  if (room < 1) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", spec.prompt.size(),
                                                   " tokens leave no room in the context length ",
                                                   options_.max_seq_len));
  }
  if (spec.max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens: must be >= 1");
  spec.max_new_tokens = std::min(spec.max_new_tokens, room);
  if (absl::Status st = ValidateSamplingParams(spec.sampling); !st.ok()) return st;
  if (!spec.stop.empty() && tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("stop: the served model has no tokenizer");
  }
  if (!spec.on_event) return absl::InvalidArgumentError("on_event: required");
  auto r = std::make_unique<Request>();
  r->submitted = Clock::now();
  r->sampler = std::make_unique<Sampler>(spec.sampling);
  r->text = std::make_unique<CompletionText>(tokenizer_, spec.stop);
  r->spec = std::move(spec);
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("the server is shutting down");
    id = r->id = next_id_++;
    waiting_.push_back(std::move(r));
  }
  cv_.notify_all();
  return id;
}

void Engine::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(id);
  }
  cv_.notify_all();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {running_count_, static_cast<int64_t>(waiting_.size()), pool_->memory_bytes()};
}

void Engine::Run() {
#ifdef QWHA_WITH_CUDA
  // Steps run on a stream of their own (CUDA graphs cannot be captured on the
  // default stream); what other threads enqueued before (the KV pool's
  // zeros) is complete first. Adapters are complete when loaded.
  std::optional<c10::cuda::CUDAStreamGuard> stream;
  if (model_->device().is_cuda()) {
    torch::cuda::synchronize(model_->device().index());
    stream.emplace(c10::cuda::getStreamFromPool(false, model_->device().index()));
  }
#endif
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || !waiting_.empty() || !running_.empty() || !cancelled_.empty();
      });
      if (stop_) return;
    }
    Admit();
    Step();
  }
}

void Engine::Admit() {
  std::vector<uint64_t> cancelled;
  std::vector<std::unique_ptr<Request>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled.swap(cancelled_);
    auto is_cancelled = [&](uint64_t id) {
      return std::find(cancelled.begin(), cancelled.end(), id) != cancelled.end();
    };
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (is_cancelled((*it)->id)) {
        dropped.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_batch) {
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    running_count_ = static_cast<int64_t>(running_.size());
  }
  for (auto& r : dropped) {
    GenerationEvent event;
    event.finished = true;
    event.reason = FinishReason::kCancelled;
    event.status = absl::CancelledError("cancelled");
    event.usage.prompt_tokens = static_cast<int64_t>(r->spec.prompt.size());
    r->spec.on_event(event);
  }
  for (size_t i = running_.size(); i-- > 0;) {
    if (std::find(cancelled.begin(), cancelled.end(), running_[i]->id) != cancelled.end()) {
      Finish(i, FinishReason::kCancelled, absl::CancelledError("cancelled"));
    }
  }
}

bool Engine::Step() {
  if (running_.empty()) return false;
  const auto start = Clock::now();
  // Decoding requests first (slot order), then prompt chunks within the budget.
  std::vector<StepSegment> segments;
  std::vector<size_t> owner;  // running_ index of each segment
  std::vector<bool> samples;  // the segment's logits give a new token
  int64_t budget = options_.max_prefill_tokens;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < running_.size(); ++i) {
      Request& r = *running_[i];
      const int64_t prompt = static_cast<int64_t>(r.spec.prompt.size());
      const bool decoding = r.cached >= prompt;
      if (decoding != (pass == 0)) continue;
      StepSegment seg;
      seg.slot = static_cast<int64_t>(i);
      seg.start = r.cached;
      seg.adapter = r.spec.adapter.get();
      if (decoding) {
        seg.tokens = {r.generated.back()};
      } else {
        const int64_t n = std::min(prompt - r.cached, budget);
        if (n <= 0) continue;
        budget -= n;
        seg.tokens.assign(r.spec.prompt.begin() + r.cached, r.spec.prompt.begin() + r.cached + n);
        if (!r.has_started) {
          r.has_started = true;
          r.started = start;
        }
      }
      samples.push_back(decoding || r.cached + static_cast<int64_t>(seg.tokens.size()) == prompt);
      owner.push_back(i);
      segments.push_back(std::move(seg));
    }
  }
  if (segments.empty()) return false;
  torch::Tensor logits, greedy;
  try {
    logits = model_->Forward(segments, pool_.get());
    greedy = logits.argmax(-1).to(torch::kCPU);
  } catch (const c10::Error& e) {
    const absl::Status error =
        absl::InternalError(absl::StrCat("forward: ", e.what_without_backtrace()));
    std::vector<size_t> failed = owner;
    std::sort(failed.rbegin(), failed.rend());
    for (size_t i : failed) Finish(i, FinishReason::kError, error);
    return true;
  }
  const auto now = Clock::now();
  std::vector<std::pair<size_t, FinishReason>> done;
  for (size_t s = 0; s < segments.size(); ++s) {
    Request& r = *running_[owner[s]];
    r.cached += static_cast<int64_t>(segments[s].tokens.size());
    if (!samples[s]) continue;
    const int64_t token = r.sampler->greedy() ? greedy[static_cast<int64_t>(s)].item<int64_t>()
                                              : r.sampler->Next(logits[static_cast<int64_t>(s)]);
    if (r.generated.empty()) {
      r.first_token = now;
      if (observer_.on_first_token) observer_.on_first_token(Seconds(r.submitted, now));
    } else if (observer_.on_next_token) {
      observer_.on_next_token(Seconds(r.last_token, now));
    }
    r.last_token = now;
    r.generated.push_back(static_cast<int32_t>(token));
    const auto& eos = options_.eos_token_ids;
    const bool is_eos = !r.spec.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end();
    GenerationEvent event;
    event.token_ids = {static_cast<int32_t>(token)};
    if (!is_eos) event.text = r.text->Append(static_cast<int32_t>(token));
    FinishReason reason = FinishReason::kNone;
    if (is_eos) {
      reason = FinishReason::kEos;
    } else if (r.text->stopped()) {
      reason = FinishReason::kStopString;
    } else if (static_cast<int64_t>(r.generated.size()) >= r.spec.max_new_tokens ||
               r.cached + 1 >= options_.max_seq_len) {
      reason = FinishReason::kLength;
    }
    r.spec.on_event(event);  // this token's piece; a final event follows if it ended
    if (reason != FinishReason::kNone) done.push_back({owner[s], reason});
  }
  if (observer_.on_step)
    observer_.on_step(static_cast<int64_t>(segments.size()), Seconds(start, Clock::now()));
  std::sort(done.begin(), done.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [index, reason] : done) Finish(index, reason, absl::OkStatus());
  return true;
}

void Engine::Finish(size_t index, FinishReason reason, absl::Status status) {
  std::unique_ptr<Request> r = std::move(running_[index]);
  // Keep slots compact: the last request moves into the freed slot.
  const size_t last = running_.size() - 1;
  if (index != last) {
    pool_->Move(static_cast<int64_t>(last), static_cast<int64_t>(index), running_[last]->cached);
    running_[index] = std::move(running_[last]);
  }
  running_.pop_back();
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_count_ = static_cast<int64_t>(running_.size());
  }
  const auto now = Clock::now();
  GenerationEvent event;
  event.finished = true;
  event.reason = reason;
  event.status = std::move(status);
  if (reason != FinishReason::kError && reason != FinishReason::kCancelled)
    event.text = r->text->Finish();
  event.usage.prompt_tokens = static_cast<int64_t>(r->spec.prompt.size());
  event.usage.completion_tokens = static_cast<int64_t>(r->generated.size());
  event.usage.queue_seconds = r->has_started ? Seconds(r->submitted, r->started) : 0;
  event.usage.time_to_first_token_seconds =
      r->generated.empty() ? 0 : Seconds(r->submitted, r->first_token);
  event.usage.total_seconds = Seconds(r->submitted, now);
  if (observer_.on_finish) observer_.on_finish(reason, event.usage);
  // The adapter pin goes before the final event: a client that saw its
  // request end finds the version no longer in use.
  r->spec.adapter.reset();
  r->spec.on_event(event);
}

}  // namespace qwha::serve
