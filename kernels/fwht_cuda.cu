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
#include <cooperative_groups.h>

#include <atomic>

#include "kernels/cuda_rows.cuh"
#include "kernels/fwht_cuda_common.cuh"

namespace qwha::kernels::cuda {
namespace {

using namespace fwht_internal;  // NOLINT: the helpers are this file's vocabulary
namespace cg = cooperative_groups;

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

// A row held in layout A (V = 16, TR = 256; thread u's kNormV values, exact
// in float32): stored unchanged to y_row, then scale · FWHT to z_row.
template <typename T>
__device__ __forceinline__ void StoreRowAndTransform(float (&v)[kNormV], T* y_row, T* z_row,
                                                     float scale, float4* smem4, int u) {
#pragma unroll
  for (int c = 0; c < 2; ++c) StoreF<T, 8>(y_row + c * 8 * kNormThreads + u * 8, v + c * 8);
  TransformRow<kNormV, kNormThreads>(v, reinterpret_cast<float*>(smem4), u);
#pragma unroll
  for (int i = 0; i < kNormV; ++i) v[i] *= scale;
#pragma unroll
  for (int c = 0; c < 2; ++c) StoreF<T, 8>(z_row + c * 8 * kNormThreads + u * 8, v + c * 8);
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    RmsNormFwhtKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                      T* __restrict__ z, float eps, float scale) {
  extern __shared__ float4 smem4[];
  __shared__ float scratch[kNormThreads / 32];
  const int u = threadIdx.x;
  const int64_t row = blockIdx.x;
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
  StoreRowAndTransform(v, y + row * kNormN, z + row * kNormN, scale, smem4, u);
}

// Row i of x to row rows[i] (rows nullptr: i) of y, unchanged, and its
// transform to the same row of z: the copy of the attention's output into the
// step's rows, with the FWHT the o projection's adapters need.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    CopyFwhtKernel(const T* __restrict__ x, const int64_t* __restrict__ rows, T* __restrict__ y,
                   T* __restrict__ z, float scale) {
  extern __shared__ float4 smem4[];
  const int u = threadIdx.x;
  const int64_t i = blockIdx.x;
  const int64_t row = rows != nullptr ? __ldg(rows + i) : i;
  float v[kNormV];
#pragma unroll
  for (int c = 0; c < 2; ++c) LoadF<T, 8>(x + i * kNormN + c * 8 * kNormThreads + u * 8, v + c * 8);
  StoreRowAndTransform(v, y + row * kNormN, z + row * kNormN, scale, smem4, u);
}

template <typename T>
cudaError_t LaunchNormFwht(const void* x, const void* w, void* y, void* z, int64_t rows, float eps,
                           float scale, cudaStream_t stream) {
  const int smem = SegLayout<kNormV, kNormThreads>::kStride * 4;
  RmsNormFwhtKernel<T><<<static_cast<unsigned>(rows), kNormThreads, smem, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), static_cast<T*>(z),
      eps, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCopyRowsFwht(const void* x, const int64_t* rows, void* y, void* z, int64_t count,
                               float scale, cudaStream_t stream) {
  const int smem = SegLayout<kNormV, kNormThreads>::kStride * 4;
  CopyFwhtKernel<T><<<static_cast<unsigned>(count), kNormThreads, smem, stream>>>(
      static_cast<const T*>(x), rows, static_cast<T*>(y), static_cast<T*>(z), scale);
  return cudaGetLastError();
}

// ------------------------------------ the same, in chunks of 4 rows --
// For SpectrumApply, z in chunks of 4 tokens ([chunks, 4096, 4]: a chunk's
// 4 values of a column side by side), which its blocks copy to shared
// memory as they are, with one bulk copy. Blocks of 4 × 256 threads: group g
// of a block holds one row in layout A, as the kernels above. Blocks [0,
// chunks) transform rows z_rows[4b + g] (-1: zeros) and write chunk b,
// through shared memory (each group's row, then 4 columns × 4 rows per
// thread, 32-byte stores); blocks [chunks, ..) write y for rows 4(b − chunks)
// + g. The RMSNorm's sums are per group in the block-sum order of the
// one-row kernel, so y and the transform's input are that kernel's, bit for
// bit.
constexpr int kChunkRows = 4;
constexpr int kChunkThreads = kChunkRows * kNormThreads;

// Row `row` of x (-1: zeros) in layout A, as thread u of its 256 holds it,
// and with kNorm RMS-normalized as RmsNormFwhtKernel does (sum(ss): the sum
// of ss over the row's threads, in BlockSum's order), so bit for bit its y.
template <typename T, bool kNorm, typename Sum>
__device__ __forceinline__ void LoadRowA(const T* __restrict__ x, const T* __restrict__ w,
                                         int64_t row, int u, float eps, Sum sum,
                                         float (&v)[kNormV]) {
#pragma unroll
  for (int i = 0; i < kNormV; ++i) v[i] = 0.f;
  if (row >= 0) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      LoadF<T, 8>(x + row * kNormN + c * 8 * kNormThreads + u * 8, v + c * 8);
    }
  }
  if constexpr (kNorm) {
    float wv[kNormV];
#pragma unroll
    for (int c = 0; c < 2; ++c) LoadF<T, 8>(w + c * 8 * kNormThreads + u * 8, wv + c * 8);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kNormV; ++i) ss += v[i] * v[i];
    const float r = rsqrtf(sum(ss) / static_cast<float>(kNormN) + eps);
