#include "server/api/job_service.h"

#include "absl/strings/str_cat.h"
#include "server/api/auth.h"
#include "server/registry/grpc_status.h"
#include "server/scheduler/job_row.h"
#include "server/store/schema.h"

namespace qwha::api {

using registry::ToGrpc;

#define CHECK_AUTH(scope)                                            \
  if (absl::Status auth = CheckToken(context, token_); !auth.ok()) { \
    return scope.Done(ToGrpc(auth));                                 \
  }

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context,
                                       const v1::SubmitJobRequest* request, v1::Job* response) {
  RpcScope scope(metrics_, "SubmitJob");
  CHECK_AUTH(scope);
  auto job = scheduler_->Submit(request->spec(), request->idempotency_key());
  if (!job.ok()) return scope.Done(ToGrpc(job.status()));
  *response = std::move(*job);
  return scope.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  RpcScope scope(metrics_, "GetJob");
  CHECK_AUTH(scope);
  auto job = scheduler_->Get(request->id());
  if (!job.ok()) return scope.Done(ToGrpc(job.status()));
  *response = std::move(*job);
  return scope.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  RpcScope scope(metrics_, "ListJobs");
  CHECK_AUTH(scope);
  if (request->page_size() < 0) {
    return scope.Done(grpc::Status(grpc::INVALID_ARGUMENT, "page_size: must not be negative"));
  }
  scheduler::JobFilter filter;
  for (int s : request->states()) filter.states.push_back(static_cast<v1::JobState>(s));
  filter.base_model_id = request->base_model_id();
  for (const auto& [k, v] : request->labels()) filter.labels.emplace_back(k, v);
  filter.page_size = request->page_size();
  filter.page_token = request->page_token();
  std::string next;
  auto jobs = scheduler_->List(filter, &next);
  if (!jobs.ok()) return scope.Done(ToGrpc(jobs.status()));
  for (auto& job : *jobs) *response->add_jobs() = std::move(job);
  response->set_next_page_token(next);
  return scope.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request, v1::Job* response) {
  RpcScope scope(metrics_, "CancelJob");
  CHECK_AUTH(scope);
  auto job = scheduler_->Cancel(request->id());
  if (!job.ok()) return scope.Done(ToGrpc(job.status()));
  *response = std::move(*job);
  return scope.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  RpcScope scope(metrics_, "WatchJob");
  CHECK_AUTH(scope);
  uint64_t version = scheduler_->version();
  int64_t after = request->after_sequence();
  if (after <= 0) {
    // A late subscriber first gets the current state, then what follows it.
    auto last = scheduler_->LastSequence(request->id());
    if (!last.ok()) return scope.Done(ToGrpc(last.status()));
    auto job = scheduler_->Get(request->id());
    if (!job.ok()) return scope.Done(ToGrpc(job.status()));
    after = *last;
    v1::JobEvent first;
    first.set_sequence(after);
    first.set_type(v1::JobEvent::STATE);
    *first.mutable_time() = scheduler::ToTimestamp(store::NowSeconds());
    *first.mutable_job() = *job;
    first.set_message("current state");
    if (!writer->Write(first) || scheduler::IsFinished(job->state())) {
      return scope.Done(grpc::Status::OK);
    }
  }
  while (!context->IsCancelled()) {
    auto events = scheduler_->Events(request->id(), after, 1000);
    if (!events.ok()) return scope.Done(ToGrpc(events.status()));
    for (const v1::JobEvent& event : *events) {
      if (!writer->Write(event)) return scope.Done(grpc::Status::OK);
      after = event.sequence();
      if (event.type() == v1::JobEvent::STATE && scheduler::IsFinished(event.job().state())) {
        return scope.Done(grpc::Status::OK);
      }
    }
    if (!events->empty()) continue;
    version = scheduler_->WaitForChange(version, 1000);
  }
  return scope.Done(grpc::Status(grpc::CANCELLED, "client went away"));
}

grpc::Status JobServiceImpl::ListJobEvents(grpc::ServerContext* context,
                                           const v1::ListJobEventsRequest* request,
                                           v1::ListJobEventsResponse* response) {
  RpcScope scope(metrics_, "ListJobEvents");
  CHECK_AUTH(scope);
  auto events = scheduler_->Events(request->id(), request->after_sequence(), request->limit());
  if (!events.ok()) return scope.Done(ToGrpc(events.status()));
  for (auto& e : *events) *response->add_events() = std::move(e);
  return scope.Done(grpc::Status::OK);
}

}  // namespace qwha::api
