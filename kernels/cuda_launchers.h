// Host-side launchers of the CUDA kernels (fwht_cuda.cu, dequant_cuda.cu,
// spectrum_cuda.cu, cross_entropy_cuda.cu, rms_norm_cuda.cu). Plain C++: raw device pointers,
// sizes, a dtype tag and a stream; no LibTorch. The tensor-level checks live in the .cc callers,
// which establish every precondition listed here.
//
// Every launcher enqueues its work on `stream` and returns cudaSuccess, or the
// first error from a CUDA API call or from cudaGetLastError() after a launch.
// Launchers are safe to call concurrently (they keep no mutable host state
// beyond one-time per-device kernel attributes, set under std::call_once).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwha::kernels::cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

// out[r, :] = scale * in[r, :] · H (· Hᵀ when transpose), H = H_k ⊗ H_{2^log2_m}
// (k = 1 or a supported K, n = k << log2_m <= 32768). in rows start
// in_row_stride elements apart; out is contiguous [rows, n]; in and out do
// not overlap. dtype is kFloat32, kBFloat16 or kFloat16 (both tensors).
// Requires 16-byte aligned in/out and (in_row_stride * element size) % 16 == 0.
// Accumulates in float32. Returns cudaErrorInvalidValue for an unsupported
// size or dtype.
cudaError_t LaunchFwht(const void* in, int64_t in_row_stride, void* out, int64_t rows, int k,
                       int log2_m, DType dtype, float scale, bool transpose, cudaStream_t stream);

// out[r, c] = (code(r, c) - zeros[r, c / g]) * scales[r, c / g] (+ add[r, c]),
// computed in float32 and rounded once to out_dtype (kFloat32/kBFloat16/
// kFloat16). packed is [rows, ceil(cols / 32) * bits] int32 (dequant.h
// layout); scales and zeros are contiguous [rows, cols / g] of param_dtype
// (kFloat32/kBFloat16/kFloat16); add is null or contiguous [rows, cols] of
// add_dtype (kFloat32/kBFloat16/kFloat16); out is contiguous [rows, cols].
// bits in {2, 3, 4}; cols % g == 0.
cudaError_t LaunchDequantize(const int32_t* packed, int64_t rows, int64_t cols, int bits,
                             int group_size, const void* scales, const void* zeros,
                             DType param_dtype, const void* add, DType add_dtype, void* out,
                             DType out_dtype, cudaStream_t stream);

// dense[idx[t]] = values[t] for t < count (dense already zero-filled by the
// caller; indices unique and in range). dtype: any DType.
cudaError_t LaunchSpectrumScatter(const void* values, const int64_t* idx, int64_t count,
                                  void* dense, DType dtype, cudaStream_t stream);

// values[t] = dense[idx[t]] for t < count (indices in range). dtype: any DType.
cudaError_t LaunchSpectrumGather(const void* dense, const int64_t* idx, int64_t count, void* values,
                                 DType dtype, cudaStream_t stream);

// Row r of logits [rows, vocab] (contiguous, dtype kFloat32/kBFloat16/
// kFloat16): loss[r] = logsumexp(x_r) − x_r[targets[r]] (float32 reductions);
// with `with_grad`, x_r is then overwritten with grad_scale · (softmax(x_r) −
// onehot(targets[r])), computed in float32 and rounded once. targets int64 in
// [0, vocab) (not checked); loss float32 [rows].
cudaError_t LaunchSoftmaxCrossEntropy(void* logits, const int64_t* targets, int64_t rows,
                                      int64_t vocab, DType dtype, float* loss, float grad_scale,
                                      bool with_grad, cudaStream_t stream);

// RMSNorm rows of x [rows, hidden] with weight [hidden] (all contiguous, one
// dtype kFloat32/kBFloat16/kFloat16), float32 arithmetic:
//   forward:  y = round(w · round(x · r)),  r = rsqrt(Σx² / hidden + eps)
//   backward: dx = round(r · (g − x · r² · Σ(g·x) / hidden)),  g = round(dy · w)
// (round = to the tensors' dtype). y / dx do not overlap the inputs.
cudaError_t LaunchRmsNormForward(const void* x, const void* weight, void* y, int64_t rows,
                                 int64_t hidden, float eps, DType dtype, cudaStream_t stream);
cudaError_t LaunchRmsNormBackward(const void* dy, const void* x, const void* weight, void* dx,
                                  int64_t rows, int64_t hidden, float eps, DType dtype,
                                  cudaStream_t stream);

}  // namespace qwha::kernels::cuda
