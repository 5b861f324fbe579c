// Scheduler, worker side: registration, leases, progress, checkpoints,
// completion, failure, and the reaper of expired leases and timeouts.
#include "absl/strings/str_cat.h"
#include "server/scheduler/scheduler.h"
#include "server/scheduler/status_macros.h"
#include "server/store/schema.h"

namespace qwha::scheduler {

using store::AsDouble;
using store::AsInt;
using store::AsString;
using store::NowSeconds;

absl::StatusOr<v1::RegisterWorkerResponse> Scheduler::RegisterWorker(
    const v1::RegisterWorkerRequest& request) {
  if (request.name().empty() || request.name().size() > 200) {
    return absl::InvalidArgumentError("name: required, at most 200 bytes");
  }
  v1::RegisterWorkerResponse response;
  response.set_worker_id(registry::NewId("w"));
  response.set_lease_seconds(static_cast<int64_t>(options_.lease_seconds));
  double now = NowSeconds();
  RETURN_IF_ERROR(db_->Exec(
      "INSERT INTO workers(id, name, capabilities, free_memory, registered_at, last_heartbeat) "
      "VALUES(?, ?, ?, ?, ?, ?)",
      {response.worker_id(), request.name(), request.capabilities().SerializeAsString(),
       request.capabilities().free_memory_bytes(), now, now}));
  return response;
}

absl::StatusOr<v1::AcquireJobResponse> Scheduler::Acquire(const v1::AcquireJobRequest& request) {
  ASSIGN_OR_RETURN(auto worker, db_->Query("SELECT capabilities FROM workers WHERE id = ?",
                                           {request.worker_id()}));
  if (worker.empty()) {
    return absl::NotFoundError(
        absl::StrCat("worker_id: ", request.worker_id(), " is not registered"));
  }
  v1::WorkerCapabilities caps;
  caps.ParseFromString(AsString(worker[0][0]));
  WorkerView view{caps.gpu_count(), request.free_memory_bytes()};
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(std::clamp<int64_t>(request.wait_ms(), 0, 30000));
  while (true) {
    uint64_t seen = version();
    ASSIGN_OR_RETURN(auto tx, db_->Begin());
    RETURN_IF_ERROR(tx->Exec("UPDATE workers SET last_heartbeat = ?, free_memory = ? WHERE id = ?",
                             {NowSeconds(), request.free_memory_bytes(), request.worker_id()}));
    ASSIGN_OR_RETURN(auto rows,
                     tx->Query("SELECT id, priority, seq, min_memory, require_gpu FROM jobs "
                               "WHERE state = ? ORDER BY priority DESC, seq LIMIT 256",
                               {int64_t{v1::QUEUED}}));
    std::vector<QueuedJob> queued;
    for (const auto& r : rows) {
      queued.push_back({AsString(r[0]), static_cast<int32_t>(AsInt(r[1])), AsInt(r[2]), AsInt(r[3]),
                        AsInt(r[4]) != 0});
    }
    int chosen = placement_->Choose(queued, view);
    if (chosen >= 0) {
      ASSIGN_OR_RETURN(JobRow row, LoadJob(*tx, queued[chosen].id));
      double now = NowSeconds();
      double waited = now - row.queued_at;
      row.job.set_attempts(row.job.attempts() + 1);
      row.job.set_worker_id(request.worker_id());
      row.lease_id = registry::NewId("l");
      row.lease_expires = now + options_.lease_seconds;
      if (!row.job.has_started_at()) *row.job.mutable_started_at() = ToTimestamp(now);
      RETURN_IF_ERROR(Transition(*tx, row, v1::ASSIGNED,
                                 absl::StrCat("worker ", request.worker_id(), ", attempt ",
                                              row.job.attempts(), "/", row.max_attempts)));
      v1::AcquireJobResponse response;
      *response.mutable_job() = row.job;
      response.set_lease_id(row.lease_id);
      if (!row.job.resume_checkpoint().empty()) {
        ASSIGN_OR_RETURN(auto files,
                         tx->Query("SELECT name, sha256, size FROM job_checkpoints WHERE "
                                   "job_id = ? AND checkpoint = ? ORDER BY name",
                                   {row.job.id(), row.job.resume_checkpoint()}));
        for (const auto& f : files) {
          v1::FileInfo* info = response.add_checkpoint_files();
          info->set_name(AsString(f[0]));
          info->set_sha256(AsString(f[1]));
          info->set_size(AsInt(f[2]));
        }
      }
      RETURN_IF_ERROR(tx->Commit());
      tx.reset();  // the registry reads below take the store's lock themselves
      if (observer_.on_transition) observer_.on_transition(v1::QUEUED, v1::ASSIGNED);
      if (observer_.on_assigned) observer_.on_assigned(waited);
      Notify();
      // Models and datasets are immutable while jobs use them (deletion is
      // refused), so reading them after the commit is consistent.
      const v1::JobSpec& spec = response.job().spec();
      ASSIGN_OR_RETURN(*response.mutable_base_model(), registry_->GetModel(spec.base_model_id()));
      ASSIGN_OR_RETURN(*response.mutable_train_dataset(),
                       registry_->GetDataset(spec.train_dataset_id()));
      if (!spec.eval_dataset_id().empty()) {
        ASSIGN_OR_RETURN(*response.mutable_eval_dataset(),
                         registry_->GetDataset(spec.eval_dataset_id()));
      }
      return response;
    }
    RETURN_IF_ERROR(tx->Commit());
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return v1::AcquireJobResponse();
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
    WaitForChange(seen, std::min(left, 1000));
  }
}

absl::StatusOr<v1::HeartbeatResponse> Scheduler::Heartbeat(const v1::HeartbeatRequest& request) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  RETURN_IF_ERROR(tx->Exec(
      "UPDATE workers SET last_heartbeat = ?, free_memory = ?, gpu_utilization = ? "
      "WHERE id = ?",
      {NowSeconds(), request.free_memory_bytes(), request.gpu_utilization(), request.worker_id()}));
  if (tx->changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("worker_id: ", request.worker_id(), " is not registered"));
  }
  v1::HeartbeatResponse response;
  if (!request.job_id().empty()) {
    auto row = LoadLeased(*tx, request.job_id(), request.lease_id());
    if (!row.ok()) {
      response.set_lease_lost(true);
    } else {
      row->lease_expires = NowSeconds() + options_.lease_seconds;
      RETURN_IF_ERROR(SaveJobRow(*tx, *row));
      response.set_cancel(row->job.cancel_requested());
    }
  }
  RETURN_IF_ERROR(tx->Commit());
  return response;
}

