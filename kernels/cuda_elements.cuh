// Internal to kernels/*.cu: float32 conversions of the element types the
// kernels read and write (float, bfloat16, half), and the controls of
// programmatic dependent launch, shared by all kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// Programmatic dependent launch (Hopper and newer; no-ops before, and in a
// kernel launched without the attribute). A kernel that calls
// LetDependentsStart lets the next kernel on its stream, if launched with
// cudaLaunchAttributeProgrammaticStreamSerialization, start its blocks now;
// that kernel must call WaitForPrevious before it reads anything the earlier
// kernel writes (or writes anything it reads): the wait returns once the
// earlier kernel has finished and its writes are visible.
__device__ __forceinline__ void LetDependentsStart() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void WaitForPrevious() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace qwha::kernels::cuda
