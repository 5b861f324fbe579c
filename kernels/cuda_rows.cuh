// Internal to kernels/*.cu: row-wise helpers for the kernels that give one
// block to each row (cross_entropy_cuda.cu, rms_norm_cuda.cu): 16-byte packs
// of elements and block-wide float reductions.
#pragma once

#include <cstdint>

namespace qwha::kernels::cuda {

// kN consecutive elements loaded and stored as one access (16 bytes when
// kN · sizeof(T) == 16).
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Pack {
  T v[kN];
};

// True iff every pointer is 16-byte aligned and rows of `n` elements of
// `size` bytes keep that alignment.
inline bool PackAligned(int64_t n, int size, const void* a, const void* b = nullptr,
                        const void* c = nullptr, const void* d = nullptr) {
  auto ok = [](const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (n * size) % 16 == 0 && ok(a) && ok(b) && ok(c) && ok(d);
}

// Sum of `v` over the block, returned to every thread. `scratch` holds at
// least blockDim.x / 32 floats; blockDim.x is a multiple of 32. Ends with a
// barrier, so scratch may be reused right after.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += scratch[w];  // same order in every thread
  __syncthreads();
  return total;
}

}  // namespace qwha::kernels::cuda
