// Test helpers shared by the scheduler's and the deployer's tests.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/registry/registry_store.h"

namespace qwha::scheduler::testing {

// An empty directory under the test temp dir, unique to the running test:
// <TempDir>/<tag>_<pid>_<test name>.
std::string FreshTestDir(const std::string& tag);

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
