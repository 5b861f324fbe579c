// CUDA FWHT for n = K·M, K in kSupportedHadamardK, M = 2^m (no LibTorch).
// y = scale * x · (H_K ⊗ H_M): viewing a row as X[a][b] (a < K, b < M),
//   y[c][d] = scale * Σ_b H_M[b][d] Σ_a A[c][a] X[a][b],
// A[c][a] = H_K[a][c] (H_K[c][a] in transpose mode). One row per block, one
// pass over memory. The K-mix runs on the tensor cores (mma.m16n8k16, float32
// accumulators): A fragments are ±1 sign words (fwht_k_mma.cuh), B fragments
// come from the row in shared memory. bf16/fp16 inputs are exact mma
// operands; a float32 input is split into three bf16 terms (hi + mid + lo
// carry its 24 mantissa bits). Mixing before the FWHT keeps every rounding in
// float32. Step 1 of every kernel: cp.async the row into shared memory as
// X[a][b] (rows K..Kp-1 zeroed, Kp = K rounded up to 16; rows padded by 16
// bytes so that ldmatrix is free of bank conflicts).
//
// FwhtKRegKernel (16 <= M <= 128, and larger M folded to M' = 128: H_M =
// H_F ⊗ H_{M/F}, so the row is [K*F, M/F] with the mixing matrix H_K ⊗ H_F,
// used while K*F <= 128): a warp computes a 16 x M tile of Y = A X and runs
// the length-M FWHT on its accumulators (in-thread bits and two shuffle
// stages), then stores. No intermediate buffer, one barrier. With few rows
// (decode steps) a row's tiles are spread over several blocks.
// FwhtKMmaKernel (M >= 256 that does not fold): warps own m-tile x column
// blocks; Y goes to shared memory in float32 and every Y row gets a length-M
// FWHT through layouts B then A of fwht_cuda_common.cuh. Slower (about half
// of copy bandwidth); only 24576 = 12·2048, 18432 = 36·512 and the like.
// FwhtKSmallKernel (M < 16, n <= 1376): direct float32 sums.
#include <algorithm>
#include <atomic>
#include <type_traits>

#include "kernels/fwht_cuda_common.cuh"
#include "kernels/fwht_k_mma.cuh"

