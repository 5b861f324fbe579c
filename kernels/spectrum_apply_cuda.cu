// CUDA product of packed spectra with FWHT'd tokens (spectrum_apply.h). No
// LibTorch.
//
// A block works on one task and one chunk of TM (4 or 8) tokens. A warp
// takes one contiguous range of the task's rows (ceil(rows / W), W warps in
// the task's blocks; rows w, w + W, ... for chunks of 8 tokens), loads their bounds 32 at a time
// (one row per lane) and works on P = 32 / S of them at once, S lanes (a segment) per row and K
// entries per lane (K = 8, S = 4 for chunks of 4 tokens with rows of at most
// 192 entries on average, else 8, by default: launch-shape sweeps showed that
// rows in flight matter more than busy lanes). Each warp first requests the
// bounds and the first window of entries of its first steps, then the block
// copies the chunk's rows of z = FWHT(x) into shared memory, transposed
// ([n, TM], at most 176 KiB in bfloat16; two columns per thread from 4-byte
// loads for 2-byte types), so every entry of F reads its TM token values with
// one shared-memory load (instead of a 32-byte L2 sector per entry) and no
// gather or transpose of x is needed on the host side. Entries stay in
// flight in raw registers, decoded on use: for chunks of 4 tokens of 2-byte
// types (registers capped for 3 resident blocks per SM, 4 or 8 lanes × 8
// entries) the warp's windows form one stream with the next window always in
// flight (the window stream); otherwise the first windows of the next two
// steps (capped) or three are (the step pipeline), and a step's later windows
// are loaded when used. Per window of K·S
// entries, lane l of a segment decodes entries K·l .. K·l + K − 1: 8-byte
// loads of their column steps, 16 or 32 bytes of values per 8; the segment
// scans the lanes' step sums (byte dot products) to find where each lane
// starts, then each entry advances the lane's shared-memory pointer by its
// step. bfloat16 values become floats by one integer instruction each. At
// the end of a row the S × TM float32 sums are reduce-scattered across the
// segment (xor shuffles), leaving each token's total in one lane, which adds
// it to y with an atomic add (nothing waits on it). Where the chunk does not
// fit in shared memory (float32 with a large n) the entries read z from
// global memory instead. Blocks have 16 warps, or with the window stream 24
// (2 blocks per SM) or 32 (one per SM, where shared memory or few rows leave
// at most 2 blocks of 16): every block stages its chunk of z once, and those
// L2 reads are what the staging costs.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"
#include "kernels/spectrum_layout.h"

namespace qwha::kernels::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxTasks = 32;
constexpr int kWarpsPerBlock = 16;

struct TaskBatch {
  SpectrumApplyTask t[kMaxTasks];
};

// 4 consecutive elements as floats; kGlobal: through the read-only cache.
template <bool kGlobal>
__device__ __forceinline__ void Load4(const float* p, float v[4]) {
  const float4 x =
      kGlobal ? __ldg(reinterpret_cast<const float4*>(p)) : *reinterpret_cast<const float4*>(p);
  v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}

