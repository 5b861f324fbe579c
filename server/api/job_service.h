// JobService (proto/qwha/v1/job.proto) over the Scheduler: a thin mapping
// from RPCs to scheduler calls and from absl::Status to grpc::Status.
//
// Thread safety: gRPC calls handlers concurrently; the Scheduler is safe for
// that. Borrows everything it is given.
#pragma once

#include <string>

#include "qwha/v1/job.grpc.pb.h"
#include "server/api/metrics.h"
#include "server/scheduler/scheduler.h"

namespace qwha::api {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(scheduler::Scheduler* scheduler, SchedulerMetrics* metrics, std::string token)
      : scheduler_(scheduler), metrics_(metrics), token_(std::move(token)) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status ListJobEvents(grpc::ServerContext* context, const v1::ListJobEventsRequest* request,
                             v1::ListJobEventsResponse* response) override;

 private:
  scheduler::Scheduler* scheduler_;
  SchedulerMetrics* metrics_;
  std::string token_;
};

}  // namespace qwha::api
