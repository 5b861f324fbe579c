#include "worker/serve/registration.h"

#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "server/api/auth.h"

namespace qwha::serve {
namespace {

bool Permanent(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNAUTHENTICATED ||
         code == grpc::StatusCode::PERMISSION_DENIED || code == grpc::StatusCode::UNIMPLEMENTED;
}

}  // namespace

SchedulerRegistration::SchedulerRegistration(std::shared_ptr<grpc::Channel> channel,
                                             std::string token,
                                             v1::RegisterInferenceServerRequest request)
    : stub_(v1::RegistryService::NewStub(std::move(channel))),
      token_(std::move(token)),
      request_(std::move(request)) {}

absl::StatusOr<std::unique_ptr<SchedulerRegistration>> SchedulerRegistration::Start(
    std::shared_ptr<grpc::Channel> channel, std::string token,
    v1::RegisterInferenceServerRequest request) {
  std::unique_ptr<SchedulerRegistration> registration(
      new SchedulerRegistration(std::move(channel), std::move(token), std::move(request)));
  grpc::Status status = registration->RegisterOnce();
  if (!status.ok()) {
    const std::string message =
        absl::StrCat("registering as inference server ", registration->request_.address(),
                     " with the scheduler: ", status.error_message());
    if (Permanent(status.error_code())) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
    }
    std::cerr << "qwha-serve: " << message << " (retrying every "
              << registration->heartbeat_seconds_ << " s)" << std::endl;
    registration->last_ok_ = false;
  }
  registration->thread_ = std::thread([r = registration.get()] { r->Heartbeat(); });
  return registration;
}

SchedulerRegistration::~SchedulerRegistration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

grpc::Status SchedulerRegistration::RegisterOnce() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  api::AddToken(&context, token_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return grpc::Status(grpc::StatusCode::CANCELLED, "stopping");
    in_flight_ = &context;
  }
  v1::RegisterInferenceServerResponse response;
  grpc::Status status = stub_->RegisterInferenceServer(&context, request_, &response);
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_ = nullptr;
  }
  if (status.ok() && response.heartbeat_seconds() > 0) {
    heartbeat_seconds_ = response.heartbeat_seconds();
  }
  return status;
}

void SchedulerRegistration::Heartbeat() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      stop_cv_.wait_for(lock, std::chrono::seconds(heartbeat_seconds_.load()),
                        [this] { return stop_; });
      if (stop_) return;
    }
    grpc::Status status = RegisterOnce();
    if (status.error_code() == grpc::StatusCode::CANCELLED) return;
    if (status.ok() != last_ok_) {
      std::cerr << "qwha-serve: "
                << (status.ok() ? "registered with the scheduler again"
                                : absl::StrCat("heartbeat to the scheduler failed: ",
                                               status.error_message()))
                << std::endl;
    }
    last_ok_ = status.ok();
  }
}

}  // namespace qwha::serve
