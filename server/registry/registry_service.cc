#include "server/registry/registry_service.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/registry/dataset_validator.h"
#include "server/registry/grpc_status.h"
#include "server/registry/model_dir.h"
#include "server/registry/upload_receiver.h"

namespace qwha::registry {
namespace {

constexpr int64_t kChunkBytes = 1 << 20;
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

absl::Status Required(const std::string& field, const std::string& value) {
  return value.empty() ? absl::InvalidArgumentError(absl::StrCat(field, ": required"))
                       : absl::OkStatus();
}

// Reads an upload stream to its end into `receiver`; `on_header` runs once,
// right after the header arrived.
absl::Status ReceiveAll(grpc::ServerContext* context, grpc::ServerReader<v1::UploadChunk>* reader,
                        UploadReceiver& receiver, const std::function<absl::Status()>& on_header) {
  v1::UploadChunk chunk;
  while (reader->Read(&chunk)) {
    const bool had_header = receiver.has_header();
    if (absl::Status s = receiver.Message(chunk); !s.ok()) return s;
    if (!had_header) {
      if (absl::Status s = on_header(); !s.ok()) return s;
    }
  }
  if (context->IsCancelled()) return absl::CancelledError("upload cancelled by the client");
  return receiver.CheckComplete();
}

// Commits the received blobs and records the row naming them, under a blob
// write guard; on failure removes the blobs it committed that nothing names.
template <typename T>
absl::StatusOr<T> CommitAndRecord(
    RegistryStore* store, UploadReceiver& receiver,
    const std::function<absl::StatusOr<T>(const std::vector<v1::FileInfo>&)>& record) {
  std::vector<std::string> committed;
  absl::StatusOr<T> result;
  {
    BlobWriteGuard guard = store->GuardBlobWrites();
    auto files = receiver.Commit(&committed);
    result = files.ok() ? record(*files) : absl::StatusOr<T>(files.status());
  }
  if (!result.ok() && !committed.empty()) (void)store->RemoveUnreferencedBlobs(committed);
  return result;
}

std::function<absl::StatusOr<v1::BaseModel>(const std::vector<v1::FileInfo>&)> RecordModel(
    RegistryStore* store, const std::string& name, const std::string& source_path) {
  return [=](const std::vector<v1::FileInfo>& files) {
    v1::BaseModel model;
    model.set_name(name);
    model.set_source_path(source_path);
    for (const v1::FileInfo& f : files) *model.add_files() = f;
    return store->InsertModel(std::move(model));
  };
}

}  // namespace

RegistryServiceImpl::RegistryServiceImpl(RegistryStore* store, RegistryOptions options,
                                         AuthHook auth,
                                         std::shared_ptr<prometheus::Registry> metrics,
                                         InferenceServerDirectory* servers)
    : store_(store),
      options_(std::move(options)),
      auth_(std::move(auth)),
      metrics_(std::move(metrics)),
      servers_(servers) {
  metrics_.RefreshBytes(*store_);
}

absl::Status RegistryServiceImpl::Authorize(grpc::ServerContext* context) {
  return auth_ ? auth_(context) : absl::OkStatus();
}

// ---- adapters ----

grpc::Status RegistryServiceImpl::ListAdapters(grpc::ServerContext* context,
                                               const v1::ListAdaptersRequest* request,
                                               v1::ListAdaptersResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (request->page_size() < 0) {
    return ToGrpc(absl::InvalidArgumentError("page_size: must not be negative"));
  }
  AdapterFilter filter;
  filter.job_id = request->job_id();
  filter.base_model_id = request->base_model_id();
  filter.adapter_type = request->adapter_type();
  for (const auto& [key, value] : request->labels()) filter.labels.emplace_back(key, value);
  filter.page_size =
      request->page_size() == 0 ? kDefaultPageSize : std::min(request->page_size(), kMaxPageSize);
  filter.page_token = request->page_token();
  auto adapters = store_->ListAdapters(filter, response->mutable_next_page_token());
  if (!adapters.ok()) return ToGrpc(adapters.status());
  for (v1::Adapter& a : *adapters) *response->add_adapters() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::GetAdapter(grpc::ServerContext* context,
                                             const v1::GetAdapterRequest* request,
                                             v1::Adapter* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (absl::Status s = Required("id", request->id()); !s.ok()) return ToGrpc(s);
  auto adapter = store_->GetAdapter(request->id());
  if (!adapter.ok()) return ToGrpc(adapter.status());
  *response = *std::move(adapter);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::DownloadAdapter(grpc::ServerContext* context,
                                                  const v1::DownloadRequest* request,
                                                  grpc::ServerWriter<v1::Chunk>* writer) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  return ToGrpc(DoDownload(context, *request, writer));
}

absl::Status RegistryServiceImpl::DoDownload(grpc::ServerContext* context,
                                             const v1::DownloadRequest& request,
                                             grpc::ServerWriter<v1::Chunk>* writer) {
  if (absl::Status s = Required("adapter_id", request.adapter_id()); !s.ok()) return s;
  if (absl::Status s = Required("file", request.file()); !s.ok()) return s;
  auto adapter = store_->GetAdapter(request.adapter_id());
  if (!adapter.ok()) return adapter.status();
  const v1::FileInfo* info = nullptr;
  for (const v1::FileInfo& f : adapter->files()) {
    if (f.name() == request.file()) info = &f;
  }
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("adapter ", request.adapter_id(), " has no file '", request.file(), "'"));
  }
  if (request.offset() < 0) return absl::InvalidArgumentError("offset: must not be negative");
  if (request.offset() > info->size()) {
    return absl::OutOfRangeError(absl::StrCat("offset ", request.offset(), " is past the end of ",
                                              info->name(), " (", info->size(), " bytes)"));
  }
  auto path = store_->blobs()->PathOf(info->sha256());
  if (!path.ok()) {
    return absl::DataLossError(absl::StrCat("adapter ", request.adapter_id(), " file ",
                                            info->name(), ": blob ", info->sha256(), " missing"));
  }
  // One descriptor for the whole stream: a concurrent delete cannot cut it short.
  int fd = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("open ", *path, ": ", std::strerror(errno)));
  }
  absl::Status status;
  int64_t offset = request.offset(), sent = 0;
  v1::Chunk chunk;
  *chunk.mutable_file() = *info;
  std::string buffer(kChunkBytes, '\0');
  do {
    const int64_t want = std::min(kChunkBytes, info->size() - offset);
    ssize_t n = want > 0 ? ::pread(fd, buffer.data(), static_cast<size_t>(want), offset) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (n == 0 && want > 0)) {
      status = absl::DataLossError(absl::StrCat("adapter ", request.adapter_id(), " file ",
                                                info->name(), ": stored blob is short"));
      break;
    }
    chunk.set_offset(offset);
    chunk.set_data(buffer.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) {
      status = absl::CancelledError("download cancelled by the client");
      break;
    }
    chunk.clear_file();
    offset += n;
    sent += n;
  } while (offset < info->size() && !context->IsCancelled());
  ::close(fd);
  metrics_.Downloaded("grpc", sent);
  return status;
}

