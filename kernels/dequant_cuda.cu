// CUDA dequantization of packed b-bit codes (layout and formula: dequant.h).
// Fast path: a thread turns 8 codes (8b bits, at most two int32 words) into 8
// outputs, (code - zero) * scale (+ add) in float32, written as one 16-byte
// store (two for float32) so that warps write contiguous memory; each thread
// issues the loads of 4 such vectors before its first store. Rows whose
// length or group size is not a multiple of 8 take a one-element-per-thread
// path. No LibTorch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"

namespace qwha::kernels::cuda {
namespace {

__device__ __forceinline__ float LoadAsFloat(const void* p, int64_t i, DType t) {
  switch (t) {
    case DType::kBFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kFloat16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

// 8 consecutive values of type A at p as floats (p aligned to 8 * sizeof(A)).
template <typename A>
__device__ __forceinline__ void Load8(const A* p, float* v) {
  if constexpr (sizeof(A) == 4) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const A* e = reinterpret_cast<const A*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if constexpr (std::is_same_v<A, __half>) {
        v[i] = __half2float(e[i]);
      } else {
        v[i] = __bfloat162float(e[i]);
      }
    }
  }
}

template <typename OutT>
__device__ __forceinline__ void Store8(OutT* p, const float* v) {
  OutT e[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) e[i] = FromF<OutT>(v[i]);
  if constexpr (sizeof(OutT) == 4) {
    reinterpret_cast<uint4*>(p)[0] = reinterpret_cast<const uint4*>(e)[0];
    reinterpret_cast<uint4*>(p)[1] = reinterpret_cast<const uint4*>(e)[1];
  } else {
    *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(e);
  }
}

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // 8-code vectors per thread, all loads issued first

// Fast path (cols % 8 == 0, group_size % 8 == 0): thread t of a block handles
// the 8-code vectors blockIdx.x * 1024 + t + 256 * i, so each load and each
// 16-byte store instruction is coalesced across the warp.
template <typename OutT, int kBits>
__global__ void __launch_bounds__(kThreads)
    DequantVecKernel(const uint32_t* __restrict__ packed, int64_t rows, int64_t cols,
                     int group_size, const void* __restrict__ scales,
                     const void* __restrict__ zeros, DType param_dtype,
                     const void* __restrict__ add, DType add_dtype, OutT* __restrict__ out) {
  const int64_t vecs_per_row = cols / 8, words_per_row = (cols + 31) / 32 * kBits;
  const int64_t total = rows * vecs_per_row, groups = cols / group_size;
  uint32_t code_bits[kUnroll];
  float s[kUnroll], z[kUnroll];
  int64_t vec[kUnroll];
#pragma unroll
  for (int i = 0; i < kUnroll; ++i) {
    vec[i] = static_cast<int64_t>(blockIdx.x) * (kThreads * kUnroll) + threadIdx.x + kThreads * i;
    code_bits[i] = 0, s[i] = 0.f, z[i] = 0.f;
    if (vec[i] < total) {
      const int64_t r = vec[i] / vecs_per_row, j = vec[i] % vecs_per_row;
      // Codes 8j..8j+7 of row r: bits [8j*b, 8j*b + 8b) of the row's stream.
      const int64_t bit = j * 8 * kBits;
      const uint32_t* w = packed + r * words_per_row + bit / 32;
      const int off = static_cast<int>(bit % 32);
      code_bits[i] =
          off + 8 * kBits > 32 ? __funnelshift_r(__ldg(w), __ldg(w + 1), off) : __ldg(w) >> off;
      const int64_t g = r * groups + (j * 8) / group_size;
      s[i] = LoadAsFloat(scales, g, param_dtype);
      z[i] = LoadAsFloat(zeros, g, param_dtype);
    }
  }
#pragma unroll
  for (int i = 0; i < kUnroll; ++i) {
    if (vec[i] >= total) continue;
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const uint32_t code = (code_bits[i] >> (e * kBits)) & ((1u << kBits) - 1);
      v[e] = (static_cast<float>(code) - z[i]) * s[i];
    }
    if (add != nullptr) {
      float a[8];
      switch (add_dtype) {
        case DType::kBFloat16:
          Load8(static_cast<const __nv_bfloat16*>(add) + vec[i] * 8, a);
          break;
        case DType::kFloat16:
          Load8(static_cast<const __half*>(add) + vec[i] * 8, a);
          break;
        default:
          Load8(static_cast<const float*>(add) + vec[i] * 8, a);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] += a[e];
    }
    Store8(out + vec[i] * 8, v);
  }
}

// General path (any cols and group size): one thread per output element.
template <typename OutT, int kBits>
__global__ void __launch_bounds__(kThreads)
    DequantScalarKernel(const uint32_t* __restrict__ packed, int64_t rows, int64_t cols,
                        int group_size, const void* __restrict__ scales,
                        const void* __restrict__ zeros, DType param_dtype,
                        const void* __restrict__ add, DType add_dtype, OutT* __restrict__ out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (t >= rows * cols) return;
  const int64_t r = t / cols, c = t % cols;
  const int64_t bit = c * kBits;
  const uint32_t* w = packed + r * ((cols + 31) / 32 * kBits) + bit / 32;
  const int off = static_cast<int>(bit % 32);
  const uint32_t word = off + kBits > 32 ? __funnelshift_r(w[0], w[1], off) : w[0] >> off;
  const int64_t g = r * (cols / group_size) + c / group_size;
  float v = (static_cast<float>(word & ((1u << kBits) - 1)) - LoadAsFloat(zeros, g, param_dtype)) *
            LoadAsFloat(scales, g, param_dtype);
  if (add != nullptr) v += LoadAsFloat(add, t, add_dtype);
  out[t] = FromF<OutT>(v);
}

template <typename OutT, int kBits>
cudaError_t LaunchBits(const int32_t* packed, int64_t rows, int64_t cols, int group_size,
                       const void* scales, const void* zeros, DType pdt, const void* add, DType adt,
                       OutT* out, cudaStream_t stream) {
  const auto* p = reinterpret_cast<const uint32_t*>(packed);
  if (cols % 8 == 0 && group_size % 8 == 0) {
    const int64_t blocks = (rows * (cols / 8) + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    DequantVecKernel<OutT, kBits><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        p, rows, cols, group_size, scales, zeros, pdt, add, adt, out);
  } else {
    const int64_t blocks = (rows * cols + kThreads - 1) / kThreads;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    DequantScalarKernel<OutT, kBits><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        p, rows, cols, group_size, scales, zeros, pdt, add, adt, out);
  }
  return cudaGetLastError();
}

