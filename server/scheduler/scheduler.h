// The scheduler: the job state machine of docs/jobs.md over the durable
// store. Every transition is one SQLite transaction that also appends the
// job's event, so a kill -9 at any point leaves each job in a state it can
// move on from: QUEUED jobs wait, ASSIGNED/RUNNING jobs keep their lease
// until it expires (the reaper then requeues them), finished jobs stay.
//
// Policy lives apart: which queued job a worker gets is PlacementPolicy's
// choice (placement.h); this class only applies it.
//
// Thread safety: all methods are safe to call concurrently. Nothing is held
// in memory that the store does not also hold, except wake-up signals.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qwha/v1/job.pb.h"
#include "qwha/v1/worker.pb.h"
#include "server/registry/registry_store.h"
#include "server/scheduler/job_row.h"
#include "server/scheduler/placement.h"
#include "server/store/sqlite_db.h"

namespace qwha::scheduler {

// The job_checkpoints set name under which uploaded RESULT files are kept
// (so the blob store's collector sees them referenced) until CompleteJob.
inline constexpr char kResultFiles[] = "result";

struct SchedulerOptions {
  double lease_seconds = 15;         // a lease lasts this long after each heartbeat
  int32_t default_max_attempts = 3;  // Resources.max_attempts = 0
  int64_t default_timeout_seconds = 24 * 3600;
  int64_t max_progress_events = 200;  // PROGRESS events kept per job (older ones pruned)
};

struct JobFilter {
  std::vector<v1::JobState> states;
  std::string base_model_id;
  std::vector<std::pair<std::string, std::string>> labels;
  int page_size = 50;
  std::string page_token;
};

// Hooks for metrics; any may be empty. Called after the transaction commits.
struct SchedulerObserver {
  std::function<void(v1::JobState from, v1::JobState to)> on_transition;
  std::function<void(double queue_wait_seconds)> on_assigned;
  std::function<void(v1::Phase phase, double seconds)> on_phase_done;
};

class Scheduler {
 public:
  // Borrows db and registry (they must outlive the Scheduler).
  Scheduler(store::Db* db, registry::RegistryStore* registry, SchedulerOptions options,
            std::unique_ptr<PlacementPolicy> placement, SchedulerObserver observer = {});

  // ---- user side (JobService) ----
  // Validates, then stores a QUEUED job. With an idempotency key: the same
  // key and spec return the first job; another spec is AlreadyExists.
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec, const std::string& idempotency_key);
  absl::StatusOr<v1::Job> Get(const std::string& id);  // NotFound naming the id
  absl::StatusOr<std::vector<v1::Job>> List(const JobFilter& filter, std::string* next_page_token);
  // QUEUED → CANCELLED now; ASSIGNED/RUNNING → cancel_requested (the worker
  // learns it from its next heartbeat); finished → FailedPrecondition.
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& id, int64_t after_sequence,
                                                   int limit);
  // Sequence number of the job's newest event; NotFound naming the id.
  absl::StatusOr<int64_t> LastSequence(const std::string& id);
  // Blocks until something may have changed (any job), `timeout_ms` passes,
  // or `since_version` is already stale. Returns the current version.
  uint64_t WaitForChange(uint64_t since_version, int timeout_ms);
  uint64_t version();

  // ---- worker side (WorkerService) ----
  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(
      const v1::RegisterWorkerRequest& request);
  // Long poll: returns a job (with its lease) or an empty response after wait_ms.
  absl::StatusOr<v1::AcquireJobResponse> Acquire(const v1::AcquireJobRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(
      const v1::ReportProgressRequest& request);
  // FailedPrecondition unless (job, lease) is the current lease of a job in
  // ASSIGNED or RUNNING.
  absl::Status CheckLease(const std::string& job_id, const std::string& lease_id);
  // Records an uploaded checkpoint file (its blob is already stored).
  absl::Status AddCheckpointFile(const std::string& job_id, const std::string& lease_id,
                                 const std::string& checkpoint, const v1::FileInfo& file);
  absl::Status CommitCheckpoint(const v1::CommitCheckpointRequest& request);
  // True iff the job's current lease may read the blob (its model, datasets
  // or checkpoint files).
  absl::StatusOr<bool> MayRead(const std::string& job_id, const std::string& lease_id,
                               const std::string& sha256);
  // Records the adapter and moves the job to SUCCEEDED in one commit; with
  // JobSpec.load_on_inference_servers the same commit queues a pending
  // deployment of the adapter (deployer.h).
  absl::StatusOr<v1::CompleteJobResponse> Complete(const v1::CompleteJobRequest& request);
  absl::Status Fail(const v1::FailJobRequest& request);

  // ---- housekeeping ----
  // Requeues (or fails, past max attempts) jobs whose lease expired, cancels
  // expired leases of cancel-requested jobs, fails jobs past their timeout.
  // Returns how many jobs changed. Called periodically by the server.
  absl::StatusOr<int> Reap();
  // Jobs per state, for metrics.
  absl::StatusOr<std::vector<std::pair<v1::JobState, int64_t>>> CountByState();
  absl::StatusOr<int64_t> LiveWorkers(double within_seconds);

  // ---- for the deployer (deployer.h) ----
  // Appends a LOG event to job `job_id` inside the caller's transaction, so
  // that a deployment's state and its event commit together. NotFound naming
  // the id. Call NotifyChanged() after the commit.
  absl::Status AppendJobLog(store::Transaction& tx, const std::string& job_id,
                            const std::string& message);
  // Wakes WaitForChange callers (watchers) after a change made outside the
  // scheduler's own methods.
  void NotifyChanged() { Notify(); }

 private:
  void Notify();
  // The job row inside `tx`; NotFound naming the id.
  absl::StatusOr<JobRow> LoadJob(store::Transaction& tx, const std::string& id);
  // The row of a job whose current lease is (job_id, lease_id), else
  // FailedPrecondition.
  absl::StatusOr<JobRow> LoadLeased(store::Transaction& tx, const std::string& job_id,
                                    const std::string& lease_id);
  // Moves the job to `to` (saving the row) and appends a STATE event.
  absl::Status Transition(store::Transaction& tx, JobRow& row, v1::JobState to,
                          const std::string& message);
  // Appends an event (saving the row's new event counter).
  absl::Status AppendEvent(store::Transaction& tx, JobRow& row, v1::JobEvent::Type type,
                           const std::string& message);
  // Drops the lease and requeues or fails the job (attempts permitting).
  absl::Status Requeue(store::Transaction& tx, JobRow& row, const std::string& why);

  store::Db* db_;
  registry::RegistryStore* registry_;
  SchedulerOptions options_;
  std::unique_ptr<PlacementPolicy> placement_;
  SchedulerObserver observer_;

  // Metrics only: when each running job entered its current phase.
  std::mutex phase_mu_;
  std::map<std::string, std::pair<v1::Phase, double>> phase_since_;

  std::mutex change_mu_;
  std::condition_variable change_cv_;
  uint64_t version_ = 0;
};

const char* JobStateName(v1::JobState state);
bool IsFinished(v1::JobState state);

}  // namespace qwha::scheduler