// The two bfloat16 of a word as floats: one integer instruction each (the
// intrinsic conversions spent two on the upper half).
__device__ __forceinline__ float BfloatLow(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float BfloatHigh(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

template <bool kGlobal>
__device__ __forceinline__ void Load4(const __nv_bfloat16* p, float v[4]) {
  const uint2 raw =
      kGlobal ? __ldg(reinterpret_cast<const uint2*>(p)) : *reinterpret_cast<const uint2*>(p);
  v[0] = BfloatLow(raw.x), v[1] = BfloatHigh(raw.x), v[2] = BfloatLow(raw.y),
  v[3] = BfloatHigh(raw.y);
}

template <bool kGlobal>
__device__ __forceinline__ void Load4(const __half* p, float v[4]) {
  const uint2 raw =
      kGlobal ? __ldg(reinterpret_cast<const uint2*>(p)) : *reinterpret_cast<const uint2*>(p);
  const float2 fa = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 fb = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  v[0] = fa.x, v[1] = fa.y, v[2] = fb.x, v[3] = fb.y;
}

// 4 raw elements (8 or 16 bytes) from global to shared memory.
template <typename E>
__device__ __forceinline__ void Copy4(const E* src, E* dst) {
  if constexpr (sizeof(E) == 4) {
    *reinterpret_cast<float4*>(dst) = __ldg(reinterpret_cast<const float4*>(src));
  } else {
    *reinterpret_cast<uint2*>(dst) = __ldg(reinterpret_cast<const uint2*>(src));
  }
}

// acc[t] += v · z[t] for the chunk's TM tokens, z from shared memory
// (values past the chunk's real tokens are garbage that only feeds sums that
// are never written).
template <int TM, typename E>
__device__ __forceinline__ void AccumulateShared(float (&acc)[TM], float v, const E* z) {
#pragma unroll
  for (int q = 0; q < TM / 4; ++q) {
    float zq[4];
    Load4<false>(z + 4 * q, zq);
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[4 * q + i] += v * zq[i];
  }
}

// The same from global memory: token t's value of column col at
// z[row_offset[t] + col], for t < valid.
template <int TM, typename E>
__device__ __forceinline__ void AccumulateGlobal(float (&acc)[TM], float v, const E* z,
                                                 const int64_t (&row_offset)[TM], int col,
                                                 int col_stride, int valid) {
#pragma unroll
  for (int t = 0; t < TM; ++t) {
    if (t < valid)
      acc[t] += v * ToF(__ldg(z + row_offset[t] + static_cast<int64_t>(col) * col_stride));
  }
}

// One reduce-scatter step at lane offset O over the first 2·HALF sums, then
// the next (HALF / 2, O / 2) step.
template <int HALF, int O, int TM>
__device__ __forceinline__ void ReduceScatterStep(float (&acc)[TM], int lane, int& tok) {
  if constexpr (HALF >= 1) {
    const bool upper = (lane & O) != 0;
#pragma unroll
    for (int j = 0; j < HALF; ++j) {
      const float send = upper ? acc[j] : acc[j + HALF];
      const float keep = upper ? acc[j + HALF] : acc[j];
      acc[j] = keep + __shfl_xor_sync(kFull, send, O);
    }
    if (upper) tok += HALF;
    ReduceScatterStep<HALF / 2, O / 2>(acc, lane, tok);
  }
}

__device__ __forceinline__ void AtomicAddTo(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void AtomicAddTo(__nv_bfloat16* p, float v) {
  atomicAdd(p, __float2bfloat16_rn(v));
}
__device__ __forceinline__ void AtomicAddTo(__half* p, float v) {
  atomicAdd(p, __float2half_rn(v));
}

// The raw steps and values of 8 entries, as loaded: decoding waits until the
// entries are used, so that a prefetch does not stall the warp on its load.
struct Raw8 {
  uint2 g;
  uint4 v0, v1;  // v1: the upper 4 float32 values (unused for 2-byte values)
};

// Entries [pos, pos + 8) (zeros past end; rows are padded to multiples of
// kRowAlign, so a lane's 8 entries are all in or all out).
template <typename E>
__device__ __forceinline__ Raw8 LoadRaw8(const SpectrumApplyTask& task, int pos, int end) {
  Raw8 raw;
  raw.g = make_uint2(0u, 0u);
  raw.v0 = raw.v1 = make_uint4(0u, 0u, 0u, 0u);
  if (pos < end) {
    // pos (>= 0) is a multiple of 8: the 8 entries are a quarter of one unit.
    constexpr unsigned kUnit = static_cast<unsigned>(kUnitEntries);
    static_assert((kUnit & (kUnit - 1)) == 0, "units of a power of two entries");
    const unsigned in_unit = static_cast<unsigned>(pos) % kUnit;
    const unsigned char* unit =
        task.units +
        static_cast<int64_t>(static_cast<unsigned>(pos) / kUnit) * UnitBytes(sizeof(E));
    raw.g = __ldg(reinterpret_cast<const uint2*>(unit + in_unit));
    const uint4* p = reinterpret_cast<const uint4*>(unit + kUnitEntries + in_unit * sizeof(E));
    raw.v0 = __ldg(p);
    if constexpr (sizeof(E) == 4) raw.v1 = __ldg(p + 1);
  }
  return raw;
}

__device__ __forceinline__ void Unpack2(uint32_t w, float* out, const __nv_bfloat16*) {
  out[0] = BfloatLow(w), out[1] = BfloatHigh(w);
}
__device__ __forceinline__ void Unpack2(uint32_t w, float* out, const __half*) {
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w));
  out[0] = f.x, out[1] = f.y;
}

template <typename E>
__device__ __forceinline__ void DecodeValues(const Raw8& raw, float v[8]) {
  if constexpr (sizeof(E) == 4) {
    const uint32_t w[8] = {raw.v0.x, raw.v0.y, raw.v0.z, raw.v0.w,
                           raw.v1.x, raw.v1.y, raw.v1.z, raw.v1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __uint_as_float(w[i]);
  } else {
    const E* tag = nullptr;
    Unpack2(raw.v0.x, v, tag);
    Unpack2(raw.v0.y, v + 2, tag);
    Unpack2(raw.v0.z, v + 4, tag);
    Unpack2(raw.v0.w, v + 6, tag);
  }
}

// A lane's K (8 or 16) consecutive entries, raw.
template <int K>
struct RawK {
  Raw8 part[K / 8];
};

template <int K, typename E>
__device__ __forceinline__ RawK<K> LoadRawK(const SpectrumApplyTask& task, int pos, int end) {
  RawK<K> raw;
#pragma unroll
  for (int q = 0; q < K / 8; ++q) raw.part[q] = LoadRaw8<E>(task, pos + 8 * q, end);
  return raw;
}

// Copies the chunk's rows of z into shared memory, transposed (the block's
// threads together): zs[c · TM + t] = z[rows_of[t], c] for t < valid.
template <int TM, typename E>
__device__ __forceinline__ void StageZ(E* zs, const E* __restrict__ z, int64_t ldz,
                                       const int32_t* rows_of, int valid, int n, bool stage_pairs) {
  // A thread takes column c (consecutive threads, consecutive columns:
  // coalesced reads of each token's row), reads its TM values and writes them
  // with one store of TM elements, so that consecutive threads write
  // consecutive shared-memory words. (Writing element by element from 16-byte
  // row pieces put all 32 lanes of a store in one bank.)
  int64_t offset[TM];
#pragma unroll
  for (int t = 0; t < TM; ++t) {
    offset[t] = t < valid ? static_cast<int64_t>(__ldg(rows_of + t)) * ldz : 0;
  }
  if constexpr (sizeof(E) == 2) {
    // Two columns per thread: 4-byte loads of each token's row, each pair
    // of tokens' values interleaved with byte permutes.
    if (stage_pairs) {
#pragma unroll 4
      for (int c = 2 * threadIdx.x; c < n; c += 2 * blockDim.x) {
        uint32_t w[TM];
#pragma unroll
        for (int t = 0; t < TM; ++t) {
          w[t] = t < valid ? __ldg(reinterpret_cast<const uint32_t*>(z + offset[t] + c)) : 0u;
        }
        alignas(16) uint32_t lo[TM / 2], hi[TM / 2];
#pragma unroll
        for (int q = 0; q < TM / 2; ++q) {
          lo[q] = __byte_perm(w[2 * q], w[2 * q + 1], 0x5410);
          hi[q] = __byte_perm(w[2 * q], w[2 * q + 1], 0x7632);
        }
        if constexpr (TM == 4) {
          *reinterpret_cast<uint2*>(zs + c * TM) = *reinterpret_cast<const uint2*>(lo);
          *reinterpret_cast<uint2*>(zs + (c + 1) * TM) = *reinterpret_cast<const uint2*>(hi);
        } else {
          *reinterpret_cast<uint4*>(zs + c * TM) = *reinterpret_cast<const uint4*>(lo);
          *reinterpret_cast<uint4*>(zs + (c + 1) * TM) = *reinterpret_cast<const uint4*>(hi);
        }
      }
    }
  }
  for (int c = threadIdx.x; c < n && !stage_pairs; c += blockDim.x) {
    alignas(16) E vals[TM];
#pragma unroll
    for (int t = 0; t < TM; ++t) vals[t] = t < valid ? z[offset[t] + c] : FromF<E>(0.f);
    if constexpr (TM * sizeof(E) == 8) {
      *reinterpret_cast<uint2*>(zs + c * TM) = *reinterpret_cast<const uint2*>(vals);
    } else {
#pragma unroll
      for (int q = 0; q < static_cast<int>(TM * sizeof(E) / 16); ++q) {
        reinterpret_cast<uint4*>(zs + c * TM)[q] = reinterpret_cast<const uint4*>(vals)[q];
      }
    }
  }
}

// z in chunks of 4 tokens (LaunchSpectrumApply's z_chunks): the block's chunk
// is n · 4 contiguous elements, already in the order of shared memory.
// kZRows: rows of z, staged transposed (StageZ); kZChunkCopy: a chunk copied
// by the block's threads (16-byte pieces); kZChunkBulk: a chunk copied by one
// bulk copy (TMA, sm_90), issued by thread 0 before the warps' first loads
// and completing on an mbarrier after the chunk in shared memory, so that no
// instruction and no register waits on it until the first window is worked
// on.
constexpr int kZRows = 0;
constexpr int kZChunkCopy = 1;
constexpr int kZChunkBulk = 2;

template <typename E>
__device__ __forceinline__ void CopyChunk(E* zs, const E* __restrict__ src, int elements) {
  const int bytes = elements * static_cast<int>(sizeof(E));
  if ((reinterpret_cast<uintptr_t>(src) | static_cast<uintptr_t>(bytes)) % 16 == 0) {
    for (int i = threadIdx.x; i < bytes / 16; i += blockDim.x) {
      reinterpret_cast<uint4*>(zs)[i] = __ldg(reinterpret_cast<const uint4*>(src) + i);
    }
  } else {
    for (int i = threadIdx.x; i < elements; i += blockDim.x) zs[i] = src[i];
  }
}

__device__ __forceinline__ void IssueBulkCopy(void* dst, const void* src, uint32_t bytes,
                                              uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const auto b = static_cast<uint32_t>(__cvta_generic_to_shared(bar));
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(bytes)
               : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(d),
      "l"(src), "r"(bytes), "r"(b)
      : "memory");
#else
  (void)dst, (void)src, (void)bytes, (void)bar;
#endif
}

__device__ __forceinline__ void WaitBulkCopy(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const auto b = static_cast<uint32_t>(__cvta_generic_to_shared(bar));
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(b)
        : "memory");
  } while (done == 0);
