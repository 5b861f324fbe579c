// Runs one assigned job from start to end:
//
//   fetch inputs (job_inputs.h) → write <work>/jobs/<id>/job.binpb → start
//   `qwha-worker run-job …` (run_job.h) → forward its events as
//   ReportProgress (at most one per progress_interval; phase changes at once),
//   uploading each new checkpoint after a report → on success upload the
//   results and CompleteJob; otherwise FailJob.
//
// Outcomes and what the scheduler hears:
//   succeeded  CompleteJob(files, metrics.json)
//   failed     FailJob(error "<phase>: <message>", retryable: false only when
//              the recipe or job spec said InvalidArgument/NotFound, or an
//              input blob does not exist; a child killed by a signal is
//              retryable) — also on worker shutdown (retryable)
//   cancelled  the heartbeat or a ReportProgress reply said cancel: SIGTERM to
//              the child, SIGKILL after kill_grace, FailJob(cancelled = true)
//   lost       the lease is gone (FailedPrecondition or lease_lost): the child
//              is killed and nothing more is sent for the job
//
// After each job the fetched inputs and the quantized-base cache's entries are
// pruned to RunnerConfig::cache_max_bytes (least recently used first; a
// running job's directories are locked).
//
// Thread safety: Run is called on one thread at a time — the worker's main
// thread, which outlives the child (PR_SET_PDEATHSIG is tied to the thread
// that forked; child_process.h).
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "qwha/v1/worker.pb.h"
#include "worker/runtime/blob_cache.h"
#include "worker/runtime/scheduler_client.h"
#include "worker/runtime/worker_metrics.h"
#include "worker/runtime/worker_session.h"

namespace qwha::runtime {

struct RunnerConfig {
  std::string work_dir;                              // blobs/, models/, datasets/, jobs/ live here
  std::string cache_dir;                             // the recipe's quantized-base cache
  std::string device;                                // --device of the child: "cpu", "cuda:0", …
  std::string self_exe = "/proc/self/exe";           // the binary with `run-job`
  std::chrono::milliseconds progress_interval{500};  // ≤ 2 ReportProgress per second
  std::chrono::milliseconds log_interval{10000};     // progress lines on stderr
  std::chrono::milliseconds kill_grace{3000};        // SIGTERM → SIGKILL
  // How long final calls (result uploads, CompleteJob, FailJob) keep retrying
  // while the scheduler is unreachable.
  std::chrono::milliseconds final_patience = std::chrono::minutes(15);
  bool keep_job_dirs = false;  // keep <work>/jobs/<id>/ after the job (debugging)
  // After each job, the fetched inputs (blobs/, models/, datasets/) and the
  // quantized bases under cache_dir are pruned to this many bytes, least
  // recently used first, sparing what was used in the last cache_min_idle or
  // is held by a running job (PruneWorkCache); 0: no limit.
  int64_t cache_max_bytes = 0;
  std::chrono::seconds cache_min_idle = std::chrono::minutes(10);
};

class JobRunner {
 public:
  // Borrows everything; all must outlive the runner. `stop` set: the running
  // job is stopped and failed as retryable (worker shutdown).
  JobRunner(RunnerConfig config, SchedulerClient& client, WorkerSession& session,
            WorkerMetrics& metrics, const std::atomic<bool>& stop);
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Runs `assignment` (which has a job) to its end and returns the outcome:
  // "succeeded", "failed", "cancelled" or "lost".
  std::string Run(const v1::AcquireJobResponse& assignment);

 private:
  class Job;
  // PruneWorkCache of the work dir's inputs and of the quantized bases under
  // config_.cache_dir to config_.cache_max_bytes; logs.
  void PruneInputs();
  RunnerConfig config_;
  SchedulerClient& client_;
  WorkerSession& session_;
  WorkerMetrics& metrics_;
  const std::atomic<bool>& stop_;
  BlobCache cache_;
};

}  // namespace qwha::runtime
