// Small helpers shared by qwha-bench subcommands: timing on CPU or CUDA and
// result tables that print as text or as one JSON object.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qwha::bench {

struct TimingOptions {
  int warmup = 3;
  int repeats = 20;
};

// Median wall time in milliseconds of fn() on `device`. On CUDA each run is
// bracketed by CUDA events on the current stream (device time, no host sync
// inside the region); on the CPU by a steady clock.
double MedianMillis(const torch::Device& device, const std::function<void()>& fn,
                    const TimingOptions& options = {});

// Blocks until all work queued on `device` is done (no-op on the CPU).
void Synchronize(const torch::Device& device);

// Peak bytes allocated on a CUDA device since the last reset (0 on the CPU).
int64_t PeakMemoryBytes(const torch::Device& device);
void ResetPeakMemory(const torch::Device& device);

// A table of rows with named columns; printed aligned, or collected as JSON.
class Table {
 public:
  Table(std::string title, std::vector<std::string> columns);
  void AddRow(const std::vector<nlohmann::json>& cells);
  std::string ToText() const;
  nlohmann::json ToJson() const;

 private:
  std::string title_;
  std::vector<std::string> columns_;
  std::vector<std::vector<nlohmann::json>> rows_;
};

// "NVIDIA H100 80GB HBM3" / "cpu (N threads)".
std::string DeviceName(const torch::Device& device);

}  // namespace qwha::bench
