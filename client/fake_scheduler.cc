#include "client/fake_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "worker/io/sha256.h"

namespace qwha::client::testing {
namespace {

void RecordAuthorization(grpc::ServerContext* context, std::vector<std::string>* out) {
  auto it = context->client_metadata().find("authorization");
  out->push_back(it == context->client_metadata().end()
                     ? ""
                     : std::string(it->second.data(), it->second.size()));
}

}  // namespace

void FakeRegistry::AddAdapter(const std::string& id,
                              const std::map<std::string, std::string>& files) {
  std::lock_guard<std::mutex> lock(mu);
  qwha::v1::Adapter adapter;
  adapter.set_id(id);
  for (const auto& [name, content] : files) {
    auto* info = adapter.add_files();
    info->set_name(name);
    info->set_size(static_cast<int64_t>(content.size()));
    info->set_sha256(io::Sha256Hex(content));
  }
  adapters_[id] = adapter;
  contents_[id] = files;
}

void FakeRegistry::SetAdvertisedSha256(const std::string& id, const std::string& file,
                                       const std::string& sha256) {
  std::lock_guard<std::mutex> lock(mu);
  for (auto& info : *adapters_[id].mutable_files()) {
    if (info.name() == file) info.set_sha256(sha256);
  }
}

void FakeRegistry::CutDownloads(int streams, int64_t bytes, grpc::StatusCode code) {
  std::lock_guard<std::mutex> lock(mu);
  cut_streams_ = streams;
  cut_bytes_ = bytes;
  cut_code_ = code;
}

grpc::Status FakeRegistry::GetAdapter(grpc::ServerContext* context,
                                      const qwha::v1::GetAdapterRequest* request,
                                      qwha::v1::Adapter* response) {
  std::lock_guard<std::mutex> lock(mu);
  RecordAuthorization(context, &authorization);
  auto it = adapters_.find(request->id());
  if (it == adapters_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("adapter ", request->id()));
  }
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status FakeRegistry::DownloadAdapter(grpc::ServerContext* context,
                                           const qwha::v1::DownloadRequest* request,
                                           grpc::ServerWriter<qwha::v1::Chunk>* writer) {
  std::string content;
  qwha::v1::FileInfo info;
  int64_t limit = -1;
  grpc::StatusCode code = grpc::StatusCode::OK;
  {
    std::lock_guard<std::mutex> lock(mu);
    RecordAuthorization(context, &authorization);
    download_offsets.push_back(request->offset());
    auto adapter = adapters_.find(request->adapter_id());
    if (adapter == adapters_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "adapter");
    for (const auto& file : adapter->second.files()) {
      if (file.name() == request->file()) info = file;
    }
    if (info.name().empty()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "file");
    content = contents_[request->adapter_id()][request->file()];
    if (cut_streams_ > 0) {
      --cut_streams_;
      limit = cut_bytes_;
      code = cut_code_;
    }
  }
  int64_t offset = request->offset();
  if (offset < 0 || offset > static_cast<int64_t>(content.size())) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset");
  }
  const int64_t end = limit < 0 ? static_cast<int64_t>(content.size())
                                : std::min<int64_t>(content.size(), offset + limit);
  bool first = true;
  do {
    qwha::v1::Chunk chunk;
    if (first) *chunk.mutable_file() = info;
    first = false;
    chunk.set_offset(offset);
    int64_t n = std::min(chunk_bytes, end - offset);
    chunk.set_data(content.substr(static_cast<size_t>(offset), static_cast<size_t>(n)));
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
    offset += n;
  } while (offset < end);
  if (limit >= 0) return grpc::Status(code, code == grpc::StatusCode::OK ? "" : "cut by the test");
  return grpc::Status::OK;
}

grpc::Status FakeRegistry::ReadUpload(grpc::ServerContext* context,
                                      grpc::ServerReader<qwha::v1::UploadChunk>* reader) {
  std::lock_guard<std::mutex> lock(mu);
  RecordAuthorization(context, &authorization);
  uploaded.clear();
  qwha::v1::UploadChunk chunk;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first message: header");
  }
  upload_header = chunk.header();
  while (reader->Read(&chunk)) {
    if (!chunk.has_data()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "two headers");
    largest_upload_chunk =
        std::max<int64_t>(largest_upload_chunk, static_cast<int64_t>(chunk.data().data().size()));
    uploaded[chunk.data().name()] += chunk.data().data();
  }
  for (const auto& file : upload_header.files()) {
    const std::string& data = uploaded[file.name()];
    if (static_cast<int64_t>(data.size()) != file.size() || io::Sha256Hex(data) != file.sha256()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat(file.name(), ": size or sha256 mismatch: ", data.size(),
                                       " vs ", file.size()));
    }
  }
  return grpc::Status::OK;
}

grpc::Status FakeRegistry::UploadDataset(grpc::ServerContext* context,
                                         grpc::ServerReader<qwha::v1::UploadChunk>* reader,
                                         qwha::v1::Dataset* response) {
  grpc::Status status = ReadUpload(context, reader);
  if (!status.ok()) return status;
  response->set_id("d-1");
  response->set_name(upload_header.name());
  *response->mutable_file() = upload_header.files(0);
  response->set_format("text");
  return grpc::Status::OK;
}

