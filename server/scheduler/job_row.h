// The jobs table row <-> v1::Job, plus the columns the API does not show
// (lease, queue time, event counter). Internal to the scheduler.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/timestamp.pb.h"
#include "qwha/v1/job.pb.h"
#include "server/store/sqlite_db.h"

namespace qwha::scheduler {

struct JobRow {
  v1::Job job;
  std::string lease_id;
  double lease_expires = 0;
  double queued_at = 0;
  int64_t event_seq = 0;
  int32_t max_attempts = 0;
  int64_t timeout_seconds = 0;
};

// SELECT list matching JobRowFrom.
extern const char* const kJobColumns;

absl::StatusOr<JobRow> JobRowFrom(const store::Row& row);

// Writes every mutable column of `row` (state, lease, progress, result, times).
absl::Status SaveJobRow(store::Transaction& tx, const JobRow& row);

google::protobuf::Timestamp ToTimestamp(double seconds);
double FromTimestamp(const google::protobuf::Timestamp& t);

}  // namespace qwha::scheduler
