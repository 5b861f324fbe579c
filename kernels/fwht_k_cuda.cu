// CUDA FWHT for n = K·M, K in kSupportedHadamardK, M = 2^m (no LibTorch).
// y = scale * x · (H_K ⊗ H_M): viewing a row as X[a][b] (a < K, b < M),
//   y[c][d] = scale * Σ_b H_M[b][d] Σ_a A[c][a] X[a][b],
// A[c][a] = H_K[a][c] (H_K[c][a] in transpose mode).
//
// FwhtKMmaKernel (M >= 16), one row per block, one pass over memory:
//   1. cp.async the row into shared memory as X[a][b] (rows K..Kp-1 zeroed,
//      Kp = K rounded up to 16; rows padded by 16 bytes: ldmatrix is then free
//      of bank conflicts).
//   2. the K-mix Y = A X on the tensor cores (mma.m16n8k16, float32
//      accumulators). A fragments are ±1/0 constants from a table built at
//      compile time from hadamard_k.h; B fragments come from ldmatrix.trans.
//      bf16/fp16 inputs are exact mma operands; a float32 input is split into
//      three bf16 terms (hi + mid + lo carry its 24 mantissa bits). Mixing
//      before the FWHT keeps every rounding in float32.
//      Warp (wm, wg) owns m-tiles [wm*MTW, wm*MTW + MTW) and column groups
//      [wg*GW, wg*GW + GW) of 16 columns; its accumulators stay in registers
//      until every warp has read X, then Y overwrites X in shared memory.
//   3. each Y row (a length-M segment) gets a Sylvester FWHT through the
//      layouts B then A of fwht_cuda_common.cuh (warp-local), then scale and
//      16-byte stores.
// FwhtKSmallKernel (M < 16, n <= 1376): direct float32 sums from shared memory.
#include <algorithm>
#include <type_traits>

#include "kernels/fwht_cuda_common.cuh"
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

struct alignas(16) Frag {
  uint32_t r[4];
};

template <int K>
struct FragTable {
  static constexpr int kMT = (K + 15) / 16;
  Frag f[kMT * kMT * 32];
};

