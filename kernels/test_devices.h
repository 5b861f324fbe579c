// For the kernel tests: the devices every test runs on — the CPU, and CUDA
// device 0 when this build and machine have one (where the CUDA path is then
// checked against the CPU path and the float64 reference).
#pragma once

#include <torch/torch.h>

#include <vector>

namespace qwha::kernels {

inline std::vector<torch::Device> Devices() {
  std::vector<torch::Device> d = {torch::kCPU};
  if (torch::cuda::is_available()) d.emplace_back(torch::kCUDA, 0);
  return d;
}

}  // namespace qwha::kernels
