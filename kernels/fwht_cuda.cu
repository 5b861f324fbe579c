// CUDA FWHT kernels (no LibTorch). y = scale * x · (H_K ⊗ H_M), M = 2^m.
//
// Power of two (K = 1), FwhtPow2Kernel: one pass over memory. A row of N = V·TR
// elements is spread over TR threads holding V values each ("layout A":
// register j = c*8 + e of thread u is element c*8*TR + u*8 + e, so every
// thread reads and writes 16-byte vectors, coalesced across the warp).
//   1. load (layout A), Sylvester over the c and e bits in registers;
//   2. if TR > 1: store to shared memory, read back transposed ("layout B":
//      each thread holds all TR values of V/TR (c, e) combinations), Sylvester
//      over the u bits in registers, write back, re-read layout A;
//   3. scale, convert, store (layout A).
// Butterflies of different index bits commute, so the order of stages is free.
// Shared memory is padded (8 floats per 8*TR-chunk, segments offset by TR
// banks) so that every layout-B access and every layout-A float4 access is
// free of bank conflicts; layout A swaps the two float4 halves of lanes 4..7
// of every 8 for the same reason.
//
// Launch configuration (V values x TR threads per row, rows per block) is the
// table in DispatchPow2. K > 1 goes to fwht_k_cuda.cu.
#include "kernels/cuda_rows.cuh"
#include "kernels/fwht_cuda_common.cuh"

