// Evaluation of a (quantized, adapted) model on the held-out split: mean
// next-token loss, and exact match of greedy generations.
//
// Thread safety: both functions only read the model (LlamaModel's const
// contract) and may run concurrently with each other.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/data/batcher.h"
#include "worker/data/dataset.h"
#include "worker/model/llama.h"

namespace qwha::pipeline {

// Mean next-token loss over the first `max_batches` batches (0: all) of
// `eval` batched by `options`, weighted by supervised tokens. NaN for an
// empty split or one without supervised tokens. Errors of the batcher or the
// loss come back as they are.
absl::StatusOr<double> EvalLoss(const model::LlamaModel& model, const data::Dataset& eval,
                                const data::BatcherOptions& options, int64_t max_batches);

struct ExactMatchResult {
  int64_t samples = 0;         // examples decoded
  int64_t exact = 0;           // ... whose generation equals the reference exactly
  int64_t tokens = 0;          // reference tokens over all samples
  int64_t tokens_matched = 0;  // ... equal to the generated token at the same position

  // exact / samples; NaN when no sample was decoded.
  double ExactMatch() const;
  // tokens_matched / tokens; NaN when no sample was decoded.
  double TokenAccuracy() const;
};

// Greedy exact match on the first `max_samples` examples of `eval` (file
// order) that have a prompt (Example::prompt_length > 0: prompt/completion
// and chat records). For each, the reference is ids[prompt_length, end) —
// exactly the tokens the model is trained to produce after the prompt (the
// completion and its EOS) — and the model greedily generates that many tokens
// after ids[0, prompt_length) with Generate (KV cache, no early stop). A
// sample is an exact match iff every generated token equals the reference.
// A split of text records gives samples = 0. InvalidArgument if max_samples
// < 1; Generate's errors name the example's line.
absl::StatusOr<ExactMatchResult> ExactMatch(const model::LlamaModel& model,
                                            const data::Dataset& eval, int64_t max_samples);

}  // namespace qwha::pipeline
