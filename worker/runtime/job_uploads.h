// Uploads of one job's files to the scheduler: training checkpoints while the
// job runs (UploadFile kind CHECKPOINT + CommitCheckpoint) and the recipe's
// outputs at the end (kind RESULT). Checkpoint file names are relative to
// the set directory ("adapters.safetensors"), the set named "step-<N>" as
// under the trainer's checkpoint root (worker/train/checkpoint.h). Result
// names are relative to the output directory ("adapter.safetensors",
// "peft/adapter_config.json").
//
// Every upload retries transient errors with backoff until the uploader's
// deadline passes or abort() is true.
//
// Thread safety: one JobUploader per job, used by one thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qwha/v1/worker.pb.h"
#include "worker/runtime/scheduler_client.h"
#include "worker/runtime/worker_metrics.h"

namespace qwha::runtime {

class JobUploader {
 public:
  // Borrows client and metrics. `abort` (may be empty) is polled between
  // retries; true ends a retry loop with Cancelled.
  JobUploader(SchedulerClient& client, WorkerMetrics& metrics, std::string job_id,
              std::string lease_id, std::function<bool()> abort);

  // If the newest complete checkpoint under `root` (the one `latest` names,
  // holding trainer_state.json) is not `last_uploaded`, uploads its files and
  // commits it; returns its name ("step-<N>"), or `last_uploaded` when there
  // is nothing new. Retries for at most `patience` (the next report tries
  // again). Errors come from the scheduler or, for a set removed locally
  // while uploading (the trainer keeps only the newest few), NotFound naming
  // the path.
  absl::StatusOr<std::string> UploadNewCheckpoint(const std::string& root,
                                                  const std::string& last_uploaded,
                                                  std::chrono::milliseconds patience);

  // Uploads every file under `out_dir` except checkpoints/ and temporary
  // files, returning their FileInfos (for CompleteJob). Retries for at most
  // `patience`.
  absl::StatusOr<std::vector<v1::FileInfo>> UploadResults(const std::string& out_dir,
                                                          std::chrono::milliseconds patience);

  // Calls `call` until it succeeds, fails with a non-transient error, the
  // time `patience` from now has passed, or abort() is true (Cancelled).
  absl::Status Retry(const std::function<absl::Status()>& call, const char* method,
                     std::chrono::milliseconds patience);

 private:
  // Uploads one file (digest computed here) with retries until `deadline`.
  absl::StatusOr<v1::FileInfo> UploadOne(v1::UploadFileRequest::Header::Kind kind,
                                         const std::string& checkpoint, const std::string& name,
                                         const std::string& path,
                                         std::chrono::steady_clock::time_point deadline);

  SchedulerClient& client_;
  WorkerMetrics& metrics_;
  std::string job_id_;
  std::string lease_id_;
  std::function<bool()> abort_;
};

}  // namespace qwha::runtime