#pragma unroll
    for (int i = 0; i < kNormV; ++i) v[i] = ToF(FromF<T>(wv[i] * ToF(FromF<T>(v[i] * r))));
  }
}

// Thread u's part of a row in layout A to y's row `row` (-1: nothing).
template <typename T>
__device__ __forceinline__ void StoreRowA(T* __restrict__ y, int64_t row, int u,
                                          const float (&v)[kNormV]) {
  if (row < 0) return;
#pragma unroll
  for (int c = 0; c < 2; ++c)
    StoreF<T, 8>(y + row * kNormN + c * 8 * kNormThreads + u * 8, v + c * 8);
}

// The sum of v over the 256 threads of group g (BlockSum's order for one row).
__device__ __forceinline__ float GroupSum(float v, float* scratch, int g) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  constexpr int kWarps = kNormThreads / 32;
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < kWarps; ++w) total += scratch[g * kWarps + w];
  __syncthreads();
  return total;
}

template <typename T, bool kNorm>
__global__ void __launch_bounds__(kChunkThreads)
    NormFwhtChunkKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                        T* __restrict__ z, const int32_t* __restrict__ z_rows, int chunks,
                        int64_t rows, float eps, float scale) {
  extern __shared__ float4 smem4[];
  __shared__ float scratch[kChunkThreads / 32];
  const int g = threadIdx.x / kNormThreads, u = threadIdx.x % kNormThreads;
  const bool chunk = static_cast<int>(blockIdx.x) < chunks;  // uniform over the block
  int64_t row = chunk ? __ldg(z_rows + kChunkRows * blockIdx.x + g)
                      : (static_cast<int64_t>(blockIdx.x) - chunks) * kChunkRows + g;
  if (row >= rows) row = -1;
  float v[kNormV];
  LoadRowA<T, kNorm>(
      x, w, row, u, eps, [&](float ss) { return GroupSum(ss, scratch, g); }, v);
  if (!chunk) {
    StoreRowA(y, row, u, v);
    return;
  }
  using L = SegLayout<kNormV, kNormThreads>;
  float* segs = reinterpret_cast<float*>(smem4);
  TransformRow<kNormV, kNormThreads>(v, segs + g * L::kStride, u);
#pragma unroll
  for (int i = 0; i < kNormV; ++i) v[i] *= scale;
  // Group g's row of T after the 4 segments, then 4 columns × 4 rows per thread.
  T* rows_t = reinterpret_cast<T*>(segs + kChunkRows * L::kStride);
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    StoreF<T, 8>(rows_t + g * kNormN + c * 8 * kNormThreads + u * 8, v + c * 8);
  }
  __syncthreads();
  const int i = threadIdx.x;  // columns 4i .. 4i + 3
  uint2 a[kChunkRows];