#else
  (void)bar;
#endif
}

// kProbe (benchmarks only, diagnostic modes 4, 5 and 6; the results are wrong):
// 1: every gather of z reads a place of its own lane instead (the same loads,
// free of bank conflicts); 2: entries are loaded but not used (no scan, no
// gathers, no arithmetic); 3: as 2, but the loads read the warp's range of
// entries in order, 32 consecutive 8-entry pieces per load (what the access
// pattern of the segments' windows costs against a coalesced stream).
//
// kAhead 1 (the window stream): the warp reads its windows as one stream,
// the next window always in flight (the step's next window, or the next
// step's first while the last is worked on), instead of the first windows of
// the next D steps (kAhead 0, the step pipeline), where a step's later
// windows are loaded when they are used.
//
// W: warps per block (kWarpsPerBlock; 24 for 2 blocks per SM, or 32 for one
// block per SM where no more than 2 blocks of 16 would be resident: fewer
// stagings of z for the same warps; see LaunchBatch).
template <int TM, int S, int K, bool kShared, int kMinBlocks, typename E, int kProbe = 0,
          int kAhead = 0, int W = kWarpsPerBlock>
__global__ void __launch_bounds__(W * 32, kMinBlocks)
    SpectrumApplyKernel(const TaskBatch batch, const E* __restrict__ z, int64_t ldz,
                        E* __restrict__ y, int64_t ldy, const int32_t* __restrict__ y_rows,
                        int diag, bool stage_pairs, bool contiguous, int z_mode) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  if (diag == 3) return;  // benchmarks: an empty launch
  const SpectrumApplyTask& task = batch.t[blockIdx.y];
  const int tok0 = static_cast<int>(blockIdx.z) * TM;
  if (tok0 >= task.count) return;  // uniform over the block
  const int valid = min(TM, task.count - tok0);
  const int32_t* rows_of = y_rows + task.tok_begin + tok0;  // the chunk's rows of z and y
  // A warp works on P = 32 / S rows at once, S lanes (a segment) per row.
  constexpr int P = 32 / S;
  // Steps of P rows whose first windows are in flight at once in the step
  // pipeline (two where registers are capped for 3 blocks per SM); the window
  // stream keeps one step's bounds and the next window.
  constexpr bool kStream = kAhead > 0;
  constexpr int D = kStream ? 1 : kMinBlocks < 3 ? 3 : 2;
  const int lane = threadIdx.x & 31;
  const int sub = lane / S;  // the lane's row of the P
  const int sl = lane % S;   // the lane's place in its segment
  const int warp = blockIdx.x * W + (threadIdx.x >> 5);
  const int warps = gridDim.x * W;
  // The warp's rows: one contiguous range [first, limit) of ceil(rows /
  // warps) rows (a warp's P rows of a step are then adjacent in memory, and
  // so are its steps), or, strided, rows warp, warp + warps, ...
  // A group: the warp's rows first + k · stride, k < 32; lane k holds the
  // bounds of the k-th.
  const int per_warp = (task.rows + warps - 1) / warps;
  const int stride = contiguous ? 1 : warps;
  int first = contiguous ? warp * per_warp : warp;
  const int limit = contiguous ? min(task.rows, first + per_warp) : task.rows;
  int my_begin = 0, my_end = 0, rows_here = 0;
  auto load_group = [&]() {
    const int my_row = first + lane * stride;
    my_begin = my_end = 0;
    rows_here = first < limit ? min(32, (limit - first + stride - 1) / stride) : 0;
    if (lane < rows_here) {
      my_begin = __ldg(task.row_ptr + my_row);
      my_end = __ldg(task.row_ptr + my_row + 1);
    }
  };
  // The bounds of the segment's row in the step that starts at row k.
  auto bounds = [&](int k, int& b, int& e) {
    const int kk = k + sub;
    b = __shfl_sync(kFull, my_begin, kk & 31);
    e = __shfl_sync(kFull, my_end, kk & 31);
    if (kk >= rows_here) b = e = 0;
  };
  // The pipeline: bounds and the first window of the next D steps.
  int pb[D], pe[D];
  RawK<K> pw[D];
  auto fetch = [&](int k, int& b, int& e, RawK<K>& w) {
    bounds(k, b, e);
    w = LoadRawK<K, E>(task, b + K * sl, e);
  };
  auto fill = [&]() {
    load_group();
#pragma unroll
    for (int d = 0; d < D; ++d) fetch(d * P, pb[d], pe[d], pw[d]);
  };
  // z in chunks: this block's chunk (TM == 4), at chunk_at.
  const bool chunked = z_mode != kZRows;
  const int64_t chunk_at = chunked ? static_cast<int64_t>((task.tok_begin + tok0) / TM) * ldz : 0;
  bool bulk = false;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  bulk = z_mode == kZChunkBulk;
