// CUDA product of packed spectra with FWHT'd tokens (spectrum_apply.h): one
// warp per row of F, the row read once for up to 32 tokens. No LibTorch.
//
// Per 128 entries of a row, lane l decodes entries 4l .. 4l + 3: one 32-bit
// load of their column steps, one 8- or 16-byte load of their values; the
// lane's running column comes from a warp inclusive scan of the per-lane step
// sums plus the carry of the previous 128 entries. Each entry then reads the
// TM token values of its column of zt (float4 loads; zt is small and stays in
// L1/L2) into TM float32 sums. At the end of the row the 32 × TM sums are
// reduce-scattered across the warp (TM − 1 shuffles, then the rest summed
// with xor shuffles), leaving each token's total in one lane, which adds it
// to y.
#include <cstdint>
#include <vector>

#include "kernels/cuda_elements.cuh"
#include "kernels/cuda_launchers.h"

namespace qwha::kernels::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxTasks = 32;
constexpr int kWarpsPerBlock = 8;

struct TaskBatch {
  SpectrumApplyTask t[kMaxTasks];
};

__device__ __forceinline__ void Load4(const float* p, float v[4]) {
  const float4 x = __ldg(reinterpret_cast<const float4*>(p));
  v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}

__device__ __forceinline__ void Load4(const __nv_bfloat16* p, float v[4]) {
  const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
  const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
  const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
  const float2 fa = __bfloat1622float2(a);
  const float2 fb = __bfloat1622float2(b);
  v[0] = fa.x, v[1] = fa.y, v[2] = fb.x, v[3] = fb.y;
}

__device__ __forceinline__ void Load4(const __half* p, float v[4]) {
  const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 fa = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 fb = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  v[0] = fa.x, v[1] = fa.y, v[2] = fb.x, v[3] = fb.y;
}

// acc[t] += v · z[t] for t < valid (z 16-byte aligned).
template <int TM>
__device__ __forceinline__ void Accumulate(float (&acc)[TM], float v, const float* z, int valid) {
#pragma unroll
  for (int q = 0; q < TM / 4; ++q) {
    if (4 * q + 4 <= valid) {
      const float4 zq = __ldg(reinterpret_cast<const float4*>(z) + q);
      acc[4 * q] += v * zq.x;
      acc[4 * q + 1] += v * zq.y;
      acc[4 * q + 2] += v * zq.z;
      acc[4 * q + 3] += v * zq.w;
    } else if (4 * q < valid) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (4 * q + i < valid) acc[4 * q + i] += v * __ldg(z + 4 * q + i);
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

template <int TM, typename E>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    SpectrumApplyKernel(const TaskBatch batch, const float* __restrict__ zt, int64_t ldz,
                        E* __restrict__ y, int64_t ldy, const int32_t* __restrict__ y_rows) {
  const SpectrumApplyTask& task = batch.t[blockIdx.y];
  const int lane = threadIdx.x & 31;
  const E* values = static_cast<const E*>(task.values);
  for (int r = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5); r < task.rows;
       r += gridDim.x * kWarpsPerBlock) {
    const int begin = __ldg(task.row_ptr + r);
    const int end = __ldg(task.row_ptr + r + 1);
    for (int tok0 = 0; tok0 < task.count; tok0 += TM) {
      const int valid = min(TM, task.count - tok0);
      const float* zbase = zt + task.tok_begin + tok0;
      float acc[TM];
#pragma unroll
      for (int t = 0; t < TM; ++t) acc[t] = 0.f;
      int carry = 0;
      for (int e = begin; e < end; e += 128) {
        const int mine = e + 4 * lane;
        uint32_t g = 0;
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        if (mine < end) {
          g = __ldg(reinterpret_cast<const uint32_t*>(task.gaps + mine));
          Load4(values + mine, v);
        }
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
      // Reduce-scatter: at offset o, a lane keeps the half of its sums that
      // its bit o selects and adds the partner's copy of that half.
      int tok = 0;
      ReduceScatterStep<TM / 2, 16>(acc, lane, tok);
      // Lanes that differ only in the bits below 32 / TM hold the same token.
#pragma unroll
      for (int o = 16 / TM; o >= 1; o >>= 1) acc[0] += __shfl_xor_sync(kFull, acc[0], o);
      if ((lane & (32 / TM - 1)) == 0 && tok < valid) {
        const int p = task.tok_begin + tok0 + tok;
        E* dst = y + static_cast<int64_t>(__ldg(y_rows + p)) * ldy + task.y_col + r;
        *dst = FromF<E>(ToF(*dst) + acc[0]);
      }
    }
  }
}

template <int TM, typename E>
cudaError_t LaunchBucket(const std::vector<SpectrumApplyTask>& tasks, const float* zt, int64_t ldz,
                         void* y, int64_t ldy, const int32_t* y_rows, cudaStream_t stream) {
  for (size_t first = 0; first < tasks.size(); first += kMaxTasks) {
    TaskBatch batch{};
    int count = 0;
    int max_rows = 0;
    for (size_t i = first; i < tasks.size() && count < kMaxTasks; ++i, ++count) {
      batch.t[count] = tasks[i];
      max_rows = max_rows > tasks[i].rows ? max_rows : tasks[i].rows;
    }
    const int blocks_x = (max_rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
    const dim3 grid(static_cast<unsigned>(blocks_x > 0 ? blocks_x : 1),
                    static_cast<unsigned>(count));
    SpectrumApplyKernel<TM, E><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
        batch, zt, ldz, static_cast<E*>(y), ldy, y_rows);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename E>
cudaError_t LaunchTyped(const SpectrumApplyTask* tasks, int num_tasks, const float* zt,
                        int64_t ldz, void* y, int64_t ldy, const int32_t* y_rows,
                        cudaStream_t stream) {
  // Buckets by tokens per task: a task of 3 tokens should not pay for 32 sums.
  std::vector<SpectrumApplyTask> b4, b8, b16, b32;
  for (int i = 0; i < num_tasks; ++i) {
    const SpectrumApplyTask& t = tasks[i];
    if (t.rows <= 0 || t.count <= 0) continue;
    (t.count <= 4 ? b4 : t.count <= 8 ? b8 : t.count <= 16 ? b16 : b32).push_back(t);
  }
  cudaError_t err = cudaSuccess;
  if (!b4.empty() && (err = LaunchBucket<4, E>(b4, zt, ldz, y, ldy, y_rows, stream))) return err;
  if (!b8.empty() && (err = LaunchBucket<8, E>(b8, zt, ldz, y, ldy, y_rows, stream))) return err;
  if (!b16.empty() && (err = LaunchBucket<16, E>(b16, zt, ldz, y, ldy, y_rows, stream)))
    return err;
  if (!b32.empty() && (err = LaunchBucket<32, E>(b32, zt, ldz, y, ldy, y_rows, stream)))
    return err;
  return cudaSuccess;
}

}  // namespace

cudaError_t LaunchSpectrumApply(const SpectrumApplyTask* tasks, int num_tasks, const float* zt,
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
