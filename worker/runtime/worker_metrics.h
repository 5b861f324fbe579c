// The worker's Prometheus metrics (served at --http /metrics):
//
//   qwha_worker_jobs_total{outcome}                 jobs ended: succeeded, failed, cancelled, lost
//   qwha_worker_job_phase{phase}                    1 for the current phase (idle, loading, …,
//                                                   uploading), 0 for the others
//   qwha_worker_training_step / _total_steps        optimizer steps of the running job
//   qwha_worker_training_loss                       last training loss
//   qwha_worker_training_eval_loss                  last eval loss (NaN: none yet)
//   qwha_worker_training_tokens_per_second          training throughput
//   qwha_worker_device_memory_used_bytes{device}    GPU memory (host memory in CPU mode)
//   qwha_worker_device_memory_total_bytes{device}
//   qwha_worker_gpu_utilization_ratio{device}       0..1 (0 in CPU mode or without NVML)
//   qwha_worker_blob_fetched_bytes_total            bytes received by ReadBlob
//   qwha_worker_blob_uploaded_bytes_total           bytes sent by UploadFile
//   qwha_worker_scheduler_errors_total{method}      failed scheduler calls
//
// Thread safety: every method may be called from any thread (prometheus-cpp
// metrics are atomic).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>

#include "worker/runtime/device_info.h"
#include "worker/train/progress.h"

namespace qwha::runtime {

class WorkerMetrics {
 public:
  // Registers the metrics in a new registry; `device` labels the device ones.
  explicit WorkerMetrics(const std::string& device);
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // `outcome`: "succeeded", "failed", "cancelled" or "lost".
  void JobEnded(const std::string& outcome);
  // `phase`: "idle" or a lower-case job phase ("loading", …, "uploading").
  void SetPhase(const std::string& phase);
  void SetTraining(const train::Progress& progress);
  // Zeroes the training gauges (between jobs).
  void ClearTraining();
  void SetDevice(const DeviceSample& sample);
  void AddFetchedBytes(int64_t bytes) { fetched_->Increment(static_cast<double>(bytes)); }
  void AddUploadedBytes(int64_t bytes) { uploaded_->Increment(static_cast<double>(bytes)); }
  void SchedulerError(const std::string& method);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* jobs_;
  std::map<std::string, prometheus::Gauge*> phases_;
  prometheus::Gauge* step_;
  prometheus::Gauge* total_steps_;
  prometheus::Gauge* loss_;
  prometheus::Gauge* eval_loss_;
  prometheus::Gauge* tokens_per_second_;
  prometheus::Gauge* memory_used_;
  prometheus::Gauge* memory_total_;
  prometheus::Gauge* utilization_;
  prometheus::Counter* fetched_;
  prometheus::Counter* uploaded_;
  prometheus::Family<prometheus::Counter>* scheduler_errors_;
};

}  // namespace qwha::runtime
