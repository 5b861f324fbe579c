// The worker's main loop:
//
//   Register → heartbeats start → { AcquireJob (long poll) → JobRunner::Run }*
//
// The scheduler may be killed and restarted at any time: unreachable calls
// are retried with backoff (the running job keeps going meanwhile), and a
// NotFound from AcquireJob (the scheduler does not know this worker id)
// registers the worker again.
//
// Thread safety: run on the main thread (JobRunner's requirement).
#pragma once

#include <atomic>
#include <chrono>

#include "absl/status/status.h"
#include "worker/runtime/device_info.h"
#include "worker/runtime/job_runner.h"
#include "worker/runtime/scheduler_client.h"
#include "worker/runtime/worker_session.h"

namespace qwha::runtime {

// Runs until `stop` is set, then returns OK. Returns the error of the first
// registration when it is not transient (e.g. Unauthenticated for a wrong
// token), and Unauthenticated/PermissionDenied if the scheduler starts
// refusing the worker's token.
absl::Status RunWorkerLoop(SchedulerClient& client, WorkerSession& session, JobRunner& runner,
                           const DeviceProbe& probe, std::chrono::milliseconds poll,
                           const std::atomic<bool>& stop);

}  // namespace qwha::runtime
