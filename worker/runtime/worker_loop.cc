#include "worker/runtime/worker_loop.h"

#include <iostream>
#include <thread>

namespace qwha::runtime {
namespace {

bool IsAuthError(const absl::Status& st) {
  return st.code() == absl::StatusCode::kUnauthenticated ||
         st.code() == absl::StatusCode::kPermissionDenied;
}

// Sleeps `wait` in short slices, returning early when `stop` is set.
void SleepUnlessStopped(std::chrono::milliseconds wait, const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + wait;
  while (!stop.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

absl::Status RunWorkerLoop(SchedulerClient& client, WorkerSession& session, JobRunner& runner,
                           const DeviceProbe& probe, std::chrono::milliseconds poll,
                           const std::atomic<bool>& stop) {
  if (absl::Status st = session.Register(); !st.ok()) {
    return st.code() == absl::StatusCode::kCancelled ? absl::OkStatus() : st;
  }
  session.StartHeartbeats();
  Backoff backoff;
  while (!stop.load()) {
    v1::AcquireJobRequest request;
    request.set_worker_id(session.worker_id());
    request.set_free_memory_bytes(probe.Sample().free_bytes);
    request.set_wait_ms(poll.count());
    absl::StatusOr<v1::AcquireJobResponse> response = client.AcquireJob(request);
    if (!response.ok()) {
      const absl::Status& st = response.status();
      if (st.code() == absl::StatusCode::kNotFound) {
        if (absl::Status r = session.Reregister(request.worker_id()); !r.ok()) {
          if (IsAuthError(r)) return r;
          if (r.code() == absl::StatusCode::kCancelled) break;
        }
        SleepUnlessStopped(backoff.Next(), stop);  // no tight loop if NotFound persists
        continue;
      }
      if (IsAuthError(st)) return st;
      const auto wait = backoff.Next();
      std::cerr << "qwha-worker: " << st.message() << "; retrying in " << wait.count() << " ms\n";
      SleepUnlessStopped(wait, stop);
      continue;
    }
    backoff.Reset();
    if (!response->has_job() || response->job().id().empty()) continue;  // nothing within poll
    runner.Run(*response);
  }
  session.StopHeartbeats();
  return absl::OkStatus();
}

}  // namespace qwha::runtime
