#include "client/client.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/call_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "server/api/auth.h"

namespace qwha::client {
namespace internal {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::unique_ptr<grpc::ClientContext> MakeContext(const ClientOptions& options, bool unary) {
  auto context = std::make_unique<grpc::ClientContext>();
  api::AddToken(context.get(), options.token);
  if (unary && options.timeout.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + options.timeout);
  }
  return context;
}

}  // namespace internal

namespace {

using internal::FromGrpc;
using internal::MakeContext;

// One unary call: `rpc` is a pointer to a Stub member function.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Unary(const ClientOptions& options, Stub& stub,
                               grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&,
                                                         Response*),
                               const Request& request) {
  auto context = MakeContext(options, /*unary=*/true);
  Response response;
  grpc::Status status = (stub.*rpc)(context.get(), request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

bool IsFinished(qwha::v1::JobState state) {
  return state == qwha::v1::SUCCEEDED || state == qwha::v1::FAILED || state == qwha::v1::CANCELLED;
}

}  // namespace

Client::Client(ClientOptions options)
    : options_(std::move(options)), stubs_(std::make_unique<Stubs>()) {
  grpc::ChannelArguments args;
  // Adapter chunks are ≤ 1 MiB plus framing; leave room for large listings.
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(options_.address, options_.credentials, args);
  stubs_->jobs = qwha::v1::JobService::NewStub(channel);
  stubs_->registry = qwha::v1::RegistryService::NewStub(channel);
}

Client::~Client() = default;

absl::StatusOr<qwha::v1::Job> Client::SubmitJob(const qwha::v1::JobSpec& spec,
                                                const std::string& idempotency_key) {
  qwha::v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  request.set_idempotency_key(idempotency_key);
  return Unary(options_, *stubs_->jobs, &qwha::v1::JobService::Stub::SubmitJob, request);
}

absl::StatusOr<qwha::v1::Job> Client::GetJob(const std::string& id) {
  qwha::v1::GetJobRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->jobs, &qwha::v1::JobService::Stub::GetJob, request);
}

absl::StatusOr<qwha::v1::ListJobsResponse> Client::ListJobs(
    const qwha::v1::ListJobsRequest& request) {
  return Unary(options_, *stubs_->jobs, &qwha::v1::JobService::Stub::ListJobs, request);
}

absl::StatusOr<qwha::v1::Job> Client::CancelJob(const std::string& id) {
  qwha::v1::CancelJobRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->jobs, &qwha::v1::JobService::Stub::CancelJob, request);
}

absl::StatusOr<qwha::v1::ListJobEventsResponse> Client::ListJobEvents(
    const qwha::v1::ListJobEventsRequest& request) {
  return Unary(options_, *stubs_->jobs, &qwha::v1::JobService::Stub::ListJobEvents, request);
}

absl::StatusOr<qwha::v1::Job> Client::Watch(const std::string& job_id,
                                            const WatchCallback& callback, int64_t after_sequence) {
  constexpr int kMaxTriesWithoutEvent = 5;
  qwha::v1::Job last_job;
  bool have_job = false;
  int tries_without_event = 0;
  absl::Status last_error;
  while (true) {
    auto context = MakeContext(options_, /*unary=*/false);
    qwha::v1::WatchJobRequest request;
    request.set_id(job_id);
    request.set_after_sequence(after_sequence);
    auto reader = stubs_->jobs->WatchJob(context.get(), request);
    qwha::v1::JobEvent event;
    bool got_event = false;
    while (reader->Read(&event)) {
      got_event = true;
      after_sequence = std::max(after_sequence, event.sequence());
      if (event.has_job()) {
        last_job = event.job();
        have_job = true;
      }
      if (!callback(event)) {
        context->TryCancel();
        reader->Finish();
        return last_job;
      }
      if (event.type() == qwha::v1::JobEvent::STATE && IsFinished(event.job().state())) {
        context->TryCancel();
        reader->Finish();
        return last_job;
      }
    }
    grpc::Status status = reader->Finish();
    if (have_job && IsFinished(last_job.state())) return last_job;
    // Before the first event nothing says the watch can work: fail at once.
    if (!have_job || (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE)) {
      if (status.ok()) return absl::InternalError("watch stream ended without an event");
      return FromGrpc(status);
    }
    last_error = status.ok() ? absl::UnavailableError(absl::StrCat(
                                   "watch of job ", job_id, " ended before the job finished"))
                             : FromGrpc(status);
    tries_without_event = got_event ? 1 : tries_without_event + 1;
    if (tries_without_event > kMaxTriesWithoutEvent) return last_error;
    std::this_thread::sleep_for(std::chrono::seconds(1 << (tries_without_event - 1)));
  }
}

absl::StatusOr<qwha::v1::ListAdaptersResponse> Client::ListAdapters(
    const qwha::v1::ListAdaptersRequest& request) {
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::ListAdapters,
               request);
}

absl::StatusOr<qwha::v1::Adapter> Client::GetAdapter(const std::string& id) {
  qwha::v1::GetAdapterRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::GetAdapter, request);
}

absl::Status Client::DeleteAdapter(const std::string& id) {
  qwha::v1::DeleteAdapterRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::DeleteAdapter,
               request)
      .status();
}

absl::StatusOr<qwha::v1::BaseModel> Client::RegisterModel(const std::string& name,
                                                          const std::string& server_path) {
  qwha::v1::RegisterModelRequest request;
  request.set_name(name);
  request.set_path(server_path);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::RegisterModel,
               request);
}

absl::StatusOr<qwha::v1::ListInferenceServersResponse> Client::ListInferenceServers(
    const std::string& base_model_digest) {
  qwha::v1::ListInferenceServersRequest request;
  request.set_base_model_digest(base_model_digest);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::ListInferenceServers,
               request);
}

absl::StatusOr<qwha::v1::ListModelsResponse> Client::ListModels() {
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::ListModels,
               qwha::v1::ListModelsRequest());
}

absl::StatusOr<qwha::v1::BaseModel> Client::GetModel(const std::string& id) {
  qwha::v1::GetModelRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::GetModel, request);
}

absl::Status Client::DeleteModel(const std::string& id) {
  qwha::v1::DeleteModelRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::DeleteModel, request)
      .status();
}

absl::StatusOr<qwha::v1::ListDatasetsResponse> Client::ListDatasets() {
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::ListDatasets,
               qwha::v1::ListDatasetsRequest());
}

absl::Status Client::DeleteDataset(const std::string& id) {
  qwha::v1::DeleteDatasetRequest request;
  request.set_id(id);
  return Unary(options_, *stubs_->registry, &qwha::v1::RegistryService::Stub::DeleteDataset,
               request)
      .status();
}

}  // namespace qwha::client