#endif
  const int z_elements = task.n * TM;
  uint64_t* bar =
      reinterpret_cast<uint64_t*>(shared_raw + static_cast<size_t>(z_elements) * sizeof(E));
  if constexpr (kShared) {
    if (bulk && diag != 2 && threadIdx.x == 0) {
      IssueBulkCopy(shared_raw, z + chunk_at, static_cast<uint32_t>(z_elements * sizeof(E)), bar);
    }
  }
  // The first steps' entries are requested before the staging, so that
  // their loads overlap it.
  fill();
  int64_t row_offset[TM];
  if constexpr (kShared) {
    if (diag != 2 && !bulk) {
      if (chunked) {
        CopyChunk(reinterpret_cast<E*>(shared_raw), z + chunk_at, z_elements);
      } else {
        StageZ<TM>(reinterpret_cast<E*>(shared_raw), z, ldz, rows_of, valid, task.n, stage_pairs);
      }
    }
    __syncthreads();
    if (diag != 2 && bulk) WaitBulkCopy(bar);
  } else {
#pragma unroll
    for (int t = 0; t < TM; ++t) {
      row_offset[t] = chunked     ? chunk_at + t
                      : t < valid ? static_cast<int64_t>(__ldg(rows_of + t)) * ldz
                                  : 0;
    }
  }
  if (diag == 1) return;  // benchmarks: the staging alone
  const E* zs = reinterpret_cast<const E*>(shared_raw);
  // kProbe 3: the warp's whole range of entries, read in order.
  int flat = 0, flat_end = 0;
  if constexpr (kProbe == 3) {
    flat = first < limit ? __ldg(task.row_ptr + first) : 0;
    flat_end = first < limit ? __ldg(task.row_ptr + limit) : 0;
  }
  while (first < limit) {
    for (int k = 0; k < rows_here; k += P) {
      const int r = first + (k + sub) * stride;
      const int begin = pb[0], end = pe[0];
      float acc[TM];
#pragma unroll
      for (int t = 0; t < TM; ++t) acc[t] = 0.f;
      // Windows of K·S entries: as many as the longest of the step's P rows
      // needs (shuffles below involve the whole warp).
      int windows = (end - begin + K * S - 1) / (K * S);
#pragma unroll
      for (int o = 16; o >= S; o >>= 1) windows = max(windows, __shfl_xor_sync(kFull, windows, o));
      int carry = 0;
      auto window = [&](const RawK<K>& cur, int w) {
        if constexpr (kProbe >= 2) {
#pragma unroll
          for (int q = 0; q < K / 8; ++q) {
            acc[0] += __uint_as_float(
                (cur.part[q].g.x ^ cur.part[q].g.y ^ cur.part[q].v0.x ^ cur.part[q].v0.w) &
                0x007fffffu);
          }
          return;
        }
        const int mine = begin + w * K * S + K * sl;
        // The lane's column steps: their sum by byte dot products, then the
        // inclusive scan of those sums within the segment.
        int total = 0;
#pragma unroll
        for (int q = 0; q < K / 8; ++q) {
          total += static_cast<int>(__dp4a(cur.part[q].g.x, 0x01010101u, 0u));
          total += static_cast<int>(__dp4a(cur.part[q].g.y, 0x01010101u, 0u));
        }
        int incl = total;
#pragma unroll
        for (int o = 1; o < S; o <<= 1) {
          const int up = __shfl_up_sync(kFull, incl, o, S);
          if (sl >= o) incl += up;
        }
        int col = carry + incl - total;  // before the lane's first step
        carry += __shfl_sync(kFull, incl, S - 1, S);
        const E* zc = zs + col * TM;  // z of the running column (shared path)
#pragma unroll
        for (int q = 0; q < K / 8; ++q) {
          if (mine + 8 * q < end) {
            float v[8];
            DecodeValues<E>(cur.part[q], v);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
              const uint32_t word = i < 4 ? cur.part[q].g.x : cur.part[q].g.y;
              const int step = static_cast<int>(__byte_perm(word, 0u, 0x4440u + (i & 3)));
              if constexpr (kShared && kProbe == 1) {
                // The lane's own 8 bytes (32 lanes: 256 bytes, no conflict),
                // a volatile load so that it stays in the loop.
                zc += step * TM;
                uint32_t a, b;
                const uint32_t at =
                    static_cast<uint32_t>(__cvta_generic_to_shared(zs)) + 8u * (lane + 32 * i);
                asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(a), "=r"(b) : "r"(at));
                acc[0] += v[i] * BfloatLow(a) + static_cast<float>(zc == zs);
                acc[1] += v[i] * BfloatHigh(a);
                acc[2] += v[i] * BfloatLow(b);
                acc[3] += v[i] * BfloatHigh(b);
              } else if constexpr (kShared) {
                zc += step * TM;
                AccumulateShared<TM>(acc, v[i], zc);
              } else {
                col += step;
                AccumulateGlobal<TM>(acc, v[i], z, row_offset, col, chunked ? TM : 1, valid);
              }
            }
          }
        }
      };
      if constexpr (kStream) {
        // The next step's bounds (zeros past the group) and, while the last
        // window is worked on, its first window.
        int nb, ne;
        bounds(k + P, nb, ne);
        // kProbe 3: the same number of loads, at consecutive places of the
        // warp's range (one 8-entry piece per lane).
        auto load_in_order = [&]() {
          const int at = flat + K * lane;
          flat += 32 * K;
          return LoadRawK<K, E>(task, at, flat_end);
        };
        RawK<K> cur = pw[0];
        if (windows == 0) cur = LoadRawK<K, E>(task, nb + K * sl, ne);
        for (int w = 0; w < windows; ++w) {
          // Two loads under a condition: selecting the place first and
          // loading once measured ~3 us per layer slower as served.
          const RawK<K> next = kProbe == 3 ? load_in_order()
                               : w + 1 < windows
                                   ? LoadRawK<K, E>(task, begin + (w + 1) * K * S + K * sl, end)
                                   : LoadRawK<K, E>(task, nb + K * sl, ne);
          window(cur, w);
          cur = next;
        }
        pw[0] = cur;
        pb[0] = nb, pe[0] = ne;
      } else {
        if (windows > 0) window(pw[0], 0);
        for (int w = 1; w < windows; ++w) {
          window(LoadRawK<K, E>(task, begin + w * K * S + K * sl, end), w);
        }
      }
      // Reduce-scatter within the segment: at offset o, a lane keeps the half
      // of its sums that its bit o selects and adds the partner's copy of it.
      int tok = 0;
      ReduceScatterStep<TM / 2, S / 2>(acc, lane, tok);
      // Lanes that differ only in the bits below S / TM hold the same token.
