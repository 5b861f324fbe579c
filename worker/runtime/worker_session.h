// The worker's standing with the scheduler: its registration (worker id,
// lease length), the job it is running, and the heartbeat thread.
//
// Heartbeats go out every min(lease_seconds / 3, 2 s), idle or not, from
// their own thread. The 2 s cap is there because cancellation travels in the
// heartbeat reply and must reach the child within 5 s (job.proto CancelJob).
// A reply with `cancel` sends SIGTERM to the child at once (the job runner
// escalates to SIGKILL); `lease_lost` sends SIGKILL. A NotFound reply means
// the scheduler does not know this worker id (e.g. it lost its state): the
// session registers again, keeping the running job, whose lease the
// scheduler checks by lease id.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "worker/runtime/child_process.h"
#include "worker/runtime/device_info.h"
#include "worker/runtime/scheduler_client.h"
#include "worker/runtime/worker_metrics.h"

namespace qwha::runtime {

class WorkerSession {
 public:
  // Borrows everything; all must outlive the session. `stop` ends retries.
  WorkerSession(SchedulerClient& client, const DeviceProbe& probe, WorkerMetrics& metrics,
                std::string name, const std::atomic<bool>& stop);
  ~WorkerSession();  // stops the heartbeat thread
  WorkerSession(const WorkerSession&) = delete;
  WorkerSession& operator=(const WorkerSession&) = delete;

  // RegisterWorker, retrying transient errors with backoff until it succeeds
  // or `stop` is set (Cancelled). Other errors (Unauthenticated,
  // PermissionDenied, InvalidArgument) are returned as they are.
  absl::Status Register();
  // Register() unless another thread registered since `seen_worker_id`
  // stopped working (so concurrent NotFound replies register once).
  absl::Status Reregister(const std::string& seen_worker_id);

  std::string worker_id() const;
  int64_t lease_seconds() const;

  // Starts / stops the heartbeat thread (Start after the first Register).
  void StartHeartbeats();
  void StopHeartbeats();

  // The job being run; `child` may be set once it exists and must be cleared
  // (SetChild(nullptr)) before it is destroyed.
  void BeginJob(const std::string& job_id, const std::string& lease_id);
  void SetChild(ChildProcess* child);
  void EndJob();

  // Marks the running job cancelled and sends SIGTERM to its child.
  void RequestCancel();
  // Marks the lease lost and sends SIGKILL to the child.
  void MarkLeaseLost();
  bool cancel_requested() const { return cancel_.load(); }
  bool lease_lost() const { return lease_lost_.load(); }

 private:
  void HeartbeatLoop();
  void HeartbeatOnce();
  void CancelLocked();     // needs mu_
  void LoseLeaseLocked();  // needs mu_

  SchedulerClient& client_;
  const DeviceProbe& probe_;
  WorkerMetrics& metrics_;
  const std::string name_;
  const std::atomic<bool>& stop_;

  std::mutex register_mu_;  // one RegisterWorker at a time
  mutable std::mutex mu_;
  std::string worker_id_;          // guarded by mu_
  int64_t lease_seconds_ = 0;      // guarded by mu_
  std::string job_id_;             // guarded by mu_
  std::string lease_id_;           // guarded by mu_
  ChildProcess* child_ = nullptr;  // guarded by mu_; borrowed
  std::atomic<bool> cancel_{false};
  std::atomic<bool> lease_lost_{false};

  std::condition_variable wake_;     // with mu_: ends a heartbeat sleep early
  bool heartbeats_running_ = false;  // guarded by mu_
  std::thread heartbeat_thread_;
};

}  // namespace qwha::runtime