grpc::Status RegistryServiceImpl::DeleteAdapter(grpc::ServerContext* context,
                                                const v1::DeleteAdapterRequest* request,
                                                v1::DeleteResponse*) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (absl::Status s = Required("id", request->id()); !s.ok()) return ToGrpc(s);
  absl::Status s = store_->DeleteAdapter(request->id());
  if (s.ok()) metrics_.RefreshBytes(*store_);
  return ToGrpc(s);
}

// ---- base models ----

grpc::Status RegistryServiceImpl::RegisterModel(grpc::ServerContext* context,
                                                const v1::RegisterModelRequest* request,
                                                v1::BaseModel* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  auto model = DoRegisterModel(*request);
  metrics_.Upload("model", model.status());
  if (!model.ok()) return ToGrpc(model.status());
  metrics_.RefreshBytes(*store_);
  *response = *std::move(model);
  return grpc::Status::OK;
}

absl::StatusOr<v1::BaseModel> RegistryServiceImpl::DoRegisterModel(
    const v1::RegisterModelRequest& request) {
  if (options_.model_root.empty()) {
    return absl::FailedPreconditionError(
        "registering models by path is disabled on this server (no model root); use UploadModel");
  }
  if (absl::Status s = ValidateName("name", request.name()); !s.ok()) return s;
  auto dir = ResolveModelDir(options_.model_root, request.path());
  if (!dir.ok()) return dir.status();
  // The same path as an upload: the receiver copies each file into an
  // uncommitted blob and checks that it did not change size meanwhile.
  UploadReceiver receiver(store_->blobs(), "model", INT64_MAX, options_.max_model_files);
  v1::UploadHeader header;
  header.set_name(request.name());
  for (const ModelDirFile& f : dir->files) {
    v1::FileInfo* info = header.add_files();
    info->set_name(f.name);
    info->set_size(f.size);
  }
  if (absl::Status s = receiver.Header(header); !s.ok()) return s;
  std::string buffer(kChunkBytes, '\0');
  for (const ModelDirFile& f : dir->files) {
    int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return absl::InternalError(absl::StrCat("open ", f.path, ": ", std::strerror(errno)));
    v1::UploadChunk chunk;
    chunk.mutable_data()->set_name(f.name);
    absl::Status s;
    while (s.ok()) {
      ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) s = absl::InternalError(absl::StrCat("read ", f.path, ": ", std::strerror(errno)));
      if (n <= 0) break;
      chunk.mutable_data()->set_data(buffer.data(), static_cast<size_t>(n));
      s = receiver.Message(chunk);
    }
    ::close(fd);
    if (!s.ok()) return s;
  }
  return CommitAndRecord<v1::BaseModel>(store_, receiver,
                                        RecordModel(store_, request.name(), dir->path));
}

