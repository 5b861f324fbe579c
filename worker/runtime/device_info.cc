#include "worker/runtime/device_info.h"

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace qwha::runtime {

// The few NVML entry points the probe uses (nvml.h is not needed: the ABI of
// these calls is stable since NVML 5).
struct DeviceProbe::Nvml {
  using Device = void*;
  struct Memory {
    unsigned long long total, free, used;
  };
  struct Utilization {
    unsigned int gpu, memory;
  };
  void* library = nullptr;
  Device device = nullptr;
  int (*shutdown)() = nullptr;
  int (*get_name)(Device, char*, unsigned int) = nullptr;
  int (*get_memory)(Device, Memory*) = nullptr;
  int (*get_utilization)(Device, Utilization*) = nullptr;

  ~Nvml() {
    if (shutdown != nullptr) shutdown();
    if (library != nullptr) dlclose(library);
  }

  // The NVML handle of CUDA device `index` as this process numbers it:
  // CUDA_VISIBLE_DEVICES maps it to a physical index or a UUID.
  static std::unique_ptr<Nvml> Open(int index) {
    auto nvml = std::make_unique<Nvml>();
    nvml->library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (nvml->library == nullptr) return nullptr;
    auto init = reinterpret_cast<int (*)()>(dlsym(nvml->library, "nvmlInit_v2"));
    auto by_index = reinterpret_cast<int (*)(unsigned int, Device*)>(
        dlsym(nvml->library, "nvmlDeviceGetHandleByIndex_v2"));
    auto by_uuid = reinterpret_cast<int (*)(const char*, Device*)>(
        dlsym(nvml->library, "nvmlDeviceGetHandleByUUID"));
    nvml->get_name = reinterpret_cast<int (*)(Device, char*, unsigned int)>(
        dlsym(nvml->library, "nvmlDeviceGetName"));
    nvml->get_memory =
        reinterpret_cast<int (*)(Device, Memory*)>(dlsym(nvml->library, "nvmlDeviceGetMemoryInfo"));
    nvml->get_utilization = reinterpret_cast<int (*)(Device, Utilization*)>(
        dlsym(nvml->library, "nvmlDeviceGetUtilizationRates"));
    if (init == nullptr || by_index == nullptr || nvml->get_name == nullptr ||
        nvml->get_memory == nullptr || nvml->get_utilization == nullptr || init() != 0) {
      return nullptr;
    }
    nvml->shutdown = reinterpret_cast<int (*)()>(dlsym(nvml->library, "nvmlShutdown"));
    std::string physical = std::to_string(index);
    if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
      std::vector<std::string> ids = absl::StrSplit(visible, ',', absl::SkipEmpty());
      if (index < static_cast<int>(ids.size())) physical = ids[index];
    }
    unsigned int n = 0;
    int rc = absl::SimpleAtoi(physical, &n) ? by_index(n, &nvml->device)
             : by_uuid != nullptr           ? by_uuid(physical.c_str(), &nvml->device)
                                            : -1;
    if (rc != 0) return nullptr;
    return nvml;
  }
};

absl::StatusOr<torch::Device> ParseDevice(const std::string& value) {
  if (value == "cpu") return torch::Device(torch::kCPU);
  if (value == "cuda") return torch::Device(torch::kCUDA, 0);
  int index = -1;
  if (value.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(value.substr(5), &index) && index >= 0 &&
      index < 256) {
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("expected cpu, cuda or cuda:N, got '", value, "'"));
}

absl::Status CheckDeviceExists(const torch::Device& device) {
  if (!device.is_cuda()) return absl::OkStatus();
  const int64_t count = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  if (device.index() >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat(device.str(), " requested but this process sees ", count, " CUDA device(s)"));
  }
  return absl::OkStatus();
}

DeviceProbe::DeviceProbe(const torch::Device& device) : device_(device) {
  if (device_.is_cuda()) nvml_ = Nvml::Open(device_.has_index() ? device_.index() : 0);
}

DeviceProbe::~DeviceProbe() = default;

DeviceSample DeviceProbe::Sample() const {
  DeviceSample s;
  if (!device_.is_cuda()) {
    s.name = "cpu";
    auto [total, available] = HostMemoryTotalAndAvailable();
    s.total_bytes = total;
    s.free_bytes = available;
    s.used_bytes = total - available;
    return s;
  }
  s.gpu_count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (nvml_ == nullptr) return s;
  char name[96] = {0};
  if (nvml_->get_name(nvml_->device, name, sizeof(name)) == 0) s.name = name;
  Nvml::Memory memory{};
  if (nvml_->get_memory(nvml_->device, &memory) == 0) {
    s.total_bytes = static_cast<int64_t>(memory.total);
    s.free_bytes = static_cast<int64_t>(memory.free);
    s.used_bytes = static_cast<int64_t>(memory.used);
  }
  Nvml::Utilization utilization{};
  if (nvml_->get_utilization(nvml_->device, &utilization) == 0) {
    s.utilization = utilization.gpu / 100.0;
  }
  return s;
}

std::pair<int64_t, int64_t> HostMemoryTotalAndAvailable() {
  std::ifstream in("/proc/meminfo");
  int64_t total = 0, available = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    fields >> key >> kib;
    if (key == "MemTotal:") total = kib * 1024;
    if (key == "MemAvailable:") available = kib * 1024;
  }
  return {total, available};
}

}  // namespace qwha::runtime
