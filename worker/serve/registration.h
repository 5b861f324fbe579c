// SchedulerRegistration: qwha-serve --advertise announcing itself to the
// scheduler (RegistryService.RegisterInferenceServer), so that jobs with
// JobSpec.load_on_inference_servers push their adapters to it.
//
// Start registers once, synchronously, then a thread registers again every
// heartbeat_seconds the scheduler asked for (10 s until it answered once).
// The scheduler keys servers by address, so re-registering is the heartbeat
// and also re-creates the record after the scheduler lost it.
//
// Thread safety: Start and the destructor belong to one thread; the
// heartbeat thread is internal.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "qwha/v1/registry.grpc.pb.h"

namespace qwha::serve {

class SchedulerRegistration {
 public:
  // Registers `request` with the scheduler behind `channel` (`token`, when
  // non-empty, as "authorization: Bearer <token>"). A refusal that retrying
  // cannot fix (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED,
  // UNIMPLEMENTED) is returned with the scheduler's message. Any other
  // failure (the scheduler is down) is logged to stderr and the heartbeat
  // thread keeps trying: the server serves meanwhile.
  static absl::StatusOr<std::unique_ptr<SchedulerRegistration>> Start(
      std::shared_ptr<grpc::Channel> channel, std::string token,
      v1::RegisterInferenceServerRequest request);

  // Stops the heartbeat thread (at once; an RPC in flight is cancelled).
  ~SchedulerRegistration();
  SchedulerRegistration(const SchedulerRegistration&) = delete;
  SchedulerRegistration& operator=(const SchedulerRegistration&) = delete;

 private:
  SchedulerRegistration(std::shared_ptr<grpc::Channel> channel, std::string token,
                        v1::RegisterInferenceServerRequest request);
  grpc::Status RegisterOnce();
  void Heartbeat();

  std::unique_ptr<v1::RegistryService::Stub> stub_;
  const std::string token_;
  const v1::RegisterInferenceServerRequest request_;
  std::atomic<int64_t> heartbeat_seconds_{10};
  bool last_ok_ = true;  // heartbeat thread only: log changes, not every failure

  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  grpc::ClientContext* in_flight_ = nullptr;  // guarded by mu_
  std::thread thread_;
};

}  // namespace qwha::serve