#pragma unroll
      for (int o = S / (2 * TM); o >= 1; o >>= 1) acc[0] += __shfl_xor_sync(kFull, acc[0], o);
      if ((sl & (S / TM - 1)) == 0 && tok < valid && k + sub < rows_here) {
        AtomicAddTo(y + static_cast<int64_t>(__ldg(rows_of + tok)) * ldy + task.y_col + r, acc[0]);
      }
      // Advance the pipeline by one step.
      if constexpr (!kStream) {
#pragma unroll
        for (int d = 0; d + 1 < D; ++d) {
          pb[d] = pb[d + 1], pe[d] = pe[d + 1];
          pw[d] = pw[d + 1];
        }
        fetch(k + D * P, pb[D - 1], pe[D - 1], pw[D - 1]);
      }
    }
    first += 32 * stride;
    if (first < limit) fill();
  }
}

// Streaming multiprocessors, opt-in shared memory per block and shared memory
// per SM of the current device.
struct DeviceLimits {
  int sms = 132;
  int shared = 48 * 1024;
  int shared_per_sm = 228 * 1024;
};

DeviceLimits Limits() {
  DeviceLimits d;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return d;
  cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&d.shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  cudaDeviceGetAttribute(&d.shared_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  return d;
}

// Benchmark overrides of the launch shape (SetSpectrumApplyTuning).
std::atomic<int> tuned_lanes{0};
std::atomic<int> tuned_entries{0};
std::atomic<int> tuned_blocks_per_sm{0};
std::atomic<int> tuned_diag{0};
std::atomic<int> tuned_staging{0};
std::atomic<int> tuned_min_blocks{0};
std::atomic<int> tuned_rows{0};
std::atomic<int> tuned_pipeline{0};
std::atomic<int> tuned_warps{0};

template <int TM, int S, int K, bool kShared, int kMinBlocks, typename E>
cudaError_t LaunchBatch(const TaskBatch& batch, int count, int n, int max_rows, int max_tokens,
                        const void* z, int64_t ldz, bool z_chunks, void* y, int64_t ldy,
                        const int32_t* y_rows, const DeviceLimits& limits, cudaStream_t stream) {
  // Per instantiation; raised once, never lowered (launchers may run concurrently).
  static std::atomic<int> configured_shared{48 * 1024};
  static std::atomic<int> configured_stream{48 * 1024};  // the window stream's kernel
  static std::atomic<int> configured_wide{48 * 1024};    // ... in blocks of 32 warps
  static std::atomic<int> configured_24{48 * 1024};      // ... of 24 warps
  const int chunks = (max_tokens + TM - 1) / TM;
  if (chunks > 65535) return cudaErrorInvalidValue;
  // (A chunked z copied in bulk completes on an mbarrier after the chunk.)
  const size_t smem = kShared ? static_cast<size_t>(n) * TM * sizeof(E) + (z_chunks ? 16 : 0) : 0;
  // Blocks resident on an SM at once: `per_sm` as registers allow (3 where
  // they are capped for it, else 2), fewer where shared memory holds fewer
  // (1 KiB per block is the runtime's).
  int per_sm = tuned_blocks_per_sm.load(std::memory_order_relaxed) > 0
                   ? tuned_blocks_per_sm.load(std::memory_order_relaxed)
               : kMinBlocks >= 3 ? 3
                                 : 2;
  const int fit = static_cast<int>(static_cast<size_t>(limits.shared_per_sm) / (smem + 1024));
  per_sm = std::max(1, std::min(per_sm, fit));
  // One wave: at most per_sm · SMs blocks over the launch, split evenly over
  // its tasks and chunks (rounding down: one block more than fits waits a
  // whole block's time, which made the 24-task q/k/v launch of 8 adapters
  // take two waves), and no more than give each warp two steps of 32 / S rows
  // (one step of 8 rows with segments of 4 lanes).
  const int rows_per_block = (S == 4 ? 1 : 2) * (32 / S) * kWarpsPerBlock;
  const int row_blocks = (max_rows + rows_per_block - 1) / rows_per_block;
  int blocks = per_sm * limits.sms / (count * chunks);
  blocks = blocks < 1 ? 1 : blocks > row_blocks ? row_blocks : blocks;
  auto kernel = SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E>;
  const int diag = tuned_diag.load(std::memory_order_relaxed);
  bool probe = false, stream_kernel = false;
  int block_warps = kWarpsPerBlock;
  if constexpr (TM == 4 && (S == 8 || S == 4) && K == 8 && kShared && kMinBlocks == 3 &&
                sizeof(E) == 2) {
    // The window stream (the default here: one layer of 8 adapters × 4
    // tokens read from DRAM, 88.6 us against 101.1 for the step pipeline),
    // and the probes of diagnostic modes 4, 5 and 6 (kProbe 1, 2 and 3).
    if (tuned_pipeline.load(std::memory_order_relaxed) != 1) {
      kernel = diag == 4   ? SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E, 1, 1>
               : diag == 5 ? SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E, 2, 1>
               : diag == 6 ? SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E, 3, 1>
                           : SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E, 0, 1>;
      stream_kernel = true;
    } else {
      if (diag == 4) kernel = SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E, 1>;
      if (diag == 5) kernel = SpectrumApplyKernel<TM, S, K, kShared, kMinBlocks, E, 2>;
    }
    probe = diag == 4 || diag == 5 || diag == 6;
    // Fewer, larger blocks: the stagings of z, whose L2 reads set the
    // staging's cost, go with the blocks. Where no more than 2 blocks of 16
    // warps per SM would be resident (shared memory: the down projection's z
    // of 11008 columns; or few rows: o), one block of 32 warps per SM (64
    // registers); elsewhere 2 blocks of 24 warps per SM instead of 3 of 16
    // (the same 48 warps, 40 registers). qwha-serve-bench, one layer as
    // served: 81.1–81.6 us against 82.2–83.4 with 16-warp blocks; in the
    // 8-adapter decode step (paired per repeat) 16 → 32 warps for o and down
    // measured 0.8 % faster, 16 → 24 for q/k/v and gate/up 1.5 % in one run
    // and within the noise (±2 %) in the next.
    // Diagnostics 1 and 2 too (timing the staging).
    const int warps = tuned_warps.load(std::memory_order_relaxed);
    const bool few = static_cast<int64_t>(blocks) * count * chunks <= 2 * limits.sms;
    if (stream_kernel && !probe && (warps == 32 || (warps != 16 && few))) {
      kernel = SpectrumApplyKernel<TM, S, K, kShared, 1, E, 0, 1, 32>;
      block_warps = 32;
    } else if (stream_kernel && !probe && warps != 16 && per_sm >= 2) {
      kernel = SpectrumApplyKernel<TM, S, K, kShared, 2, E, 0, 1, 24>;
      block_warps = 24;
    }
    blocks = (blocks * kWarpsPerBlock + block_warps - 1) / block_warps;
  }
  std::atomic<int>& configured = block_warps == 32   ? configured_wide
                                 : block_warps == 24 ? configured_24
                                 : stream_kernel     ? configured_stream
                                                     : configured_shared;
  if (probe) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Limits().shared);
    if (err != cudaSuccess) return err;
  } else if (static_cast<int>(smem) > configured.load(std::memory_order_relaxed)) {
    // Raise the limit once to the device's maximum (a call per launch costs
    // host time on every step of serving).
    const int limit = Limits().shared;
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit);
    if (err != cudaSuccess) return err;
    configured.store(limit, std::memory_order_relaxed);
  }
  // Contiguous rows per warp by default for chunks of 4 tokens (one layer of
  // 8 adapters × 4 tokens: 94.9 us against 111.1 strided); chunks of 8 keep
  // them strided (1 adapter × 32 tokens: 113.9 against 116.3).
  const int rows_mode = tuned_rows.load(std::memory_order_relaxed);
  const bool contiguous = rows_mode == 1 || (rows_mode == 0 && TM == 4);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(count),
                  static_cast<unsigned>(chunks));
  // Column pairs where the rows are 4-byte aligned and of an even width
  // (qwha-serve-bench: 8 to 25 % faster staging than one column per thread).
  const bool pairs = tuned_staging.load(std::memory_order_relaxed) != 2 && sizeof(E) == 2 &&
                     n % 2 == 0 && ldz % 2 == 0 && reinterpret_cast<uintptr_t>(z) % 4 == 0;
  // A chunked z in one bulk copy where its chunks are 16-byte aligned
  // (sm_90 kernels; elsewhere the kernel copies them with its threads).
  const bool aligned = reinterpret_cast<uintptr_t>(z) % 16 == 0 && (ldz * sizeof(E)) % 16 == 0 &&
                       (static_cast<size_t>(n) * TM * sizeof(E)) % 16 == 0;
  const int z_mode = !z_chunks                                                       ? kZRows
                     : aligned && tuned_staging.load(std::memory_order_relaxed) != 3 ? kZChunkBulk
                                                                                     : kZChunkCopy;
  kernel<<<grid, block_warps * 32, smem, stream>>>(batch, static_cast<const E*>(z), ldz,
                                                   static_cast<E*>(y), ldy, y_rows,
                                                   probe ? 0 : diag, pairs, contiguous, z_mode);
  return cudaGetLastError();
}

