#include "worker/serve/sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace qwha::serve {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature: must be >= 0, got ", p.temperature));
  }
  if (!(p.top_p >= 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p: must be in [0, 1], got ", p.top_p));
  }
  if (p.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat("top_k: must be >= 0, got ", p.top_k));
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), generator_(at::detail::createCPUGenerator(params.seed)) {}

int64_t Sampler::Next(const torch::Tensor& logits) {
  const torch::NoGradGuard no_grad;
  torch::Tensor row = logits.to(torch::kCPU, torch::kFloat32).reshape({-1});
  if (greedy()) return row.argmax().item<int64_t>();
  torch::Tensor probs = torch::softmax(row / params_.temperature, -1);
  // Candidates by decreasing probability (stable: ties keep the lower id first).
  auto [sorted, order] = torch::sort(probs, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  int64_t keep = sorted.size(0);
  if (params_.top_k > 0) keep = std::min(keep, params_.top_k);
  if (params_.top_p > 0 && params_.top_p < 1) {
    torch::Tensor mass = sorted.narrow(0, 0, keep).cumsum(0);
    // The first index whose cumulative mass reaches top_p, inclusive.
    const int64_t reach =
        (mass < params_.top_p * mass[-1].item<double>()).sum().item<int64_t>() + 1;
    keep = std::min(keep, std::max<int64_t>(reach, 1));
  }
  torch::Tensor kept = sorted.narrow(0, 0, keep);
  const int64_t pick = torch::multinomial(kept / kept.sum(), 1, false, generator_).item<int64_t>();
  return order[pick].item<int64_t>();
}

}  // namespace qwha::serve
