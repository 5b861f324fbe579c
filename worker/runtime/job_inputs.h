// A job's inputs on local disk: the blobs an AcquireJobResponse names are
// fetched with ReadBlob into the blob cache (resumed and retried across
// scheduler restarts) and materialised as
//
//   <work_dir>/models/<model digest>/<file name>        the base model
//   <work_dir>/datasets/<sha256>/<file name>            each dataset
//   <out_dir>/checkpoints/<set>/<file name> + latest    the resume point, if any
//
// where <set> is job.resume_checkpoint (e.g. "step-50"); checkpoint file
// names are relative to the set directory, as the worker uploads them.
//
// Thread safety: PrepareJobInputs may run concurrently for different jobs.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "qwha/v1/worker.pb.h"
#include "worker/runtime/blob_cache.h"
#include "worker/runtime/scheduler_client.h"
#include "worker/runtime/worker_metrics.h"

namespace qwha::runtime {

struct JobInputs {
  std::string model_dir;
  std::string train_data;
  std::string eval_data;  // empty: none
  bool resume = false;    // checkpoints were placed under out_dir/checkpoints
};

struct FetchOptions {
  // Give up on a blob when no byte arrived for this long (the scheduler is
  // down or unreachable); the job then fails as retryable.
  std::chrono::milliseconds stall_timeout = std::chrono::minutes(10);
  // Polled between retries; true ends the fetch with Cancelled.
  std::function<bool()> abort;
};

// Fetches and materialises the inputs of `job` for the recipe, whose output
// directory is `out_dir`. Errors: FailedPrecondition when the scheduler says
// the lease is gone; Cancelled when options.abort() became true;
// InvalidArgument for a malformed response (no base model or training set,
// unsafe names, a model digest that does not match its files); DataLoss for a
// blob whose bytes do not match its digest (twice in a row); NotFound when
// the scheduler has no such blob; the last transient error after a stall.
absl::StatusOr<JobInputs> PrepareJobInputs(const v1::AcquireJobResponse& job,
                                           const std::string& work_dir, const std::string& out_dir,
                                           const BlobCache& cache, SchedulerClient& client,
                                           WorkerMetrics& metrics, const FetchOptions& options);

}  // namespace qwha::runtime
