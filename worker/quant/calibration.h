// Calibration statistics: the Gram matrix G = Σ XᵀX of a layer's inputs.
//
// Accumulation is in float64 on the device of the first batch (summing many
// float32 outer products in float32 loses the small eigen-directions that
// GPTQ and QWHA's value refinement depend on).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/status.h"

namespace qwha::quant {

// Accumulates G = Σ_t x_t x_tᵀ over all tokens of all batches added.
// Not thread-safe: one accumulator per layer per thread (or external locking).
class GramAccumulator {
 public:
  explicit GramAccumulator(int64_t features);

  GramAccumulator(const GramAccumulator&) = delete;
  GramAccumulator& operator=(const GramAccumulator&) = delete;

  // Adds the tokens of x ([..., features], any float dtype). InvalidArgument if
  // the last dimension is not `features` or x holds NaN/Inf.
  absl::Status Add(const torch::Tensor& x);

  int64_t features() const { return features_; }
  int64_t tokens() const { return tokens_; }

  // Σ XᵀX, float64 [features, features] on the first batch's device (zeros on
  // the CPU before the first Add). Shares storage with the accumulator: a
  // later Add() changes it; clone() to keep a snapshot.
  torch::Tensor Gram() const;

 private:
  int64_t features_;
  int64_t tokens_ = 0;
  torch::Tensor gram_;
};

// Returns G + lambda * mean(diag G) * I (a new tensor, G's dtype). If the mean
// diagonal is zero, adds lambda * I.
torch::Tensor DampGram(const torch::Tensor& gram, double lambda);

}  // namespace qwha::quant
