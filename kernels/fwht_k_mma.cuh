// Compile-time ±1 sign tables (from hadamard_k.h) and the tensor-core
// primitives used by fwht_k_cuda.cu. Device code only; included by that one
// file (its __device__ tables must exist once).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernels/hadamard_k.h"

namespace qwha::kernels::cuda::fwht_internal {
namespace {

// ------------------------------------------------- compile-time ±1 tables --
constexpr const int8_t* HkData(int k) {
  for (const HadamardK& e : kHadamardKs) {
    if (e.k == k) return e.data;
  }
  return nullptr;
}

// A fragments of mma.m16n8k16 (row-major A) for tile (i, kk) and lane L hold
// A[g][2t..2t+1] (r0), A[g+8][2t..] (r1), A[g][2t+8..] (r2), A[g+8][2t+8..]
// (r3), g = L/4, t = L%4, rows c = 16i + ·, columns a = 16kk + ·; each entry is
// ±1. Entries outside K x K are free (X rows a >= K are zero and Y rows
// c >= K are dropped), so a lane's 8 entries are 8 signs: the table keeps one
// word per (tile, lane) with the signs of r_j at bits 15-j (low half) and
// 31-j (high half); r_j = one | ((w << j) & 0x80008000).
// Folding: H_K ⊗ H_M = (H_K ⊗ H_F) ⊗ H_{M/F} (Sylvester H_M = H_F ⊗ H_{M/F}),
// so a row is also [K*F, M/F] with the K' = K*F mixing matrix
// A'[c*F + d][a*F + b] = A[c][a] * (-1)^popcount(b & d). Large M runs as
// M/F <= 128 with the register kernel when K' stays small.
template <int K, int kFold>
struct SignFragTable {
  static constexpr int kMT = (K * kFold + 15) / 16;
  uint32_t w[kMT * kMT * 32];
};

template <int K, int kFold, bool kTranspose>
constexpr SignFragTable<K, kFold> MakeFragTable() {
  SignFragTable<K, kFold> t{};
  const int8_t* h = HkData(K);
  constexpr int kKF = K * kFold;
  constexpr int kMT = SignFragTable<K, kFold>::kMT;
  for (int i = 0; i < kMT; ++i) {
    for (int kk = 0; kk < kMT; ++kk) {
      for (int lane = 0; lane < 32; ++lane) {
        uint32_t w = 0;
        for (int r = 0; r < 4; ++r) {
          for (int half = 0; half < 2; ++half) {
            const int cf = i * 16 + lane / 4 + (r & 1) * 8;
            const int af = kk * 16 + 2 * (lane % 4) + half + (r & 2) * 4;
            if (cf >= kKF || af >= kKF) continue;
            const int c = cf / kFold, d = cf % kFold, a = af / kFold, b = af % kFold;
            int parity = 0;
            for (int bits = b & d; bits != 0; bits &= bits - 1) parity ^= 1;
            const bool negative = ((kTranspose ? h[c * K + a] : h[a * K + c]) < 0) != (parity != 0);
            if (negative) w |= 1u << (15 + 16 * half - r);
          }
        }
        t.w[(i * kMT + kk) * 32 + lane] = w;
      }
    }
  }
  return t;
}

template <int K>
struct SignTable {
  int8_t v[K * K];
};
template <int K>
constexpr SignTable<K> MakeSignTable() {
  SignTable<K> t{};
  for (int i = 0; i < K * K; ++i) t.v[i] = HkData(K)[i];
  return t;
}

template <int K, int kFold, bool kT>
__device__ const SignFragTable<K, kFold> kFrag = MakeFragTable<K, kFold, kT>();
template <int K>
__device__ const SignTable<K> kSign = MakeSignTable<K>();

#define QWHA_FOR_EACH_K(X) X(12) X(20) X(28) X(36) X(40) X(52) X(60) X(108) X(140) X(156) X(172)

// Fold factors with K * fold <= 128 (see MaxFold).
#define QWHA_FOR_EACH_FOLD(X) \
  X(12, 2) X(12, 4) X(12, 8) X(20, 2) X(20, 4) X(28, 2) X(28, 4) X(36, 2) X(40, 2) X(52, 2) X(60, 2)

__device__ const uint32_t* FragFor(int k, int fold, bool transpose) {
  if (fold == 1) {
#define QWHA_CASE(K) \
  case K:            \
    return transpose ? kFrag<K, 1, true>.w : kFrag<K, 1, false>.w;
    switch (k) { QWHA_FOR_EACH_K(QWHA_CASE) }
#undef QWHA_CASE
  }
#define QWHA_CASE(K, F) \
  if (k == K && fold == F) return transpose ? kFrag<K, F, true>.w : kFrag<K, F, false>.w;
  QWHA_FOR_EACH_FOLD(QWHA_CASE)
#undef QWHA_CASE
  return nullptr;
}

// Largest fold F <= max_fold with a table (K * F <= 128), 1 if none.
int MaxFold(int k, int max_fold) {
  int best = 1;
#define QWHA_CASE(K, F) \
  if (k == K && F <= max_fold && F > best) best = F;
  QWHA_FOR_EACH_FOLD(QWHA_CASE)
#undef QWHA_CASE
  return best;
}

__device__ const int8_t* SignsFor(int k) {
#define QWHA_CASE(K) \
  case K:            \
    return kSign<K>.v;
  switch (k) { QWHA_FOR_EACH_K(QWHA_CASE) }
#undef QWHA_CASE
  return nullptr;
}

bool IsSupportedK(int k) {
#define QWHA_CASE(K) || k == K
  return false QWHA_FOR_EACH_K(QWHA_CASE);
#undef QWHA_CASE
}

// ------------------------------------------------------------- primitives --
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&d)[4], const void* smem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(s));
}

// d += A·B, m16n8k16, float32 accumulators; kHalf: fp16 operands, else bf16.
template <bool kHalf>
__device__ __forceinline__ void Mma(float (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  if constexpr (kHalf) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
  uint32_t w;
  memcpy(&w, &p, 4);
  return w;
}

// x = hi + mid + lo, each bf16 (the float32 split of the file comment).
__device__ __forceinline__ void Split3(float x, float (&part)[3]) {
  part[0] = __bfloat162float(__float2bfloat16_rn(x));
  const float r = x - part[0];
  part[1] = __bfloat162float(__float2bfloat16_rn(r));
  part[2] = r - part[1];
}

}  // namespace
}  // namespace qwha::kernels::cuda::fwht_internal
