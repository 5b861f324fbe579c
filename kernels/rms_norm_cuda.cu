// CUDA RMSNorm forward and backward (rms_norm.h), one block per row, float32
// arithmetic, rounding where transformers' LlamaRMSNorm rounds. No LibTorch.
#include <cmath>
#include <cstdint>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"
#include "kernels/cuda_rows.cuh"

namespace qwha::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// The value of t after rounding to T (what a tensor of dtype T would hold).
template <typename T>
__device__ __forceinline__ float Round(float t) {
  return ToF(FromF<T>(t));
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    RmsNormForwardKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                         int64_t hidden, float eps) {
  using P = Pack<T, kVec>;
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const P* xp = reinterpret_cast<const P*>(x + row * hidden);
  const P* wp = reinterpret_cast<const P*>(w);
  P* yp = reinterpret_cast<P*>(y + row * hidden);
  const int64_t packs = hidden / kVec;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
    const P p = xp[i];
#pragma unroll
    for (int j = 0; j < kVec; ++j) ss += ToF(p.v[j]) * ToF(p.v[j]);
  }
  const float r = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
    const P p = xp[i], q = wp[i];
    P out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) out.v[j] = FromF<T>(ToF(q.v[j]) * Round<T>(ToF(p.v[j]) * r));
    yp[i] = out;
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    RmsNormBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x,
                          const T* __restrict__ w, T* __restrict__ dx, int64_t hidden, float eps) {
  using P = Pack<T, kVec>;
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const P* gp = reinterpret_cast<const P*>(dy + row * hidden);
  const P* xp = reinterpret_cast<const P*>(x + row * hidden);
  const P* wp = reinterpret_cast<const P*>(w);
  P* dp = reinterpret_cast<P*>(dx + row * hidden);
  const int64_t packs = hidden / kVec;
  float ss = 0.f, gx = 0.f;
  for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
    const P p = xp[i], g = gp[i], q = wp[i];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float xv = ToF(p.v[j]);
      ss += xv * xv;
      gx += Round<T>(ToF(g.v[j]) * ToF(q.v[j])) * xv;
    }
  }
  const float n = static_cast<float>(hidden);
  const float r = rsqrtf(BlockSum(ss, scratch) / n + eps);
  const float c = r * r * BlockSum(gx, scratch) / n;
  for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
    const P p = xp[i], g = gp[i], q = wp[i];
    P out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float gv = Round<T>(ToF(g.v[j]) * ToF(q.v[j]));
      out.v[j] = FromF<T>(r * (gv - ToF(p.v[j]) * c));
    }
    dp[i] = out;
  }
}

template <typename T>
cudaError_t Forward(const void* x, const void* w, void* y, int64_t rows, int64_t hidden, float eps,
                    cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(w);
  T* yt = static_cast<T*>(y);
  const unsigned blocks = static_cast<unsigned>(rows);
  if (PackAligned(hidden, sizeof(T), x, w, y)) {
    RmsNormForwardKernel<T, kVec><<<blocks, kThreads, 0, stream>>>(xt, wt, yt, hidden, eps);
  } else {
    RmsNormForwardKernel<T, 1><<<blocks, kThreads, 0, stream>>>(xt, wt, yt, hidden, eps);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t Backward(const void* dy, const void* x, const void* w, void* dx, int64_t rows,
                     int64_t hidden, float eps, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const T* gt = static_cast<const T*>(dy);
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(w);
  T* dt = static_cast<T*>(dx);
  const unsigned blocks = static_cast<unsigned>(rows);
  if (PackAligned(hidden, sizeof(T), dy, x, w, dx)) {
    RmsNormBackwardKernel<T, kVec><<<blocks, kThreads, 0, stream>>>(gt, xt, wt, dt, hidden, eps);
  } else {
    RmsNormBackwardKernel<T, 1><<<blocks, kThreads, 0, stream>>>(gt, xt, wt, dt, hidden, eps);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchRmsNormForward(const void* x, const void* weight, void* y, int64_t rows,
                                 int64_t hidden, float eps, DType dtype, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffff || hidden < 1) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return Forward<float>(x, weight, y, rows, hidden, eps, stream);
    case DType::kBFloat16:
      return Forward<__nv_bfloat16>(x, weight, y, rows, hidden, eps, stream);
    case DType::kFloat16:
      return Forward<__half>(x, weight, y, rows, hidden, eps, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t LaunchRmsNormBackward(const void* dy, const void* x, const void* weight, void* dx,
                                  int64_t rows, int64_t hidden, float eps, DType dtype,
                                  cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffff || hidden < 1) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return Backward<float>(dy, x, weight, dx, rows, hidden, eps, stream);
    case DType::kBFloat16:
      return Backward<__nv_bfloat16>(dy, x, weight, dx, rows, hidden, eps, stream);
    case DType::kFloat16:
      return Backward<__half>(dy, x, weight, dx, rows, hidden, eps, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace qwha::kernels::cuda