namespace qwha::kernels::cuda::fwht_internal {
namespace {

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
  // (no folding here: k is the K of hadamard_k.h)
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
  const uint32_t* table = FragFor(k, 1, transpose);
  constexpr uint32_t kOne = kHalf ? 0x3C003C00u : 0x3F803F80u;  // ±1 pairs
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
      const uint32_t w = __ldg(&table[(i * mt + kk) * 32 + lane]);
      const uint4 a = make_uint4(kOne | (w & 0x80008000u), kOne | ((w << 1) & 0x80008000u),
                                 kOne | ((w << 2) & 0x80008000u), kOne | ((w << 3) & 0x80008000u));
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

// k-steps of 16 rows of the largest K (172): the register kernel's rows
// (K·fold <= 128 when folded) never have more.
constexpr int kMaxKTiles = 11;
#define QWHA_CHECK_K(K) static_assert((K) <= 16 * kMaxKTiles, "kMaxKTiles must cover every K");
QWHA_FOR_EACH_K(QWHA_CHECK_K)
#undef QWHA_CHECK_K

// M <= 128: warp w takes m-tiles w, w + W, ...; for each it accumulates the
// 16 x M tile of Y over all k-steps (acc[group][n-tile][4]: rows g, g+8,
// columns 16*group + 8*nt + 2t + {0,1}), then runs the length-M FWHT on the
// accumulators: column bits 0, 3, 4.. are in-thread, bits 1-2 are lanes t
// (shuffles). No Y buffer and no barrier after the row is loaded.
//
// kChunks (2-byte types; LaunchFwhtKChunks): block (c, i) makes m-tile i of
// chunk c's 4 tokens, warp t the transform of input row z_rows[4c + t] (zeros
// for -1), each token's row in shared memory of its own; the 4 tokens' tiles
// meet in shared memory and leave as [16 rows · M columns][4 tokens] pieces
// of 16 bytes at out[c · 4n + 4 · column + token] (kernels::ChunkRows's layout).
template <typename T, int kLogM, bool kChunks = false>
__global__ void __launch_bounds__(128)
    FwhtKRegKernel(const T* __restrict__ in, int64_t in_stride, T* __restrict__ out, int k_orig,
                   int fold, bool transpose, float scale, const int32_t* __restrict__ z_rows) {
  const int k = k_orig * fold;  // rows of the (folded) [k, M] view
  constexpr int kM = 1 << kLogM;
  constexpr int kNG = kM / 16;  // 16-column groups
  constexpr bool kF32 = sizeof(T) == 4;
  constexpr bool kHalf = std::is_same_v<T, __half>;
  constexpr int kSX = kM + (kF32 ? 4 : 8);
  constexpr int kVec = 16 / sizeof(T);
  constexpr uint32_t kOne = kHalf ? 0x3C003C00u : 0x3F803F80u;
  constexpr int kTS = kM * 4 + 8;  // kChunks: elements per row of the output tile
  extern __shared__ float4 smem4[];
  T* xs = reinterpret_cast<T*>(smem4);
  const int mt = (k + 15) / 16;
  const int n = k * kM;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  T* dst = out + static_cast<int64_t>(blockIdx.x) * n;
  bool zero = false;  // kChunks: this warp's token is a padding position
  if constexpr (kChunks) {
    static_assert(!kF32, "chunks of 2-byte types only");
    // Each token's row [16 · mt, kSX], then the output tile [16, kM, 4].
    const int row_elems = 16 * mt * kSX;
    for (int t = 0; t < 4; ++t) {
      const int32_t row = __ldg(z_rows + 4 * blockIdx.x + t);
      if (t == warp) zero = row < 0;
      if (row < 0) continue;
      const T* src = in + static_cast<int64_t>(row) * in_stride;
      for (int f = threadIdx.x; f < n / kVec; f += blockDim.x) {
        CpAsync16(xs + t * row_elems + (f / (kM / kVec)) * kSX + (f % (kM / kVec)) * kVec,
                  src + f * kVec);
      }
    }
    xs += warp * row_elems;  // from here on, the warp's token
  } else {
    const T* src = in + static_cast<int64_t>(blockIdx.x) * in_stride;
    for (int f = threadIdx.x; f < n / kVec; f += blockDim.x) {
      CpAsync16(xs + (f / (kM / kVec)) * kSX + (f % (kM / kVec)) * kVec, src + f * kVec);
    }
  }
  asm volatile("cp.async.commit_group;\n" ::);
  const int g = lane / 4, t = lane % 4;
  const uint32_t* table = FragFor(k_orig, fold, transpose);
  // The row's m-tiles are split over the gridDim.y blocks of the row (with
  // kChunks, block y makes m-tile y, every warp for its token).
  const int warps = kChunks ? 1 : blockDim.x / 32;
  // The sign words of the warp's m-tile, all requested at once (while the
  // row is in flight): one load per k-step, each waited on in turn, cost
  // ~2 us of a 32-row decode step's 6 at K = 172.
  uint32_t wt[kMaxKTiles];
  auto load_signs = [&](int i) {
#pragma unroll
    for (int kk = 0; kk < kMaxKTiles; ++kk) {
      wt[kk] = kk < mt ? __ldg(&table[(i * mt + kk) * 32 + lane]) : 0u;
    }
  };
  int i = (kChunks ? 0 : warp) + static_cast<int>(blockIdx.y) * warps;
  if (i < mt) load_signs(i);
  if constexpr (kChunks) {  // each warp zeroes its row's padding rows
    for (int f = lane; f < (16 * mt - k) * kSX / kVec; f += 32) {
      reinterpret_cast<uint4*>(xs + k * kSX)[f] = make_uint4(0, 0, 0, 0);
    }
  } else {
    for (int f = threadIdx.x; f < (16 * mt - k) * kSX / kVec; f += blockDim.x) {
      reinterpret_cast<uint4*>(xs + k * kSX)[f] = make_uint4(0, 0, 0, 0);
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();

  for (; i < mt; i += warps * static_cast<int>(gridDim.y)) {
    if (i != (kChunks ? 0 : warp) + static_cast<int>(blockIdx.y) * warps) load_signs(i);
    float acc[kNG][2][4];
#pragma unroll
    for (int grp = 0; grp < kNG; ++grp)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[grp][j / 4][j % 4] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kMaxKTiles; ++kk) {
      if (kk >= mt) break;
      const uint32_t w = wt[kk];
      const uint4 a = make_uint4(kOne | (w & 0x80008000u), kOne | ((w << 1) & 0x80008000u),
                                 kOne | ((w << 2) & 0x80008000u), kOne | ((w << 3) & 0x80008000u));
#pragma unroll
      for (int grp = 0; grp < kNG; ++grp) {
        if constexpr (!kF32) {
          uint32_t d[4];
          LdMatrixX4Trans(d, xs + (kk * 16 + (lane & 15)) * kSX + grp * 16 + (lane >> 4) * 8);
          Mma<kHalf>(acc[grp][0], a, d[0], d[1]);
          Mma<kHalf>(acc[grp][1], a, d[2], d[3]);
        } else {
          const float* x = reinterpret_cast<const float*>(xs);
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) {
            const int b = grp * 16 + nt * 8 + g, ar = kk * 16 + 2 * t;
            float p[4][3];
            Split3(x[ar * kSX + b], p[0]);
            Split3(x[(ar + 1) * kSX + b], p[1]);
            Split3(x[(ar + 8) * kSX + b], p[2]);
            Split3(x[(ar + 9) * kSX + b], p[3]);
#pragma unroll
            for (int part = 0; part < 3; ++part) {
              Mma<false>(acc[grp][nt], a, PackBf16(p[0][part], p[1][part]),
                         PackBf16(p[2][part], p[3][part]));
            }
          }
        }
      }
    }
    // Length-M FWHT of rows g and g+8 (half h): in-thread index
    // j = p + 2*nt + 4*grp covers column bits 0, 3, 4, ..; lanes t bits 1, 2.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float v[4 * kNG];
#pragma unroll
      for (int j = 0; j < 4 * kNG; ++j) v[j] = acc[j / 4][(j / 2) % 2][2 * h + j % 2];
      Sylvester<4 * kNG>(v);
#pragma unroll
      for (int m = 1; m <= 2; m <<= 1) {
        const float sign = (t & m) ? -1.f : 1.f;
#pragma unroll
        for (int j = 0; j < 4 * kNG; ++j) {
          const float other = __shfl_xor_sync(0xffffffffu, v[j], m);
          v[j] = fmaf(sign, v[j], other);
        }
      }
      const int c = i * 16 + g + 8 * h;
      if constexpr (kChunks) {
        // Into the tile: [row g + 8h][column][token], rows kTS apart (16 bytes
        // more than a row's kM · 4: the 8 rows g of a store in different banks).
        T* tile = reinterpret_cast<T*>(smem4) + 4 * 16 * mt * kSX + (g + 8 * h) * kTS + warp;
#pragma unroll
        for (int j = 0; j < 4 * kNG; ++j) {
          const int col = (j / 4) * 16 + ((j / 2) % 2) * 8 + 2 * t + j % 2;
          tile[col * 4] = FromF<T>(zero ? 0.f : v[j] * scale);
        }
      } else if (c < k) {
        T* o = dst + c * kM + 2 * t;
#pragma unroll
        for (int j = 0; j < 4 * kNG; j += 2) {
          const float pair[2] = {v[j] * scale, v[j + 1] * scale};
          StoreF<T, 2>(o + (j / 4) * 16 + ((j / 2) % 2) * 8, pair);
        }
      }
    }
  }
  if constexpr (kChunks) {
    // The m-tile's rows 16·y .. of the chunk: 16 · kM · 4 contiguous elements.
    __syncthreads();
    const int tile_i = static_cast<int>(blockIdx.y);
    const int rows = min(16, k - tile_i * 16);
    const T* tile = reinterpret_cast<const T*>(smem4) + 4 * 16 * mt * kSX;
    uint4* o = reinterpret_cast<uint4*>(out + static_cast<int64_t>(blockIdx.x) * 4 * n +
                                        static_cast<int64_t>(tile_i) * 16 * kM * 4);
    constexpr int kPieces = kM * 4 / kVec;  // 16-byte pieces of a tile row
    for (int f = threadIdx.x; f < rows * kPieces; f += blockDim.x) {
      o[f] = *reinterpret_cast<const uint4*>(tile + (f / kPieces) * kTS + (f % kPieces) * kVec);
    }
  }
}

template <typename T, int kLogM>
cudaError_t LaunchReg(const T* in, int64_t s, T* out, int64_t rows, int k_orig, int fold, bool tr,
                      float scale, cudaStream_t st, const int32_t* z_rows = nullptr) {
  constexpr int kM = 1 << kLogM;
  const int k = k_orig * fold;
  const int mt = (k + 15) / 16;
  const int threads = 32 * std::min(mt, 4);
  const int smem = 16 * mt * (kM + (sizeof(T) == 4 ? 4 : 8)) * static_cast<int>(sizeof(T));
  auto kernel = FwhtKRegKernel<T, kLogM>;
  if (rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
  }
  // Few rows (decode steps): a row's m-tiles go to several blocks, one per
  // warp each, each block loading the whole row (qwha-serve-bench on an H100,
  // n = 11008 = 172 · 64, 32 rows: 8.3 us as 32 blocks of 11 m-tiles, 4.2 us
  // as 96 blocks).
  const int splits = rows < 128 ? (mt + threads / 32 - 1) / (threads / 32) : 1;
  if constexpr (sizeof(T) == 2) {
    if (z_rows != nullptr) {
      // Chunks of 4 tokens (rows = 4 · chunks positions): one block per chunk
      // and m-tile, 4 warps (one per token), the 4 rows and the tile.
      auto chunk_kernel = FwhtKRegKernel<T, kLogM, true>;
      const int chunk_smem = 4 * smem + 16 * (kM * 4 + 8) * static_cast<int>(sizeof(T));
      static std::atomic<int> raised{0};
      if (chunk_smem > 48 * 1024 && raised.load(std::memory_order_relaxed) < chunk_smem) {
        const cudaError_t err = cudaFuncSetAttribute(
            chunk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, chunk_smem);
        if (err != cudaSuccess) return err;
        raised.store(chunk_smem, std::memory_order_relaxed);
      }
      chunk_kernel<<<dim3(static_cast<unsigned>(rows / 4), static_cast<unsigned>(mt)), 128,
                     chunk_smem, st>>>(in, s, out, k_orig, fold, tr, scale, z_rows);
      return cudaGetLastError();
    }
  }
  if (z_rows != nullptr) return cudaErrorNotSupported;
  kernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(splits)), threads, smem, st>>>(
      in, s, out, k_orig, fold, tr, scale, nullptr);
  return cudaGetLastError();
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
cudaError_t LaunchMmaForM(const T* in, int64_t s, T* out, int64_t rows, int k, bool tr, float scale,
                          cudaStream_t st) {
  switch (MtwFor((k + 15) / 16)) {
    case 1:
      return LaunchMma<T, kLogM, 1>(in, s, out, rows, k, tr, scale, st);
    case 2:
      return LaunchMma<T, kLogM, 2>(in, s, out, rows, k, tr, scale, st);
    case 3:
      return LaunchMma<T, kLogM, 3>(in, s, out, rows, k, tr, scale, st);
    case 4:
      return LaunchMma<T, kLogM, 4>(in, s, out, rows, k, tr, scale, st);
    default:
      return cudaErrorInvalidValue;
  }
}

// ----------------------------------------------------------- small M < 16 --
template <typename T>
__global__ void __launch_bounds__(128)
    FwhtKSmallKernel(const T* __restrict__ in, int64_t in_stride, T* __restrict__ out, int k, int m,
                     bool transpose, float scale) {
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
  // M >= 256 folds into M' = 128 when a table exists (K' = K * M / 128 <= 128).
  const int fold = log2_m > 7 ? MaxFold(k, 1 << (log2_m - 7)) : 1;
  if (fold > 1 && (fold << 7) == (1 << log2_m)) {
    return LaunchReg<T, 7>(in, s, out, rows, k, fold, tr, scale, st);
  }
  switch (log2_m) {
    case 4:
      return LaunchReg<T, 4>(in, s, out, rows, k, 1, tr, scale, st);
    case 5:
      return LaunchReg<T, 5>(in, s, out, rows, k, 1, tr, scale, st);
    case 6:
      return LaunchReg<T, 6>(in, s, out, rows, k, 1, tr, scale, st);
    case 7:
      return LaunchReg<T, 7>(in, s, out, rows, k, 1, tr, scale, st);
    case 8:
      return LaunchMmaForM<T, 8>(in, s, out, rows, k, tr, scale, st);
    case 9:
      return LaunchMmaForM<T, 9>(in, s, out, rows, k, tr, scale, st);
    case 10:
      return LaunchMmaForM<T, 10>(in, s, out, rows, k, tr, scale, st);
    case 11:
      return LaunchMmaForM<T, 11>(in, s, out, rows, k, tr, scale, st);
    default:
      break;
  }
  if (log2_m > 3) return cudaErrorInvalidValue;
  const int m = 1 << log2_m;
  FwhtKSmallKernel<T>
      <<<static_cast<unsigned>(rows), 128, 2 * k * m * 4, st>>>(in, s, out, k, m, tr, scale);
  return cudaGetLastError();
}

bool FwhtKChunksSupported(int k, int log2_m, int element_size) {
  if (element_size != 2 || !IsSupportedK(k) || (static_cast<int64_t>(k) << log2_m) > 32768) {
    return false;
  }
  int fold = 1, log_m = log2_m;
  if (log2_m > 7) {
    fold = MaxFold(k, 1 << (log2_m - 7));
    if ((fold << 7) != (1 << log2_m)) return false;
    log_m = 7;
  } else if (log2_m < 4) {
    return false;
  }
  // The 4 rows and the tile in shared memory (the device's opt-in limit).
  const int m = 1 << log_m, mt = (k * fold + 15) / 16;
  const int smem = 4 * 16 * mt * (m + 8) * element_size + 16 * (m * 4 + 8) * element_size;
  // The current device's opt-in limit, queried once per device (this runs
  // before every launch).
  static std::atomic<int> limits[16] = {};
  int device = 0, limit = 48 * 1024;
  if (cudaGetDevice(&device) == cudaSuccess) {
    if (device < 16 && limits[device].load(std::memory_order_relaxed) > 0) {
      limit = limits[device].load(std::memory_order_relaxed);
    } else if (cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) ==
                   cudaSuccess &&
               device < 16) {
      limits[device].store(limit, std::memory_order_relaxed);
    }
  }
  return smem <= limit;
}

