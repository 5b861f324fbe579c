// The adapted linear layer y = x · (deq(Q) + ΔW)ᵀ on a quantized base.
//
// Two equivalent computations (DESIGN.md §1 "Training"):
// - merged (training): ΔW is formed by the adapter (QWHA: scatter + row FWHT),
//   added to the base inside the dequantization pass, and one GEMM follows.
//   Backward: dx = dy · W_eff (W_eff kept from the forward when x needs a
//   gradient), dΔW = dyᵀ · x in the compute dtype, which flows into the adapter's
//   parameters through the autograd graph of DeltaWeight(). The base gets no
//   gradient.
// - unmerged (serving many adapters on one base): x · deq(Q)ᵀ + adapter(x).
//
// Thread safety: pure functions of their inputs.
#pragma once

#include <torch/torch.h>

#include "worker/adapters/adapter.h"
#include "worker/quant/quantizer.h"

namespace qwha::adapters {

// y = x · (deq(base) + delta)ᵀ computed in `dtype` (float32, bfloat16 or
// float16) with x cast to dtype. x [..., in], delta [out, in] (any float dtype,
// may require grad), base on x's device. Differentiable w.r.t. x and delta.
// delta may be undefined (frozen base alone).
torch::Tensor MergedLinear(const torch::Tensor& x, const quant::QuantizedWeight& base,
                           const torch::Tensor& delta, torch::ScalarType dtype);

// y = x · deq(base)ᵀ + adapter.Forward(x) in `dtype` (adapter may be null).
torch::Tensor UnmergedLinear(const torch::Tensor& x, const quant::QuantizedWeight& base,
                             const Adapter* adapter, torch::ScalarType dtype);

}  // namespace qwha::adapters
