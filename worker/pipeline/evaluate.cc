#include "worker/pipeline/evaluate.h"

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/train/loss.h"

namespace qwha::pipeline {

absl::StatusOr<double> EvalLoss(const model::LlamaModel& model, const data::Dataset& eval,
                                const data::BatcherOptions& options, int64_t max_batches) {
  if (eval.examples.empty()) return std::nan("");
  absl::StatusOr<std::unique_ptr<data::Batcher>> batcher = data::Batcher::Create(eval, options);
  if (!batcher.ok()) return batcher.status();
  int64_t batches = (*batcher)->batches_per_epoch();
  if (max_batches > 0) batches = std::min(batches, max_batches);
  torch::NoGradGuard no_grad;
  double sum = 0;
  int64_t tokens = 0;
  for (int64_t i = 0; i < batches; ++i) {
    data::Batch b = (*batcher)->Next();
    torch::Tensor labels = b.labels.to(model.device());
    torch::Tensor logits = model.Forward(b.input_ids.to(model.device()));
    absl::StatusOr<train::LossResult> loss = train::TokenCrossEntropy(logits, labels);
    if (!loss.ok()) return loss.status();
    sum += loss->loss.item<double>() * static_cast<double>(loss->tokens);
    tokens += loss->tokens;
  }
  return tokens > 0 ? sum / static_cast<double>(tokens) : std::nan("");
}

double ExactMatchResult::ExactMatch() const {
  return samples > 0 ? static_cast<double>(exact) / static_cast<double>(samples) : std::nan("");
}

double ExactMatchResult::TokenAccuracy() const {
  return samples > 0 && tokens > 0
             ? static_cast<double>(tokens_matched) / static_cast<double>(tokens)
             : std::nan("");
}

absl::StatusOr<ExactMatchResult> ExactMatch(const model::LlamaModel& model,
                                            const data::Dataset& eval, int64_t max_samples) {
  if (max_samples < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("exact match: max_samples must be >= 1, got ", max_samples));
  }
  ExactMatchResult result;
  model::GenerateOptions gen;
  gen.greedy = true;  // no eos ids: exactly max_new_tokens tokens
  for (const data::Example& e : eval.examples) {
    if (result.samples >= max_samples) break;
    const int64_t total = static_cast<int64_t>(e.ids.size());
    if (e.prompt_length <= 0 || e.prompt_length >= total) continue;
    std::vector<int64_t> prompt(e.ids.begin(), e.ids.begin() + e.prompt_length);
    gen.max_new_tokens = total - e.prompt_length;
    absl::StatusOr<torch::Tensor> out =
        model.Generate(torch::tensor(prompt, torch::kInt64).unsqueeze(0), gen);
    if (!out.ok()) {
      return absl::Status(out.status().code(), absl::StrCat("exact match, ", eval.source, ":",
                                                            e.line, ": ", out.status().message()));
    }
    const torch::Tensor generated = out->index({0, torch::indexing::Slice(e.prompt_length)});
    const auto* g = generated.data_ptr<int64_t>();
    int64_t matched = 0;
    for (int64_t t = 0; t < gen.max_new_tokens; ++t) {
      matched += g[t] == e.ids[e.prompt_length + t] ? 1 : 0;
    }
    ++result.samples;
    result.tokens += gen.max_new_tokens;
    result.tokens_matched += matched;
    result.exact += matched == gen.max_new_tokens ? 1 : 0;
  }
  return result;
}

}  // namespace qwha::pipeline