// A fragments of mma.m16n8k16 (row-major A) for tile (i, kk), lane L, as bf16
// pairs: r0 = A[g][2t..2t+1], r1 = A[g+8][2t..], r2 = A[g][2t+8..], r3 =
// A[g+8][2t+8..] with g = L/4, t = L%4, rows c = 16i + ·, columns a = 16kk + ·.
template <int K, bool kTranspose>
constexpr FragTable<K> MakeFragTable() {
  FragTable<K> t{};
  const int8_t* h = HkData(K);
  constexpr int kMT = FragTable<K>::kMT;
  for (int i = 0; i < kMT; ++i) {
    for (int kk = 0; kk < kMT; ++kk) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int r = 0; r < 4; ++r) {
          uint32_t w = 0;
          for (int half = 0; half < 2; ++half) {
            const int c = i * 16 + lane / 4 + (r & 1) * 8;
            const int a = kk * 16 + 2 * (lane % 4) + half + (r & 2) * 4;
            uint32_t bits = 0;
            if (c < K && a < K) {
              const int s = kTranspose ? h[c * K + a] : h[a * K + c];
              bits = s > 0 ? 0x3F80u : 0xBF80u;  // bf16 ±1
            }
            w |= bits << (16 * half);
          }
          t.f[(i * kMT + kk) * 32 + lane].r[r] = w;
        }
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

template <int K, bool kT>
__device__ const FragTable<K> kFrag = MakeFragTable<K, kT>();
template <int K>
__device__ const SignTable<K> kSign = MakeSignTable<K>();

#define QWHA_FOR_EACH_K(X) X(12) X(20) X(28) X(36) X(40) X(52) X(60) X(108) X(140) X(156) X(172)

__device__ const Frag* FragFor(int k, bool transpose) {
#define QWHA_CASE(K) \
  case K:            \
    return transpose ? kFrag<K, true>.f : kFrag<K, false>.f;
  switch (k) { QWHA_FOR_EACH_K(QWHA_CASE) }
#undef QWHA_CASE
  return nullptr;
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

// ------------------------------------------------------------ mma kernel --
// Segment FWHT configuration for length M (step 3): TR threads of V values.
// TR is 1 (M <= 32), 8 or 32: with Y rows ≡ 8 floats (mod 32 banks) apart,
// both the accumulator stores of step 2 and layouts A/B are conflict-free.
constexpr int SegThreads(int log_m) { return log_m <= 5 ? 1 : (log_m <= 8 ? 8 : 32); }

template <int kLogM>
struct SegConfig {
  static constexpr int kM = 1 << kLogM;
  static constexpr int kTR = SegThreads(kLogM);
  static constexpr int kV = kM / kTR;
  static constexpr int kFloats = kTR == 1 ? kM : SegLayout<kV, kTR>::kFloats;
  static constexpr int kStride = kTR == 1 ? kM + 4 : kFloats + ((8 - kFloats % 32) % 32 + 32) % 32;
  __device__ static int Addr(int b) { return kTR == 1 ? b : SegLayout<kV, kTR>::Addr(b); }
};

template <typename T, int kLogM, int kMTW, int kGW>
__global__ void __launch_bounds__(512)
    FwhtKMmaKernel(const T* __restrict__ in, int64_t in_stride, T* __restrict__ out, int k,
                   bool transpose, float scale) {
  constexpr int kM = 1 << kLogM;
  constexpr bool kF32 = sizeof(T) == 4;
  constexpr bool kHalf = std::is_same_v<T, __half>;
  constexpr int kSX = kM + (kF32 ? 4 : 8);  // X row stride, elements
  constexpr int kVec = 16 / sizeof(T);      // elements per 16-byte copy
  using Seg = SegConfig<kLogM>;
  extern __shared__ float4 smem4[];
  T* xs = reinterpret_cast<T*>(smem4);
  float* ys = reinterpret_cast<float*>(smem4);
  const int mt = (k + 15) / 16;
  const int n = k * kM;
  const T* src = in + static_cast<int64_t>(blockIdx.x) * in_stride;
  T* dst = out + static_cast<int64_t>(blockIdx.x) * n;

  // 1. Row -> X (async, all copies in flight), zero rows k..16*mt-1.
  for (int f = threadIdx.x; f < n / kVec; f += blockDim.x) {
    const int a = f / (kM / kVec), b = (f % (kM / kVec)) * kVec;
    CpAsync16(xs + a * kSX + b, src + f * kVec);
  }
  asm volatile("cp.async.commit_group;\n" ::);
  for (int f = threadIdx.x; f < (16 * mt - k) * kSX / kVec; f += blockDim.x) {
    reinterpret_cast<uint4*>(xs + k * kSX)[f] = make_uint4(0, 0, 0, 0);
  }
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();

  // 2. K-mix on the tensor cores.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wms = (mt + kMTW - 1) / kMTW;
  const int wm = warp % wms, wg = warp / wms;
  const Frag* table = FragFor(k, transpose);
  float acc[kMTW][kGW][2][4];
#pragma unroll
  for (int im = 0; im < kMTW; ++im)
#pragma unroll
    for (int g = 0; g < kGW; ++g)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[im][g][j / 4][j % 4] = 0.f;
  for (int kk = 0; kk < mt; ++kk) {
    // B fragments: [g][n-tile][part][2] (part: the three bf16 terms for float32).
    uint32_t bf[kGW][2][kF32 ? 3 : 1][2];
#pragma unroll
    for (int g = 0; g < kGW; ++g) {
      const int col = (wg * kGW + g) * 16;
      if constexpr (!kF32) {
        uint32_t d[4];
        LdMatrixX4Trans(d, xs + (kk * 16 + (lane & 15)) * kSX + col + (lane >> 4) * 8);
        bf[g][0][0][0] = d[0], bf[g][0][0][1] = d[1], bf[g][1][0][0] = d[2], bf[g][1][0][1] = d[3];
      } else {
        const float* x = reinterpret_cast<const float*>(xs);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const int b = col + nt * 8 + lane / 4, a = kk * 16 + 2 * (lane % 4);
          float p[4][3];
          Split3(x[a * kSX + b], p[0]);
          Split3(x[(a + 1) * kSX + b], p[1]);
          Split3(x[(a + 8) * kSX + b], p[2]);
          Split3(x[(a + 9) * kSX + b], p[3]);
#pragma unroll
          for (int part = 0; part < 3; ++part) {
            bf[g][nt][part][0] = PackBf16(p[0][part], p[1][part]);
            bf[g][nt][part][1] = PackBf16(p[2][part], p[3][part]);
          }
        }
      }
    }
#pragma unroll
    for (int im = 0; im < kMTW; ++im) {
      const int i = wm * kMTW + im;
      if (i >= mt) break;
      uint4 a = __ldg(reinterpret_cast<const uint4*>(&table[(i * mt + kk) * 32 + lane]));
      if constexpr (kHalf) {  // bf16 ±1 (0x3F80) -> fp16 ±1 (0x3C00); 0 stays 0
        a.x &= 0xBC00BC00u, a.y &= 0xBC00BC00u, a.z &= 0xBC00BC00u, a.w &= 0xBC00BC00u;
      }
#pragma unroll
      for (int g = 0; g < kGW; ++g)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int part = 0; part < (kF32 ? 3 : 1); ++part)
            Mma<kHalf>(acc[im][g][nt], a, bf[g][nt][part][0], bf[g][nt][part][1]);
    }
  }
  __syncthreads();  // every warp is done with X; Y overwrites it

#pragma unroll
  for (int im = 0; im < kMTW; ++im) {
    const int i = wm * kMTW + im;
    if (i >= mt) break;
#pragma unroll
    for (int g = 0; g < kGW; ++g)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int c = i * 16 + lane / 4;
        const int b = (wg * kGW + g) * 16 + nt * 8 + 2 * (lane % 4);
        const float* d = acc[im][g][nt];
        if (c < k) *reinterpret_cast<float2*>(ys + c * Seg::kStride + Seg::Addr(b)) = {d[0], d[1]};
        if (c + 8 < k) {
          *reinterpret_cast<float2*>(ys + (c + 8) * Seg::kStride + Seg::Addr(b)) = {d[2], d[3]};
        }
      }
  }
  __syncthreads();

  // 3. Length-M FWHT of every Y row, TR threads per row (warp-local).
  constexpr int kTR = Seg::kTR, kV = Seg::kV;
  const int per_pass = blockDim.x / kTR;
  const int u = threadIdx.x % kTR;
  for (int s0 = 0; s0 < k; s0 += per_pass) {
    const int s = s0 + threadIdx.x / kTR;
    const bool active = s < k;
    float* seg = ys + s * Seg::kStride;
    float v[kV];
    if constexpr (kTR > 1) {
      if (active) {
        AccessB<kV, kTR, false>(seg, u, v);
        SylvesterB<kV, kTR>(v, u);
        AccessB<kV, kTR, true>(seg, u, v);
      }
      __syncwarp();
      if (active) ReadA<kV, kTR>(seg, u, v);
    } else if (active) {
#pragma unroll
      for (int j = 0; j < kV; j += 4) {
        const float4 q = *reinterpret_cast<const float4*>(seg + j);
        v[j] = q.x, v[j + 1] = q.y, v[j + 2] = q.z, v[j + 3] = q.w;
      }
    }
    if (active) {
      Sylvester<kV>(v);
#pragma unroll
      for (int j = 0; j < kV; ++j) v[j] *= scale;
      T* o = dst + s * kM;
      if constexpr (kTR > 1) {
#pragma unroll
        for (int c = 0; c < kV / 8; ++c) StoreF<T, 8>(o + c * 8 * kTR + u * 8, v + c * 8);
      } else {
        StoreF<T, kV>(o, v);
      }
    }
  }
}