absl::StatusOr<v1::ReportProgressResponse> Scheduler::ReportProgress(
    const v1::ReportProgressRequest& request) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  ASSIGN_OR_RETURN(JobRow row, LoadLeased(*tx, request.job_id(), request.lease_id()));
  v1::Phase old_phase = row.job.progress().phase();
  v1::JobState from = row.job.state();
  *row.job.mutable_progress() = request.progress();
  row.lease_expires = NowSeconds() + options_.lease_seconds;
  if (from == v1::ASSIGNED) {
    RETURN_IF_ERROR(Transition(*tx, row, v1::RUNNING, ""));
  }
  RETURN_IF_ERROR(AppendEvent(*tx, row, v1::JobEvent::PROGRESS, ""));
  if (!request.log().empty())
    RETURN_IF_ERROR(AppendEvent(*tx, row, v1::JobEvent::LOG, request.log()));
  RETURN_IF_ERROR(tx->Commit());
  if (from != row.job.state() && observer_.on_transition)
    observer_.on_transition(from, row.job.state());
  v1::Phase phase = request.progress().phase();
  if (phase != old_phase || from == v1::ASSIGNED) {
    std::lock_guard<std::mutex> lock(phase_mu_);
    double now = NowSeconds();
    auto it = phase_since_.find(row.job.id());
    if (it != phase_since_.end() && observer_.on_phase_done && it->second.first != phase) {
      observer_.on_phase_done(it->second.first, now - it->second.second);
    }
    if (it == phase_since_.end() || it->second.first != phase)
      phase_since_[row.job.id()] = {phase, now};
  }
  Notify();
  v1::ReportProgressResponse response;
  response.set_cancel(row.job.cancel_requested());
  return response;
}

absl::Status Scheduler::CheckLease(const std::string& job_id, const std::string& lease_id) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  return LoadLeased(*tx, job_id, lease_id).status();
}

absl::Status Scheduler::AddCheckpointFile(const std::string& job_id, const std::string& lease_id,
                                          const std::string& checkpoint, const v1::FileInfo& file) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  RETURN_IF_ERROR(LoadLeased(*tx, job_id, lease_id).status());
  RETURN_IF_ERROR(
      tx->Exec("INSERT OR REPLACE INTO job_checkpoints(job_id, checkpoint, name, sha256, size) "
               "VALUES(?, ?, ?, ?, ?)",
               {job_id, checkpoint, file.name(), file.sha256(), file.size()}));
  return tx->Commit();
}

