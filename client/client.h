// qwha::client::Client — the C++ client of the qwha scheduler: typed wrappers
// over JobService and RegistryService (proto/qwha/v1/*.proto, whose comments
// are the API reference), job watching, uploads, and verified downloads.
//
// Errors: every method returns the server's gRPC status as an absl::Status
// with the same code and message (UNAVAILABLE when the scheduler cannot be
// reached, DEADLINE_EXCEEDED when a unary call outlives ClientOptions::timeout).
// Local failures (files that cannot be read or written) are NotFound /
// PermissionDenied / Internal naming the path; a download whose content does
// not match the adapter's size or sha256 is DataLoss.
//
// Thread safety: a Client is safe for concurrent use from several threads
// (gRPC channels and stubs are); each call is independent. Callbacks run on
// the calling thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qwha/v1/job.grpc.pb.h"
#include "qwha/v1/registry.grpc.pb.h"

namespace qwha::client {

// Default scheduler address (host:port of its gRPC endpoint).
inline constexpr char kDefaultAddress[] = "127.0.0.1:7420";

// Upload/download pieces: the API's limit per Chunk / FileData message.
inline constexpr int64_t kChunkBytes = 1 << 20;

struct ClientOptions {
  // host:port (or any gRPC target, e.g. "unix:/run/qwha.sock").
  std::string address = kDefaultAddress;
  // Sent as "authorization: Bearer <token>" on every call; empty: not sent.
  std::string token;
  // Of the channel (api::ChannelCredentials gives TLS).
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  // Deadline of each unary call. Streaming calls (Watch, uploads, downloads)
  // have no deadline: they run until the server ends them or fail.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
};

// Called with (bytes done, bytes total) as an upload or download proceeds.
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;

// Called with every event of a watched job; return false to stop watching.
using WatchCallback = std::function<bool(const qwha::v1::JobEvent& event)>;

class Client {
 public:
  // Connects lazily: creating a client never fails, the first call reports
  // UNAVAILABLE if nothing answers at options.address.
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // --- JobService ---------------------------------------------------------
  absl::StatusOr<qwha::v1::Job> SubmitJob(const qwha::v1::JobSpec& spec,
                                          const std::string& idempotency_key = "");
  absl::StatusOr<qwha::v1::Job> GetJob(const std::string& id);
  // One page; follow next_page_token for more.
  absl::StatusOr<qwha::v1::ListJobsResponse> ListJobs(const qwha::v1::ListJobsRequest& request);
  absl::StatusOr<qwha::v1::Job> CancelJob(const std::string& id);
  absl::StatusOr<qwha::v1::ListJobEventsResponse> ListJobEvents(
      const qwha::v1::ListJobEventsRequest& request);

  // Streams the events of job `job_id` with sequence > after_sequence (0:
  // starting with one STATE event of the current job) to `callback` until the
  // job finishes or the callback returns false. If the stream breaks after
  // the first event (UNAVAILABLE, or it ends before the final state) the watch
  // reconnects from the last sequence seen, up to 5 times in a row without a
  // new event, waiting 1 s, 2 s, 4 s, ... between tries; a failure before the
  // first event is returned at once. Returns the job as of the last
  // event: finished, unless the callback stopped the watch. Errors: the
  // server's (NOT_FOUND for an unknown id), or the last failure once
  // reconnecting gives up.
  absl::StatusOr<qwha::v1::Job> Watch(const std::string& job_id, const WatchCallback& callback,
                                      int64_t after_sequence = 0);

  // --- RegistryService: adapters -------------------------------------------
  absl::StatusOr<qwha::v1::ListAdaptersResponse> ListAdapters(
      const qwha::v1::ListAdaptersRequest& request);
  absl::StatusOr<qwha::v1::Adapter> GetAdapter(const std::string& id);
  absl::Status DeleteAdapter(const std::string& id);

  // Downloads file `file` (a FileInfo.name) of adapter `adapter_id` to
  // `dest_path`, resumably and verified:
  //  - bytes are appended to "<dest_path>.part", which survives failures; a
  //    later call (or a retry inside this one) asks the server for the rest
  //    with DownloadRequest.offset = the .part's size. A .part larger than
  //    the file is discarded.
  //  - inside one call, a stream that fails with UNAVAILABLE / ABORTED /
  //    DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED or ends short is retried from
  //    the new offset, up to 5 times in a row without progress.
  //  - when all bytes are there, the size and sha256 are checked against the
  //    adapter's FileInfo; on a match the .part is fsynced and renamed over
  //    `dest_path` (atomic on one filesystem); on a mismatch the .part is
  //    removed and DataLoss names the file and both digests.
  // If `dest_path` already exists with the right size and digest nothing is
  // downloaded. Errors: NOT_FOUND if the adapter has no such file; the
  // server's or a local file error otherwise (the .part is kept for resuming);
  // FAILED_PRECONDITION while another download to the same `dest_path` runs
  // (the .part is locked with flock).
  absl::Status DownloadAdapterFile(const std::string& adapter_id, const std::string& file,
                                   const std::string& dest_path,
                                   const ProgressCallback& progress = nullptr);

  // Downloads every file of the adapter into directory `dir` (created if
  // missing; file names may contain subdirectories) with
  // DownloadAdapterFile, and returns the adapter. A file name that is
  // absolute or contains ".." is refused (DataLoss) before anything is
  // written. `progress` counts bytes over all files.
  absl::StatusOr<qwha::v1::Adapter> PullAdapter(const std::string& id, const std::string& dir,
                                                const ProgressCallback& progress = nullptr);

  // --- RegistryService: base models ----------------------------------------
  // Registers a directory the server can read under its model root.
  absl::StatusOr<qwha::v1::BaseModel> RegisterModel(const std::string& name,
                                                    const std::string& server_path);
  // Uploads every regular file below local directory `dir` (symbolic links
  // followed; names relative to `dir`, '/'-separated, sorted), the header
  // carrying each file's size and sha256, then the data in 1 MiB pieces.
  // InvalidArgument if `dir` is not a directory or holds no file.
  absl::StatusOr<qwha::v1::BaseModel> UploadModel(const std::string& dir, const std::string& name,
                                                  const ProgressCallback& progress = nullptr);
  absl::StatusOr<qwha::v1::ListModelsResponse> ListModels();
  absl::StatusOr<qwha::v1::BaseModel> GetModel(const std::string& id);
  absl::Status DeleteModel(const std::string& id);

  // --- RegistryService: datasets -------------------------------------------
  // Uploads the JSONL file at `path` as one file named by its base name, the
  // header carrying its size and sha256, then the data in 1 MiB pieces. The
  // server validates every line (INVALID_ARGUMENT names the first bad one).
  absl::StatusOr<qwha::v1::Dataset> UploadDataset(const std::string& path, const std::string& name,
                                                  const ProgressCallback& progress = nullptr);
  absl::StatusOr<qwha::v1::ListDatasetsResponse> ListDatasets();
  absl::Status DeleteDataset(const std::string& id);

  // --- RegistryService: inference servers -----------------------------------
  // The inference servers registered for adapter pushes (of
  // `base_model_digest` when non-empty), most recently seen first.
  absl::StatusOr<qwha::v1::ListInferenceServersResponse> ListInferenceServers(
      const std::string& base_model_digest = "");

 private:
  struct Stubs;
  ClientOptions options_;
  std::unique_ptr<Stubs> stubs_;
};

}  // namespace qwha::client
