// Test fixtures for worker/train: a tiny quantized LLaMA with adapters on
// every projection, and a deterministic in-memory BatchSource.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/adapters/adapter.h"
#include "worker/model/llama.h"
#include "worker/train/batch_source.h"

namespace qwha::train::testing {

// hidden 32 (4 heads × 8, 2 kv heads), intermediate 64, 2 layers, vocab 50:
// every projection width is a power of two, so spectrum adapters fit.
model::ModelConfig TinyConfig();

// LlamaModel::RandomInit(TinyConfig(), seed) in float32 on the CPU with every
// linear slot quantized (RTN, 4 bits, group 32) and an adapter of `type`
// (rank 2, adapter seed `seed`) attached. Deterministic in its arguments.
std::unique_ptr<model::LlamaModel> MakeTinyAdaptedModel(adapters::AdapterType type, uint64_t seed);

// Micro-batch i (counting from 0 across epochs) is batch i % num_batches of a
// fixed set drawn from `seed`: ids uniform in [0, vocab), labels = ids with
// the first `prompt_tokens` positions of each row set to -100. Epoch =
// i / num_batches. State() is "synthetic:<i>".
class SyntheticBatchSource : public BatchSource {
 public:
  SyntheticBatchSource(int64_t vocab, int64_t batch_size, int64_t seq_len, int64_t num_batches,
                       int64_t prompt_tokens, uint64_t seed);

  absl::StatusOr<Batch> Next() override;
  std::string State() const override;
  absl::Status Restore(const std::string& state) override;

  int64_t position() const { return next_; }
  // Make Next() fail from now on (to test error propagation).
  void FailFromNowOn() { fail_ = true; }

 private:
  std::vector<Batch> batches_;
  int64_t next_ = 0;
  bool fail_ = false;
};

}  // namespace qwha::train::testing