// The segment shape of a batch: S lanes per row and K entries per lane.
// Narrow segments keep more rows in flight per warp, which the product needs
// more than busy lanes: qwha-serve-bench's launch-shape sweep on an H100
// (7B shapes, 8 adapters × 4 tokens, one layer) took 130 us with 8 lanes × 8
// entries, 143 with 16 × 8, 204 with 32 × 8, and more with 16 entries per
// lane at every width; with contiguous rows per warp, 4 lanes × 8 entries
// took 80.6 us against 89.5 for 8 × 8 (kernels/dev/spectrum_apply_dev.cu,
// docs/results.md). Chunks of 8 tokens need 8 lanes or more (the segment's
// reduce-scatter leaves one token per lane).
struct Shape {
  int lanes, entries;
};

Shape PickShape(int tokens_per_chunk, int64_t mean_row) {
  // 4 lanes for chunks of 4 tokens, except for long rows (the down
  // projection's ~240 entries: 18.1-19.3 us with 8 lanes against 19.3-21.0
  // with 4; rows of 88: 31 against 37; rows of 128: even).
  Shape shape{tokens_per_chunk == 4 && mean_row <= 192 ? 4 : 8, 8};
  const int lanes = tuned_lanes.load(std::memory_order_relaxed);
  const int per_lane = tuned_entries.load(std::memory_order_relaxed);
  if (lanes == 4 || lanes == 8 || lanes == 16 || lanes == 32) shape.lanes = lanes;
  if (per_lane == 8 || per_lane == 16) shape.entries = per_lane;
  return shape;
}