#pragma unroll
  for (int t = 0; t < kChunkRows; ++t) {
    a[t] = *reinterpret_cast<const uint2*>(rows_t + t * kNormN + 4 * i);
  }
  // Column j of the 4: (row 0, row 1) in one word, (row 2, row 3) in the next.
  uint4 lo, hi;
  lo.x = __byte_perm(a[0].x, a[1].x, 0x5410), lo.y = __byte_perm(a[2].x, a[3].x, 0x5410);
  lo.z = __byte_perm(a[0].x, a[1].x, 0x7632), lo.w = __byte_perm(a[2].x, a[3].x, 0x7632);
  hi.x = __byte_perm(a[0].y, a[1].y, 0x5410), hi.y = __byte_perm(a[2].y, a[3].y, 0x5410);
  hi.z = __byte_perm(a[0].y, a[1].y, 0x7632), hi.w = __byte_perm(a[2].y, a[3].y, 0x7632);
  uint4* dst =
      reinterpret_cast<uint4*>(z + static_cast<int64_t>(blockIdx.x) * kNormN * kChunkRows + 16 * i);
  dst[0] = lo;
  dst[1] = hi;
}

// The same with each chunk's 4 rows on 4 SMs, as the one-row kernels (sm_90
// clusters of 4 blocks of 256 threads): 4 rows' transforms in one block
// take ~3× one row's time (the shared-memory passes of the transform), so
// the first form costs 8 us for 32 rows against 2.9 for z in rows. Block g
// of a chunk's cluster transforms row z_rows[4c + g] and stores its columns
// [1024r, 1024r + 1024) into slot g of block r's shared memory (distributed
// shared memory, 16-byte stores; the cluster's blocks have all started by
// then: they arrive on a first cluster barrier at their top and wait on it
// only here); after a second barrier block r interleaves its 4 slots and
// writes the chunk's columns [1024r, 1024r + 1024). Clusters past the chunks
// write y, one row per block.
std::atomic<int> chunk_kernel{0};  // SetNormFwhtChunksKernel

template <typename T, bool kNorm>
__global__ void __launch_bounds__(kNormThreads)
    NormFwhtClusterKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                          T* __restrict__ z, const int32_t* __restrict__ z_rows, int chunks,
                          int64_t rows, float eps, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ float4 smem4[];
  __shared__ float scratch[kNormThreads / 32];
  const int u = threadIdx.x;
  const int64_t chunk_blocks = static_cast<int64_t>(kChunkRows) * chunks;
  const bool chunk = blockIdx.x < chunk_blocks;  // uniform over the cluster
  if (chunk) asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  int64_t row = chunk ? __ldg(z_rows + blockIdx.x) : blockIdx.x - chunk_blocks;
  if (row >= rows) row = -1;
  float v[kNormV];
  LoadRowA<T, kNorm>(
      x, w, row, u, eps, [&](float ss) { return BlockSum(ss, scratch); }, v);
  if (!chunk) {
    StoreRowA(y, row, u, v);
    return;
  }
  using L = SegLayout<kNormV, kNormThreads>;
  float* seg = reinterpret_cast<float*>(smem4);
  TransformRow<kNormV, kNormThreads>(v, seg, u);
#pragma unroll
  for (int i = 0; i < kNormV; ++i) v[i] *= scale;
  // Slots of 1024 columns of the chunk's 4 rows (row g in slot g).
  constexpr int kSlot = kNormN / kChunkRows;
  T* slots = reinterpret_cast<T*>(seg + L::kStride);
  cg::cluster_group cluster = cg::this_cluster();
  const int g = static_cast<int>(cluster.block_rank());
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");  // every block has started
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int col = c * 8 * kNormThreads + u * 8;
    StoreF<T, 8>(cluster.map_shared_rank(slots, col / kSlot) + g * kSlot + col % kSlot, v + c * 8);
  }
  cluster.sync();
  const int col = 4 * u;  // of this block's 1024
  uint2 a[kChunkRows];
