#include "server/api/worker_service.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "server/api/auth.h"
#include "server/registry/grpc_status.h"
#include "worker/io/sha256.h"

namespace qwha::api {

using registry::ToGrpc;

#define CHECK_AUTH(scope)                                                    \
  if (absl::Status auth = CheckToken(context, options_.token); !auth.ok()) { \
    return scope.Done(ToGrpc(auth));                                         \
  }

// Handlers whose body is one scheduler call returning StatusOr<Response>.
#define UNARY(method, call)                                     \
  RpcScope scope(metrics_, method);                             \
  CHECK_AUTH(scope);                                            \
  auto result = (call);                                         \
  if (!result.ok()) return scope.Done(ToGrpc(result.status())); \
  *response = std::move(*result);                               \
  return scope.Done(grpc::Status::OK)

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  UNARY("RegisterWorker", scheduler_->RegisterWorker(*request));
}

grpc::Status WorkerServiceImpl::AcquireJob(grpc::ServerContext* context,
                                           const v1::AcquireJobRequest* request,
                                           v1::AcquireJobResponse* response) {
  UNARY("AcquireJob", scheduler_->Acquire(*request));
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  UNARY("Heartbeat", scheduler_->Heartbeat(*request));
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* context,
                                               const v1::ReportProgressRequest* request,
                                               v1::ReportProgressResponse* response) {
  UNARY("ReportProgress", scheduler_->ReportProgress(*request));
}

grpc::Status WorkerServiceImpl::CompleteJob(grpc::ServerContext* context,
                                            const v1::CompleteJobRequest* request,
                                            v1::CompleteJobResponse* response) {
  UNARY("CompleteJob", scheduler_->Complete(*request));
}

grpc::Status WorkerServiceImpl::CommitCheckpoint(grpc::ServerContext* context,
                                                 const v1::CommitCheckpointRequest* request,
                                                 v1::CommitCheckpointResponse* response) {
  RpcScope scope(metrics_, "CommitCheckpoint");
  CHECK_AUTH(scope);
  return scope.Done(ToGrpc(scheduler_->CommitCheckpoint(*request)));
}

grpc::Status WorkerServiceImpl::FailJob(grpc::ServerContext* context,
                                        const v1::FailJobRequest* request,
                                        v1::FailJobResponse* response) {
  RpcScope scope(metrics_, "FailJob");
  CHECK_AUTH(scope);
  return scope.Done(ToGrpc(scheduler_->Fail(*request)));
}

