// Test helpers shared by the scheduler's and the deployer's tests.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/registry/blob_store.h"
#include "server/registry/registry_store.h"
#include "server/store/sqlite_db.h"

namespace qwha::scheduler::testing {

// An empty directory under the test temp dir, unique to the running test:
// <TempDir>/<tag>_<pid>_<test name>.
std::string FreshTestDir(const std::string& tag);

// Opens (or reopens: a restart) the store of a test in `dir`: qwha.db with
// the schema applied, the blob store blobs/ and the registry over both.
absl::Status OpenTestStore(const std::string& dir, std::unique_ptr<store::Db>* db,
                           std::unique_ptr<registry::BlobStore>* blobs,
                           std::unique_ptr<registry::RegistryStore>* registry);

// What AddTinyModelAndDataset registered.
struct TinyRows {
  std::string model_id;
  std::string model_digest;
  std::string dataset_id;
};

// Registers a model "tiny" whose only file is config.json = `config_json`
// and a one-record text dataset "train", their files written under `dir`
// and imported into `blobs`.
absl::StatusOr<TinyRows> AddTinyModelAndDataset(const std::string& dir,
                                                std::string_view config_json,
                                                registry::RegistryStore& registry,
                                                registry::BlobStore& blobs);

}  // namespace qwha::scheduler::testing