#pragma unroll
  for (int t = 0; t < kChunkRows; ++t) {
    a[t] = *reinterpret_cast<const uint2*>(slots + t * kSlot + col);
  }
  uint4 lo, hi;
  lo.x = __byte_perm(a[0].x, a[1].x, 0x5410), lo.y = __byte_perm(a[2].x, a[3].x, 0x5410);
  lo.z = __byte_perm(a[0].x, a[1].x, 0x7632), lo.w = __byte_perm(a[2].x, a[3].x, 0x7632);
  hi.x = __byte_perm(a[0].y, a[1].y, 0x5410), hi.y = __byte_perm(a[2].y, a[3].y, 0x5410);
  hi.z = __byte_perm(a[0].y, a[1].y, 0x7632), hi.w = __byte_perm(a[2].y, a[3].y, 0x7632);
  uint4* dst = reinterpret_cast<uint4*>(
      z + (static_cast<int64_t>(blockIdx.x) / kChunkRows * kNormN + g * kSlot + col) * kChunkRows);
  dst[0] = lo;
  dst[1] = hi;
#else
  __trap();  // launched only on devices of compute capability 9.0 or more
#endif
}

bool ClustersAvailable() {
  static const bool available = [] {
    int device = 0, major = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ==
               cudaSuccess &&
           major >= 9;
  }();
  return available;
}

template <typename T>
cudaError_t LaunchNormClusters(const void* x, const void* w, void* y, void* z,
                               const int32_t* z_rows, int64_t chunks, int64_t rows, float eps,
                               float scale, cudaStream_t stream) {
  using L = SegLayout<kNormV, kNormThreads>;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(kChunkRows * (chunks + (rows + 3) / 4)));
  config.blockDim = dim3(kNormThreads);
  config.dynamicSmemBytes = L::kStride * 4 + kNormN * sizeof(T);
  config.stream = stream;
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = kChunkRows;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(w);
  T* yt = static_cast<T*>(y);
  T* zt = static_cast<T*>(z);
  const int c = static_cast<int>(chunks);
  return w != nullptr ? cudaLaunchKernelEx(&config, NormFwhtClusterKernel<T, true>, xt, wt, yt, zt,
                                           z_rows, c, rows, eps, scale)
                      : cudaLaunchKernelEx(&config, NormFwhtClusterKernel<T, false>, xt, wt, yt, zt,
                                           z_rows, c, rows, eps, scale);
}