namespace qwha::kernels::cuda {
namespace {

using namespace fwht_internal;  // NOLINT: the helpers are this file's vocabulary

// ------------------------------------------------------------ power of two --
// The transform of one row held in layout A by its kTR threads (v: thread
// u's kV values; seg: the row's shared-memory segment where kTR > 1).
template <int kV, int kTR>
__device__ __forceinline__ void TransformRow(float* v, float* seg, int u) {
  Sylvester<kV>(v);
  if constexpr (kTR > 1) {
    WriteA<kV, kTR>(seg, u, v);
    SegSync<(kTR > 32)>();
    AccessB<kV, kTR, false>(seg, u, v);
    SylvesterB<kV, kTR>(v, u);
    AccessB<kV, kTR, true>(seg, u, v);
    SegSync<(kTR > 32)>();
    ReadA<kV, kTR>(seg, u, v);
  }
}

template <typename T, int kLogN, int kV, int kTR, int kRows>
__global__ void __launch_bounds__(kTR* kRows)
    FwhtPow2Kernel(const T* __restrict__ in, int64_t in_stride, T* __restrict__ out, int64_t rows,
                   float scale) {
  constexpr int kN = 1 << kLogN;
  constexpr int kE = kV < 8 ? kV : 8;  // elements per vector access
  static_assert(kV * kTR == kN, "bad config");
  extern __shared__ float4 smem4[];
  const int u = threadIdx.x % kTR;
  const int seg = threadIdx.x / kTR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + seg;
  const bool active = row < rows;
  float v[kV];
  if (active) {
    const T* src = in + row * in_stride;
#pragma unroll
    for (int c = 0; c < kV / kE; ++c) LoadF<T, kE>(src + c * kE * kTR + u * kE, v + c * kE);
  } else {
#pragma unroll
    for (int i = 0; i < kV; ++i) v[i] = 0.f;
  }
  if constexpr (kTR > 1) {
    TransformRow<kV, kTR>(v, reinterpret_cast<float*>(smem4) + seg * SegLayout<kV, kTR>::kStride,
                          u);
  } else {
    TransformRow<kV, kTR>(v, nullptr, u);
  }
  if (active) {
#pragma unroll
    for (int i = 0; i < kV; ++i) v[i] *= scale;
    T* dst = out + row * kN;
#pragma unroll
    for (int c = 0; c < kV / kE; ++c) StoreF<T, kE>(dst + c * kE * kTR + u * kE, v + c * kE);
  }
}

template <typename T, int kLogN, int kV, int kTR, int kRows>
cudaError_t LaunchPow2(const T* in, int64_t in_stride, T* out, int64_t rows, float scale,
                       cudaStream_t stream) {
  auto kernel = FwhtPow2Kernel<T, kLogN, kV, kTR, kRows>;
  int smem = 0;
  if constexpr (kTR > 1) smem = kRows * SegLayout<kV, kTR>::kStride * 4;
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
  }
  const int64_t blocks = (rows + kRows - 1) / kRows;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  kernel<<<static_cast<unsigned>(blocks), kTR * kRows, smem, stream>>>(in, in_stride, out, rows,
                                                                       scale);
  return cudaGetLastError();
}

// Launch configuration per log2(n): values per thread V, threads per row TR,
// rows per block.
template <typename T>
cudaError_t DispatchPow2(const T* in, int64_t s, T* out, int64_t rows, int log_n, float scale,
                         cudaStream_t st) {
  switch (log_n) {
    case 0:
      return LaunchPow2<T, 0, 1, 1, 128>(in, s, out, rows, scale, st);
    case 1:
      return LaunchPow2<T, 1, 2, 1, 128>(in, s, out, rows, scale, st);
    case 2:
      return LaunchPow2<T, 2, 4, 1, 128>(in, s, out, rows, scale, st);
    case 3:
      return LaunchPow2<T, 3, 8, 1, 128>(in, s, out, rows, scale, st);
    case 4:
      return LaunchPow2<T, 4, 16, 1, 128>(in, s, out, rows, scale, st);
    case 5:
      return LaunchPow2<T, 5, 32, 1, 128>(in, s, out, rows, scale, st);
    case 6:
      return LaunchPow2<T, 6, 16, 4, 64>(in, s, out, rows, scale, st);
    case 7:
      return LaunchPow2<T, 7, 32, 4, 64>(in, s, out, rows, scale, st);
    case 8:
      return LaunchPow2<T, 8, 32, 8, 32>(in, s, out, rows, scale, st);
    case 9:
      return LaunchPow2<T, 9, 32, 16, 16>(in, s, out, rows, scale, st);
    case 10:
      return LaunchPow2<T, 10, 32, 32, 8>(in, s, out, rows, scale, st);
    case 11:
      return LaunchPow2<T, 11, 64, 32, 4>(in, s, out, rows, scale, st);
    case 12:
      return LaunchPow2<T, 12, 64, 64, 2>(in, s, out, rows, scale, st);
    case 13:
      return LaunchPow2<T, 13, 128, 64, 2>(in, s, out, rows, scale, st);
    case 14:
      return LaunchPow2<T, 14, 128, 128, 1>(in, s, out, rows, scale, st);
    case 15:
      return LaunchPow2<T, 15, 128, 256, 1>(in, s, out, rows, scale, st);
    default:
      return cudaErrorInvalidValue;
  }
}

// -------------------------------------------------- RMSNorm, then FWHT --
// One block of 256 threads per row of 4096 elements of a 2-byte type. Thread
// u holds the 16-byte packs u and u + 256 (layout A with V = 16, TR = 256),
// as rms_norm_cuda.cu's forward kernel holds them, and sums their squares in
// the same order with the same block sum: y is that kernel's, bit for bit.
// The rounded y then goes through the FWHT of FwhtPow2Kernel (V = 16, TR =
// 256: the low 4 of the 8 thread bits by shuffles) into z.
constexpr int kNormThreads = 256;
constexpr int kNormV = 16;
constexpr int kNormN = kNormV * kNormThreads;

// z in chunks of 4 tokens (z_rows given): row z_rows[p] is token p % 4 of
// chunk p / 4, [chunks, 4096 / 8, 4, 8] — each 8-column piece of a chunk
// holds its 4 tokens' 16 bytes one after the other, so a thread's 8 columns
// go out with one 16-byte store, as in rows, and SpectrumApply turns a piece
// into shared memory's [column][token] order in registers. *pos (shared
// memory): the row's position p, or -1; found by the block's threads over
// z_rows, ready after the next barrier. Positions of -1 are not written.
__device__ __forceinline__ void FindPosition(int64_t row, const int32_t* z_rows, int positions,
                                             int* pos) {
  if (z_rows == nullptr) return;
  if (threadIdx.x == 0) *pos = -1;
  __syncthreads();
  for (int i = threadIdx.x; i < positions; i += blockDim.x) {
    if (__ldg(z_rows + i) == row) *pos = i;
  }
}

// A row held in layout A (V = 16, TR = 256; thread u's kNormV values, exact
// in float32): stored unchanged to y_row, then scale · FWHT to z's row `row`
// (or, with z_rows, to position *pos of z in chunks).
template <typename T>
__device__ __forceinline__ void StoreRowAndTransform(float (&v)[kNormV], T* y_row, T* z,
                                                     int64_t row, const int32_t* z_rows,
                                                     const int* pos, float scale, float4* smem4,
                                                     int u) {
#pragma unroll
  for (int c = 0; c < 2; ++c) StoreF<T, 8>(y_row + c * 8 * kNormThreads + u * 8, v + c * 8);
  TransformRow<kNormV, kNormThreads>(v, reinterpret_cast<float*>(smem4), u);
#pragma unroll
  for (int i = 0; i < kNormV; ++i) v[i] *= scale;
  if (z_rows == nullptr) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      StoreF<T, 8>(z + row * kNormN + c * 8 * kNormThreads + u * 8, v + c * 8);
    }
  } else if (const int p = *pos; p >= 0) {  // (TransformRow's barriers published *pos)
    T* chunk = z + static_cast<int64_t>(p / 4) * kNormN * 4 + (p % 4) * 8;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      StoreF<T, 8>(chunk + (c * kNormThreads + u) * 32, v + c * 8);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    RmsNormFwhtKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                      T* __restrict__ z, const int32_t* __restrict__ z_rows, int positions,
                      float eps, float scale) {
  extern __shared__ float4 smem4[];
  __shared__ float scratch[kNormThreads / 32];
  __shared__ int pos;
  const int u = threadIdx.x;
  const int64_t row = blockIdx.x;
  FindPosition(row, z_rows, positions, &pos);
  const T* src = x + row * kNormN;
  float v[kNormV], wv[kNormV];
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    LoadF<T, 8>(src + c * 8 * kNormThreads + u * 8, v + c * 8);
    LoadF<T, 8>(w + c * 8 * kNormThreads + u * 8, wv + c * 8);
  }
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kNormV; ++i) ss += v[i] * v[i];
  const float r = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(kNormN) + eps);
