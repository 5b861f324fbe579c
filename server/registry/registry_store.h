// Registry metadata in the scheduler's store: base models, datasets and
// adapters, each naming content-addressed blobs of a BlobStore. The blobs are
// written first, the metadata row last (in one transaction), so a crash
// leaves at worst an unreferenced blob, never a row naming a missing blob.
//
// Thread safety: safe for concurrent use (the Db serializes).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qwha/v1/registry.pb.h"
#include "server/registry/blob_store.h"
#include "server/store/sqlite_db.h"

namespace qwha::registry {

struct AdapterFilter {
  std::string job_id, base_model_id, adapter_type;
  std::vector<std::pair<std::string, std::string>> labels;
  int page_size = 50;
  std::string page_token;
};

class RegistryStore {
 public:
  // Borrows db and blobs; both must outlive the RegistryStore.
  RegistryStore(store::Db* db, BlobStore* blobs) : db_(db), blobs_(blobs) {}

  // Base models. Ids are "m-<12 hex>". Insert records blobs already stored.
  absl::StatusOr<v1::BaseModel> InsertModel(v1::BaseModel model);  // fills id, digest, created_at
  absl::StatusOr<v1::BaseModel> GetModel(const std::string& id);     // NotFound naming the id
  absl::StatusOr<std::vector<v1::BaseModel>> ListModels();
  // FailedPrecondition while QUEUED/ASSIGNED/RUNNING jobs name the model.
  absl::Status DeleteModel(const std::string& id);

  // Datasets. Ids are "d-<12 hex>".
  absl::StatusOr<v1::Dataset> InsertDataset(v1::Dataset dataset);  // fills id, created_at
  absl::StatusOr<v1::Dataset> GetDataset(const std::string& id);
  absl::StatusOr<std::vector<v1::Dataset>> ListDatasets();
  absl::Status DeleteDataset(const std::string& id);

  // Adapters. Ids are "a-<12 hex>". InsertAdapter runs inside the caller's
  // transaction so that a job's SUCCEEDED state and its adapter commit
  // together; fills id, digest, created_at.
  absl::StatusOr<v1::Adapter> InsertAdapter(store::Transaction& tx, v1::Adapter adapter);
  absl::StatusOr<v1::Adapter> GetAdapter(const std::string& id);
  // Newest first; next_page_token is empty on the last page.
  absl::StatusOr<std::vector<v1::Adapter>> ListAdapters(const AdapterFilter& filter,
                                                        std::string* next_page_token);
  // Removes the row, then every blob no other row names.
  absl::Status DeleteAdapter(const std::string& id);

  // True iff some model, dataset, adapter or job checkpoint names the blob.
  absl::StatusOr<bool> BlobReferenced(const std::string& sha256);

  BlobStore* blobs() { return blobs_; }

 private:
  store::Db* db_;
  BlobStore* blobs_;
};

// A new random id "<prefix>-<12 lower-case hex>".
std::string NewId(const std::string& prefix);

}  // namespace qwha::registry
