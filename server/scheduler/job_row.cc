#include "server/scheduler/job_row.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/store/schema.h"

namespace qwha::scheduler {

using store::AsDouble;
using store::AsInt;
using store::AsString;

const char* const kJobColumns =
    "id, idempotency_key, spec, state, attempts, worker_id, lease_id, lease_expires, "
    "cancel_requested, progress, error, adapter_id, checkpoint, created_at, started_at, "
    "finished_at, updated_at, event_seq, queued_at, max_attempts, timeout_seconds";

google::protobuf::Timestamp ToTimestamp(double seconds) {
  google::protobuf::Timestamp t;
  double whole = std::floor(seconds);
  t.set_seconds(static_cast<int64_t>(whole));
  t.set_nanos(static_cast<int32_t>(std::lround((seconds - whole) * 1e9)) % 1000000000);
  return t;
}

double FromTimestamp(const google::protobuf::Timestamp& t) {
  return t.seconds() + t.nanos() * 1e-9;
}

absl::StatusOr<JobRow> JobRowFrom(const store::Row& r) {
  JobRow row;
  v1::Job& job = row.job;
  job.set_id(AsString(r[0]));
  job.set_idempotency_key(AsString(r[1]));
  if (!job.mutable_spec()->ParseFromString(AsString(r[2]))) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": stored spec does not parse"));
  }
  job.set_state(static_cast<v1::JobState>(AsInt(r[3])));
  job.set_attempts(static_cast<int32_t>(AsInt(r[4])));
  job.set_worker_id(AsString(r[5]));
  row.lease_id = AsString(r[6]);
  row.lease_expires = AsDouble(r[7]);
  job.set_cancel_requested(AsInt(r[8]) != 0);
  std::string progress = AsString(r[9]);
  if (!progress.empty()) job.mutable_progress()->ParseFromString(progress);
  job.set_error(AsString(r[10]));
  job.set_adapter_id(AsString(r[11]));
  job.set_resume_checkpoint(AsString(r[12]));
  *job.mutable_created_at() = ToTimestamp(AsDouble(r[13]));
  if (!std::holds_alternative<std::monostate>(r[14]))
    *job.mutable_started_at() = ToTimestamp(AsDouble(r[14]));
  if (!std::holds_alternative<std::monostate>(r[15]))
    *job.mutable_finished_at() = ToTimestamp(AsDouble(r[15]));
  *job.mutable_updated_at() = ToTimestamp(AsDouble(r[16]));
  row.event_seq = AsInt(r[17]);
  row.queued_at = AsDouble(r[18]);
  row.max_attempts = static_cast<int32_t>(AsInt(r[19]));
  row.timeout_seconds = AsInt(r[20]);
  return row;
}

absl::Status SaveJobRow(store::Transaction& tx, const JobRow& row) {
  const v1::Job& job = row.job;
  auto optional_time = [](const google::protobuf::Timestamp& t, bool has) -> store::Value {
    if (!has) return std::monostate{};
    return FromTimestamp(t);
  };
  return tx.Exec(
      "UPDATE jobs SET state = ?, attempts = ?, worker_id = ?, lease_id = ?, lease_expires = ?, "
      "cancel_requested = ?, progress = ?, error = ?, adapter_id = ?, checkpoint = ?, "
      "started_at = ?, finished_at = ?, updated_at = ?, event_seq = ?, queued_at = ? WHERE id = ?",
      {int64_t{job.state()}, int64_t{job.attempts()}, job.worker_id(), row.lease_id,
       row.lease_expires, int64_t{job.cancel_requested() ? 1 : 0},
       job.progress().SerializeAsString(), job.error(), job.adapter_id(), job.resume_checkpoint(),
       optional_time(job.started_at(), job.has_started_at()),
       optional_time(job.finished_at(), job.has_finished_at()), store::NowSeconds(), row.event_seq,
       row.queued_at, job.id()});
}

}  // namespace qwha::scheduler