template <typename T>
cudaError_t LaunchFwhtKChunks(const T* in, int64_t s, T* out, const int32_t* z_rows,
                              int64_t positions, int k, int log2_m, float scale, bool tr,
                              cudaStream_t st) {
  if (!FwhtKChunksSupported(k, log2_m, sizeof(T))) return cudaErrorNotSupported;
  if (positions % 4 != 0 || z_rows == nullptr) return cudaErrorInvalidValue;
  switch (log2_m) {
    case 4:
      return LaunchReg<T, 4>(in, s, out, positions, k, 1, tr, scale, st, z_rows);
    case 5:
      return LaunchReg<T, 5>(in, s, out, positions, k, 1, tr, scale, st, z_rows);
    case 6:
      return LaunchReg<T, 6>(in, s, out, positions, k, 1, tr, scale, st, z_rows);
    case 7:
      return LaunchReg<T, 7>(in, s, out, positions, k, 1, tr, scale, st, z_rows);
    default:  // folded into M' = 128
      return LaunchReg<T, 7>(in, s, out, positions, k, (1 << log2_m) >> 7, tr, scale, st, z_rows);
  }
}

template cudaError_t LaunchFwhtKChunks<float>(const float*, int64_t, float*, const int32_t*,
                                              int64_t, int, int, float, bool, cudaStream_t);
template cudaError_t LaunchFwhtKChunks<__nv_bfloat16>(const __nv_bfloat16*, int64_t, __nv_bfloat16*,
                                                      const int32_t*, int64_t, int, int, float,
                                                      bool, cudaStream_t);
template cudaError_t LaunchFwhtKChunks<__half>(const __half*, int64_t, __half*, const int32_t*,
                                               int64_t, int, int, float, bool, cudaStream_t);

template cudaError_t LaunchFwhtK<float>(const float*, int64_t, float*, int64_t, int, int, float,
                                        bool, cudaStream_t);
template cudaError_t LaunchFwhtK<__nv_bfloat16>(const __nv_bfloat16*, int64_t, __nv_bfloat16*,
                                                int64_t, int, int, float, bool, cudaStream_t);
template cudaError_t LaunchFwhtK<__half>(const __half*, int64_t, __half*, int64_t, int, int, float,
                                         bool, cudaStream_t);

}  // namespace qwha::kernels::cuda::fwht_internal
