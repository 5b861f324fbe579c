// Test-only: an in-process gRPC server with small, scriptable JobService and
// RegistryService implementations, on 127.0.0.1 at a free port. Client and
// qwhactl tests talk to it over real gRPC.
//
// Thread safety: the services lock their state; configure them before the
// calls under test and read what they recorded afterwards.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "grpcpp/server.h"
#include "qwha/v1/job.grpc.pb.h"
#include "qwha/v1/registry.grpc.pb.h"

namespace qwha::client::testing {

class FakeRegistry : public qwha::v1::RegistryService::Service {
 public:
  // Serves adapter `id` with these files (name → content); FileInfo sizes and
  // digests are computed from the content.
  void AddAdapter(const std::string& id, const std::map<std::string, std::string>& files);
  // Advertise `sha256` for a file instead of the real digest.
  void SetAdvertisedSha256(const std::string& id, const std::string& file,
                           const std::string& sha256);

  // The next `streams` DownloadAdapter streams stop after `bytes` bytes
  // (counted from the request's offset): with `code` (OK: the stream just
  // ends early).
  void CutDownloads(int streams, int64_t bytes, grpc::StatusCode code);
  int64_t chunk_bytes = 1000;  // data per Chunk message

  std::mutex mu;
  std::vector<int64_t> download_offsets;        // DownloadRequest.offset, in order
  std::vector<std::string> authorization;       // "authorization" metadata of each call
  qwha::v1::UploadHeader upload_header;         // of the last upload
  std::map<std::string, std::string> uploaded;  // file name → bytes received
  int64_t largest_upload_chunk = 0;

  grpc::Status GetAdapter(grpc::ServerContext* context, const qwha::v1::GetAdapterRequest* request,
                          qwha::v1::Adapter* response) override;
  grpc::Status DownloadAdapter(grpc::ServerContext* context,
                               const qwha::v1::DownloadRequest* request,
                               grpc::ServerWriter<qwha::v1::Chunk>* writer) override;
  grpc::Status UploadDataset(grpc::ServerContext* context,
                             grpc::ServerReader<qwha::v1::UploadChunk>* reader,
                             qwha::v1::Dataset* response) override;
  grpc::Status UploadModel(grpc::ServerContext* context,
                           grpc::ServerReader<qwha::v1::UploadChunk>* reader,
                           qwha::v1::BaseModel* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* context,
                            const qwha::v1::ListDatasetsRequest* request,
                            qwha::v1::ListDatasetsResponse* response) override;

 private:
  grpc::Status ReadUpload(grpc::ServerContext* context,
                          grpc::ServerReader<qwha::v1::UploadChunk>* reader);

  std::map<std::string, qwha::v1::Adapter> adapters_;
  std::map<std::string, std::map<std::string, std::string>> contents_;
  int cut_streams_ = 0;
  int64_t cut_bytes_ = 0;
  grpc::StatusCode cut_code_ = grpc::StatusCode::OK;
};

class FakeJobs : public qwha::v1::JobService::Service {
 public:
  // WatchJob on `job_id` streams these events (then ends OK).
  void SetEvents(const std::string& job_id, std::vector<qwha::v1::JobEvent> events);
  // The next WatchJob stream sends at most `events` events, then fails with
  // UNAVAILABLE (a scheduler restart, as the client sees it).
  void CutNextWatch(int events);

  std::mutex mu;
  std::vector<qwha::v1::SubmitJobRequest> submitted;
  std::vector<qwha::v1::ListJobsRequest> list_requests;
  std::vector<int64_t> watch_after;  // WatchJobRequest.after_sequence, in order

  grpc::Status SubmitJob(grpc::ServerContext* context, const qwha::v1::SubmitJobRequest* request,
                         qwha::v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const qwha::v1::GetJobRequest* request,
                      qwha::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const qwha::v1::ListJobsRequest* request,
                        qwha::v1::ListJobsResponse* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const qwha::v1::WatchJobRequest* request,
                        grpc::ServerWriter<qwha::v1::JobEvent>* writer) override;

 private:
  std::map<std::string, qwha::v1::Job> jobs_;
  std::map<std::string, std::vector<qwha::v1::JobEvent>> events_;
  int cut_watch_after_ = -1;
};

// A job event for scripts: sequence, type, state, progress step/total.
qwha::v1::JobEvent MakeEvent(const std::string& job_id, int64_t sequence,
                             qwha::v1::JobEvent::Type type, qwha::v1::JobState state,
                             int64_t step = 0, int64_t total = 0);

// Both services on 127.0.0.1:<free port>; stopped by the destructor.
class FakeScheduler {
 public:
  FakeScheduler();
  ~FakeScheduler();
  const std::string& address() const { return address_; }
  FakeRegistry registry;
  FakeJobs jobs;

 private:
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace qwha::client::testing
