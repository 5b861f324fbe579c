#include "worker/train/grad.h"

#include <cmath>
#include <map>
#include <string>
#include <utility>

namespace qwha::train {

double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : params) {
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return 0.0;
  const torch::Device device = grads.front().device();
  // Per-gradient norms in float32 (float64 for float64 gradients): one launch
  // each, or one _foreach_norm for the float32/float64 gradients of a device;
  // then the norm of those norms in float64.
  std::map<std::pair<std::string, int>, std::vector<torch::Tensor>> groups;
  for (const torch::Tensor& g : grads) {
    groups[{g.device().str(), static_cast<int>(g.scalar_type())}].push_back(g);
  }
  std::vector<torch::Tensor> norms;
  for (auto& [key, group] : groups) {
    const auto dtype = static_cast<torch::ScalarType>(key.second);
    std::vector<torch::Tensor> partial;
    if (dtype == torch::kFloat32 || dtype == torch::kFloat64) {
      partial = at::_foreach_norm(group);
    } else {
      for (const torch::Tensor& g : group) {
        partial.push_back(at::linalg_vector_norm(g, 2, c10::nullopt, false, torch::kFloat32));
      }
    }
    norms.push_back(torch::stack(partial).to(device, torch::kFloat64));
  }
  const double norm = torch::cat(norms).norm().item<double>();
  if (!std::isfinite(norm)) return norm;
  if (max_norm > 0 && norm > max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    for (auto& [key, group] : groups) at::_foreach_mul_(group, at::Scalar(coef));
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
