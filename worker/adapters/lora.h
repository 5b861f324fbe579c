// LoRA and its quantization-aware initializations (DESIGN.md §1, "Baselines").
//
//   ΔW = scale · B A,   A [r, in], B [out, r],   Forward(x) = scale · (x Aᵀ) Bᵀ
//
// The rank is the budget's: r = max(1, floor(N / (in + out))).
//   kLora:  A ~ U(-1/√in, 1/√in) (PEFT's kaiming_uniform(a=√5)), B = 0,
//           scale = cfg.scaling / r (PEFT's lora_alpha / r).
//   kLoftq: one LoftQ step: E = U Σ Vᵀ, B = U_r √Σ_r, A = √Σ_r V_rᵀ, scale = 1
//           (as PEFT's LoftQ with lora_alpha = r), so ΔW is the best rank-r
//           approximation of E in the Frobenius norm.
//   kCloq:  min ‖X (E − BA)ᵀ‖ = ‖(E − BA) Rᵀ‖ with G = RᵀR (R upper Cholesky
//           factor of the damped G): E Rᵀ = U Σ Vᵀ, B = U_r √Σ_r,
//           A = √Σ_r V_rᵀ R⁻ᵀ, scale = 1. This is the exact optimum over
//           rank-r ΔW (Eckart-Young in the G-weighted norm).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/adapters/adapter.h"

namespace qwha::adapters {

// r = max(1, floor(BudgetParams(cfg, out, in) / (in + out))).
int64_t LoraRank(const AdapterConfig& cfg, int64_t out_features, int64_t in_features);

struct LoraFactors {
  torch::Tensor a;  // [r, in]
  torch::Tensor b;  // [out, r]
};

// LoftQ factors of error [out, in] (B A = best rank-r approximation of E), in
// error's dtype and device. InvalidArgument if r is not in [1, min(out, in)].
absl::StatusOr<LoraFactors> LoftqFactors(const torch::Tensor& error, int64_t rank);

// CLoQ factors: B A minimizes tr((E − BA) G (E − BA)ᵀ) over rank r, for a
// symmetric positive-definite (already damped) G [in, in]. The Cholesky factor
// and E L are float64; the SVD and the factors use error's dtype. FailedPrecondition
// if G is not positive definite; InvalidArgument for a bad rank or shape.
absl::StatusOr<LoraFactors> CloqFactors(const torch::Tensor& error, const torch::Tensor& gram,
                                        int64_t rank);

class LoraAdapter : public Adapter {
 public:
  // a [r, in], b [out, r] become trainable leaves.
  LoraAdapter(AdapterType type, int64_t out_features, int64_t in_features, int64_t rank,
              double scale, torch::Tensor a, torch::Tensor b);

  AdapterType type() const override { return type_; }
  int64_t in_features() const override { return in_features_; }
  int64_t out_features() const override { return out_features_; }

  torch::Tensor Forward(const torch::Tensor& x) const override;
  torch::Tensor DeltaWeight() const override;
  std::vector<torch::Tensor> TrainableParameters() const override { return {a_, b_}; }

  // {"lora_A": [r, in], "lora_B": [out, r]} (PEFT's names).
  std::map<std::string, torch::Tensor> StateDict() const override;
  absl::Status LoadStateDict(const std::map<std::string, torch::Tensor>& state) override;
  void To(const torch::Device& device, torch::ScalarType dtype) override;

  int64_t rank() const { return rank_; }
  double scale() const { return scale_; }

 private:
  AdapterType type_;
  int64_t out_features_;
  int64_t in_features_;
  int64_t rank_;
  double scale_;
  torch::Tensor a_;  // [r, in], leaf, requires grad
  torch::Tensor b_;  // [out, r], leaf, requires grad
};

}  // namespace qwha::adapters
