// Test helpers for worker/serve: small quantized models, random adapters
// written in the job's adapter file format, and the merged reference
// generation they are compared against.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/adapters/adapter.h"
#include "worker/model/llama.h"
#include "worker/quant/quantizer.h"
#include "worker/serve/engine.h"

namespace qwha::serve::testing {

// The RTN config every helper quantizes with (4 bits, group 32).
quant::QuantConfig TestQuant();

// Quantizes every projection of `model` in place with TestQuant().
void QuantizeAll(model::LlamaModel& model);

// "llama2": tests/fixtures/model/llama2 (a transformers checkpoint).
// "window": a random qwen2-style model with q/k/v biases, GQA and a sliding
// window of 6 on every layer. Float32 on the CPU, every projection quantized
// with TestQuant().
std::unique_ptr<model::LlamaModel> QuantizedModel(const std::string& which);

using AdapterSet = std::map<std::string, std::unique_ptr<adapters::Adapter>>;

// One adapter of `type` (kQwha: random spectrum locations; kLora) per
// quantized slot, with random non-zero values large enough to change greedy
// outputs. Deterministic in `seed`.
AdapterSet RandomAdapters(const model::LlamaModel& model, adapters::AdapterType type,
                          uint64_t seed);

// Writes `set` as a job writes its adapter: dir/adapter.safetensors
// ("<slot>/<key>") and dir/adapter_config.json.
absl::Status WriteAdapterDir(const AdapterSet& set, adapters::AdapterType type,
                             const std::string& dir);

// Greedy tokens from LlamaModel::Generate with `set` attached (merged path,
// deq(Q) + ΔW in one weight), or the base alone when `set` is null. Returns
// the new tokens only. The model's adapters are detached afterwards.
std::vector<int64_t> MergedGreedy(model::LlamaModel& model, const AdapterSet* set,
                                  const std::vector<int64_t>& prompt, int64_t new_tokens);

// Collects one request's events; Wait() blocks until its final event.
class Collector {
 public:
  std::function<void(const GenerationEvent&)> Callback();
  // Blocks until the final event; returns the sampled tokens.
  std::vector<int64_t> Wait();
  GenerationEvent final_event();
  std::string text();
  bool finished();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int64_t> tokens_;
  std::string text_;
  GenerationEvent final_;
  bool done_ = false;
};

// A fresh directory under $TEST_TMPDIR.
std::string TempDir(const std::string& name);

}  // namespace qwha::serve::testing