#pragma unroll
  for (int i = 0; i < kNormV; ++i) {
    // As the RMSNorm kernel: round(w · round(x · r)); the FWHT reads y.
    v[i] = ToF(FromF<T>(wv[i] * ToF(FromF<T>(v[i] * r))));
  }
  StoreRowAndTransform(v, y + row * kNormN, z, row, z_rows, &pos, scale, smem4, u);
}

// Row i of x to row rows[i] (rows nullptr: i) of y, unchanged, and its
// transform to the same row of z: the copy of the attention's output into the
// step's rows, with the FWHT the o projection's adapters need.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    CopyFwhtKernel(const T* __restrict__ x, const int64_t* __restrict__ rows, T* __restrict__ y,
                   T* __restrict__ z, const int32_t* __restrict__ z_rows, int positions,
                   float scale) {
  extern __shared__ float4 smem4[];
  __shared__ int pos;
  const int u = threadIdx.x;
  const int64_t i = blockIdx.x;
  const int64_t row = rows != nullptr ? __ldg(rows + i) : i;
  FindPosition(row, z_rows, positions, &pos);
  float v[kNormV];
#pragma unroll
  for (int c = 0; c < 2; ++c) LoadF<T, 8>(x + i * kNormN + c * 8 * kNormThreads + u * 8, v + c * 8);
  StoreRowAndTransform(v, y + row * kNormN, z, row, z_rows, &pos, scale, smem4, u);
}

