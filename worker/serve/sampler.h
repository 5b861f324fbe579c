// Token sampling for one request: greedy, or temperature with top-k and top-p
// (nucleus), from the request's own seeded generator — so a request's tokens
// depend only on its logits and its seed, never on the other requests of the
// batch.
//
//   temperature == 0: argmax (ties to the lowest id)
//   otherwise: p = softmax(logits / temperature); keep the top_k most likely
//   (top_k > 0); then keep the most likely tokens whose cumulative mass first
//   reaches top_p (0 < top_p < 1; at least one token); renormalize; draw one.
//
// Thread safety: a Sampler belongs to one request; not thread-safe.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/torch.h>

#include <cstdint>

#include "absl/status/status.h"

namespace qwha::serve {

struct SamplingParams {
  double temperature = 0;  // 0: greedy
  double top_p = 1;        // (0, 1]; 1 (or 0 in the API) keeps everything
  int64_t top_k = 0;       // 0: no limit
  uint64_t seed = 0;
};

// OK iff temperature >= 0 and finite, 0 <= top_p <= 1, top_k >= 0; the
// message names the field.
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  bool greedy() const { return params_.temperature == 0; }

  // The next token from logits [vocab] (float32, any device; moved to the CPU).
  int64_t Next(const torch::Tensor& logits);

 private:
  SamplingParams params_;
  at::Generator generator_;
};

}  // namespace qwha::serve
