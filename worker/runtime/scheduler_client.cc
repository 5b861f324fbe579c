#include "worker/runtime/scheduler_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "server/api/auth.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

constexpr std::chrono::milliseconds kUnaryTimeout(15000);
// Blob transfers are long streams; they end on a broken connection, not on
// a short deadline.
constexpr std::chrono::hours kStreamTimeout(6);
constexpr size_t kUploadChunkBytes = 1 << 20;

absl::Status FromGrpc(const grpc::Status& status, const char* method) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(method, ": ", status.error_message()));
}

}  // namespace

SchedulerClient::SchedulerClient(const std::string& address, std::string token,
                                 std::shared_ptr<grpc::ChannelCredentials> credentials)
    : address_(address), token_(std::move(token)) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a scheduler restart (the default backoff grows
  // to two minutes).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(16 << 20);
  channel_ = grpc::CreateCustomChannel(address_, credentials, args);
  stub_ = v1::WorkerService::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> SchedulerClient::Context(
    std::chrono::milliseconds timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  api::AddToken(context.get(), token_);
  return context;
}

namespace {

// One unary call: `method` is the stub's blocking member function.
template <typename Request, typename Response>
absl::StatusOr<Response> Unary(grpc::Status (v1::WorkerService::Stub::*method)(grpc::ClientContext*,
                                                                               const Request&,
                                                                               Response*),
                               v1::WorkerService::Stub& stub,
                               std::unique_ptr<grpc::ClientContext> context, const Request& request,
                               const char* name) {
  Response response;
  grpc::Status status = (stub.*method)(context.get(), request, &response);
  if (!status.ok()) return FromGrpc(status, name);
  return response;
}

}  // namespace

absl::StatusOr<v1::RegisterWorkerResponse> SchedulerClient::RegisterWorker(
    const v1::RegisterWorkerRequest& r) {
  return Unary(&v1::WorkerService::Stub::RegisterWorker, *stub_, Context(kUnaryTimeout), r,
               "RegisterWorker");
}

absl::StatusOr<v1::AcquireJobResponse> SchedulerClient::AcquireJob(const v1::AcquireJobRequest& r) {
  return Unary(&v1::WorkerService::Stub::AcquireJob, *stub_,
               Context(kUnaryTimeout + std::chrono::milliseconds(r.wait_ms())), r, "AcquireJob");
}

absl::StatusOr<v1::HeartbeatResponse> SchedulerClient::Heartbeat(const v1::HeartbeatRequest& r) {
  return Unary(&v1::WorkerService::Stub::Heartbeat, *stub_, Context(kUnaryTimeout), r, "Heartbeat");
}

absl::StatusOr<v1::ReportProgressResponse> SchedulerClient::ReportProgress(
    const v1::ReportProgressRequest& r) {
  return Unary(&v1::WorkerService::Stub::ReportProgress, *stub_, Context(kUnaryTimeout), r,
               "ReportProgress");
}

absl::StatusOr<v1::CommitCheckpointResponse> SchedulerClient::CommitCheckpoint(
    const v1::CommitCheckpointRequest& r) {
  return Unary(&v1::WorkerService::Stub::CommitCheckpoint, *stub_, Context(kUnaryTimeout), r,
               "CommitCheckpoint");
}

absl::StatusOr<v1::CompleteJobResponse> SchedulerClient::CompleteJob(
    const v1::CompleteJobRequest& r) {
  return Unary(&v1::WorkerService::Stub::CompleteJob, *stub_, Context(kUnaryTimeout), r,
               "CompleteJob");
}

absl::StatusOr<v1::FailJobResponse> SchedulerClient::FailJob(const v1::FailJobRequest& r) {
  return Unary(&v1::WorkerService::Stub::FailJob, *stub_, Context(kUnaryTimeout), r, "FailJob");
}

absl::Status SchedulerClient::ReadBlob(const v1::ReadBlobRequest& request, const BlobSink& sink) {
  auto context = Context(kStreamTimeout);
  std::unique_ptr<grpc::ClientReader<v1::Chunk>> reader = stub_->ReadBlob(context.get(), request);
  int64_t offset = request.offset();
  v1::Chunk chunk;
  absl::Status sink_status;
  while (reader->Read(&chunk)) {
    if (chunk.offset() != offset) {
      sink_status = absl::DataLossError(absl::StrCat("ReadBlob ", request.sha256(), ": chunk at ",
                                                     chunk.offset(), ", expected ", offset));
    } else {
      sink_status = sink(chunk.data());
      offset += static_cast<int64_t>(chunk.data().size());
    }
    if (!sink_status.ok()) {
      context->TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (!sink_status.ok()) return sink_status;
  return FromGrpc(status, "ReadBlob");
}

absl::StatusOr<v1::UploadFileResponse> SchedulerClient::UploadFile(
    const v1::UploadFileRequest::Header& header, const std::string& path, int64_t* uploaded) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  auto context = Context(kStreamTimeout);
  v1::UploadFileResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::UploadFileRequest>> writer =
      stub_->UploadFile(context.get(), &response);
  v1::UploadFileRequest message;
  *message.mutable_header() = header;
  bool open = writer->Write(message);
  absl::Status local;
  std::string buffer(kUploadChunkBytes, '\0');
  while (open) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      local = ErrnoStatus(errno, "read", path);
      context->TryCancel();
      break;
    }
    if (n == 0) break;
    message.Clear();
    message.set_data(buffer.data(), static_cast<size_t>(n));
    open = writer->Write(message);
    if (open && uploaded != nullptr) *uploaded += n;
  }
  ::close(fd);
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!local.ok()) return local;
  if (!status.ok()) return FromGrpc(status, "UploadFile");
  return response;
}

bool IsTransient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

bool IsLeaseLost(const absl::Status& status) {
  return status.code() == absl::StatusCode::kFailedPrecondition ||
         status.code() == absl::StatusCode::kNotFound;
}

Backoff::Backoff(std::chrono::milliseconds max) : max_(max), rng_(std::random_device{}()) {}

std::chrono::milliseconds Backoff::Next() {
  const int64_t base = std::min<int64_t>(max_.count(), int64_t{200} << std::min(attempt_, 10));
  ++attempt_;
  // Full jitter in [base/2, base], so restarted workers do not retry in step.
  std::uniform_int_distribution<int64_t> jitter(base / 2, base);
  return std::chrono::milliseconds(jitter(rng_));
}

}  // namespace qwha::runtime
