// CUDA product of packed spectra with FWHT'd tokens (spectrum_apply.h). No
// LibTorch.
//
// One warp per row of F and chunk of TM (4 or 8) tokens; chunks of one row go
// to different warps (grid z), which read the row from L2 after the first.
// Each warp owns rows w, w + W, w + 2W, ... of its task: it loads their bounds
// at once (one row per lane), and prefetches the first 128 entries of its next
// row while it works on the current one, so the DRAM latency of F overlaps the
// gathers of the previous row. Per 128 entries, lane l decodes entries 4l ..
// 4l + 3: one 32-bit load of their column steps, one 8- or 16-byte load of
// their values; its running column is a warp inclusive scan of the per-lane
// step sums plus the carry of the previous 128 entries. Each entry then reads
// its TM token values of zt (one 8/16-byte load; zt is small and stays in
// L1/L2) into TM float32 sums. At the end of the row the 32 × TM sums are
// reduce-scattered across the warp (TM − 1 shuffles, then the rest summed with
// xor shuffles), leaving each token's total in one lane, which adds it to y
// with an atomic add (nothing waits on it).
#include <cstdint>
#include <vector>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"

namespace qwha::kernels::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxTasks = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kRowsPerWarp = 4;  // rows a warp works through (prefetching the next)

struct TaskBatch {
  SpectrumApplyTask t[kMaxTasks];
};

__device__ __forceinline__ void Load4(const float* p, float v[4]) {
  const float4 x = __ldg(reinterpret_cast<const float4*>(p));
  v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}

__device__ __forceinline__ void Load4(const __nv_bfloat16* p, float v[4]) {
  const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 fa = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 fb = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  v[0] = fa.x, v[1] = fa.y, v[2] = fb.x, v[3] = fb.y;
}

__device__ __forceinline__ void Load4(const __half* p, float v[4]) {
  const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 fa = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 fb = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  v[0] = fa.x, v[1] = fa.y, v[2] = fb.x, v[3] = fb.y;
}

// acc[t] += v · z[t] for t < valid (z aligned to 4 elements).
template <int TM, typename E>
__device__ __forceinline__ void Accumulate(float (&acc)[TM], float v, const E* z, int valid) {
#pragma unroll
  for (int q = 0; q < TM / 4; ++q) {
    if (4 * q + 4 <= valid) {
      float zq[4];
      Load4(z + 4 * q, zq);
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[4 * q + i] += v * zq[i];
    } else if (4 * q < valid) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (4 * q + i < valid) acc[4 * q + i] += v * ToF(z[4 * q + i]);
      }
    }
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
__device__ __forceinline__ void AtomicAddTo(__half* p, float v) { atomicAdd(p, __float2half_rn(v)); }

// The 32-bit steps word and 4 values of entries [pos, pos + 4) (zeros past end).
template <typename E>
__device__ __forceinline__ void LoadQuad(const SpectrumApplyTask& task, int pos, int end,
                                         uint32_t& g, float v[4]) {
  g = 0;
  v[0] = v[1] = v[2] = v[3] = 0.f;
  if (pos < end) {
    g = __ldg(reinterpret_cast<const uint32_t*>(task.gaps + pos));
    Load4(static_cast<const E*>(task.values) + pos, v);
  }
}

template <int TM, typename E>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    SpectrumApplyKernel(const TaskBatch batch, const E* __restrict__ zt, int64_t ldz,
                        E* __restrict__ y, int64_t ldy, const int32_t* __restrict__ y_rows) {
  const SpectrumApplyTask& task = batch.t[blockIdx.y];
  const int tok0 = static_cast<int>(blockIdx.z) * TM;
  if (tok0 >= task.count) return;
  const int valid = min(TM, task.count - tok0);
  const int lane = threadIdx.x & 31;
  const int warp = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int warps = (task.rows + kRowsPerWarp - 1) / kRowsPerWarp;
  if (warp >= warps) return;
  // Rows warp, warp + warps, ...: at most kRowsPerWarp of them; lane k holds
  // the bounds of the k-th.
  const int my_row = warp + lane * warps;
  int my_begin = 0, my_end = 0;
  if (lane < kRowsPerWarp && my_row < task.rows) {
    my_begin = __ldg(task.row_ptr + my_row);
    my_end = __ldg(task.row_ptr + my_row + 1);
  }
  const E* zbase = zt + task.tok_begin + tok0;
  int begin = __shfl_sync(kFull, my_begin, 0);
  int end = __shfl_sync(kFull, my_end, 0);
  uint32_t g;
  float v[4];
  LoadQuad<E>(task, begin + 4 * lane, end, g, v);
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int r = warp + k * warps;
    if (r >= task.rows) break;
    // Prefetch the next row's first 128 entries.
    const int next_begin = __shfl_sync(kFull, my_begin, (k + 1) & 31);
    const int next_end = __shfl_sync(kFull, my_end, (k + 1) & 31);
    uint32_t ng = 0;
    float nv[4] = {0.f, 0.f, 0.f, 0.f};
    if (k + 1 < kRowsPerWarp) LoadQuad<E>(task, next_begin + 4 * lane, next_end, ng, nv);

    float acc[TM];
#pragma unroll
    for (int t = 0; t < TM; ++t) acc[t] = 0.f;
    int carry = 0;
    for (int e = begin; e < end; e += 128) {
      const int mine = e + 4 * lane;
      if (e != begin) LoadQuad<E>(task, mine, end, g, v);
      const int c0 = static_cast<int>(g & 255u);
      const int c1 = c0 + static_cast<int>((g >> 8) & 255u);
      const int c2 = c1 + static_cast<int>((g >> 16) & 255u);
      const int c3 = c2 + static_cast<int>(g >> 24);
      int incl = c3;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int up = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += up;
      }
      const int start = carry + incl - c3;
      carry += __shfl_sync(kFull, incl, 31);
      if (mine < end) {
        Accumulate<TM>(acc, v[0], zbase + static_cast<int64_t>(start + c0) * ldz, valid);
        Accumulate<TM>(acc, v[1], zbase + static_cast<int64_t>(start + c1) * ldz, valid);
        Accumulate<TM>(acc, v[2], zbase + static_cast<int64_t>(start + c2) * ldz, valid);
        Accumulate<TM>(acc, v[3], zbase + static_cast<int64_t>(start + c3) * ldz, valid);
      }
    }
    // Reduce-scatter: at offset o, a lane keeps the half of its sums that its
    // bit o selects and adds the partner's copy of that half.
    int tok = 0;
    ReduceScatterStep<TM / 2, 16>(acc, lane, tok);
    // Lanes that differ only in the bits below 32 / TM hold the same token.
