// Adapters: trainable corrections ΔW added to a frozen (quantized) linear layer.
//
// A linear layer computes y = x Wᵀ with W [out, in]. An adapter adds
// y_adapter = x ΔWᵀ, so the adapted layer is y = x (deq(Q) + ΔW)ᵀ.
// Every adapter type (QWHA, LoRA and its initializations, random-location WHT)
// implements this one interface; InitializeAdapter() builds any of them from
// one AdapterConfig. Budgets are matched to LoRA: a "rank-r equivalent" budget
// is N = r * (in + out) trainable parameters.
//
// Thread safety: const methods may be called concurrently; mutation
// (LoadStateDict, To, training steps) needs external synchronization.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::adapters {

enum class AdapterType {
  kQwha,          // WHT spectrum, AdaAlloc + selection + value refinement
  kQwhaDataFree,  // QWHA with G = I (no calibration data)
  kLora,          // LoRA, B = 0 (ΔW = 0 at start)
  kLoftq,         // LoRA from the SVD of the quantization error E
  kCloq,          // LoRA from the SVD of the calibration-weighted error
  kRandomWht,     // WHT spectrum at random locations, zero values
};

// Parses "qwha", "qwha-datafree", "lora", "loftq", "cloq", "random-wht";
// InvalidArgument naming the value otherwise.
absl::StatusOr<AdapterType> ParseAdapterType(const std::string& name);
const char* AdapterTypeName(AdapterType type);

// True for the WHT-spectrum types (qwha, qwha-datafree, random-wht); false for
// the LoRA family (lora, loftq, cloq).
bool IsSpectrumType(AdapterType type);

struct AdapterConfig {
  AdapterType type = AdapterType::kQwha;
  // Budget: rank-r equivalent, N = rank * (in + out). Ignored if num_params > 0.
  int64_t rank = 64;
  // Explicit parameter count per layer (spectrum adapters only; LoRA rounds
  // down to a whole rank). 0 = use `rank`.
  int64_t num_params = 0;
  // AdaAlloc exponent: k_o ∝ ‖E_o‖^alpha (0 = uniform).
  double alloc_alpha = 1.0;
  // Spectrum adapters: ΔW = (scaling / n) F H. LoRA: ΔW = (scaling / rank) B A
  // for zero-init LoRA; LoftQ/CLoQ factors are scaled to reproduce their SVD.
  double scaling = 1.0;
  // Calibration damping: G += damp * mean(diag G) * I.
  double damp = 1e-4;
  // Seed for random initialization (LoRA A, random-WHT locations).
  uint64_t seed = 0;
};

// OK iff cfg is valid for a layer [out, in]; the message names the field.
absl::Status ValidateAdapterConfig(const AdapterConfig& cfg, int64_t out_features,
                                   int64_t in_features);

// Number of trainable parameters the budget gives for a layer [out, in].
int64_t BudgetParams(const AdapterConfig& cfg, int64_t out_features, int64_t in_features);

class Adapter {
 public:
  virtual ~Adapter() = default;
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;

  virtual AdapterType type() const = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;

  // y_adapter = x ΔWᵀ without forming ΔW where a cheaper path exists (QWHA:
  // (scaling/n) · FWHT(x)·Fᵀ-style; LoRA: (x Aᵀ) Bᵀ). x [..., in] -> [..., out],
  // differentiable w.r.t. x and TrainableParameters(). Throws c10::Error on a
  // shape mismatch.
  virtual torch::Tensor Forward(const torch::Tensor& x) const = 0;

  // ΔW [out, in] in the adapter's dtype, differentiable w.r.t. the parameters.
  virtual torch::Tensor DeltaWeight() const = 0;

  // The tensors that train (requires_grad = true), in a fixed order.
  virtual std::vector<torch::Tensor> TrainableParameters() const = 0;

  // Σ numel of TrainableParameters().
  int64_t NumTrainableParams() const;

  // Everything needed to rebuild the adapter (values and fixed indices),
  // keyed by name; CPU or device tensors as they are.
  virtual std::map<std::string, torch::Tensor> StateDict() const = 0;

  // Replaces the state with `state` (as produced by StateDict of an adapter of
  // the same type and shape). InvalidArgument naming the missing or
  // mis-shaped entry; the adapter is unchanged on error.
  virtual absl::Status LoadStateDict(const std::map<std::string, torch::Tensor>& state) = 0;

  // Moves/casts all state; trainable tensors stay leaves that require grad.
  virtual void To(const torch::Device& device, torch::ScalarType dtype) = 0;

 protected:
  Adapter() = default;
};

// The inputs of initialization for one layer. All tensors on one device.
struct LayerData {
  torch::Tensor weight;       // W [out, in], original (full-precision) weight
  torch::Tensor dequantized;  // deq(Q) [out, in]
  torch::Tensor gram;         // Σ XᵀX [in, in] (float64 preferred); undefined = none
};

// Builds and initializes an adapter of cfg.type for one layer. QWHA and CLoQ
// require layer.gram (FailedPrecondition otherwise); the data-free and
// LoRA/LoftQ/random-WHT types ignore it. The adapter is float32 on the layer's
// device; call To() for another dtype.
absl::StatusOr<std::unique_ptr<Adapter>> InitializeAdapter(const AdapterConfig& cfg,
                                                           const LayerData& layer);

// An adapter of cfg.type for a layer [out, in] with empty state, to be filled
// by LoadStateDict (used when loading a saved adapter).
absl::StatusOr<std::unique_ptr<Adapter>> CreateEmptyAdapter(const AdapterConfig& cfg,
                                                            int64_t out_features,
                                                            int64_t in_features);

// The layer-output error ‖X (W - deq(Q) - ΔW)ᵀ‖_F / ‖X Wᵀ‖_F computed from the
// Gram matrix: sqrt(tr(M G Mᵀ) / tr(W G Wᵀ)) with M = W - deq(Q) - ΔW.
// delta may be undefined (no adapter). Computed in float64.
double RelativeOutputError(const LayerData& layer, const torch::Tensor& delta);

}  // namespace qwha::adapters
