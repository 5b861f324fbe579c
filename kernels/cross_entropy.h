// Softmax cross-entropy of logit rows fused with its gradient: the inner step
// of the chunked language-model loss (worker/train/loss.h), which would
// otherwise make several float32 passes over [tokens, vocab] logits.
//
// For logits x [n, V] and targets y [n]:
//   loss[r] = logsumexp(x_r) − x_r[y_r]
//   with grad_scale: x_r ← grad_scale · (softmax(x_r) − onehot(y_r)), in place
// Reductions and the gradient are computed in float32 (float64 for float64
// logits) and rounded once to the logits' dtype, as the ATen composition
// `x.float()` → logsumexp / softmax → `.to(dtype)` does.
//
// On CUDA, float32/bfloat16/float16 logits take one kernel (a block per row:
// one read for an online max and sum, a second read and a write for the
// gradient); other devices and float64 use ATen ops.
//
// Thread safety: safe to call concurrently on different tensors.
#pragma once

#include <torch/torch.h>

#include <optional>

namespace qwha::kernels {

// Returns loss [n] (float32; float64 for float64 logits). logits: contiguous
// 2-D float; targets: 1-D int64 of length n on the logits' device with values
// in [0, V) (not checked: validate first). With grad_scale, overwrites logits
// with the scaled gradient. Throws c10::Error for mismatched shapes, dtypes or
// devices.
torch::Tensor SoftmaxCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                  std::optional<double> grad_scale = std::nullopt);

}  // namespace qwha::kernels
