#include "worker/runtime/worker_session.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"

namespace qwha::runtime {
namespace {

constexpr char kVersion[] = "qwha-worker/0.1";
constexpr std::chrono::milliseconds kMaxHeartbeatInterval(2000);

std::string HostName() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

}  // namespace

WorkerSession::WorkerSession(SchedulerClient& client, const DeviceProbe& probe,
                             WorkerMetrics& metrics, std::string name,
                             const std::atomic<bool>& stop)
    : client_(client), probe_(probe), metrics_(metrics), name_(std::move(name)), stop_(stop) {}

WorkerSession::~WorkerSession() { StopHeartbeats(); }

absl::Status WorkerSession::Register() {
  std::lock_guard<std::mutex> serial(register_mu_);
  Backoff backoff;
  for (;;) {
    const DeviceSample sample = probe_.Sample();
    v1::RegisterWorkerRequest request;
    request.set_name(name_);
    v1::WorkerCapabilities* caps = request.mutable_capabilities();
    caps->set_hostname(HostName());
    caps->set_gpu_count(sample.gpu_count);
    caps->set_device_name(sample.name);
    caps->set_total_memory_bytes(sample.total_bytes);
    caps->set_free_memory_bytes(sample.free_bytes);
    caps->set_version(kVersion);
    absl::StatusOr<v1::RegisterWorkerResponse> response = client_.RegisterWorker(request);
    if (response.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      worker_id_ = response->worker_id();
      lease_seconds_ = std::max<int64_t>(1, response->lease_seconds());
      std::cerr << "qwha-worker: registered with " << client_.address() << " as " << worker_id_
                << " (lease " << lease_seconds_ << " s)\n";
      return absl::OkStatus();
    }
    metrics_.SchedulerError("RegisterWorker");
    if (!IsTransient(response.status())) return response.status();
    if (stop_.load()) return absl::CancelledError("RegisterWorker: stopping");
    const auto wait = backoff.Next();
    std::cerr << "qwha-worker: " << response.status().message() << "; retrying in " << wait.count()
              << " ms\n";
    std::this_thread::sleep_for(wait);
  }
}

absl::Status WorkerSession::Reregister(const std::string& seen_worker_id) {
  if (worker_id() != seen_worker_id) return absl::OkStatus();  // someone else did
  std::cerr << "qwha-worker: the scheduler does not know worker " << seen_worker_id
            << "; registering again\n";
  return Register();
}

std::string WorkerSession::worker_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_id_;
}

int64_t WorkerSession::lease_seconds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lease_seconds_;
}

void WorkerSession::StartHeartbeats() {
  std::lock_guard<std::mutex> lock(mu_);
  if (heartbeats_running_) return;
  heartbeats_running_ = true;
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

void WorkerSession::StopHeartbeats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!heartbeats_running_) return;
    heartbeats_running_ = false;
  }
  wake_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void WorkerSession::BeginJob(const std::string& job_id, const std::string& lease_id) {
  std::lock_guard<std::mutex> lock(mu_);
  job_id_ = job_id;
  lease_id_ = lease_id;
  child_ = nullptr;
  cancel_ = false;
  lease_lost_ = false;
}

void WorkerSession::SetChild(ChildProcess* child) {
  std::lock_guard<std::mutex> lock(mu_);
  child_ = child;
  if (child_ != nullptr && lease_lost_) child_->Signal(SIGKILL);
  if (child_ != nullptr && cancel_ && !lease_lost_) child_->Signal(SIGTERM);
}

void WorkerSession::EndJob() {
  std::lock_guard<std::mutex> lock(mu_);
  job_id_.clear();
  lease_id_.clear();
  child_ = nullptr;
}

void WorkerSession::RequestCancel() {
  std::lock_guard<std::mutex> lock(mu_);
  CancelLocked();
}

void WorkerSession::MarkLeaseLost() {
  std::lock_guard<std::mutex> lock(mu_);
  LoseLeaseLocked();
}

void WorkerSession::CancelLocked() {
  if (job_id_.empty() || cancel_.exchange(true)) return;
  std::cerr << "qwha-worker: job " << job_id_ << ": cancel requested\n";
  if (child_ != nullptr) child_->Signal(SIGTERM);
}

void WorkerSession::LoseLeaseLocked() {
  if (job_id_.empty() || lease_lost_.exchange(true)) return;
  std::cerr << "qwha-worker: job " << job_id_ << ": lease lost; dropping the job\n";
  if (child_ != nullptr) child_->Signal(SIGKILL);
}

void WorkerSession::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (heartbeats_running_) {
    lock.unlock();
    HeartbeatOnce();
    lock.lock();
    const auto interval = std::min<std::chrono::milliseconds>(
        kMaxHeartbeatInterval, std::chrono::milliseconds(lease_seconds_ * 1000 / 3));
    wake_.wait_for(lock, interval, [this] { return !heartbeats_running_; });
  }
}

void WorkerSession::HeartbeatOnce() {
  const DeviceSample sample = probe_.Sample();
  metrics_.SetDevice(sample);
  v1::HeartbeatRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_worker_id(worker_id_);
    request.set_job_id(job_id_);
    request.set_lease_id(lease_id_);
  }
  request.set_free_memory_bytes(sample.free_bytes);
  request.set_gpu_utilization(sample.utilization);
  absl::StatusOr<v1::HeartbeatResponse> response = client_.Heartbeat(request);
  if (!response.ok()) {
    metrics_.SchedulerError("Heartbeat");
    if (response.status().code() == absl::StatusCode::kNotFound) {
      Reregister(request.worker_id()).IgnoreError();  // errors: retried next beat
    } else if (response.status().code() == absl::StatusCode::kFailedPrecondition) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!request.job_id().empty() && request.job_id() == job_id_) LoseLeaseLocked();
    }
    return;  // transient: the next beat tries again; the job keeps running
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (request.job_id().empty() || request.job_id() != job_id_) return;  // the job ended meanwhile
  if (response->lease_lost()) {
    LoseLeaseLocked();
  } else if (response->cancel()) {
    CancelLocked();
  }
}

}  // namespace qwha::runtime
