// CUDA spectrum scatter/gather (spectrum.h): element moves by flat index.
// Both only copy bits, so they are instantiated per element size, not dtype.
// No LibTorch.
#include <cstdint>

#include "kernels/cuda_launchers.h"

namespace qwha::kernels::cuda {
namespace {

template <typename E>
__global__ void ScatterKernel(const E* __restrict__ values, const int64_t* __restrict__ idx,
                              int64_t count, E* __restrict__ dense) {
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < count;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dense[__ldg(idx + t)] = values[t];
  }
}

template <typename E>
__global__ void GatherKernel(const E* __restrict__ dense, const int64_t* __restrict__ idx,
                             int64_t count, E* __restrict__ values) {
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < count;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    values[t] = dense[__ldg(idx + t)];
  }
}

int ElementSize(DType t) {
  switch (t) {
    case DType::kBFloat16:
    case DType::kFloat16:
      return 2;
    case DType::kFloat64:
      return 8;
    default:
      return 4;
  }
}

unsigned Blocks(int64_t count) {
  const int64_t b = (count + 255) / 256;
  return static_cast<unsigned>(b < 65536 ? b : 65536);  // grid-stride beyond
}

template <bool kScatter, typename E>
cudaError_t Launch(const void* src, const int64_t* idx, int64_t count, void* dst,
                   cudaStream_t stream) {
  if (kScatter) {
    ScatterKernel<E><<<Blocks(count), 256, 0, stream>>>(static_cast<const E*>(src), idx, count,
                                                        static_cast<E*>(dst));
  } else {
    GatherKernel<E><<<Blocks(count), 256, 0, stream>>>(static_cast<const E*>(src), idx, count,
                                                       static_cast<E*>(dst));
  }
  return cudaGetLastError();
}

template <bool kScatter>
cudaError_t LaunchBySize(const void* src, const int64_t* idx, int64_t count, void* dst, DType t,
                         cudaStream_t stream) {
  if (count < 0) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  switch (ElementSize(t)) {
    case 2:
      return Launch<kScatter, uint16_t>(src, idx, count, dst, stream);
    case 8:
      return Launch<kScatter, uint64_t>(src, idx, count, dst, stream);
    default:
      return Launch<kScatter, uint32_t>(src, idx, count, dst, stream);
  }
}

}  // namespace

cudaError_t LaunchSpectrumScatter(const void* values, const int64_t* idx, int64_t count,
                                  void* dense, DType dtype, cudaStream_t stream) {
  return LaunchBySize<true>(values, idx, count, dense, dtype, stream);
}

cudaError_t LaunchSpectrumGather(const void* dense, const int64_t* idx, int64_t count, void* values,
                                 DType dtype, cudaStream_t stream) {
  return LaunchBySize<false>(dense, idx, count, values, dtype, stream);
}

}  // namespace qwha::kernels::cuda
