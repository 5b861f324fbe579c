#include "server/api/metrics.h"

#include <cctype>

namespace qwha::api {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string StateLabel(v1::JobState state) {
  return state == v1::JOB_STATE_UNSPECIFIED ? "new" : Lower(v1::JobState_Name(state));
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

SchedulerMetrics::SchedulerMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  jobs_ = &prometheus::BuildGauge().Name("qwha_jobs").Help("Jobs by state.").Register(*registry_);
  for (int s = v1::QUEUED; s <= v1::CANCELLED; ++s) SetJobs(static_cast<v1::JobState>(s), 0);
  transitions_ = &prometheus::BuildCounter()
                      .Name("qwha_job_transitions_total")
                      .Help("Job state transitions.")
                      .Register(*registry_);
  queue_wait_ = &prometheus::BuildHistogram()
                     .Name("qwha_job_queue_wait_seconds")
                     .Help("Time from QUEUED to ASSIGNED.")
                     .Register(*registry_)
                     .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.5, 1, 5,
                                                                      15, 60, 300, 1800, 7200});
  phase_ = &prometheus::BuildHistogram()
                .Name("qwha_job_phase_duration_seconds")
                .Help("Time a job spent in each phase.")
                .Register(*registry_);
  rpc_requests_ = &prometheus::BuildCounter()
                       .Name("qwha_rpc_requests_total")
                       .Help("gRPC requests by method and status code.")
                       .Register(*registry_);
  rpc_duration_ = &prometheus::BuildHistogram()
                       .Name("qwha_rpc_duration_seconds")
                       .Help("gRPC handler latency by method.")
                       .Register(*registry_);
  workers_live_ = &prometheus::BuildGauge()
                       .Name("qwha_workers_live")
                       .Help("Workers that heartbeat recently.")
                       .Register(*registry_)
                       .Add({});
  inference_servers_live_ = &prometheus::BuildGauge()
                                 .Name("qwha_inference_servers_live")
                                 .Help("Inference servers registered within their TTL.")
                                 .Register(*registry_)
                                 .Add({});
  deployment_attempts_ = &prometheus::BuildCounter()
                              .Name("qwha_deployment_load_attempts_total")
                              .Help("LoadAdapter calls made to push adapters to inference servers.")
                              .Register(*registry_)
                              .Add({});
  auto& deployments = prometheus::BuildCounter()
                          .Name("qwha_deployments_total")
                          .Help("Adapter pushes to inference servers finished, by result.")
                          .Register(*registry_);
  deployments_succeeded_ = &deployments.Add({{"result", "succeeded"}});
  deployments_failed_ = &deployments.Add({{"result", "failed"}});
}

void SchedulerMetrics::SetJobs(v1::JobState state, double count) {
  jobs_->Add({{"state", StateLabel(state)}}).Set(count);
}

void SchedulerMetrics::CountTransition(v1::JobState from, v1::JobState to) {
  transitions_->Add({{"from", StateLabel(from)}, {"to", StateLabel(to)}}).Increment();
}

void SchedulerMetrics::ObservePhase(v1::Phase phase, double seconds) {
  phase_
      ->Add({{"phase", Lower(v1::Phase_Name(phase))}},
            prometheus::Histogram::BucketBoundaries{0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200, 36000})
      .Observe(seconds);
}

void SchedulerMetrics::ObserveRpc(const std::string& method, grpc::StatusCode code,
                                  double seconds) {
  rpc_requests_->Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  rpc_duration_
      ->Add({{"method", method}},
            prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1, 0.25, 0.5, 1, 5, 30})
      .Observe(seconds);
}

grpc::Status RpcScope::Done(grpc::Status status) {
  if (metrics_) {
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    metrics_->ObserveRpc(method_, status.error_code(), seconds);
  }
  return status;
}

}  // namespace qwha::api