template <int TM, int S, int K, int kMinBlocks, typename E>
cudaError_t LaunchBlocks(bool shared, const TaskBatch& batch, int count, int n, int max_rows,
                         int max_tokens, const void* z, int64_t ldz, bool z_chunks, void* y,
                         int64_t ldy, const int32_t* y_rows, const DeviceLimits& limits,
                         cudaStream_t stream) {
  return shared ? LaunchBatch<TM, S, K, true, kMinBlocks, E>(batch, count, n, max_rows, max_tokens,
                                                             z, ldz, z_chunks, y, ldy, y_rows,
                                                             limits, stream)
                : LaunchBatch<TM, S, K, false, kMinBlocks, E>(batch, count, n, max_rows, max_tokens,
                                                              z, ldz, z_chunks, y, ldy, y_rows,
                                                              limits, stream);
}

// Registers capped for 3 resident blocks per SM (and 3 blocks per SM aimed
// at) by default for chunks of 4 tokens: qwha-serve-bench measured one layer
// of 8 adapters × 4 tokens 18 % faster that way, while 1 adapter × 32 tokens
// (chunks of 8) was 6 % slower (docs/results.md). Only the default 8 × 8
// shape has the cap (other shapes are for the benchmark's sweep).
template <int TM, int S, int K, typename E>
cudaError_t LaunchShape(bool shared, const TaskBatch& batch, int count, int n, int max_rows,
                        int max_tokens, const void* z, int64_t ldz, bool z_chunks, void* y,
                        int64_t ldy, const int32_t* y_rows, const DeviceLimits& limits,
                        cudaStream_t stream) {
  if constexpr ((S == 8 || S == 4) && K == 8) {
    const int min_blocks = tuned_min_blocks.load(std::memory_order_relaxed);
    if (min_blocks == 3 || (min_blocks == 0 && TM == 4)) {
      return LaunchBlocks<TM, S, K, 3, E>(shared, batch, count, n, max_rows, max_tokens, z, ldz,
                                          z_chunks, y, ldy, y_rows, limits, stream);
    }
  }
  return LaunchBlocks<TM, S, K, 1, E>(shared, batch, count, n, max_rows, max_tokens, z, ldz,
                                      z_chunks, y, ldy, y_rows, limits, stream);
}

template <int TM, int S, typename E>
cudaError_t LaunchLanes(int entries, bool shared, const TaskBatch& batch, int count, int n,
                        int max_rows, int max_tokens, const void* z, int64_t ldz, bool z_chunks,
                        void* y, int64_t ldy, const int32_t* y_rows, const DeviceLimits& limits,
                        cudaStream_t stream) {
  return entries == 16 ? LaunchShape<TM, S, 16, E>(shared, batch, count, n, max_rows, max_tokens, z,
                                                   ldz, z_chunks, y, ldy, y_rows, limits, stream)
                       : LaunchShape<TM, S, 8, E>(shared, batch, count, n, max_rows, max_tokens, z,
                                                  ldz, z_chunks, y, ldy, y_rows, limits, stream);
}

