// Scheduler, user side: submit, get, list, cancel, events, and the shared
// transition helpers. The worker side is in scheduler_worker.cc.
#include "server/scheduler/scheduler.h"

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/scheduler/status_macros.h"
#include "server/scheduler/validate.h"
#include "server/store/schema.h"

namespace qwha::scheduler {

using store::AsInt;
using store::AsString;
using store::NowSeconds;

const char* JobStateName(v1::JobState state) { return v1::JobState_Name(state).c_str(); }

bool IsFinished(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

Scheduler::Scheduler(store::Db* db, registry::RegistryStore* registry, SchedulerOptions options,
                     std::unique_ptr<PlacementPolicy> placement, SchedulerObserver observer)
    : db_(db),
      registry_(registry),
      options_(options),
      placement_(std::move(placement)),
      observer_(std::move(observer)) {}

void Scheduler::Notify() {
  {
    std::lock_guard<std::mutex> lock(change_mu_);
    ++version_;
  }
  change_cv_.notify_all();
}

uint64_t Scheduler::version() {
  std::lock_guard<std::mutex> lock(change_mu_);
  return version_;
}

uint64_t Scheduler::WaitForChange(uint64_t since_version, int timeout_ms) {
  std::unique_lock<std::mutex> lock(change_mu_);
  change_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return version_ != since_version; });
  return version_;
}

