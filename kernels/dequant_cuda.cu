// CUDA dequantization of packed b-bit codes (layout and formula: dequant.h).
// One thread per 32 codes: it reads the b consecutive int32 words that hold
// them (one 8/12/16-byte load), decodes in registers, computes
// (code - zero) * scale (+ add) in float32, and writes 32 outputs with 16-byte
// stores when rows are 16-byte aligned (cols % 32 == 0), element stores
// otherwise. No LibTorch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

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

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) { return __float2half_rn(x); }

// 32 consecutive 16-bit or 32-bit values at p (16-byte aligned) as floats.
template <typename A>
__device__ __forceinline__ void LoadRun32(const A* p, float* v) {
  constexpr int kPer = 16 / sizeof(A);
#pragma unroll
  for (int q = 0; q < 32 / kPer; ++q) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p) + q);
    const A* e = reinterpret_cast<const A*>(&raw);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if constexpr (sizeof(A) == 4) {
        v[q * kPer + i] = e[i];
      } else if constexpr (std::is_same_v<A, __half>) {
        v[q * kPer + i] = __half2float(e[i]);
      } else {
        v[q * kPer + i] = __bfloat162float(e[i]);
      }
    }
  }
}

// kAligned: cols % 32 == 0 (every 32-code run is whole and 16-byte aligned).
// kOneGroup: group_size % 32 == 0 (a run lies in one group).
template <typename OutT, int kBits, bool kAligned, bool kOneGroup>
__global__ void __launch_bounds__(256)
    DequantKernel(const uint32_t* __restrict__ packed, int64_t rows, int64_t cols,
                  int group_size, const void* __restrict__ scales,
                  const void* __restrict__ zeros, DType param_dtype, const void* __restrict__ add,
                  DType add_dtype, OutT* __restrict__ out) {
  const int64_t runs = (cols + 31) / 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * runs) return;
  const int64_t r = t / runs, j = t % runs;
  const int64_t groups = cols / group_size;
  // The b words of this run: a little-endian stream, code i at bits [i*b, i*b+b).
  uint32_t w[kBits + 1];
  const uint32_t* src = packed + (r * runs + j) * kBits;
  if constexpr (kBits == 4) {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(src));
    w[0] = q.x, w[1] = q.y, w[2] = q.z, w[3] = q.w;
  } else if constexpr (kBits == 2) {
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(src));
    w[0] = q.x, w[1] = q.y;
  } else {
#pragma unroll
    for (int i = 0; i < kBits; ++i) w[i] = __ldg(src + i);
  }
  w[kBits] = 0;
  float v[32];
  float s = 0.f, z = 0.f;
  if constexpr (kOneGroup) {
    const int64_t g = r * groups + (j * 32) / group_size;
    s = LoadAsFloat(scales, g, param_dtype);
    z = LoadAsFloat(zeros, g, param_dtype);
  }
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int bit = i * kBits;
    const uint32_t code = __funnelshift_r(w[bit / 32], w[bit / 32 + 1], bit % 32) &
                          ((1u << kBits) - 1);
    if constexpr (!kOneGroup) {
      const int64_t c = j * 32 + i;
      const int64_t g = r * groups + (c < cols ? c : cols - 1) / group_size;
      s = LoadAsFloat(scales, g, param_dtype);
      z = LoadAsFloat(zeros, g, param_dtype);
    }
    v[i] = (static_cast<float>(code) - z) * s;
  }
  const int64_t base = r * cols + j * 32;
  if constexpr (kAligned) {
    if (add != nullptr) {
      float a[32];
      switch (add_dtype) {
        case DType::kBFloat16:
          LoadRun32(static_cast<const __nv_bfloat16*>(add) + base, a);
          break;
        case DType::kFloat16:
          LoadRun32(static_cast<const __half*>(add) + base, a);
          break;
        default:
          LoadRun32(static_cast<const float*>(add) + base, a);
      }
#pragma unroll
      for (int i = 0; i < 32; ++i) v[i] += a[i];
    }
    constexpr int kPer = 16 / sizeof(OutT);
#pragma unroll
    for (int q = 0; q < 32 / kPer; ++q) {
      OutT e[kPer];
#pragma unroll
      for (int i = 0; i < kPer; ++i) e[i] = FromFloat<OutT>(v[q * kPer + i]);
      reinterpret_cast<uint4*>(out + base)[q] = *reinterpret_cast<const uint4*>(e);
    }
  } else {
    const int n = static_cast<int>(cols - j * 32 < 32 ? cols - j * 32 : 32);
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      if (i < n) {
        float x = v[i];
        if (add != nullptr) x += LoadAsFloat(add, base + i, add_dtype);
        out[base + i] = FromFloat<OutT>(x);
      }
    }
  }
}

template <typename OutT, int kBits>
cudaError_t LaunchBits(const int32_t* packed, int64_t rows, int64_t cols, int group_size,
                       const void* scales, const void* zeros, DType pdt, const void* add,
                       DType adt, OutT* out, cudaStream_t stream) {
  const int64_t threads = rows * ((cols + 31) / 32);
  const int64_t blocks = (threads + 255) / 256;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const bool aligned = cols % 32 == 0;
  const bool one_group = group_size % 32 == 0;
  const auto* p = reinterpret_cast<const uint32_t*>(packed);
  const unsigned b = static_cast<unsigned>(blocks);
#define QWHA_LAUNCH(A, G)                                                                  \
  DequantKernel<OutT, kBits, A, G>                                                         \
      <<<b, 256, 0, stream>>>(p, rows, cols, group_size, scales, zeros, pdt, add, adt, out)
  if (aligned && one_group) {
    QWHA_LAUNCH(true, true);
  } else if (aligned) {
    QWHA_LAUNCH(true, false);
  } else if (one_group) {
    QWHA_LAUNCH(false, true);
  } else {
    QWHA_LAUNCH(false, false);
  }
#undef QWHA_LAUNCH
  return cudaGetLastError();
}

template <typename OutT>
cudaError_t LaunchOut(const int32_t* packed, int64_t rows, int64_t cols, int bits, int g,
                      const void* s, const void* z, DType pdt, const void* add, DType adt,
                      void* out, cudaStream_t st) {
  OutT* o = static_cast<OutT*>(out);
  switch (bits) {
    case 2: return LaunchBits<OutT, 2>(packed, rows, cols, g, s, z, pdt, add, adt, o, st);
    case 3: return LaunchBits<OutT, 3>(packed, rows, cols, g, s, z, pdt, add, adt, o, st);
    case 4: return LaunchBits<OutT, 4>(packed, rows, cols, g, s, z, pdt, add, adt, o, st);
    default: return cudaErrorInvalidValue;
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
      return LaunchOut<float>(packed, rows, cols, bits, group_size, scales, zeros, param_dtype,
                              add, add_dtype, out, stream);
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