absl::Status Scheduler::CommitCheckpoint(const v1::CommitCheckpointRequest& request) {
  if (request.checkpoint().empty() || request.checkpoint() == kResultFiles) {
    return absl::InvalidArgumentError(
        "checkpoint: required (and not the reserved name \"result\")");
  }
  std::vector<std::string> stale;
  {
    ASSIGN_OR_RETURN(auto tx, db_->Begin());
    ASSIGN_OR_RETURN(JobRow row, LoadLeased(*tx, request.job_id(), request.lease_id()));
    ASSIGN_OR_RETURN(auto have,
                     tx->Query("SELECT name, sha256, size FROM job_checkpoints WHERE job_id = ? "
                               "AND checkpoint = ?",
                               {request.job_id(), request.checkpoint()}));
    std::map<std::string, std::pair<std::string, int64_t>> uploaded;
    for (const auto& r : have) uploaded[AsString(r[0])] = {AsString(r[1]), AsInt(r[2])};
    if (request.files().empty())
      return absl::InvalidArgumentError("files: a checkpoint needs files");
    for (const v1::FileInfo& f : request.files()) {
      auto it = uploaded.find(f.name());
      if (it == uploaded.end() || it->second.first != f.sha256() || it->second.second != f.size()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "files: ", f.name(), " of checkpoint ", request.checkpoint(), " was not uploaded"));
      }
    }
    ASSIGN_OR_RETURN(
        auto old, tx->Query("SELECT sha256 FROM job_checkpoints WHERE job_id = ? AND "
                            "checkpoint != ? AND checkpoint != ?",
                            {request.job_id(), request.checkpoint(), std::string(kResultFiles)}));
    for (const auto& r : old) stale.push_back(AsString(r[0]));
    RETURN_IF_ERROR(tx->Exec(
        "DELETE FROM job_checkpoints WHERE job_id = ? AND checkpoint != ? AND checkpoint != ?",
        {request.job_id(), request.checkpoint(), std::string(kResultFiles)}));
    row.job.set_resume_checkpoint(request.checkpoint());
    RETURN_IF_ERROR(AppendEvent(*tx, row, v1::JobEvent::LOG,
                                absl::StrCat("checkpoint ", request.checkpoint(), " saved")));
    RETURN_IF_ERROR(tx->Commit());
  }
  return registry_->RemoveUnreferencedBlobs(stale);
}

absl::StatusOr<bool> Scheduler::MayRead(const std::string& job_id, const std::string& lease_id,
                                        const std::string& sha256) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  ASSIGN_OR_RETURN(JobRow row, LoadLeased(*tx, job_id, lease_id));
  const v1::JobSpec& spec = row.job.spec();
  ASSIGN_OR_RETURN(
      auto rows, tx->Query("SELECT 1 FROM model_files WHERE model_id = ? AND sha256 = ? UNION ALL "
                           "SELECT 1 FROM datasets WHERE id IN (?, ?) AND sha256 = ? UNION ALL "
                           "SELECT 1 FROM job_checkpoints WHERE job_id = ? AND sha256 = ? LIMIT 1",
                           {spec.base_model_id(), sha256, spec.train_dataset_id(),
                            spec.eval_dataset_id(), sha256, job_id, sha256}));
  return !rows.empty();
}

absl::StatusOr<v1::CompleteJobResponse> Scheduler::Complete(const v1::CompleteJobRequest& request) {
  if (request.files().empty()) return absl::InvalidArgumentError("files: no result files");
  for (const v1::FileInfo& f : request.files()) {
    if (!registry_->blobs()->Contains(f.sha256())) {
      return absl::FailedPreconditionError(
          absl::StrCat("files: ", f.name(), " (", f.sha256(), ") was not uploaded"));
    }
  }
  ASSIGN_OR_RETURN(v1::Job current, Get(request.job_id()));
  ASSIGN_OR_RETURN(v1::BaseModel model, registry_->GetModel(current.spec().base_model_id()));
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  ASSIGN_OR_RETURN(JobRow row, LoadLeased(*tx, request.job_id(), request.lease_id()));
  v1::Adapter adapter;
  adapter.set_job_id(row.job.id());
  adapter.set_name(row.job.spec().name());
  adapter.set_base_model_id(model.id());
  adapter.set_base_model_digest(model.digest());
  *adapter.mutable_quantization() = row.job.spec().quantization();
  *adapter.mutable_adapter() = row.job.spec().adapter();
  if (adapter.adapter().type().empty()) adapter.mutable_adapter()->set_type("qwha");
  adapter.set_metrics_json(request.metrics_json());
  *adapter.mutable_files() = request.files();
  *adapter.mutable_labels() = row.job.spec().labels();
  ASSIGN_OR_RETURN(v1::Adapter stored, registry_->InsertAdapter(*tx, adapter));
  v1::JobState from = row.job.state();
  row.job.set_adapter_id(stored.id());
  row.job.mutable_progress()->set_phase(v1::UPLOADING);
  RETURN_IF_ERROR(Transition(*tx, row, v1::SUCCEEDED, absl::StrCat("adapter ", stored.id())));
  RETURN_IF_ERROR(tx->Exec("DELETE FROM job_checkpoints WHERE job_id = ?", {row.job.id()}));
  if (row.job.spec().load_on_inference_servers()) {
    // Committed with the success, so a crash right after still deploys
    // (deployer.h picks pending rows up at any later start).
    const double now = NowSeconds();
    RETURN_IF_ERROR(
        tx->Exec("INSERT INTO deployments(job_id, adapter_id, base_model_digest, state, "
                 "next_attempt_at, created_at) VALUES(?, ?, ?, 'pending', ?, ?)",
                 {row.job.id(), stored.id(), model.digest(), now, now}));
    RETURN_IF_ERROR(AppendEvent(
        *tx, row, v1::JobEvent::LOG,
        absl::StrCat("deployment: queued; adapter ", stored.id(),
                     " goes to the live inference servers of base model ", model.digest())));
  }
  RETURN_IF_ERROR(tx->Commit());
  if (observer_.on_transition) observer_.on_transition(from, v1::SUCCEEDED);
  {
    std::lock_guard<std::mutex> lock(phase_mu_);
    phase_since_.erase(row.job.id());
  }
  Notify();
  v1::CompleteJobResponse response;
  response.set_adapter_id(stored.id());
  return response;
}