absl::StatusOr<JobRow> Scheduler::LoadJob(store::Transaction& tx, const std::string& id) {
  ASSIGN_OR_RETURN(auto rows,
                   tx.Query(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?"), {id}));
  if (rows.empty()) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return JobRowFrom(rows[0]);
}

absl::StatusOr<JobRow> Scheduler::LoadLeased(store::Transaction& tx, const std::string& job_id,
                                             const std::string& lease_id) {
  ASSIGN_OR_RETURN(JobRow row, LoadJob(tx, job_id));
  if ((row.job.state() != v1::ASSIGNED && row.job.state() != v1::RUNNING) || row.lease_id.empty() ||
      row.lease_id != lease_id) {
    return absl::FailedPreconditionError(absl::StrCat("lease_id: ", lease_id,
                                                      " is not the current lease of job ", job_id,
                                                      " (", JobStateName(row.job.state()), ")"));
  }
  return row;
}

absl::Status Scheduler::AppendEvent(store::Transaction& tx, JobRow& row, v1::JobEvent::Type type,
                                    const std::string& message) {
  v1::JobEvent event;
  event.set_sequence(++row.event_seq);
  event.set_type(type);
  *event.mutable_time() = ToTimestamp(NowSeconds());
  *event.mutable_job() = row.job;
  event.set_message(message);
  RETURN_IF_ERROR(
      tx.Exec("INSERT INTO job_events(job_id, seq, type, event) VALUES(?, ?, ?, ?)",
              {row.job.id(), event.sequence(), int64_t{type}, event.SerializeAsString()}));
  if (type == v1::JobEvent::PROGRESS && event.sequence() % 50 == 0) {
    // Keep the newest max_progress_events PROGRESS events; STATE and LOG stay.
    RETURN_IF_ERROR(tx.Exec(
        "DELETE FROM job_events WHERE job_id = ? AND type = ? AND seq NOT IN (SELECT seq FROM "
        "job_events WHERE job_id = ? AND type = ? ORDER BY seq DESC LIMIT ?)",
        {row.job.id(), int64_t{v1::JobEvent::PROGRESS}, row.job.id(),
         int64_t{v1::JobEvent::PROGRESS}, options_.max_progress_events}));
  }
  return SaveJobRow(tx, row);
}

absl::Status Scheduler::AppendJobLog(store::Transaction& tx, const std::string& job_id,
                                     const std::string& message) {
  ASSIGN_OR_RETURN(JobRow row, LoadJob(tx, job_id));
  return AppendEvent(tx, row, v1::JobEvent::LOG, message);
}

absl::Status Scheduler::Transition(store::Transaction& tx, JobRow& row, v1::JobState to,
                                   const std::string& message) {
  v1::JobState from = row.job.state();
  row.job.set_state(to);
  double now = NowSeconds();
  if (IsFinished(to)) {
    *row.job.mutable_finished_at() = ToTimestamp(now);
    row.lease_id.clear();
    row.lease_expires = 0;
  }
  if (to == v1::QUEUED) {
    row.queued_at = now;
    row.lease_id.clear();
    row.lease_expires = 0;
  }
  std::string text = message.empty()
                         ? absl::StrCat(JobStateName(from), " → ", JobStateName(to))
                         : absl::StrCat(JobStateName(from), " → ", JobStateName(to), ": ", message);
  return AppendEvent(tx, row, v1::JobEvent::STATE, text);
}

absl::StatusOr<v1::Job> Scheduler::Submit(const v1::JobSpec& spec,
                                          const std::string& idempotency_key) {
  if (idempotency_key.size() > 128) {
    return absl::InvalidArgumentError("idempotency_key: longer than 128 bytes");
  }
  RETURN_IF_ERROR(ValidateJobSpec(spec, *registry_));
  std::string spec_bytes;
  spec.SerializeToString(&spec_bytes);  // deterministic enough for equal messages built alike
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  if (!idempotency_key.empty()) {
    ASSIGN_OR_RETURN(auto rows, tx->Query(absl::StrCat("SELECT ", kJobColumns,
                                                       " FROM jobs WHERE idempotency_key = ?"),
                                          {idempotency_key}));
    if (!rows.empty()) {
      ASSIGN_OR_RETURN(JobRow existing, JobRowFrom(rows[0]));
      if (existing.job.spec().SerializeAsString() != spec_bytes) {
        return absl::AlreadyExistsError(absl::StrCat("idempotency_key: '", idempotency_key,
                                                     "' was used for job ", existing.job.id(),
                                                     " with a different spec"));
      }
      return existing.job;
    }
  }
  ASSIGN_OR_RETURN(auto seq_rows, tx->Query("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs"));
  int64_t seq = AsInt(seq_rows[0][0]);
  double now = NowSeconds();
  JobRow row;
  row.job.set_id(registry::NewId("j"));
  *row.job.mutable_spec() = spec;
  row.job.set_state(v1::QUEUED);
  row.job.set_idempotency_key(idempotency_key);
  *row.job.mutable_created_at() = ToTimestamp(now);
  *row.job.mutable_updated_at() = ToTimestamp(now);
  row.queued_at = now;
  row.max_attempts = spec.resources().max_attempts() > 0 ? spec.resources().max_attempts()
                                                         : options_.default_max_attempts;
  row.timeout_seconds = spec.resources().timeout_seconds() > 0 ? spec.resources().timeout_seconds()
                                                               : options_.default_timeout_seconds;
  store::Value key = idempotency_key.empty() ? store::Value{} : store::Value{idempotency_key};
  RETURN_IF_ERROR(
      tx->Exec("INSERT INTO jobs(id, seq, idempotency_key, spec, state, priority, base_model_id, "
               "min_memory, "
               "require_gpu, max_attempts, timeout_seconds, created_at, queued_at, updated_at) "
               "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               {row.job.id(), seq, key, spec_bytes, int64_t{v1::QUEUED}, int64_t{spec.priority()},
                spec.base_model_id(), spec.resources().min_memory_bytes(),
                int64_t{spec.resources().require_gpu() ? 1 : 0}, int64_t{row.max_attempts},
                row.timeout_seconds, now, now, now}));
  for (const auto& [k, v] : spec.labels()) {
    RETURN_IF_ERROR(tx->Exec("INSERT INTO job_labels(job_id, key, value) VALUES(?, ?, ?)",
                             {row.job.id(), k, v}));
  }
  RETURN_IF_ERROR(AppendEvent(*tx, row, v1::JobEvent::STATE, "submitted: QUEUED"));
  RETURN_IF_ERROR(tx->Commit());
  if (observer_.on_transition) observer_.on_transition(v1::JOB_STATE_UNSPECIFIED, v1::QUEUED);
  Notify();
  return row.job;
}

absl::StatusOr<v1::Job> Scheduler::Get(const std::string& id) {
  ASSIGN_OR_RETURN(
      auto rows, db_->Query(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?"), {id}));
  if (rows.empty()) return absl::NotFoundError(absl::StrCat("id: job ", id, " not found"));
  ASSIGN_OR_RETURN(JobRow row, JobRowFrom(rows[0]));
  return row.job;
}

absl::StatusOr<std::vector<v1::Job>> Scheduler::List(const JobFilter& filter,
                                                     std::string* next_page_token) {
  int page_size = filter.page_size <= 0 ? 50 : std::min(filter.page_size, 1000);
  std::string sql = absl::StrCat("SELECT ", kJobColumns, ", seq FROM jobs WHERE 1 = 1");
  std::vector<store::Value> params;
  if (!filter.page_token.empty()) {
    int64_t before = 0;
    if (!absl::SimpleAtoi(filter.page_token, &before)) {
      return absl::InvalidArgumentError("page_token: not a token from ListJobs");
    }
    sql += " AND seq < ?";
    params.push_back(before);
  }
  if (!filter.states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < filter.states.size(); ++i) {
      sql += i ? ", ?" : "?";
      params.push_back(int64_t{filter.states[i]});
    }
    sql += ")";
  }
  if (!filter.base_model_id.empty()) {
    sql += " AND base_model_id = ?";
    params.push_back(filter.base_model_id);
  }
  for (const auto& [k, v] : filter.labels) {
    sql +=
        " AND EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.key = ? AND "
        "l.value = ?)";
    params.push_back(k);
    params.push_back(v);
  }
  sql += " ORDER BY seq DESC LIMIT ?";
  params.push_back(int64_t{page_size + 1});
  ASSIGN_OR_RETURN(auto rows, db_->Query(sql, params));
  std::vector<v1::Job> jobs;
  next_page_token->clear();
  for (size_t i = 0; i < rows.size(); ++i) {
    if (static_cast<int>(i) == page_size) {
      *next_page_token = std::to_string(AsInt(rows[i - 1].back()));
      break;
    }
    ASSIGN_OR_RETURN(JobRow row, JobRowFrom(rows[i]));
    jobs.push_back(std::move(row.job));
  }
  return jobs;
}

absl::StatusOr<v1::Job> Scheduler::Cancel(const std::string& id) {
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  auto loaded = LoadJob(*tx, id);
  if (!loaded.ok()) {
    if (loaded.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("id: job ", id, " not found"));
    }
    return loaded.status();
  }
  JobRow row = std::move(*loaded);
  v1::JobState from = row.job.state();
  if (IsFinished(from)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " already ", JobStateName(from)));
  }
  if (from == v1::QUEUED) {
    row.job.set_error("cancelled by the user while queued");
    RETURN_IF_ERROR(Transition(*tx, row, v1::CANCELLED, "cancelled while queued"));
  } else if (!row.job.cancel_requested()) {
    row.job.set_cancel_requested(true);
    RETURN_IF_ERROR(AppendEvent(*tx, row, v1::JobEvent::LOG,
                                absl::StrCat("cancel requested; worker ", row.job.worker_id(),
                                             " stops at its next heartbeat")));
  }
  RETURN_IF_ERROR(tx->Commit());
  if (from != row.job.state() && observer_.on_transition)
    observer_.on_transition(from, row.job.state());
  Notify();
  return row.job;
}

