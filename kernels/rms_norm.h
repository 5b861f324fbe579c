// RMSNorm over the last dimension, as transformers' LlamaRMSNorm computes it,
// with its gradient w.r.t. the input:
//
//   y  = weight · round(x · r),            r = rsqrt(mean(x²) + eps)
//   dx = round(r · (g − x · r² · mean(g · x))),   g = round(dy · weight)
//
// mean and the products in float32 (float64 for float64 x); round = to x's
// dtype, where the ATen composition x.float() … .to(dtype) rounds. weight is a
// constant (no gradient). On CUDA, float32/bfloat16/float16 take one kernel per
// direction (a block per row); other devices and float64 use ATen ops.
//
// Thread safety: safe to call concurrently.
#pragma once

#include <torch/torch.h>

namespace qwha::kernels {

// x [..., H] float; weight [H] of x's dtype and device. Returns y in x's shape
// and dtype; differentiable w.r.t. x. Throws c10::Error for mismatched shapes,
// dtypes or devices.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// The backward alone: dx for dy (x's shape and dtype). Same preconditions.
torch::Tensor RmsNormBackward(const torch::Tensor& dy, const torch::Tensor& x,
                              const torch::Tensor& weight, double eps);

}  // namespace qwha::kernels
