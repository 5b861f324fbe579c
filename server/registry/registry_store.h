// Registry metadata in the scheduler's store: base models, datasets and
// adapters, each naming content-addressed blobs of a BlobStore. The blobs are
// written first, the metadata row last (in one transaction), so a crash
// leaves at worst an unreferenced blob, never a row naming a missing blob.
//
// Blob garbage collection: deleting a row removes every blob it named that
// no other row (models, datasets, adapters, job checkpoints) names. A writer
// whose blobs are committed before the row that names them must hold a
// BlobWriteGuard from just before committing the blobs until that row is
// committed; otherwise a concurrent delete of a row naming the same content
// could remove the blob in between. Deletes wait for every guard.
//
// Thread safety: safe for concurrent use (the Db serializes). Lock order:
// a BlobWriteGuard is taken before a store::Transaction, never inside one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "qwha/v1/registry.pb.h"
#include "server/registry/blob_store.h"
#include "server/store/sqlite_db.h"

namespace qwha::registry {

// Every non-empty field must match; labels all must be present with equal
// values. page_size is clamped to [1, 1000]; page_token is the
// next_page_token of the previous page (InvalidArgument naming page_token if
// it is not one).
struct AdapterFilter {
  std::string job_id, base_model_id, adapter_type;
  std::vector<std::pair<std::string, std::string>> labels;
  int page_size = 50;
  std::string page_token;
};

// Bytes named by metadata rows, per kind (a blob named twice counts twice),
// and bytes actually stored in the blob store (each blob once, checkpoints
// and unreferenced blobs included).
struct RegistryUsage {
  int64_t model_bytes = 0, dataset_bytes = 0, adapter_bytes = 0, stored_bytes = 0;
};

using BlobWriteGuard = std::shared_lock<std::shared_mutex>;

class RegistryStore {
 public:
  // Borrows db and blobs; both must outlive the RegistryStore.
  RegistryStore(store::Db* db, BlobStore* blobs) : db_(db), blobs_(blobs) {}

  RegistryStore(const RegistryStore&) = delete;
  RegistryStore& operator=(const RegistryStore&) = delete;

  // Every Insert checks that each named blob is stored (FailedPrecondition
  // naming the file otherwise), that the name and file list are non-empty and
  // file names unique (InvalidArgument), and records the blobs in `blobs`.

  // Base models. Ids are "m-<12 hex>". Insert records blobs already stored.
  absl::StatusOr<v1::BaseModel> InsertModel(v1::BaseModel model);  // fills id, digest, created_at
  absl::StatusOr<v1::BaseModel> GetModel(const std::string& id);   // NotFound naming the id
  absl::StatusOr<std::vector<v1::BaseModel>> ListModels();         // newest first
  // FailedPrecondition while QUEUED/ASSIGNED/RUNNING jobs name the model.
  // NotFound naming the id. Removes the row, then unreferenced blobs.
  absl::Status DeleteModel(const std::string& id);

  // Datasets. Ids are "d-<12 hex>".
  absl::StatusOr<v1::Dataset> InsertDataset(v1::Dataset dataset);  // fills id, created_at
  absl::StatusOr<v1::Dataset> GetDataset(const std::string& id);   // NotFound naming the id
  absl::StatusOr<std::vector<v1::Dataset>> ListDatasets();         // newest first
  // FailedPrecondition while QUEUED/ASSIGNED/RUNNING jobs train or evaluate
  // on it (their JobSpec names it). NotFound naming the id. Removes the row,
  // then unreferenced blobs.
  absl::Status DeleteDataset(const std::string& id);

  // Adapters. Ids are "a-<12 hex>". InsertAdapter runs inside the caller's
  // transaction so that a job's SUCCEEDED state and its adapter commit
  // together; fills id, digest, created_at. An empty adapter.type is stored
  // (and filtered) as "qwha", its default.
  absl::StatusOr<v1::Adapter> InsertAdapter(store::Transaction& tx, v1::Adapter adapter);
  absl::StatusOr<v1::Adapter> GetAdapter(const std::string& id);  // NotFound naming the id
  // Newest first; next_page_token is empty on the last page.
  absl::StatusOr<std::vector<v1::Adapter>> ListAdapters(const AdapterFilter& filter,
                                                        std::string* next_page_token);
  // Removes the row, then every blob no other row names. NotFound naming the id.
  absl::Status DeleteAdapter(const std::string& id);

  // True iff some model, dataset, adapter or job checkpoint names the blob.
  absl::StatusOr<bool> BlobReferenced(const std::string& sha256);

  // Shared among writers; see the file comment. Must not be taken while the
  // caller holds a Transaction.
  BlobWriteGuard GuardBlobWrites() { return BlobWriteGuard(gc_mu_); }

  // Removes those of `sha256s` that no row names (cleanup after a failed
  // upload whose blobs were committed). The caller must not hold a guard.
  absl::Status RemoveUnreferencedBlobs(const std::vector<std::string>& sha256s);

  absl::StatusOr<RegistryUsage> Usage();

  BlobStore* blobs() { return blobs_; }

 private:
  // Deletes the row(s) by `delete_sql` (NotFound naming `what` if none), then
  // the unreferenced blobs among `candidates_sql`'s results; `check` runs
  // first inside the same transaction.
  absl::Status DeleteAndCollect(const std::string& what, const std::string& id,
                                const std::string& candidates_sql, const std::string& delete_sql,
                                const std::function<absl::Status(store::Transaction&)>& check);
  absl::StatusOr<bool> ReferencedIn(store::Transaction& tx, const std::string& sha256);

  store::Db* db_;
  BlobStore* blobs_;
  std::shared_mutex gc_mu_;  // shared: blob writers; exclusive: collection
};

// A new random id "<prefix>-<12 lower-case hex>".
std::string NewId(const std::string& prefix);

}  // namespace qwha::registry