absl::StatusOr<std::vector<v1::JobEvent>> Scheduler::Events(const std::string& id,
                                                            int64_t after_sequence, int limit) {
  ASSIGN_OR_RETURN(auto exists, db_->Query("SELECT 1 FROM jobs WHERE id = ?", {id}));
  if (exists.empty()) return absl::NotFoundError(absl::StrCat("id: job ", id, " not found"));
  if (limit <= 0) limit = 1000;
  ASSIGN_OR_RETURN(auto rows,
                   db_->Query("SELECT event FROM job_events WHERE job_id = ? AND seq > ? "
                              "ORDER BY seq LIMIT ?",
                              {id, after_sequence, int64_t{limit}}));
  std::vector<v1::JobEvent> events(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) events[i].ParseFromString(AsString(rows[i][0]));
  return events;
}

absl::StatusOr<int64_t> Scheduler::LastSequence(const std::string& id) {
  ASSIGN_OR_RETURN(auto rows, db_->Query("SELECT event_seq FROM jobs WHERE id = ?", {id}));
  if (rows.empty()) return absl::NotFoundError(absl::StrCat("id: job ", id, " not found"));
  return AsInt(rows[0][0]);
}

absl::StatusOr<std::vector<std::pair<v1::JobState, int64_t>>> Scheduler::CountByState() {
  ASSIGN_OR_RETURN(auto rows, db_->Query("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  std::vector<std::pair<v1::JobState, int64_t>> counts;
  for (const auto& r : rows)
    counts.emplace_back(static_cast<v1::JobState>(AsInt(r[0])), AsInt(r[1]));
  return counts;
}

absl::StatusOr<int64_t> Scheduler::LiveWorkers(double within_seconds) {
  ASSIGN_OR_RETURN(auto rows, db_->Query("SELECT COUNT(*) FROM workers WHERE last_heartbeat > ?",
                                         {NowSeconds() - within_seconds}));
  return AsInt(rows[0][0]);
}

}  // namespace qwha::scheduler