absl::Status Scheduler::Requeue(store::Transaction& tx, JobRow& row, const std::string& why) {
  if (row.job.cancel_requested()) {
    row.job.set_error(absl::StrCat("cancelled (", why, ")"));
    return Transition(tx, row, v1::CANCELLED, why);
  }
  if (row.job.attempts() >= row.max_attempts) {
    row.job.set_error(absl::StrCat(why, "; gave up after ", row.job.attempts(), " attempts"));
    return Transition(tx, row, v1::FAILED, row.job.error());
  }
  return Transition(
      tx, row, v1::QUEUED,
      absl::StrCat(why, "; requeued (attempt ", row.job.attempts(), "/", row.max_attempts,
                   row.job.resume_checkpoint().empty()
                       ? ")"
                       : absl::StrCat(", resumes from ", row.job.resume_checkpoint(), ")")));
}

absl::Status Scheduler::Fail(const v1::FailJobRequest& request) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  ASSIGN_OR_RETURN(JobRow row, LoadLeased(*tx, request.job_id(), request.lease_id()));
  v1::JobState from = row.job.state();
  if (request.cancelled() || row.job.cancel_requested()) {
    row.job.set_error("cancelled by the user");
    RETURN_IF_ERROR(Transition(*tx, row, v1::CANCELLED, "worker stopped the job"));
  } else if (request.retryable()) {
    RETURN_IF_ERROR(Requeue(*tx, row, absl::StrCat("worker error: ", request.error())));
  } else {
    row.job.set_error(request.error());
    RETURN_IF_ERROR(Transition(*tx, row, v1::FAILED, request.error()));
  }
  RETURN_IF_ERROR(tx->Commit());
  if (observer_.on_transition) observer_.on_transition(from, row.job.state());
  Notify();
  return absl::OkStatus();
}

absl::StatusOr<int> Scheduler::Reap() {
  double now = NowSeconds();
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  ASSIGN_OR_RETURN(
      auto rows, tx->Query(absl::StrCat("SELECT ", kJobColumns,
                                        " FROM jobs WHERE state IN (?, ?) AND "
                                        "(lease_expires < ? OR started_at + timeout_seconds < ?)"),
                           {int64_t{v1::ASSIGNED}, int64_t{v1::RUNNING}, now, now}));
  std::vector<std::pair<v1::JobState, v1::JobState>> changes;
  for (const auto& r : rows) {
    ASSIGN_OR_RETURN(JobRow row, JobRowFrom(r));
    v1::JobState from = row.job.state();
    double started = FromTimestamp(row.job.started_at());
    if (started + row.timeout_seconds < now) {
      row.job.set_error(absl::StrCat("timed out after ", row.timeout_seconds, " s"));
      RETURN_IF_ERROR(Transition(*tx, row, v1::FAILED, row.job.error()));
    } else {
      RETURN_IF_ERROR(
          Requeue(*tx, row, absl::StrCat("lease of worker ", row.job.worker_id(), " expired")));
    }
    changes.emplace_back(from, row.job.state());
  }
  RETURN_IF_ERROR(tx->Commit());
  for (auto [from, to] : changes) {
    if (observer_.on_transition) observer_.on_transition(from, to);
  }
  if (!changes.empty()) Notify();
  return static_cast<int>(changes.size());
}

}  // namespace qwha::scheduler
