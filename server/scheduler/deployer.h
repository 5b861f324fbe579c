// The deployer: after a job that asked for it (JobSpec.load_on_inference_servers)
// succeeded, asks the live inference servers of the job's base model to load
// the new adapter (InferenceService.LoadAdapter, serving name = adapter id).
//
// All of its state is in the store, never only in memory:
//   deployments          one per job, written by Scheduler::Complete in the
//                        commit that marks the job SUCCEEDED: 'pending' → 'done'
//   deployment_targets   one per chosen server: 'pending' → 'loaded' | 'failed',
//                        with the attempts made and the last error
// A pending deployment is worked on once its next_attempt_at has come:
//  1. The first time, the servers live now (InferenceServerDirectory::Live of
//     the adapter's base model digest) become its targets; servers that
//     register later are not added. No live server: done at once.
//  2. LoadAdapter on every pending target, concurrently, each call with a
//     deadline of load_timeout_seconds.
//  3. OK: loaded. UNAVAILABLE or DEADLINE_EXCEEDED: tried again after a
//     backoff of initial_backoff_seconds · 2^(n−1) (at most
//     max_backoff_seconds), failed after max_attempts calls. Any other code
//     (NOT_FOUND, FAILED_PRECONDITION for another quantization, DATA_LOSS,
//     RESOURCE_EXHAUSTED, ...): failed at once.
//  4. No target pending: done.
// Every outcome commits together with a LOG event of the job whose message
// starts with "deployment: ", so the job's events are the deployment's
// history. The job's state never changes. A scheduler killed during a call
// leaves the target pending and the next start calls again (loading a version
// the server already has is a cache hit there).
//
// Policy (whom to call, when to retry) and mechanism (the gRPC call) are both
// small enough to live here; the directory of servers is
// server/registry/inference_servers.h.
//
// Thread safety: RunDue must not run concurrently with itself; Stop may be
// called from any thread at any time.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "qwha/v1/inference.pb.h"
#include "server/registry/inference_servers.h"
#include "server/scheduler/scheduler.h"
#include "server/store/sqlite_db.h"

namespace qwha::scheduler {

struct DeployerOptions {
  int max_attempts = 5;                // LoadAdapter calls per unreachable server
  double initial_backoff_seconds = 1;  // before the 2nd call; doubles after each
  double max_backoff_seconds = 60;
  double load_timeout_seconds = 300;  // deadline of one LoadAdapter call
  // Sent as "authorization: Bearer <token>" with each LoadAdapter call (the
  // scheduler's own --token: qwha-serve's --token defaults to the same
  // $QWHA_TOKEN); empty: none.
  std::string token;
  // Of the channels to inference servers (the scheduler's --serve-tls-ca:
  // api::ChannelCredentials).
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
};

// Hooks for metrics; any may be empty. Called after the outcome commits.
struct DeployerObserver {
  std::function<void()> on_load_attempt;            // one LoadAdapter call made
  std::function<void(bool loaded)> on_target_done;  // one server reached loaded or failed
};

class Deployer {
 public:
  // Borrows everything (it must outlive the Deployer).
  Deployer(store::Db* db, Scheduler* scheduler, registry::InferenceServerDirectory* servers,
           DeployerOptions options, DeployerObserver observer = {});
  Deployer(const Deployer&) = delete;
  Deployer& operator=(const Deployer&) = delete;

  // Works once on every pending deployment that is due now (steps 1-4 above),
  // blocking until its calls returned. Returns how many it worked on; an
  // error only for a store failure (what was committed before it stays).
  absl::StatusOr<int> RunDue();

  // Cancels the calls in flight and makes RunDue return soon; a cancelled
  // call counts as no attempt (the target stays pending for the next start).
  void Stop();

 private:
  struct Deployment {
    int64_t id = 0;
    std::string job_id, adapter_id, base_model_digest;
    int64_t attempts = 0;
  };
  struct Target {
    std::string address;
    int64_t attempts = 0;
  };
  // Step 1; false when the deployment finished there (no live server).
  absl::StatusOr<bool> ChooseTargets(const Deployment& deployment);
  absl::Status Deploy(const Deployment& deployment);
  grpc::Status Load(const std::string& address, const std::string& adapter_id,
                    v1::LoadedAdapter* loaded);
  double Backoff(int64_t attempts) const;

  store::Db* db_;
  Scheduler* scheduler_;
  registry::InferenceServerDirectory* servers_;
  const DeployerOptions options_;
  const DeployerObserver observer_;

  std::atomic<bool> stopping_{false};
  std::mutex calls_mu_;
  std::set<grpc::ClientContext*> calls_;  // in flight, for Stop
};

}  // namespace qwha::scheduler
