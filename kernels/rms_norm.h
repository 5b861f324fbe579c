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

#include <utility>

namespace qwha::kernels {

// x [..., H] float; weight [H] of x's dtype and device. Returns y in x's shape
// and dtype; differentiable w.r.t. x. Throws c10::Error for mismatched shapes,
// dtypes or devices.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// RmsNorm(x, weight, eps) and Fwht(that, scale, transpose) at once, without
// autograd (serving: the input of a projection and of its QWHA adapters). On
// CUDA, for a last dimension of 4096 in bfloat16 or float16, one kernel: the
// first tensor bit for bit RmsNorm's, the second within float32 rounding of
// Fwht's (the same butterflies, in another order); elsewhere the two ops.
// Same preconditions as RmsNorm, plus Fwht's on the last dimension.
// With z_rows (int32 [4·C] on x's device, values in [-1, rows of x)), the
// second tensor comes in chunks of 4 rows, ChunkRows(Fwht(y), z_rows)
// ([C, H, 4], kernels/fwht.h), straight from the kernel in the one-kernel
// case. x must then be 2-D.
std::pair<torch::Tensor, torch::Tensor> RmsNormFwht(const torch::Tensor& x,
                                                    const torch::Tensor& weight, double eps,
                                                    double scale = 1.0, bool transpose = false,
                                                    const torch::Tensor& z_rows = torch::Tensor());

// Whether RmsNormFwht and CopyRowsFwht take one kernel for rows of `hidden`
// elements of `dtype` on `device` (this build's CUDA kernels; aligned
// tensors assumed, as fresh LibTorch tensors are).
bool FusedNormFwht(int64_t hidden, torch::ScalarType dtype, const torch::Device& device);

// The backward alone: dx for dy (x's shape and dtype). Same preconditions.
torch::Tensor RmsNormBackward(const torch::Tensor& dy, const torch::Tensor& x,
                              const torch::Tensor& weight, double eps);

}  // namespace qwha::kernels