#pragma unroll
    for (int o = 16 / TM; o >= 1; o >>= 1) acc[0] += __shfl_xor_sync(kFull, acc[0], o);
    if ((lane & (32 / TM - 1)) == 0 && tok < valid) {
      const int p = task.tok_begin + tok0 + tok;
      AtomicAddTo(y + static_cast<int64_t>(__ldg(y_rows + p)) * ldy + task.y_col + r, acc[0]);
    }
    begin = next_begin;
    end = next_end;
    g = ng;
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = nv[i];
  }
}

template <int TM, typename E>
cudaError_t LaunchBucket(const std::vector<SpectrumApplyTask>& tasks, const void* zt, int64_t ldz,
                         void* y, int64_t ldy, const int32_t* y_rows, cudaStream_t stream) {
  for (size_t first = 0; first < tasks.size(); first += kMaxTasks) {
    TaskBatch batch{};
    int count = 0;
    int max_rows = 0, max_tokens = 0;
    for (size_t i = first; i < tasks.size() && count < kMaxTasks; ++i, ++count) {
      batch.t[count] = tasks[i];
      max_rows = max_rows > tasks[i].rows ? max_rows : tasks[i].rows;
      max_tokens = max_tokens > tasks[i].count ? max_tokens : tasks[i].count;
    }
    const int warps = (max_rows + kRowsPerWarp - 1) / kRowsPerWarp;
    const int chunks = (max_tokens + TM - 1) / TM;
    if (chunks > 65535) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock),
                    static_cast<unsigned>(count), static_cast<unsigned>(chunks));
    SpectrumApplyKernel<TM, E><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
        batch, static_cast<const E*>(zt), ldz, static_cast<E*>(y), ldy, y_rows);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename E>
cudaError_t LaunchTyped(const SpectrumApplyTask* tasks, int num_tasks, const void* zt,
                        int64_t ldz, void* y, int64_t ldy, const int32_t* y_rows,
                        cudaStream_t stream) {
  // Tasks of at most 4 tokens take the 4-token kernel; the rest go in chunks
  // of 8 tokens, one warp per chunk and row.
  std::vector<SpectrumApplyTask> b4, b8;
  for (int i = 0; i < num_tasks; ++i) {
    const SpectrumApplyTask& t = tasks[i];
    if (t.rows <= 0 || t.count <= 0) continue;
    (t.count <= 4 ? b4 : b8).push_back(t);
  }
  cudaError_t err = cudaSuccess;
  if (!b4.empty() && (err = LaunchBucket<4, E>(b4, zt, ldz, y, ldy, y_rows, stream))) return err;
  if (!b8.empty() && (err = LaunchBucket<8, E>(b8, zt, ldz, y, ldy, y_rows, stream))) return err;
  return cudaSuccess;
}

}  // namespace

cudaError_t LaunchSpectrumApply(const SpectrumApplyTask* tasks, int num_tasks, const void* zt,
                                int64_t ldz, void* y, int64_t ldy, const int32_t* y_rows,
                                DType dtype, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return LaunchTyped<float>(tasks, num_tasks, zt, ldz, y, ldy, y_rows, stream);
    case DType::kBFloat16:
      return LaunchTyped<__nv_bfloat16>(tasks, num_tasks, zt, ldz, y, ldy, y_rows, stream);
    case DType::kFloat16:
      return LaunchTyped<__half>(tasks, num_tasks, zt, ldz, y, ldy, y_rows, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace qwha::kernels::cuda
