#include "server/scheduler/placement.h"

namespace qwha::scheduler {

int FitFirstPolicy::Choose(const std::vector<QueuedJob>& queued, const WorkerView& worker) const {
  for (size_t i = 0; i < queued.size(); ++i) {
    const QueuedJob& job = queued[i];
    if (job.require_gpu && worker.gpu_count == 0) continue;
    if (job.min_memory_bytes > worker.free_memory_bytes) continue;
    return static_cast<int>(i);
  }
  return -1;
}

}  // namespace qwha::scheduler
