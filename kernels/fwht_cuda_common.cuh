// Device helpers shared by the FWHT kernels (fwht_cuda.cu, fwht_k_cuda.cu):
// element conversion, vector access, in-register Sylvester butterflies, and
// the shared-memory layouts A/B described in fwht_cuda.cu. CUDA only; no
// LibTorch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"

namespace qwha::kernels::cuda::fwht_internal {

// ---------------------------------------------------------------- elements --
using cuda::FromF;
using cuda::ToF;

template <int kBytes>
struct RawVec;
template <>
struct RawVec<2> {
  using type = unsigned short;
};
template <>
struct RawVec<4> {
  using type = unsigned int;
};
template <>
struct RawVec<8> {
  using type = uint2;
};
template <>
struct RawVec<16> {
  using type = uint4;
};

// kN consecutive elements at p (aligned to their size, at most 16 bytes per access).
template <typename T, int kN>
__device__ __forceinline__ void LoadF(const T* p, float* v) {
  constexpr int kBytes = kN * static_cast<int>(sizeof(T));
  if constexpr (kBytes > 16) {
    LoadF<T, kN / 2>(p, v);
    LoadF<T, kN / 2>(p + kN / 2, v + kN / 2);
  } else {
    using R = typename RawVec<kBytes>::type;
    const R r = __ldg(reinterpret_cast<const R*>(p));
    T e[kN];
    memcpy(e, &r, kBytes);
#pragma unroll
    for (int i = 0; i < kN; ++i) v[i] = ToF(e[i]);
  }
}

template <typename T, int kN>
__device__ __forceinline__ void StoreF(T* p, const float* v) {
  constexpr int kBytes = kN * static_cast<int>(sizeof(T));
  if constexpr (kBytes > 16) {
    StoreF<T, kN / 2>(p, v);
    StoreF<T, kN / 2>(p + kN / 2, v + kN / 2);
  } else {
    using R = typename RawVec<kBytes>::type;
    T e[kN];
#pragma unroll
    for (int i = 0; i < kN; ++i) e[i] = FromF<T>(v[i]);
    R r;
    memcpy(&r, e, kBytes);
    *reinterpret_cast<R*>(p) = r;
  }
}

// ------------------------------------------------------------- butterflies --
// In-register unnormalized Sylvester transform of v[0, kN).
template <int kN>
__device__ __forceinline__ void Sylvester(float* v) {
#pragma unroll
  for (int h = 1; h < kN; h <<= 1) {
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      if ((i & h) == 0) {
        const float a = v[i], b = v[i + h];
        v[i] = a + b;
        v[i + h] = a - b;
      }
    }
  }
}

// Shared-memory image of one length-(V*TR) segment (TR >= 4, V >= 8).
template <int kV, int kTR>
struct SegLayout {
  static constexpr int kC = kV / 8;                         // chunks per thread
  static constexpr int kSplit = kTR > kV ? kTR / kV : 1;    // threads per B combo
  static constexpr int kChunk = 8 * kTR;                    // elements per chunk
  static constexpr int kChunkStride = kChunk + 8 * kSplit;  // padded
  static constexpr int kFloats = kC * kChunkStride;
  // Segment stride ≡ TR (mod 32) when several segments share a warp.
  static constexpr int kStride =
      kTR >= 32 ? kFloats : kFloats + ((kTR - kFloats % 32) % 32 + 32) % 32;
  __device__ static int Addr(int i) { return (i / kChunk) * kChunkStride + i % kChunk; }
};

// Layout A <-> shared memory (see the file comment for the half swap).
template <int kV, int kTR>
__device__ __forceinline__ void WriteA(float* seg, int u, const float* v) {
  using L = SegLayout<kV, kTR>;
  const bool sw = (u >> 2) & 1;
#pragma unroll
  for (int c = 0; c < L::kC; ++c) {
    float* p = seg + c * L::kChunkStride + u * 8;
    const float4 lo = make_float4(v[c * 8 + 0], v[c * 8 + 1], v[c * 8 + 2], v[c * 8 + 3]);
    const float4 hi = make_float4(v[c * 8 + 4], v[c * 8 + 5], v[c * 8 + 6], v[c * 8 + 7]);
    *reinterpret_cast<float4*>(p + (sw ? 4 : 0)) = sw ? hi : lo;
    *reinterpret_cast<float4*>(p + (sw ? 0 : 4)) = sw ? lo : hi;
  }
}

