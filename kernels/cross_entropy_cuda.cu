// CUDA softmax cross-entropy fused with its gradient (cross_entropy.h): one
// block per row of logits; an online max/sum pass, then a pass that writes the
// gradient over the logits. No LibTorch.
#include <cmath>
#include <cstdint>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"
#include "kernels/cuda_rows.cuh"

namespace qwha::kernels::cuda {
namespace {

constexpr int kThreads = 512;

// A running max m and Σ exp(x − m); m = -inf with s = 0 is the empty set.
struct MaxSum {
  float m;
  float s;
};

__device__ __forceinline__ void Add(MaxSum& a, float v) {
  if (v > a.m) {
    a.s = a.s * expf(a.m - v) + 1.f;
    a.m = v;
  } else if (v != -INFINITY) {  // NaN goes in here and propagates
    a.s += expf(v - a.m);
  }
}

__device__ __forceinline__ MaxSum Merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};
  return {m, (a.s == 0.f ? 0.f : a.s * expf(a.m - m)) + (b.s == 0.f ? 0.f : b.s * expf(b.m - m))};
}

// log Σ exp over the block, returned to every thread.
__device__ float BlockLogSumExp(MaxSum a) {
  __shared__ MaxSum warp_vals[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) {
    const MaxSum o{__shfl_xor_sync(0xffffffffu, a.m, off), __shfl_xor_sync(0xffffffffu, a.s, off)};
    a = Merge(a, o);
  }
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = a;
  __syncthreads();
  MaxSum total{-INFINITY, 0.f};
  for (int w = 0; w < kThreads / 32; ++w) total = Merge(total, warp_vals[w]);
  return total.m + logf(total.s);
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    SoftmaxCrossEntropyKernel(T* __restrict__ logits, const int64_t* __restrict__ targets,
                              int64_t vocab, float* __restrict__ loss, float grad_scale,
                              bool with_grad) {
  using P = Pack<T, kVec>;
  const int64_t row = blockIdx.x;
  T* x = logits + row * vocab;
  P* xp = reinterpret_cast<P*>(x);
  const int64_t packs = vocab / kVec;
  const int64_t y = targets[row];
  // Read before the barrier in BlockLogSumExp: afterwards x is overwritten.
  const float xy = threadIdx.x == 0 ? ToF(x[y]) : 0.f;
  MaxSum a{-INFINITY, 0.f};
  for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
    const P p = xp[i];
#pragma unroll
    for (int j = 0; j < kVec; ++j) Add(a, ToF(p.v[j]));
  }
  const float lse = BlockLogSumExp(a);
  if (threadIdx.x == 0) loss[row] = lse - xy;
  if (!with_grad) return;
  for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
    P p = xp[i];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      float g = expf(ToF(p.v[j]) - lse) * grad_scale;
      if (i * kVec + j == y) g -= grad_scale;
      p.v[j] = FromF<T>(g);
    }
    xp[i] = p;
  }
}

template <typename T>
cudaError_t Launch(void* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* loss,
                   float grad_scale, bool with_grad, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  T* x = static_cast<T*>(logits);
  if (PackAligned(vocab, sizeof(T), logits)) {
    SoftmaxCrossEntropyKernel<T, kVec><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        x, targets, vocab, loss, grad_scale, with_grad);
  } else {
    SoftmaxCrossEntropyKernel<T, 1><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        x, targets, vocab, loss, grad_scale, with_grad);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSoftmaxCrossEntropy(void* logits, const int64_t* targets, int64_t rows,
                                      int64_t vocab, DType dtype, float* loss, float grad_scale,
                                      bool with_grad, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffff || vocab < 1) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return Launch<float>(logits, targets, rows, vocab, loss, grad_scale, with_grad, stream);
    case DType::kBFloat16:
      return Launch<__nv_bfloat16>(logits, targets, rows, vocab, loss, grad_scale, with_grad,
                                   stream);
    case DType::kFloat16:
      return Launch<__half>(logits, targets, rows, vocab, loss, grad_scale, with_grad, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace qwha::kernels::cuda
