// LinearSlot: one projection of the decoder (q, k, v, o, gate, up or down) as
// the pipeline sees it. The base is either a dense weight or a quantized
// weight (quant::QuantizedWeight); either may carry a bias; an adapter
// (adapters::Adapter, owned or borrowed) may be attached on top:
//
//   dense:      y = x Wᵀ (+ adapter(x)) + b
//   quantized:  y = MergedLinear(x, Q, ΔW) + b     (AdapterMode::kMerged)
//               y = UnmergedLinear(x, Q, adapter) + b   (AdapterMode::kUnmerged)
//
// Both quantized paths compute x (deq(Q) + ΔW)ᵀ + b (worker/adapters/adapted_linear.h).
//
// Thread safety: Forward and the accessors may run concurrently; the
// mutators (Set*, Attach*, Detach*) need external synchronization with them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "worker/adapters/adapter.h"
#include "worker/quant/quantizer.h"

namespace qwha::model {

enum class AdapterMode {
  kMerged,    // form ΔW, add it in the dequantization pass, one GEMM (training)
  kUnmerged,  // x deq(Q)ᵀ + adapter(x) (serving several adapters on one base)
};

class LinearSlot {
 public:
  // A slot of `out_features × in_features` named `name` (the transformers
  // module name, "model.layers.3.self_attn.q_proj") computing in `dtype` on
  // `device`. Starts empty: SetDenseWeight or SetQuantizedWeight before Forward.
  LinearSlot(std::string name, int64_t in_features, int64_t out_features, torch::Device device,
             torch::ScalarType dtype);
  LinearSlot(const LinearSlot&) = delete;
  LinearSlot& operator=(const LinearSlot&) = delete;

  const std::string& name() const { return name_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  torch::ScalarType dtype() const { return dtype_; }
  const torch::Device& device() const { return device_; }

  bool is_quantized() const { return quantized_.has_value(); }
  // The dense weight [out, in] (undefined once quantized).
  const torch::Tensor& weight() const { return weight_; }
  // The bias [out], or undefined.
  const torch::Tensor& bias() const { return bias_; }
  // The quantized base, or nullptr for a dense slot.
  const quant::QuantizedWeight* quantized() const {
    return quantized_.has_value() ? &*quantized_ : nullptr;
  }
  // The attached adapter (owned or borrowed), or nullptr.
  adapters::Adapter* adapter() const { return adapter_; }

  // Replaces the base with a dense weight [out, in] (cast to the slot's dtype
  // and device); drops a quantized base. InvalidArgument on a shape mismatch.
  absl::Status SetDenseWeight(const torch::Tensor& weight);
  // Sets the bias [out] (undefined = none). InvalidArgument on a shape mismatch.
  absl::Status SetBias(const torch::Tensor& bias);
  // Replaces the base with q (moved to the slot's device) and frees the dense
  // weight. InvalidArgument if q is not [out, in]; FailedPrecondition if the
  // slot computes in float64 (the dequantization kernels produce
  // float32/bfloat16/float16).
  absl::Status SetQuantizedWeight(quant::QuantizedWeight q);

  // Attaches an adapter the slot owns / one the caller keeps alive until it is
  // detached or the slot is destroyed. Replaces a previous adapter.
  // InvalidArgument if the adapter is not [out, in]. The merged path accepts
  // an adapter of any float dtype; the unmerged path feeds it x in the slot's
  // dtype, so move it there first (Adapter::To).
  absl::Status AttachAdapter(std::unique_ptr<adapters::Adapter> adapter);
  absl::Status AttachBorrowedAdapter(adapters::Adapter* adapter);
  // Removes the adapter; returns it if the slot owned it (else nullptr).
  std::unique_ptr<adapters::Adapter> DetachAdapter();

  // y = x Wᵀ + b for x [..., in] -> [..., out] in the slot's dtype (x is cast).
  // Differentiable w.r.t. x and the adapter's parameters; the base is frozen.
  // Throws c10::Error if the slot has no base or x has the wrong width.
  torch::Tensor Forward(const torch::Tensor& x, AdapterMode mode) const;

  // The weight the slot applies: W, or deq(Q) + ΔW (detached) in `dtype`.
  // Used for merged export. Throws c10::Error if the slot has no base.
  torch::Tensor EffectiveWeight(torch::ScalarType dtype) const;

 private:
  std::string name_;
  int64_t in_features_;
  int64_t out_features_;
  torch::Device device_;
  torch::ScalarType dtype_;
  torch::Tensor weight_;
  torch::Tensor bias_;
  std::optional<quant::QuantizedWeight> quantized_;
  std::unique_ptr<adapters::Adapter> owned_adapter_;
  adapters::Adapter* adapter_ = nullptr;
};

}  // namespace qwha::model
