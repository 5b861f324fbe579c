#include "server/store/schema.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace qwha::store {
namespace {

constexpr const char* kTables[] = {
    R"(CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS jobs(
         id TEXT PRIMARY KEY,
         seq INTEGER NOT NULL UNIQUE,
         idempotency_key TEXT UNIQUE,
         spec BLOB NOT NULL,
         state INTEGER NOT NULL,
         priority INTEGER NOT NULL,
         base_model_id TEXT NOT NULL,
         min_memory INTEGER NOT NULL,
         require_gpu INTEGER NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         max_attempts INTEGER NOT NULL,
         timeout_seconds INTEGER NOT NULL,
         worker_id TEXT,
         lease_id TEXT,
         lease_expires REAL,
         cancel_requested INTEGER NOT NULL DEFAULT 0,
         progress BLOB,
         error TEXT,
         adapter_id TEXT,
         checkpoint TEXT,
         created_at REAL NOT NULL,
         queued_at REAL NOT NULL,
         started_at REAL,
         finished_at REAL,
         updated_at REAL NOT NULL,
         event_seq INTEGER NOT NULL DEFAULT 0))",
    R"(CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, priority DESC, seq))",
    R"(CREATE TABLE IF NOT EXISTS job_labels(
         job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
         key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(job_id, key)))",
    R"(CREATE TABLE IF NOT EXISTS job_events(
         job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
         seq INTEGER NOT NULL,
         type INTEGER NOT NULL,
         event BLOB NOT NULL,
         PRIMARY KEY(job_id, seq)))",
    R"(CREATE TABLE IF NOT EXISTS job_checkpoints(
         job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
         checkpoint TEXT NOT NULL,
         name TEXT NOT NULL,
         sha256 TEXT NOT NULL,
         size INTEGER NOT NULL,
         PRIMARY KEY(job_id, checkpoint, name)))",
    R"(CREATE TABLE IF NOT EXISTS workers(
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         capabilities BLOB NOT NULL,
         free_memory INTEGER NOT NULL,
         gpu_utilization REAL NOT NULL DEFAULT 0,
         registered_at REAL NOT NULL,
         last_heartbeat REAL NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS blobs(
         sha256 TEXT PRIMARY KEY,
         size INTEGER NOT NULL,
         created_at REAL NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS models(
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         digest TEXT NOT NULL,
         source_path TEXT,
         created_at REAL NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS model_files(
         model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
         name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
         PRIMARY KEY(model_id, name)))",
    R"(CREATE TABLE IF NOT EXISTS datasets(
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         file_name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
         records INTEGER NOT NULL,
         format TEXT NOT NULL,
         created_at REAL NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS adapters(
         id TEXT PRIMARY KEY,
         job_id TEXT NOT NULL,
         record BLOB NOT NULL,
         base_model_id TEXT NOT NULL,
         adapter_type TEXT NOT NULL,
         created_at REAL NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS adapter_labels(
         adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
         key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(adapter_id, key)))",
    // The registry: an adapter's files (also inside adapters.record) as rows,
    // so that blob garbage collection finds references by sha256 in an index.
    R"(CREATE TABLE IF NOT EXISTS adapter_files(
         adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
         name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
         PRIMARY KEY(adapter_id, name)))",
    R"(CREATE INDEX IF NOT EXISTS adapters_newest ON adapters(created_at DESC, id DESC))",
    R"(CREATE INDEX IF NOT EXISTS adapters_job ON adapters(job_id))",
    R"(CREATE INDEX IF NOT EXISTS adapter_files_sha256 ON adapter_files(sha256))",
    R"(CREATE INDEX IF NOT EXISTS model_files_sha256 ON model_files(sha256))",
    R"(CREATE INDEX IF NOT EXISTS datasets_sha256 ON datasets(sha256))",
    R"(CREATE INDEX IF NOT EXISTS job_checkpoints_sha256 ON job_checkpoints(sha256))",
    // Version 2: inference servers and the deployments that push adapters to them.
    R"(CREATE TABLE IF NOT EXISTS inference_servers(
         address TEXT PRIMARY KEY,
         base_model_digest TEXT NOT NULL,
         quantization BLOB NOT NULL,
         name TEXT NOT NULL,
         registered_at REAL NOT NULL,
         last_seen REAL NOT NULL))",
    R"(CREATE INDEX IF NOT EXISTS inference_servers_base
         ON inference_servers(base_model_digest, last_seen))",
    R"(CREATE TABLE IF NOT EXISTS deployments(
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         job_id TEXT NOT NULL UNIQUE REFERENCES jobs(id) ON DELETE CASCADE,
         adapter_id TEXT NOT NULL,
         base_model_digest TEXT NOT NULL,
         state TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt_at REAL NOT NULL,
         created_at REAL NOT NULL,
         finished_at REAL))",
    R"(CREATE INDEX IF NOT EXISTS deployments_due ON deployments(state, next_attempt_at))",
    R"(CREATE TABLE IF NOT EXISTS deployment_targets(
         deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
         address TEXT NOT NULL,
         state TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         error TEXT,
         updated_at REAL NOT NULL,
         PRIMARY KEY(deployment_id, address)))",
};

// Schema versions this scheduler opens and upgrades in place. A version only
// adds tables (created above with IF NOT EXISTS), so upgrading is rewriting
// the recorded version; a version that changes existing tables would add its
// statements here.
constexpr int kOldestUpgradable = 1;

}  // namespace

absl::Status EnsureSchema(Db& db) {
  auto tx = db.Begin();
  if (!tx.ok()) return tx.status();
  for (const char* sql : kTables) {
    absl::Status s = (*tx)->Exec(sql);
    if (!s.ok()) return s;
  }
  auto version = (*tx)->Query("SELECT value FROM meta WHERE key = 'schema_version'");
  if (!version.ok()) return version.status();
  if (version->empty()) {
    absl::Status s = (*tx)->Exec("INSERT INTO meta(key, value) VALUES('schema_version', ?)",
                                 {std::to_string(kSchemaVersion)});
    if (!s.ok()) return s;
  } else if (AsString((*version)[0][0]) != std::to_string(kSchemaVersion)) {
    int found = 0;
    if (!absl::SimpleAtoi(AsString((*version)[0][0]), &found) || found < kOldestUpgradable ||
        found > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat("store ", db.path(), ": schema version ",
                                                        AsString((*version)[0][0]),
                                                        ", this scheduler needs ", kSchemaVersion));
    }
    absl::Status s = (*tx)->Exec("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                 {std::to_string(kSchemaVersion)});
    if (!s.ok()) return s;
  }
  return (*tx)->Commit();
}

double NowSeconds() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() / 1000.0;
}

}  // namespace qwha::store