template <typename OutT>
cudaError_t LaunchOut(const int32_t* packed, int64_t rows, int64_t cols, int bits, int g,
                      const void* s, const void* z, DType pdt, const void* add, DType adt,
                      void* out, cudaStream_t st) {
  OutT* o = static_cast<OutT*>(out);
  switch (bits) {
    case 2:
      return LaunchBits<OutT, 2>(packed, rows, cols, g, s, z, pdt, add, adt, o, st);
    case 3:
      return LaunchBits<OutT, 3>(packed, rows, cols, g, s, z, pdt, add, adt, o, st);
    case 4:
      return LaunchBits<OutT, 4>(packed, rows, cols, g, s, z, pdt, add, adt, o, st);
    default:
      return cudaErrorInvalidValue;
  }
}

bool IsParamDType(DType t) {
  return t == DType::kFloat32 || t == DType::kBFloat16 || t == DType::kFloat16;
}

}  // namespace

cudaError_t LaunchDequantize(const int32_t* packed, int64_t rows, int64_t cols, int bits,
                             int group_size, const void* scales, const void* zeros,
                             DType param_dtype, const void* add, DType add_dtype, void* out,
                             DType out_dtype, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || group_size <= 0 || cols % group_size != 0 ||
      !IsParamDType(param_dtype) || !IsParamDType(add_dtype)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || cols == 0) return cudaSuccess;
  switch (out_dtype) {
    case DType::kFloat32:
      return LaunchOut<float>(packed, rows, cols, bits, group_size, scales, zeros, param_dtype, add,
                              add_dtype, out, stream);
    case DType::kBFloat16:
      return LaunchOut<__nv_bfloat16>(packed, rows, cols, bits, group_size, scales, zeros,
                                      param_dtype, add, add_dtype, out, stream);
    case DType::kFloat16:
      return LaunchOut<__half>(packed, rows, cols, bits, group_size, scales, zeros, param_dtype,
                               add, add_dtype, out, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace qwha::kernels::cuda