grpc::Status FakeRegistry::UploadModel(grpc::ServerContext* context,
                                       grpc::ServerReader<qwha::v1::UploadChunk>* reader,
                                       qwha::v1::BaseModel* response) {
  grpc::Status status = ReadUpload(context, reader);
  if (!status.ok()) return status;
  response->set_id("m-1");
  response->set_name(upload_header.name());
  *response->mutable_files() = upload_header.files();
  return grpc::Status::OK;
}

grpc::Status FakeRegistry::ListDatasets(grpc::ServerContext*, const qwha::v1::ListDatasetsRequest*,
                                        qwha::v1::ListDatasetsResponse* response) {
  auto* dataset = response->add_datasets();
  dataset->set_id("d-1");
  dataset->set_name("kjv");
  dataset->set_format("prompt_completion");
  dataset->set_records(1200);
  dataset->mutable_file()->set_size(3 << 20);
  return grpc::Status::OK;
}

void FakeJobs::SetEvents(const std::string& job_id, std::vector<qwha::v1::JobEvent> events) {
  std::lock_guard<std::mutex> lock(mu);
  events_[job_id] = std::move(events);
  jobs_[job_id] = events_[job_id].back().job();
}

void FakeJobs::CutNextWatch(int events) {
  std::lock_guard<std::mutex> lock(mu);
  cut_watch_after_ = events;
}

grpc::Status FakeJobs::SubmitJob(grpc::ServerContext*, const qwha::v1::SubmitJobRequest* request,
                                 qwha::v1::Job* response) {
  std::lock_guard<std::mutex> lock(mu);
  submitted.push_back(*request);
  if (request->spec().base_model_id() == "missing") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "spec.base_model_id: no model \"missing\"");
  }
  response->set_id(absl::StrCat("j-", submitted.size()));
  *response->mutable_spec() = request->spec();
  response->set_state(qwha::v1::QUEUED);
  response->set_idempotency_key(request->idempotency_key());
  jobs_.emplace(response->id(), *response);
  return grpc::Status::OK;
}

grpc::Status FakeJobs::GetJob(grpc::ServerContext*, const qwha::v1::GetJobRequest* request,
                              qwha::v1::Job* response) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = jobs_.find(request->id());
  if (it == jobs_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("job ", request->id()));
  }
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status FakeJobs::ListJobs(grpc::ServerContext*, const qwha::v1::ListJobsRequest* request,
                                qwha::v1::ListJobsResponse* response) {
  std::lock_guard<std::mutex> lock(mu);
  list_requests.push_back(*request);
  for (const auto& [id, job] : jobs_) *response->add_jobs() = job;
  return grpc::Status::OK;
}

grpc::Status FakeJobs::WatchJob(grpc::ServerContext*, const qwha::v1::WatchJobRequest* request,
                                grpc::ServerWriter<qwha::v1::JobEvent>* writer) {
  std::vector<qwha::v1::JobEvent> events;
  int limit = -1;
  {
    std::lock_guard<std::mutex> lock(mu);
    watch_after.push_back(request->after_sequence());
    auto it = events_.find(request->id());
    if (it == events_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("job ", request->id()));
    }
    events = it->second;
    limit = cut_watch_after_;
    cut_watch_after_ = -1;
  }
  int sent = 0;
  for (const auto& event : events) {
    if (event.sequence() <= request->after_sequence()) continue;
    if (limit >= 0 && sent == limit) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "restart");
    writer->Write(event);
    ++sent;
  }
  return grpc::Status::OK;
}

qwha::v1::JobEvent MakeEvent(const std::string& job_id, int64_t sequence,
                             qwha::v1::JobEvent::Type type, qwha::v1::JobState state, int64_t step,
                             int64_t total) {
  qwha::v1::JobEvent event;
  event.set_sequence(sequence);
  event.set_type(type);
  event.mutable_time()->set_seconds(1700000000 + sequence * 5);
  qwha::v1::Job* job = event.mutable_job();
  job->set_id(job_id);
  job->set_state(state);
  if (state == qwha::v1::FAILED) job->set_error("CUDA out of memory");
  if (state == qwha::v1::SUCCEEDED) job->set_adapter_id("a-1");
  if (total > 0) {
    job->mutable_progress()->set_phase(qwha::v1::TRAINING);
    job->mutable_progress()->set_step(step);
    job->mutable_progress()->set_total_steps(total);
    job->mutable_progress()->set_loss(2.5 - 0.01 * static_cast<double>(step));
    job->mutable_progress()->set_learning_rate(1e-2);
    job->mutable_progress()->set_tokens_per_second(12345);
    job->mutable_progress()->set_eta_seconds(static_cast<double>(total - step));
  }
  return event;
}

FakeScheduler::FakeScheduler() {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&registry);
  builder.RegisterService(&jobs);
  server_ = builder.BuildAndStart();
  address_ = absl::StrCat("127.0.0.1:", port);
}

FakeScheduler::~FakeScheduler() { server_->Shutdown(); }

}  // namespace qwha::client::testing
