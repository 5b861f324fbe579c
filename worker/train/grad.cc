#include "worker/train/grad.h"

#include <cmath>

namespace qwha::train {

double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : params) {
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return 0.0;
  const torch::Device device = grads.front().device();
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const torch::Tensor& g : grads) {
    const torch::ScalarType acc =
        g.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    norms.push_back(g.to(acc).norm().to(device, torch::kFloat64));
  }
  const double norm = torch::stack(norms).norm().item<double>();
  if (!std::isfinite(norm)) return norm;
  if (max_norm > 0 && norm > max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    for (torch::Tensor& g : grads) g.mul_(coef);
  }
  return norm;
}

double MicroBatchLossWeight(LossNormalization normalization, int64_t micro_tokens,
                            int64_t step_tokens, int64_t grad_accum) {
  if (normalization == LossNormalization::kPerMicroBatch) {
    return 1.0 / static_cast<double>(grad_accum);
  }
  if (step_tokens <= 0) return 0.0;
  return static_cast<double>(micro_tokens) / static_cast<double>(step_tokens);
}

}  // namespace qwha::train
