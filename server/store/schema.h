// The scheduler's durable state: one SQLite file (WAL, fsync on commit).
//
// Tables (schema version kSchemaVersion; docs/jobs.md describes them):
//   meta(key, value)                    schema_version
//   jobs                                one row per job: spec (JobSpec proto bytes), state,
//                                       lease, progress (Progress proto bytes), result
//   job_events(job_id, seq, ...)        state changes, logs, sampled progress (JobEvent bytes)
//   job_checkpoints(job_id, name, ...)  uploaded checkpoint files; committed set = jobs.checkpoint
//   workers                             registered workers, capabilities, last heartbeat
//   blobs(sha256, size)                 content-addressed files in the blob store
//   models / model_files                registered base models
//   datasets                            uploaded JSONL datasets
//   adapters / adapter_files            adapters produced by jobs
//   inference_servers                   qwha-serve processes registered for pushes (v2)
//   deployments / deployment_targets    adapters being pushed to inference servers, per server (v2)
#pragma once

#include "absl/status/status.h"
#include "server/store/sqlite_db.h"

namespace qwha::store {

inline constexpr int kSchemaVersion = 2;

// Creates the tables of an empty database; upgrades one of an older version
// (1) in place to kSchemaVersion; refuses a newer or unknown version
// (FailedPrecondition naming both versions). Idempotent; runs in one
// transaction, so a crash leaves either the old or the new schema.
absl::Status EnsureSchema(Db& db);

// Seconds since the Unix epoch as a double (millisecond resolution).
double NowSeconds();

}  // namespace qwha::store
