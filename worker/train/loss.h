// Token cross-entropy for language-model training.
//
// Labels follow the Hugging Face convention: labels[b, t] is the token id that
// the model should produce at position t (usually input_ids[b, t]), or
// kIgnoreIndex (-100) for positions that are not supervised (prompt, padding).
// CausalLmLoss shifts them itself: logits at position t are scored against
// labels[t + 1].
//
// Thread safety: pure functions of their inputs.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace qwha::train {

inline constexpr int64_t kIgnoreIndex = -100;

struct LossResult {
  // Mean of −log softmax(logits)[label] over the supervised tokens: a scalar,
  // float32 (float64 for float64 logits), differentiable w.r.t. the logits.
  // 0 (still attached to the graph) when no token is supervised.
  torch::Tensor loss;
  int64_t tokens = 0;  // supervised tokens the mean is over
};

// Cross-entropy of logits [B, T, V] against labels [B, T] position by
// position (no shift). Logits of a lower precision are upcast to float32;
// labels must be integer on any device. InvalidArgument for mismatched
// shapes, non-float logits, non-integer labels or a label outside
// [0, V) ∪ {kIgnoreIndex}.
absl::StatusOr<LossResult> TokenCrossEntropy(const torch::Tensor& logits,
                                             const torch::Tensor& labels);

// The causal LM loss: TokenCrossEntropy(logits[:, :-1], labels[:, 1:]).
// Same errors as TokenCrossEntropy; T = 1 gives zero tokens.
absl::StatusOr<LossResult> CausalLmLoss(const torch::Tensor& logits, const torch::Tensor& labels);

// CausalLmLoss(matmul(hidden, lm_headᵀ), labels) without the [B, T, V]
// logits: the supervised positions are gathered and scored `chunk_tokens` at a
// time, each chunk's logits formed in hidden's dtype and log-softmaxed in
// float32 (float64 for float64 inputs), as CausalLmLoss does for the whole.
// hidden [B, T, H] float, lm_head [V, H] of hidden's dtype and device (a
// constant: it gets no gradient), labels as for CausalLmLoss. When grad mode is
// on and hidden requires grad, d loss / d hidden is formed chunk by chunk
// during this call — softmax − onehot of a chunk, times lm_head — and the
// chunk's logits are dropped at once; backward only scatters it. Extra memory:
// one chunk's logits ([chunk_tokens, V] float32 plus a copy in hidden's dtype)
// and the [supervised, H] gradient. Same errors as CausalLmLoss, plus
// InvalidArgument for chunk_tokens < 1 or an lm_head that does not fit.
absl::StatusOr<LossResult> ChunkedCausalLmLoss(const torch::Tensor& hidden,
                                               const torch::Tensor& lm_head,
                                               const torch::Tensor& labels,
                                               int64_t chunk_tokens = 1024);

// The number of tokens CausalLmLoss supervises for labels [B, T]
// (labels[:, 1:] != kIgnoreIndex); labels on any device, one synchronization.
int64_t CountCausalLmTokens(const torch::Tensor& labels);

}  // namespace qwha::train