template <typename T>
cudaError_t LaunchNormChunks(const void* x, const void* w, void* y, void* z, const int32_t* z_rows,
                             int64_t chunks, int64_t rows, float eps, float scale,
                             cudaStream_t stream) {
  if (ClustersAvailable() && chunk_kernel.load(std::memory_order_relaxed) != 1) {
    return LaunchNormClusters<T>(x, w, y, z, z_rows, chunks, rows, eps, scale, stream);
  }
  using L = SegLayout<kNormV, kNormThreads>;
  const int smem = kChunkRows * (L::kStride * 4 + kNormN * static_cast<int>(sizeof(T)));
  auto kernel = w != nullptr ? NormFwhtChunkKernel<T, true> : NormFwhtChunkKernel<T, false>;
  // Raised once per instantiation (a call per launch costs host time).
  static std::atomic<bool> raised_norm{false}, raised_copy{false};
  std::atomic<bool>& raised = w != nullptr ? raised_norm : raised_copy;
  if (!raised.load(std::memory_order_relaxed)) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    raised.store(true, std::memory_order_relaxed);
  }
  const int64_t blocks = chunks + (rows + kChunkRows - 1) / kChunkRows;
  kernel<<<static_cast<unsigned>(blocks), kChunkThreads, smem, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), static_cast<T*>(z),
      z_rows, static_cast<int>(chunks), rows, eps, scale);
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
                              cudaStream_t stream) {
  if (!RmsNormFwhtFused(hidden, dtype, x, weight, y, z) || rows < 0 || rows > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  return dtype == DType::kBFloat16
             ? LaunchNormFwht<__nv_bfloat16>(x, weight, y, z, rows, eps, scale, stream)
             : LaunchNormFwht<__half>(x, weight, y, z, rows, eps, scale, stream);
}

cudaError_t LaunchCopyFwht(const void* x, const int64_t* rows, void* y, void* z, int64_t count,
                           int64_t hidden, float scale, DType dtype, cudaStream_t stream) {
  if (!RmsNormFwhtFused(hidden, dtype, x, nullptr, y, z) || count < 0 || count > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  if (count == 0) return cudaSuccess;
  return dtype == DType::kBFloat16
             ? LaunchCopyRowsFwht<__nv_bfloat16>(x, rows, y, z, count, scale, stream)
             : LaunchCopyRowsFwht<__half>(x, rows, y, z, count, scale, stream);
}

void SetNormFwhtChunksKernel(int kernel) { chunk_kernel.store(kernel, std::memory_order_relaxed); }

cudaError_t LaunchNormFwhtChunks(const void* x, const void* weight, void* y, void* z,
                                 const int32_t* z_rows, int64_t chunks, int64_t rows,
                                 int64_t hidden, float eps, float scale, DType dtype,
                                 cudaStream_t stream) {
  if (!RmsNormFwhtFused(hidden, dtype, x, weight, y, z) || rows < 0 || chunks < 0 ||
      4 * (chunks + rows) > 0x7fffffff || (chunks > 0 && z_rows == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (rows + chunks == 0) return cudaSuccess;
  return dtype == DType::kBFloat16
             ? LaunchNormChunks<__nv_bfloat16>(x, weight, y, z, z_rows, chunks, rows, eps, scale,
                                               stream)
             : LaunchNormChunks<__half>(x, weight, y, z, z_rows, chunks, rows, eps, scale, stream);
}

bool FwhtChunksSupported(int k, int log2_m, DType dtype) {
  const int size = dtype == DType::kBFloat16 || dtype == DType::kFloat16 ? 2 : 4;
  return k > 1 && fwht_internal::FwhtKChunksSupported(k, log2_m, size);
}

cudaError_t LaunchFwhtChunks(const void* in, int64_t in_row_stride, void* out,
                             const int32_t* z_rows, int64_t chunks, int k, int log2_m, DType dtype,
                             float scale, bool transpose, cudaStream_t stream) {
  if (chunks < 0 || 4 * chunks > 0x7fffffff) return cudaErrorInvalidValue;
  if (!FwhtChunksSupported(k, log2_m, dtype)) return cudaErrorNotSupported;
  if (chunks == 0) return cudaSuccess;
  using fwht_internal::LaunchFwhtKChunks;
  switch (dtype) {
    case DType::kFloat32:
      return LaunchFwhtKChunks(static_cast<const float*>(in), in_row_stride,
                               static_cast<float*>(out), z_rows, 4 * chunks, k, log2_m, scale,
                               transpose, stream);
    case DType::kBFloat16:
      return LaunchFwhtKChunks(static_cast<const __nv_bfloat16*>(in), in_row_stride,
                               static_cast<__nv_bfloat16*>(out), z_rows, 4 * chunks, k, log2_m,
                               scale, transpose, stream);
    case DType::kFloat16:
      return LaunchFwhtKChunks(static_cast<const __half*>(in), in_row_stride,
                               static_cast<__half*>(out), z_rows, 4 * chunks, k, log2_m, scale,
                               transpose, stream);
    default:
      return cudaErrorInvalidValue;
  }
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