// Warp tiling per m-tile count: m-tiles per warp and 16-column groups per warp
// (accumulators per thread = 8 * MTW * GW <= 64).
constexpr int MtwFor(int mt) { return (mt + (mt + 3) / 4 - 1) / ((mt + 3) / 4); }
constexpr int GwFor(int mtw) { return mtw == 1 ? 8 : (mtw == 2 ? 4 : 2); }

template <typename T, int kLogM, int kMTW>
cudaError_t LaunchMma(const T* in, int64_t s, T* out, int64_t rows, int k, bool tr, float scale,
                      cudaStream_t st) {
  constexpr int kM = 1 << kLogM;
  constexpr int kGW = std::min(GwFor(kMTW), kM / 16);
  const int mt = (k + 15) / 16;
  const int threads = 32 * ((mt + kMTW - 1) / kMTW) * (kM / 16 / kGW);
  const int x_bytes = 16 * mt * (kM + (sizeof(T) == 4 ? 4 : 8)) * static_cast<int>(sizeof(T));
  const int y_bytes = k * SegConfig<kLogM>::kStride * 4;
  const int smem = std::max(x_bytes, y_bytes);
  auto kernel = FwhtKMmaKernel<T, kLogM, kMTW, kGW>;
  if (threads > 512 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
  }
  kernel<<<static_cast<unsigned>(rows), threads, smem, st>>>(in, s, out, k, tr, scale);
  return cudaGetLastError();
}

