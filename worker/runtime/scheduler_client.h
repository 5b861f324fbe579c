// The worker's side of qwha.v1.WorkerService (proto/qwha/v1/worker.proto):
// one gRPC channel to the scheduler, every call with a deadline and, when a
// token is configured, the metadata "authorization: Bearer <token>".
//
// Errors: the gRPC status maps one to one onto absl::Status (same code), the
// message prefixed with the method ("Heartbeat: ..."). No call retries by
// itself; IsTransient() and Backoff let callers decide (the channel reconnects
// within about 2 s of the scheduler coming back, so a restarted scheduler is
// seen quickly).
//
// Thread safety: all methods may be called concurrently from any thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qwha/v1/worker.grpc.pb.h"
#include "worker/runtime/blob_cache.h"

namespace qwha::runtime {

namespace v1 = ::qwha::v1;

class SchedulerClient {
 public:
  // A client of the scheduler at `address` ("host:port"); the connection is
  // made lazily. `token` empty: no authorization metadata. `credentials`:
  // of the channel (api::ChannelCredentials gives TLS).
  SchedulerClient(
      const std::string& address, std::string token,
      std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials());
  SchedulerClient(const SchedulerClient&) = delete;
  SchedulerClient& operator=(const SchedulerClient&) = delete;

  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(const v1::RegisterWorkerRequest& r);
  // The deadline is request.wait_ms() plus the unary timeout.
  absl::StatusOr<v1::AcquireJobResponse> AcquireJob(const v1::AcquireJobRequest& r);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r);
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(const v1::ReportProgressRequest& r);
  absl::StatusOr<v1::CommitCheckpointResponse> CommitCheckpoint(
      const v1::CommitCheckpointRequest& r);
  absl::StatusOr<v1::CompleteJobResponse> CompleteJob(const v1::CompleteJobRequest& r);
  absl::StatusOr<v1::FailJobResponse> FailJob(const v1::FailJobRequest& r);

  // Streams blob r.sha256() from r.offset() into `sink`, checking that the
  // chunks are contiguous (DataLoss otherwise). OK when the stream ended.
  absl::Status ReadBlob(const v1::ReadBlobRequest& r, const BlobSink& sink);

  // Uploads the local file `path` after `header` (whose file name, size and
  // sha256 the caller fills in) in 1 MiB messages. `*uploaded` (if not null)
  // grows by the bytes sent. NotFound/Internal naming the path for local
  // read errors.
  absl::StatusOr<v1::UploadFileResponse> UploadFile(const v1::UploadFileRequest::Header& header,
                                                    const std::string& path, int64_t* uploaded);

  const std::string& address() const { return address_; }

 private:
  // A context with the deadline `timeout` from now and the token metadata.
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) const;

  std::string address_;
  std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

// True for the codes that a later retry may fix: Unavailable,
// DeadlineExceeded, ResourceExhausted, Aborted, and Unknown (what gRPC gives
// for a connection torn down mid-call).
bool IsTransient(const absl::Status& status);

// True if a job-scoped call says the job is no longer this worker's:
// FailedPrecondition (lease lost) or NotFound (job or lease unknown).
bool IsLeaseLost(const absl::Status& status);

// Exponential backoff with jitter: 200 ms, 400 ms, … up to `max`.
// Not thread-safe; one per retry loop.
class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds max = std::chrono::milliseconds(5000));
  // The next wait (grows each call); Reset() after a success.
  std::chrono::milliseconds Next();
  void Reset() { attempt_ = 0; }

 private:
  std::chrono::milliseconds max_;
  int attempt_ = 0;
  std::mt19937 rng_;
};

}  // namespace qwha::runtime