grpc::Status WorkerServiceImpl::UploadFile(grpc::ServerContext* context,
                                           grpc::ServerReader<v1::UploadFileRequest>* reader,
                                           v1::UploadFileResponse* response) {
  RpcScope scope(metrics_, "UploadFile");
  CHECK_AUTH(scope);
  v1::UploadFileRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
    return scope.Done(
        grpc::Status(grpc::INVALID_ARGUMENT, "header: the first message must be the header"));
  }
  const v1::UploadFileRequest::Header header = message.header();
  const v1::FileInfo& file = header.file();
  if (file.name().empty() || file.name().size() > 200 ||
      file.name().find("..") != std::string::npos || file.name()[0] == '/') {
    return scope.Done(
        grpc::Status(grpc::INVALID_ARGUMENT, "file.name: empty, too long or not relative"));
  }
  if (!io::IsSha256Hex(file.sha256())) {
    return scope.Done(
        grpc::Status(grpc::INVALID_ARGUMENT, "file.sha256: 64 lower-case hex digits required"));
  }
  if (file.size() < 0 || file.size() > options_.max_upload_bytes) {
    return scope.Done(grpc::Status(grpc::INVALID_ARGUMENT,
                                   absl::StrCat("file.size: ", file.size(), " is outside [0, ",
                                                options_.max_upload_bytes, "]")));
  }
  if (header.kind() == v1::UploadFileRequest::Header::CHECKPOINT &&
      (header.checkpoint().empty() || header.checkpoint() == scheduler::kResultFiles)) {
    return scope.Done(
        grpc::Status(grpc::INVALID_ARGUMENT, "checkpoint: required for CHECKPOINT files"));
  }
  if (header.kind() == v1::UploadFileRequest::Header::KIND_UNSPECIFIED) {
    return scope.Done(grpc::Status(grpc::INVALID_ARGUMENT, "kind: CHECKPOINT or RESULT"));
  }
  if (absl::Status lease = scheduler_->CheckLease(header.job_id(), header.lease_id());
      !lease.ok()) {
    return scope.Done(ToGrpc(lease));
  }
  auto writer =
      blobs_->NewWriter(absl::StrCat("job ", header.job_id(), " file ", file.name()), file.size());
  if (!writer.ok()) return scope.Done(ToGrpc(writer.status()));
  while (reader->Read(&message)) {
    if (message.has_header()) {
      return scope.Done(grpc::Status(grpc::INVALID_ARGUMENT, "header: sent twice"));
    }
    if (absl::Status s = (*writer)->Append(message.data()); !s.ok()) return scope.Done(ToGrpc(s));
  }
  // The blob must be named by a row before a concurrent delete could collect
  // it: hold the registry's write guard from the commit to that row. RESULT
  // files are recorded under the reserved checkpoint name until CompleteJob
  // names them from the adapter.
  auto guard = registry_->GuardBlobWrites();
  auto info = (*writer)->Commit(file.sha256(), file.size());
  if (!info.ok()) return scope.Done(ToGrpc(info.status()));
  bool checkpoint = header.kind() == v1::UploadFileRequest::Header::CHECKPOINT;
  absl::Status recorded = scheduler_->AddCheckpointFile(
      header.job_id(), header.lease_id(),
      checkpoint ? header.checkpoint() : scheduler::kResultFiles, file);
  if (!recorded.ok()) return scope.Done(ToGrpc(recorded));
  *response->mutable_file() = file;
  return scope.Done(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::ReadBlob(grpc::ServerContext* context,
                                         const v1::ReadBlobRequest* request,
                                         grpc::ServerWriter<v1::Chunk>* writer) {
  RpcScope scope(metrics_, "ReadBlob");
  CHECK_AUTH(scope);
  auto allowed = scheduler_->MayRead(request->job_id(), request->lease_id(), request->sha256());
  if (!allowed.ok()) return scope.Done(ToGrpc(allowed.status()));
  if (!*allowed) {
    return scope.Done(grpc::Status(grpc::PERMISSION_DENIED,
                                   absl::StrCat("sha256: ", request->sha256(),
                                                " is not an input of job ", request->job_id())));
  }
  auto path = blobs_->PathOf(request->sha256());
  if (!path.ok()) return scope.Done(ToGrpc(path.status()));
  struct stat st;
  int64_t size = ::stat(path->c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  if (request->offset() < 0 || request->offset() > size) {
    return scope.Done(grpc::Status(
        grpc::OUT_OF_RANGE, absl::StrCat("offset: ", request->offset(), " beyond size ", size)));
  }
  constexpr int64_t kChunk = 1 << 20;
  int64_t offset = request->offset();
  bool first = true;
  do {
    auto data = blobs_->Read(request->sha256(), offset, kChunk);
    if (!data.ok()) return scope.Done(ToGrpc(data.status()));
    v1::Chunk chunk;
    if (first) {
      chunk.mutable_file()->set_name(request->sha256());
      chunk.mutable_file()->set_sha256(request->sha256());
      chunk.mutable_file()->set_size(size);
      first = false;
    }
    chunk.set_offset(offset);
    offset += static_cast<int64_t>(data->size());
    *chunk.mutable_data() = std::move(*data);
    if (!writer->Write(chunk)) return scope.Done(grpc::Status(grpc::CANCELLED, "client went away"));
  } while (offset < size && !context->IsCancelled());
  return scope.Done(grpc::Status::OK);
}

}  // namespace qwha::api
