// Placement policy: which queued job a worker gets. Policy only; the
// scheduler reads the candidates from the store and applies the choice.
//
// Thread safety: Choose() must be safe to call concurrently (the default
// policy is stateless).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qwha::scheduler {

struct QueuedJob {
  std::string id;
  int32_t priority = 0;
  int64_t seq = 0;               // submission order
  int64_t min_memory_bytes = 0;  // Resources.min_memory_bytes
  bool require_gpu = false;
};

struct WorkerView {
  int32_t gpu_count = 0;
  int64_t free_memory_bytes = 0;
};

class PlacementPolicy {
 public:
  virtual ~PlacementPolicy() = default;
  // Index into `queued` of the job to assign, or -1 for none. `queued` is in
  // (priority desc, seq asc) order.
  virtual int Choose(const std::vector<QueuedJob>& queued, const WorkerView& worker) const = 0;
};

// The default: the first job (highest priority, FIFO within it) whose memory
// need fits the worker's free memory and whose GPU need the worker meets. A
// job that fits no worker does not block the ones behind it.
class FitFirstPolicy final : public PlacementPolicy {
 public:
  int Choose(const std::vector<QueuedJob>& queued, const WorkerView& worker) const override;
};

}  // namespace qwha::scheduler
