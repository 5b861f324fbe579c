// What the worker knows about its device: the --device flag, and samples of
// memory and utilization for registration, heartbeats and /metrics.
//
// CUDA devices are read through NVML (libnvidia-ml.so.1, opened with dlopen
// at run time, so the worker builds and runs without it): NVML reads the
// driver's counters without creating a CUDA context in the worker process,
// whose child owns the GPU. Without NVML a CUDA sample has the device count
// from torch::cuda and zeros elsewhere. The CPU "device" is the host:
// memory from /proc/meminfo, utilization 0.
//
// Thread safety: a DeviceProbe may be sampled from any thread concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace qwha::runtime {

// "cpu", "cuda" (= cuda:0) or "cuda:N". InvalidArgument naming the value
// otherwise. Does not check that the device exists (see CheckDeviceExists).
absl::StatusOr<torch::Device> ParseDevice(const std::string& value);

// FailedPrecondition if `device` is a CUDA device this process cannot see.
absl::Status CheckDeviceExists(const torch::Device& device);

struct DeviceSample {
  std::string name;         // e.g. "NVIDIA H100 80GB HBM3", or "cpu"
  int gpu_count = 0;        // GPUs visible to this process; 0 in CPU mode
  int64_t total_bytes = 0;  // device memory (host memory in CPU mode)
  int64_t used_bytes = 0;
  int64_t free_bytes = 0;  // what a new job could still use
  double utilization = 0;  // 0..1, GPU busy share over the driver's window; 0 on the CPU
};

class DeviceProbe {
 public:
  // A probe of `device` (loads NVML for CUDA devices if it can).
  explicit DeviceProbe(const torch::Device& device);
  ~DeviceProbe();
  DeviceProbe(const DeviceProbe&) = delete;
  DeviceProbe& operator=(const DeviceProbe&) = delete;

  // The current sample. Fields that cannot be read are 0 ("" for the name).
  DeviceSample Sample() const;

  const torch::Device& device() const { return device_; }

 private:
  struct Nvml;
  torch::Device device_;
  std::unique_ptr<Nvml> nvml_;  // null: CPU device or no NVML
};

// MemTotal and MemAvailable of /proc/meminfo in bytes; zeros if unreadable.
std::pair<int64_t, int64_t> HostMemoryTotalAndAvailable();

}  // namespace qwha::runtime