template <int kV, int kTR>
__device__ __forceinline__ void ReadA(const float* seg, int u, float* v) {
  using L = SegLayout<kV, kTR>;
  const bool sw = (u >> 2) & 1;
#pragma unroll
  for (int c = 0; c < L::kC; ++c) {
    const float* p = seg + c * L::kChunkStride + u * 8;
    const float4 first = *reinterpret_cast<const float4*>(p + (sw ? 4 : 0));
    const float4 second = *reinterpret_cast<const float4*>(p + (sw ? 0 : 4));
    const float4 lo = sw ? second : first, hi = sw ? first : second;
    v[c * 8 + 0] = lo.x, v[c * 8 + 1] = lo.y, v[c * 8 + 2] = lo.z, v[c * 8 + 3] = lo.w;
    v[c * 8 + 4] = hi.x, v[c * 8 + 5] = hi.y, v[c * 8 + 6] = hi.z, v[c * 8 + 7] = hi.w;
  }
}

// Layout B: combination q = (c, e) = (q / 8, q % 8), position u of the TR.
// TR <= V: thread t holds q = t + TR*jj (jj < V/TR) at v[jj*TR + u].
// TR > V : thread t holds q = t / S, u = r*S + t % S (S = TR/V) at v[r].
template <int kV, int kTR, bool kWrite>
__device__ __forceinline__ void AccessB(float* seg, int t, float* v) {
  using L = SegLayout<kV, kTR>;
  if constexpr (L::kSplit == 1) {
#pragma unroll
    for (int jj = 0; jj < kV / kTR; ++jj) {
      const int q = t + kTR * jj;
      float* p = seg + (q / 8) * L::kChunkStride + q % 8;
#pragma unroll
      for (int u = 0; u < kTR; ++u) {
        if (kWrite)
          p[u * 8] = v[jj * kTR + u];
        else
          v[jj * kTR + u] = p[u * 8];
      }
    }
  } else {
    const int q = t / L::kSplit, h = t % L::kSplit;
    float* p = seg + (q / 8) * L::kChunkStride + q % 8 + h * 8;
#pragma unroll
    for (int r = 0; r < kV; ++r) {
      if (kWrite)
        p[r * L::kSplit * 8] = v[r];
      else
        v[r] = p[r * L::kSplit * 8];
    }
  }
}

// Butterflies over the u bits in layout B.
template <int kV, int kTR>
__device__ __forceinline__ void SylvesterB(float* v, int t) {
  using L = SegLayout<kV, kTR>;
  if constexpr (L::kSplit == 1) {
#pragma unroll
    for (int jj = 0; jj < kV / kTR; ++jj) Sylvester<kTR>(v + jj * kTR);
  } else {
    Sylvester<kV>(v);  // u bits above log2(S)
    const int h = t % L::kSplit;
#pragma unroll
    for (int m = 1; m < L::kSplit; m <<= 1) {  // low u bits: partner lanes t ^ m
      const float sign = (h & m) ? -1.f : 1.f;
#pragma unroll
      for (int r = 0; r < kV; ++r) {
        const float other = __shfl_xor_sync(0xffffffffu, v[r], m);
        v[r] = fmaf(sign, v[r], other);  // low: other + v, high: other - v
      }
    }
  }
}

template <bool kBlock>
__device__ __forceinline__ void SegSync() {
  if constexpr (kBlock)
    __syncthreads();
  else
    __syncwarp();
}

// K > 1 path (fwht_k_cuda.cu): k in kSupportedHadamardK, n = k << log2_m.
template <typename T>
cudaError_t LaunchFwhtK(const T* in, int64_t in_stride, T* out, int64_t rows, int k, int log2_m,
                        float scale, bool transpose, cudaStream_t stream);

// The same into chunks of 4 tokens (LaunchFwhtChunks) where the register
// kernel runs for n = k << log2_m (FwhtKChunksSupported), else
// cudaErrorNotSupported.
bool FwhtKChunksSupported(int k, int log2_m, int element_size);
template <typename T>
cudaError_t LaunchFwhtKChunks(const T* in, int64_t in_stride, T* out, const int32_t* z_rows,
                              int64_t positions, int k, int log2_m, float scale, bool transpose,
                              cudaStream_t stream);

}  // namespace qwha::kernels::cuda::fwht_internal