grpc::Status RegistryServiceImpl::UploadModel(grpc::ServerContext* context,
                                              grpc::ServerReader<v1::UploadChunk>* reader,
                                              v1::BaseModel* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  auto model = DoUploadModel(context, reader);
  metrics_.Upload("model", model.status());
  if (!model.ok()) return ToGrpc(model.status());
  metrics_.RefreshBytes(*store_);
  *response = *std::move(model);
  return grpc::Status::OK;
}

absl::StatusOr<v1::BaseModel> RegistryServiceImpl::DoUploadModel(
    grpc::ServerContext* context, grpc::ServerReader<v1::UploadChunk>* reader) {
  UploadReceiver receiver(store_->blobs(), "model", options_.max_upload_bytes,
                          options_.max_model_files);
  absl::Status received = ReceiveAll(context, reader, receiver, [&] {
    std::vector<std::string> names;
    for (const v1::FileInfo& f : receiver.header().files()) names.push_back(f.name());
    return CheckModelFileSet(names);
  });
  if (!received.ok()) return received;
  return CommitAndRecord<v1::BaseModel>(store_, receiver,
                                        RecordModel(store_, receiver.header().name(), ""));
}

grpc::Status RegistryServiceImpl::ListModels(grpc::ServerContext* context,
                                             const v1::ListModelsRequest*,
                                             v1::ListModelsResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  auto models = store_->ListModels();
  if (!models.ok()) return ToGrpc(models.status());
  for (v1::BaseModel& m : *models) *response->add_models() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::GetModel(grpc::ServerContext* context,
                                           const v1::GetModelRequest* request,
                                           v1::BaseModel* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (absl::Status s = Required("id", request->id()); !s.ok()) return ToGrpc(s);
  auto model = store_->GetModel(request->id());
  if (!model.ok()) return ToGrpc(model.status());
  *response = *std::move(model);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::DeleteModel(grpc::ServerContext* context,
                                              const v1::DeleteModelRequest* request,
                                              v1::DeleteResponse*) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (absl::Status s = Required("id", request->id()); !s.ok()) return ToGrpc(s);
  absl::Status s = store_->DeleteModel(request->id());
  if (s.ok()) metrics_.RefreshBytes(*store_);
  return ToGrpc(s);
}

// ---- datasets ----

grpc::Status RegistryServiceImpl::UploadDataset(grpc::ServerContext* context,
                                                grpc::ServerReader<v1::UploadChunk>* reader,
                                                v1::Dataset* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  auto dataset = DoUploadDataset(context, reader);
  metrics_.Upload("dataset", dataset.status());
  if (!dataset.ok()) return ToGrpc(dataset.status());
  metrics_.RefreshBytes(*store_);
  *response = *std::move(dataset);
  return grpc::Status::OK;
}

absl::StatusOr<v1::Dataset> RegistryServiceImpl::DoUploadDataset(
    grpc::ServerContext* context, grpc::ServerReader<v1::UploadChunk>* reader) {
  UploadReceiver receiver(store_->blobs(), "dataset", options_.max_dataset_bytes, 1);
  std::unique_ptr<DatasetValidator> validator;
  absl::Status received = ReceiveAll(context, reader, receiver, [&] {
    validator = std::make_unique<DatasetValidator>(receiver.header().name());
    receiver.set_observer(
        [&](const std::string&, std::string_view data) { return validator->Feed(data); });
    return absl::OkStatus();
  });
  if (received.ok()) received = validator->Finish();
  if (!received.ok()) return received;
  return CommitAndRecord<v1::Dataset>(store_, receiver,
                                      [&](const std::vector<v1::FileInfo>& files) {
                                        v1::Dataset dataset;
                                        dataset.set_name(receiver.header().name());
                                        *dataset.mutable_file() = files[0];
                                        dataset.set_records(validator->records());
                                        dataset.set_format(validator->format());
                                        return store_->InsertDataset(std::move(dataset));
                                      });
}

grpc::Status RegistryServiceImpl::ListDatasets(grpc::ServerContext* context,
                                               const v1::ListDatasetsRequest*,
                                               v1::ListDatasetsResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  auto datasets = store_->ListDatasets();
  if (!datasets.ok()) return ToGrpc(datasets.status());
  for (v1::Dataset& d : *datasets) *response->add_datasets() = std::move(d);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::DeleteDataset(grpc::ServerContext* context,
                                                const v1::DeleteDatasetRequest* request,
                                                v1::DeleteResponse*) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (absl::Status s = Required("id", request->id()); !s.ok()) return ToGrpc(s);
  absl::Status s = store_->DeleteDataset(request->id());
  if (s.ok()) metrics_.RefreshBytes(*store_);
  return ToGrpc(s);
}

// ---- inference servers ----

grpc::Status RegistryServiceImpl::RegisterInferenceServer(
    grpc::ServerContext* context, const v1::RegisterInferenceServerRequest* request,
    v1::RegisterInferenceServerResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (servers_ == nullptr) {
    return ToGrpc(absl::UnimplementedError("this registry takes no inference servers"));
  }
  auto registered = servers_->Register(*request);
  if (!registered.ok()) return ToGrpc(registered.status());
  *response = *std::move(registered);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::ListInferenceServers(
    grpc::ServerContext* context, const v1::ListInferenceServersRequest* request,
    v1::ListInferenceServersResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpc(s);
  if (servers_ == nullptr) {
    return ToGrpc(absl::UnimplementedError("this registry takes no inference servers"));
  }
  auto servers = servers_->List(request->base_model_digest());
  if (!servers.ok()) return ToGrpc(servers.status());
  for (v1::InferenceServer& server : *servers) *response->add_servers() = std::move(server);
  return grpc::Status::OK;
}

}  // namespace qwha::registry
