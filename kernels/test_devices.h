// For the kernel tests: the devices every test runs on — the CPU, and CUDA
// device 0 when this build and machine have one (where the CUDA path is then
// checked against the CPU path and the float64 reference).
#pragma once

#include <torch/torch.h>

#include <vector>

#ifdef QWHA_WITH_CUDA
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {

inline std::vector<torch::Device> Devices() {
  std::vector<torch::Device> d = {torch::kCPU};
  if (torch::cuda::is_available()) d.emplace_back(torch::kCUDA, 0);
  return d;
}

// The kernels that give a transform in chunks of 4 rows (RmsNormFwht and
// CopyRowsFwht with z_rows) on `dev`: on CUDA each of them in turn (selected
// by the call; the last call restores the default), elsewhere one pass.
inline std::vector<int> ChunkKernels(const torch::Device& dev) {
  if (!dev.is_cuda()) return {0};
  return {1, 0};
}
inline void UseChunkKernel(const torch::Device& dev, int kernel) {
#ifdef QWHA_WITH_CUDA
  if (dev.is_cuda()) cuda::SetNormFwhtChunksKernel(kernel);
#else
  (void)dev, (void)kernel;
#endif
}

}  // namespace qwha::kernels
