#include "worker/bench/bench_util.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime.h>
#endif

namespace qwha::bench {

void Synchronize(const torch::Device& device) {
#ifdef QWHA_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceSynchronize();
  }
#endif
  (void)device;
}

double MedianMillis(const torch::Device& device, const std::function<void()>& fn,
                    const TimingOptions& options) {
  for (int i = 0; i < options.warmup; ++i) fn();
  Synchronize(device);
  std::vector<double> times;
  times.reserve(options.repeats);
#ifdef QWHA_WITH_CUDA
  if (device.is_cuda()) {
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    std::vector<cudaEvent_t> events(2 * options.repeats);
    for (auto& e : events) cudaEventCreate(&e);
    for (int i = 0; i < options.repeats; ++i) {
      cudaEventRecord(events[2 * i], stream);
      fn();
      cudaEventRecord(events[2 * i + 1], stream);
    }
    cudaDeviceSynchronize();
    for (int i = 0; i < options.repeats; ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]);
      times.push_back(ms);
    }
    for (auto& e : events) cudaEventDestroy(e);
  }
#endif
  if (times.empty()) {
    for (int i = 0; i < options.repeats; ++i) {
      auto start = std::chrono::steady_clock::now();
      fn();
      Synchronize(device);
      auto stop = std::chrono::steady_clock::now();
      times.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    }
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int64_t PeakMemoryBytes(const torch::Device& device) {
#ifdef QWHA_WITH_CUDA
  if (device.is_cuda()) {
    const auto index = device.has_index() ? device.index() : c10::cuda::current_device();
    // allocated_bytes[0] is the aggregate over pool kinds.
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].peak;
  }
#endif
  (void)device;
  return 0;
}

void ResetPeakMemory(const torch::Device& device) {
#ifdef QWHA_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(
        device.has_index() ? device.index() : c10::cuda::current_device());
  }
#endif
  (void)device;
}

Table::Table(std::string title, std::vector<std::string> columns)
    : title_(std::move(title)), columns_(std::move(columns)) {}

void Table::AddRow(const std::vector<nlohmann::json>& cells) { rows_.push_back(cells); }

namespace {
std::string CellText(const nlohmann::json& cell) {
  if (cell.is_string()) return cell.get<std::string>();
  if (cell.is_number_float()) {
    char buf[64];
    const double v = cell.get<double>();
    std::snprintf(buf, sizeof(buf), (v != 0 && (v < 1e-3 || v >= 1e6)) ? "%.3e" : "%.4g", v);
    return buf;
  }
  return cell.dump();
}
}  // namespace

std::string Table::ToText() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) width[c] = columns_[c].size();
  for (const auto& row : rows_)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], CellText(row[c]).size());
  std::ostringstream out;
  out << "## " << title_ << "\n";
  auto line = [&](const std::vector<std::string>& cells) {
    out << "|";
    for (size_t c = 0; c < width.size(); ++c) {
      std::string s = c < cells.size() ? cells[c] : "";
      out << " " << s << std::string(width[c] - s.size(), ' ') << " |";
    }
    out << "\n";
  };
  line(columns_);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  line(rule);
  for (const auto& row : rows_) {
    std::vector<std::string> cells;
    for (const auto& cell : row) cells.push_back(CellText(cell));
    line(cells);
  }
  return out.str();
}

nlohmann::json Table::ToJson() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : rows_) {
    nlohmann::json obj;
    for (size_t c = 0; c < columns_.size() && c < row.size(); ++c) obj[columns_[c]] = row[c];
    rows.push_back(obj);
  }
  return {{"title", title_}, {"rows", rows}};
}

std::string DeviceName(const torch::Device& device) {
#ifdef QWHA_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device.index() < 0 ? 0 : device.index()) == cudaSuccess)
      return prop.name;
  }
#endif
  return "cpu (" + std::to_string(at::get_num_threads()) + " threads)";
}

}  // namespace qwha::bench
