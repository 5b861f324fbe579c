// Gradient utilities for the training loop: global-norm clipping and the
// weighting of micro-batch losses under gradient accumulation.
//
// Thread safety: pure functions of their inputs (ClipGradNorm mutates the
// gradients it is given; callers serialize access to them).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace qwha::train {

// The global L2 norm ‖(g_1, …, g_k)‖₂ over the defined gradients of `params`
// (undefined gradients are skipped; each gradient is reduced in float32, or
// float64 for float64 ones), computed with one device synchronization.
// If the norm is finite and max_norm > 0 and norm > max_norm, every gradient
// is scaled in place by max_norm / (norm + 1e-6) (as torch.nn.utils.
// clip_grad_norm_). Returns the norm before clipping: 0 when no gradient is
// defined, and a non-finite value (inf or NaN) — with the gradients left
// untouched — when any gradient holds inf/NaN, so that the caller can skip the
// step. max_norm <= 0 reports the norm without clipping. Gradients may live on
// different devices. Throws c10::Error only on a LibTorch failure.
double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm);

// How a step's loss is averaged when it accumulates several micro-batches.
enum class LossNormalization {
  // Mean over every supervised token of the step: micro-batch i's mean loss is
  // weighted by tokens_i / step_tokens, so the accumulated gradient is that of
  // one big batch no matter how tokens fall into micro-batches.
  kPerToken,
  // Mean of the micro-batch means: each weighted by 1 / grad_accum.
  kPerMicroBatch,
};

// The factor a micro-batch's mean loss is multiplied by before backward():
// kPerToken: micro_tokens / step_tokens (0 if step_tokens == 0);
// kPerMicroBatch: 1 / grad_accum. Requires grad_accum >= 1 and
// 0 <= micro_tokens <= step_tokens (checked by the caller).
double MicroBatchLossWeight(LossNormalization normalization, int64_t micro_tokens,
                            int64_t step_tokens, int64_t grad_accum);

}  // namespace qwha::train
