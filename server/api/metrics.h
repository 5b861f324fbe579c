// The scheduler's Prometheus metrics (names follow the Prometheus
// conventions: base units, _total for counters, _seconds/_bytes suffixes).
//
//   qwha_jobs{state}                               gauge, refreshed by the housekeeper
//   qwha_job_transitions_total{from,to}            counter
//   qwha_job_queue_wait_seconds                    histogram, QUEUED → ASSIGNED
//   qwha_job_phase_duration_seconds{phase}         histogram
//   qwha_rpc_requests_total{method,code}           counter
//   qwha_rpc_duration_seconds{method}              histogram
//   qwha_workers_live                              gauge, heartbeat within 3 leases
//   qwha_inference_servers_live                    gauge, registered within their TTL
//   qwha_deployment_load_attempts_total            counter, LoadAdapter calls to inference servers
//   qwha_deployments_total{result}                 counter, adapter × server pairs finished:
//                                                  result = succeeded | failed
//
// Thread safety: all members are safe to use concurrently.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <memory>
#include <string>

#include "qwha/v1/job.pb.h"

namespace qwha::api {

class SchedulerMetrics {
 public:
  explicit SchedulerMetrics(std::shared_ptr<prometheus::Registry> registry);

  void SetJobs(v1::JobState state, double count);
  void CountTransition(v1::JobState from, v1::JobState to);
  void ObserveQueueWait(double seconds) { queue_wait_->Observe(seconds); }
  void ObservePhase(v1::Phase phase, double seconds);
  void ObserveRpc(const std::string& method, grpc::StatusCode code, double seconds);
  void SetLiveWorkers(double n) { workers_live_->Set(n); }
  void SetLiveInferenceServers(double n) { inference_servers_live_->Set(n); }
  void CountDeploymentAttempt() { deployment_attempts_->Increment(); }
  void CountDeployment(bool succeeded) {
    (succeeded ? deployments_succeeded_ : deployments_failed_)->Increment();
  }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* jobs_;
  prometheus::Family<prometheus::Counter>* transitions_;
  prometheus::Histogram* queue_wait_;
  prometheus::Family<prometheus::Histogram>* phase_;
  prometheus::Family<prometheus::Counter>* rpc_requests_;
  prometheus::Family<prometheus::Histogram>* rpc_duration_;
  prometheus::Gauge* workers_live_;
  prometheus::Gauge* inference_servers_live_;
  prometheus::Counter* deployment_attempts_;
  prometheus::Counter* deployments_succeeded_;
  prometheus::Counter* deployments_failed_;
};

// Times one RPC: construct at the top of a handler, call Done(status) on
// every return path (the handlers do `return scope.Done(...)`).
class RpcScope {
 public:
  RpcScope(SchedulerMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}
  grpc::Status Done(grpc::Status status);

 private:
  SchedulerMetrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace qwha::api
