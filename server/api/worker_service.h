// WorkerService (proto/qwha/v1/worker.proto): the internal API the
// qwha-worker processes call. Uploads go to the blob store (verified against
// the declared size and sha256 before they become visible); reads are limited
// to the blobs of the job the caller holds a lease on.
//
// Thread safety: handlers run concurrently; everything they touch is safe
// for that. Borrows everything it is given.
#pragma once

#include <string>

#include "qwha/v1/worker.grpc.pb.h"
#include "server/api/metrics.h"
#include "server/registry/registry_store.h"
#include "server/scheduler/scheduler.h"

namespace qwha::api {

struct WorkerServiceOptions {
  std::string token;
  int64_t max_upload_bytes = int64_t{16} << 30;  // one uploaded file
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(scheduler::Scheduler* scheduler, registry::RegistryStore* registry,
                    SchedulerMetrics* metrics, WorkerServiceOptions options)
      : scheduler_(scheduler),
        registry_(registry),
        blobs_(registry->blobs()),
        metrics_(metrics),
        options_(std::move(options)) {}

  grpc::Status RegisterWorker(grpc::ServerContext* context,
                              const v1::RegisterWorkerRequest* request,
                              v1::RegisterWorkerResponse* response) override;
  grpc::Status AcquireJob(grpc::ServerContext* context, const v1::AcquireJobRequest* request,
                          v1::AcquireJobResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ReportProgress(grpc::ServerContext* context,
                              const v1::ReportProgressRequest* request,
                              v1::ReportProgressResponse* response) override;
  grpc::Status UploadFile(grpc::ServerContext* context,
                          grpc::ServerReader<v1::UploadFileRequest>* reader,
                          v1::UploadFileResponse* response) override;
  grpc::Status CommitCheckpoint(grpc::ServerContext* context,
                                const v1::CommitCheckpointRequest* request,
                                v1::CommitCheckpointResponse* response) override;
  grpc::Status ReadBlob(grpc::ServerContext* context, const v1::ReadBlobRequest* request,
                        grpc::ServerWriter<v1::Chunk>* writer) override;
  grpc::Status CompleteJob(grpc::ServerContext* context, const v1::CompleteJobRequest* request,
                           v1::CompleteJobResponse* response) override;
  grpc::Status FailJob(grpc::ServerContext* context, const v1::FailJobRequest* request,
                       v1::FailJobResponse* response) override;

 private:
  scheduler::Scheduler* scheduler_;
  registry::RegistryStore* registry_;
  registry::BlobStore* blobs_;
  SchedulerMetrics* metrics_;
  WorkerServiceOptions options_;
};

}  // namespace qwha::api