template <typename T, int kLogM>
cudaError_t LaunchMmaForM(const T* in, int64_t s, T* out, int64_t rows, int k, bool tr,
                          float scale, cudaStream_t st) {
  switch (MtwFor((k + 15) / 16)) {
    case 1: return LaunchMma<T, kLogM, 1>(in, s, out, rows, k, tr, scale, st);
    case 2: return LaunchMma<T, kLogM, 2>(in, s, out, rows, k, tr, scale, st);
    case 3: return LaunchMma<T, kLogM, 3>(in, s, out, rows, k, tr, scale, st);
    case 4: return LaunchMma<T, kLogM, 4>(in, s, out, rows, k, tr, scale, st);
    default: return cudaErrorInvalidValue;
  }
}

// ----------------------------------------------------------- small M < 16 --
template <typename T>
__global__ void __launch_bounds__(128)
    FwhtKSmallKernel(const T* __restrict__ in, int64_t in_stride, T* __restrict__ out, int k,
                     int m, bool transpose, float scale) {
  extern __shared__ float4 smem4[];
  float* x = reinterpret_cast<float*>(smem4);
  float* z = x + k * m;
  const int n = k * m;
  const T* src = in + static_cast<int64_t>(blockIdx.x) * in_stride;
  T* dst = out + static_cast<int64_t>(blockIdx.x) * n;
  const int8_t* h = SignsFor(k);
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = ToF(src[i]);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {  // z[a][d] = Σ_b H_M[b][d] x[a][b]
    const int a = i / m, d = i % m;
    float acc = 0.f;
    for (int b = 0; b < m; ++b) acc += (__popc(b & d) & 1) ? -x[a * m + b] : x[a * m + b];
    z[i] = acc;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {  // y[c][d] = Σ_a A[c][a] z[a][d]
    const int c = i / m, d = i % m;
    float acc = 0.f;
    for (int a = 0; a < k; ++a) {
      const int sgn = transpose ? h[c * k + a] : h[a * k + c];
      acc += sgn > 0 ? z[a * m + d] : -z[a * m + d];
    }
    dst[i] = FromF<T>(acc * scale);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchFwhtK(const T* in, int64_t s, T* out, int64_t rows, int k, int log2_m,
                        float scale, bool tr, cudaStream_t st) {
  if (!IsSupportedK(k) || (static_cast<int64_t>(k) << log2_m) > 32768) {
    return cudaErrorInvalidValue;
  }
  if (rows > 0x7fffffff) return cudaErrorInvalidValue;
  switch (log2_m) {
    case 4: return LaunchMmaForM<T, 4>(in, s, out, rows, k, tr, scale, st);
    case 5: return LaunchMmaForM<T, 5>(in, s, out, rows, k, tr, scale, st);
    case 6: return LaunchMmaForM<T, 6>(in, s, out, rows, k, tr, scale, st);
    case 7: return LaunchMmaForM<T, 7>(in, s, out, rows, k, tr, scale, st);
    case 8: return LaunchMmaForM<T, 8>(in, s, out, rows, k, tr, scale, st);
    case 9: return LaunchMmaForM<T, 9>(in, s, out, rows, k, tr, scale, st);
    case 10: return LaunchMmaForM<T, 10>(in, s, out, rows, k, tr, scale, st);
    case 11: return LaunchMmaForM<T, 11>(in, s, out, rows, k, tr, scale, st);
    default: break;
  }
  if (log2_m > 3) return cudaErrorInvalidValue;
  const int m = 1 << log2_m;
  FwhtKSmallKernel<T><<<static_cast<unsigned>(rows), 128, 2 * k * m * 4, st>>>(in, s, out, k, m,
                                                                              tr, scale);
  return cudaGetLastError();
}

template cudaError_t LaunchFwhtK<float>(const float*, int64_t, float*, int64_t, int, int, float,
                                        bool, cudaStream_t);
template cudaError_t LaunchFwhtK<__nv_bfloat16>(const __nv_bfloat16*, int64_t, __nv_bfloat16*,
                                                int64_t, int, int, float, bool, cudaStream_t);
template cudaError_t LaunchFwhtK<__half>(const __half*, int64_t, __half*, int64_t, int, int,
                                         float, bool, cudaStream_t);

}  // namespace qwha::kernels::cuda::fwht_internal
