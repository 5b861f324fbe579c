#include "worker/runtime/worker_metrics.h"

namespace qwha::runtime {
namespace {

const char* const kPhases[] = {"idle",         "loading",  "quantizing", "calibrating",
                               "initializing", "training", "evaluating", "uploading"};
const char* const kOutcomes[] = {"succeeded", "failed", "cancelled", "lost"};

prometheus::Gauge* Gauge(prometheus::Registry& registry, const std::string& name,
                         const std::string& help, const prometheus::Labels& labels = {}) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(labels);
}

}  // namespace

WorkerMetrics::WorkerMetrics(const std::string& device)
    : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  jobs_ = &prometheus::BuildCounter()
               .Name("qwha_worker_jobs_total")
               .Help("Jobs this worker ended, by outcome")
               .Register(r);
  for (const char* outcome : kOutcomes) jobs_->Add({{"outcome", outcome}});
  auto& phase = prometheus::BuildGauge()
                    .Name("qwha_worker_job_phase")
                    .Help("1 for the phase of the running job (idle: none), 0 for the others")
                    .Register(r);
  for (const char* name : kPhases) phases_[name] = &phase.Add({{"phase", name}});
  phases_["idle"]->Set(1);
  step_ = Gauge(r, "qwha_worker_training_step", "Optimizer steps completed by the running job");
  total_steps_ = Gauge(r, "qwha_worker_training_total_steps", "Optimizer steps of the running job");
  loss_ = Gauge(r, "qwha_worker_training_loss", "Last training loss of the running job");
  eval_loss_ = Gauge(r, "qwha_worker_training_eval_loss", "Last eval loss of the running job");
  tokens_per_second_ = Gauge(r, "qwha_worker_training_tokens_per_second",
                             "Training throughput of the running job in input tokens per second");
  memory_used_ = Gauge(r, "qwha_worker_device_memory_used_bytes",
                       "Device memory in use (host memory on a CPU worker)", {{"device", device}});
  memory_total_ = Gauge(r, "qwha_worker_device_memory_total_bytes",
                        "Device memory size (host memory on a CPU worker)", {{"device", device}});
  utilization_ = Gauge(r, "qwha_worker_gpu_utilization_ratio",
                       "GPU busy share 0..1 as the driver reports it (0 on a CPU worker)",
                       {{"device", device}});
  fetched_ = &prometheus::BuildCounter()
                  .Name("qwha_worker_blob_fetched_bytes_total")
                  .Help("Bytes of models, datasets and checkpoints received from the scheduler")
                  .Register(r)
                  .Add({});
  uploaded_ = &prometheus::BuildCounter()
                   .Name("qwha_worker_blob_uploaded_bytes_total")
                   .Help("Bytes of checkpoints and results sent to the scheduler")
                   .Register(r)
                   .Add({});
  scheduler_errors_ = &prometheus::BuildCounter()
                           .Name("qwha_worker_scheduler_errors_total")
                           .Help("Scheduler calls that failed, by method")
                           .Register(r);
  ClearTraining();
}

void WorkerMetrics::JobEnded(const std::string& outcome) {
  jobs_->Add({{"outcome", outcome}}).Increment();
}

void WorkerMetrics::SetPhase(const std::string& phase) {
  for (auto& [name, gauge] : phases_) gauge->Set(name == phase ? 1 : 0);
}

void WorkerMetrics::SetTraining(const train::Progress& p) {
  step_->Set(static_cast<double>(p.step));
  total_steps_->Set(static_cast<double>(p.total_steps));
  if (p.phase != "eval") loss_->Set(p.loss);
  eval_loss_->Set(p.eval_loss);
  tokens_per_second_->Set(p.tokens_per_second);
}

void WorkerMetrics::ClearTraining() {
  step_->Set(0);
  total_steps_->Set(0);
  loss_->Set(0);
  eval_loss_->Set(std::numeric_limits<double>::quiet_NaN());
  tokens_per_second_->Set(0);
}

void WorkerMetrics::SetDevice(const DeviceSample& sample) {
  memory_used_->Set(static_cast<double>(sample.used_bytes));
  memory_total_->Set(static_cast<double>(sample.total_bytes));
  utilization_->Set(sample.utilization);
}

void WorkerMetrics::SchedulerError(const std::string& method) {
  scheduler_errors_->Add({{"method", method}}).Increment();
}

}  // namespace qwha::runtime