template <typename T>
cudaError_t LaunchNormFwht(const void* x, const void* w, void* y, void* z, int64_t rows, float eps,
                           float scale, const int32_t* z_rows, int positions, cudaStream_t stream) {
  const int smem = SegLayout<kNormV, kNormThreads>::kStride * 4;
  RmsNormFwhtKernel<T><<<static_cast<unsigned>(rows), kNormThreads, smem, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), static_cast<T*>(z),
      z_rows, positions, eps, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCopyRowsFwht(const void* x, const int64_t* rows, void* y, void* z, int64_t count,
                               float scale, const int32_t* z_rows, int positions,
                               cudaStream_t stream) {
  const int smem = SegLayout<kNormV, kNormThreads>::kStride * 4;
  CopyFwhtKernel<T><<<static_cast<unsigned>(count), kNormThreads, smem, stream>>>(
      static_cast<const T*>(x), rows, static_cast<T*>(y), static_cast<T*>(z), z_rows, positions,
      scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t DispatchFwht(const T* in, int64_t s, T* out, int64_t rows, int k, int log2_m,
                         float scale, bool transpose, cudaStream_t st) {
  if (k == 1) return DispatchPow2(in, s, out, rows, log2_m, scale, st);
  return LaunchFwhtK(in, s, out, rows, k, log2_m, scale, transpose, st);
}

}  // namespace

bool RmsNormFwhtFused(int64_t hidden, DType dtype, const void* x, const void* weight, const void* y,
                      const void* z) {
  return hidden == kNormN && (dtype == DType::kBFloat16 || dtype == DType::kFloat16) &&
         PackAligned(hidden, 2, x, weight, y, z);
}

cudaError_t LaunchRmsNormFwht(const void* x, const void* weight, void* y, void* z, int64_t rows,
                              int64_t hidden, float eps, float scale, DType dtype,
                              cudaStream_t stream, const int32_t* z_rows, int64_t positions) {
  if (!RmsNormFwhtFused(hidden, dtype, x, weight, y, z) || rows < 0 || rows > 0x7fffffff ||
      positions < 0 || positions > 0x7fffffff || (positions > 0 && z_rows == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  const int p = static_cast<int>(positions);
  return dtype == DType::kBFloat16
             ? LaunchNormFwht<__nv_bfloat16>(x, weight, y, z, rows, eps, scale, z_rows, p, stream)
             : LaunchNormFwht<__half>(x, weight, y, z, rows, eps, scale, z_rows, p, stream);
}

cudaError_t LaunchCopyFwht(const void* x, const int64_t* rows, void* y, void* z, int64_t count,
                           int64_t hidden, float scale, DType dtype, cudaStream_t stream,
                           const int32_t* z_rows, int64_t positions) {
  if (!RmsNormFwhtFused(hidden, dtype, x, nullptr, y, z) || count < 0 || count > 0x7fffffff ||
      positions < 0 || positions > 0x7fffffff || (positions > 0 && z_rows == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (count == 0) return cudaSuccess;
  const int p = static_cast<int>(positions);
  return dtype == DType::kBFloat16
             ? LaunchCopyRowsFwht<__nv_bfloat16>(x, rows, y, z, count, scale, z_rows, p, stream)
             : LaunchCopyRowsFwht<__half>(x, rows, y, z, count, scale, z_rows, p, stream);
}

cudaError_t LaunchFwht(const void* in, int64_t in_row_stride, void* out, int64_t rows, int k,
                       int log2_m, DType dtype, float scale, bool transpose, cudaStream_t stream) {
  if (rows < 0 || log2_m < 0 || (static_cast<int64_t>(k) << log2_m) > 32768) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat32:
      return DispatchFwht(static_cast<const float*>(in), in_row_stride, static_cast<float*>(out),
                          rows, k, log2_m, scale, transpose, stream);
    case DType::kBFloat16:
      return DispatchFwht(static_cast<const __nv_bfloat16*>(in), in_row_stride,
                          static_cast<__nv_bfloat16*>(out), rows, k, log2_m, scale, transpose,
                          stream);
    case DType::kFloat16:
      return DispatchFwht(static_cast<const __half*>(in), in_row_stride, static_cast<__half*>(out),
                          rows, k, log2_m, scale, transpose, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace qwha::kernels::cuda
