// Internal to kernels/*.cu: programmatic dependent launches (sm_90). A kernel
// launched this way may start while the kernel before it on the stream is
// still finishing (its blocks are scheduled once every block of that kernel
// has exited or signalled), so its launch and whatever it does before
// WaitForPriorGrids() (reading constant data such as an adapter's packed
// spectra, setting up shared memory) overlap the other kernel's tail. Every
// such kernel calls WaitForPriorGrids() before it touches memory another
// kernel writes, in every block (also blocks that return early, so that the
// kernels after it can rely on all earlier ones being complete once it is).
// Captured into CUDA graphs as programmatic edges; elsewhere (pre-sm_90, or
// switched off by SetDependentLaunch) a plain launch, and the wait returns at
// once.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace qwha::kernels::cuda {

// Waits until the kernels this one may overlap have completed and their
// writes are visible (griddepcontrol.wait; at once where none is pending).
__device__ __forceinline__ void WaitForPriorGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Whether launches in this process are dependent ones (the current device is
// sm_90 or later and SetDependentLaunch did not switch them off).
bool DependentLaunchEnabled();

// kernel<<<grid, block, smem, stream>>>(args...), as a dependent launch where
// enabled, with thread-block clusters of cluster_x blocks where cluster_x > 0.
template <typename... Params, typename... Args>
cudaError_t LaunchMaybeDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                 cudaStream_t stream, unsigned cluster_x, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attributes[2];
  unsigned count = 0;
  if (cluster_x > 0) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = cluster_x;
    attributes[count].val.clusterDim.y = 1;
    attributes[count].val.clusterDim.z = 1;
    ++count;
  }
  if (DependentLaunchEnabled()) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  config.attrs = attributes;
  config.numAttrs = count;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace qwha::kernels::cuda