template <int TM, typename E>
cudaError_t LaunchBucket(const std::vector<SpectrumApplyTask>& tasks, const void* z, int64_t ldz,
                         bool z_chunks, void* y, int64_t ldy, const int32_t* y_rows,
                         cudaStream_t stream) {
  static const DeviceLimits limits = Limits();
  // Batches of up to kMaxTasks tasks of one width n (the shared-memory size).
  std::vector<bool> done(tasks.size(), false);
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (done[i]) continue;
    TaskBatch batch{};
    int count = 0, max_rows = 0, max_tokens = 0;
    int64_t entries = 0, rows = 0;
    const int n = tasks[i].n;
    for (size_t j = i; j < tasks.size() && count < kMaxTasks; ++j) {
      if (done[j] || tasks[j].n != n) continue;
      done[j] = true;
      batch.t[count++] = tasks[j];
      max_rows = max_rows > tasks[j].rows ? max_rows : tasks[j].rows;
      max_tokens = max_tokens > tasks[j].count ? max_tokens : tasks[j].count;
      entries += tasks[j].entries, rows += tasks[j].rows;
    }
    const bool shared =
        static_cast<size_t>(n) * TM * sizeof(E) <= static_cast<size_t>(limits.shared);
    const Shape shape = PickShape(TM, rows > 0 ? entries / rows : 0);
    cudaError_t err;
    if constexpr (TM == 4) {  // segments of 4 lanes hold chunks of at most 4 tokens
      if (shape.lanes == 4) {
        err = LaunchLanes<TM, 4, E>(shape.entries, shared, batch, count, n, max_rows, max_tokens, z,
                                    ldz, z_chunks, y, ldy, y_rows, limits, stream);
        if (err != cudaSuccess) return err;
        continue;
      }
    }
    err = shape.lanes <= 8
              ? LaunchLanes<TM, 8, E>(shape.entries, shared, batch, count, n, max_rows, max_tokens,
                                      z, ldz, z_chunks, y, ldy, y_rows, limits, stream)
          : shape.lanes == 16
              ? LaunchLanes<TM, 16, E>(shape.entries, shared, batch, count, n, max_rows, max_tokens,
                                       z, ldz, z_chunks, y, ldy, y_rows, limits, stream)
              : LaunchLanes<TM, 32, E>(shape.entries, shared, batch, count, n, max_rows, max_tokens,
                                       z, ldz, z_chunks, y, ldy, y_rows, limits, stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename E>
cudaError_t LaunchTyped(const SpectrumApplyTask* tasks, int num_tasks, const void* z, int64_t ldz,
                        bool z_chunks, void* y, int64_t ldy, const int32_t* y_rows,
                        cudaStream_t stream) {
  // Tasks of at most 4 tokens take the 4-token kernel; the rest go in chunks
  // of 8 tokens, one block per chunk.
  std::vector<SpectrumApplyTask> b4, b8;
  for (int i = 0; i < num_tasks; ++i) {
    const SpectrumApplyTask& t = tasks[i];
    if (t.rows <= 0 || t.count <= 0) continue;
    if (z_chunks && (t.count > 4 || t.tok_begin % 4 != 0)) return cudaErrorInvalidValue;
    (t.count <= 4 ? b4 : b8).push_back(t);
  }
  cudaError_t err = cudaSuccess;
  if (!b4.empty() && (err = LaunchBucket<4, E>(b4, z, ldz, z_chunks, y, ldy, y_rows, stream)))
    return err;
  if (!b8.empty() && (err = LaunchBucket<8, E>(b8, z, ldz, z_chunks, y, ldy, y_rows, stream)))
    return err;
  return cudaSuccess;
}

}  // namespace

void SetSpectrumApplyTuning(const SpectrumApplyTuning& tuning) {
  tuned_lanes.store(tuning.lanes_per_row, std::memory_order_relaxed);
  tuned_entries.store(tuning.entries_per_lane, std::memory_order_relaxed);
  tuned_blocks_per_sm.store(tuning.blocks_per_sm, std::memory_order_relaxed);
  tuned_diag.store(tuning.diagnostic, std::memory_order_relaxed);
  tuned_staging.store(tuning.staging, std::memory_order_relaxed);
  tuned_min_blocks.store(tuning.min_blocks_per_sm, std::memory_order_relaxed);
  tuned_rows.store(tuning.rows, std::memory_order_relaxed);
  tuned_pipeline.store(tuning.pipeline, std::memory_order_relaxed);
  tuned_warps.store(tuning.warps_per_block, std::memory_order_relaxed);
}

cudaError_t LaunchSpectrumApply(const SpectrumApplyTask* tasks, int num_tasks, const void* z,
                                int64_t ldz, void* y, int64_t ldy, const int32_t* y_rows,
                                DType dtype, cudaStream_t stream, bool z_chunks) {
  switch (dtype) {
    case DType::kFloat32:
      return LaunchTyped<float>(tasks, num_tasks, z, ldz, z_chunks, y, ldy, y_rows, stream);
    case DType::kBFloat16:
      return LaunchTyped<__nv_bfloat16>(tasks, num_tasks, z, ldz, z_chunks, y, ldy, y_rows, stream);
    case DType::kFloat16:
      return LaunchTyped<__half>(tasks, num_tasks, z, ldz, z_chunks, y, ldy, y_rows, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace qwha::kernels::cuda
