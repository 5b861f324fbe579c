// Internal to kernels/*.cu: float32 conversions of the element types the
// kernels read and write (float, bfloat16, half), and the controls of
// programmatic dependent launch, shared by all kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace qwha::kernels::cuda {

__device__ __forceinline__ float ToF(float x) { return x; }
__device__ __forceinline__ float ToF(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToF(__half x) { return __half2float(x); }

// Rounds to nearest even.
template <typename T>
__device__ __forceinline__ T FromF(float x);
template <>
__device__ __forceinline__ float FromF<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromF<__half>(float x) {
  return __float2half_rn(x);
}

// Programmatic dependent launch (Hopper and newer; a no-op before, and in
// a kernel launched without cudaLaunchAttributeProgrammaticStreamSerialization).
// A kernel launched with it may start while the previous kernel on its
// stream finishes; it must call WaitForPrevious before it reads anything
// that kernel (or any before it) may still write, or writes anything they
// read: the wait returns once the previous kernel has finished and its
// writes are visible. (Letting dependents start early, with
// griddepcontrol.launch_dependents at the top of the FWHT kernels, made
// FWHT + SpectrumApply slower: 116.3 against 103.3 us per layer, where
// the implicit start at the FWHT blocks' exit took 100.0.)
__device__ __forceinline__ void WaitForPrevious() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A stream, and whether launches on it use programmatic dependent launch.
struct LaunchStream {
  cudaStream_t stream = nullptr;
  bool overlap = false;
};

// kernel<<<grid, block, smem, on.stream>>>(args...), with programmatic
// dependent launch where on.overlap.
template <typename... Params, typename... Args>
cudaError_t LaunchOn(const LaunchStream& on, dim3 grid, dim3 block, size_t smem,
                     void (*kernel)(Params...), Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = on.stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = on.overlap ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

}  // namespace qwha::kernels::cuda
