#include "server/scheduler/test_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "server/store/schema.h"
#include "worker/io/atomic_file.h"

namespace qwha::scheduler::testing {

std::string FreshTestDir(const std::string& tag) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/", tag, "_", ::getpid(), "_",
                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  (void)io::RemoveTree(dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return dir;
}

absl::Status OpenTestStore(const std::string& dir, std::unique_ptr<store::Db>* db,
                           std::unique_ptr<registry::BlobStore>* blobs,
                           std::unique_ptr<registry::RegistryStore>* registry) {
  auto opened = store::Db::Open(dir + "/qwha.db");
  if (!opened.ok()) return opened.status();
  *db = std::move(*opened);
  if (absl::Status s = store::EnsureSchema(**db); !s.ok()) return s;
  auto blob_store = registry::BlobStore::Open(dir + "/blobs");
  if (!blob_store.ok()) return blob_store.status();
  *blobs = std::move(*blob_store);
  *registry = std::make_unique<registry::RegistryStore>(db->get(), blobs->get());
  return absl::OkStatus();
}

absl::StatusOr<TinyRows> AddTinyModelAndDataset(const std::string& dir,
                                                std::string_view config_json,
                                                registry::RegistryStore& registry,
                                                registry::BlobStore& blobs) {
  TinyRows rows;
  if (absl::Status s = io::WriteFileAtomically(dir + "/config.json", config_json); !s.ok())
    return s;
  auto config = blobs.ImportFile(dir + "/config.json");
  if (!config.ok()) return config.status();
  v1::BaseModel model;
  model.set_name("tiny");
  v1::FileInfo* f = model.add_files();
  f->set_name("config.json");
  f->set_sha256(config->sha256);
  f->set_size(config->size);
  auto stored = registry.InsertModel(model);
  if (!stored.ok()) return stored.status();
  rows.model_id = stored->id();
  rows.model_digest = stored->digest();
  if (absl::Status s = io::WriteFileAtomically(dir + "/train.jsonl", "{\"text\": \"hello\"}\n");
      !s.ok()) {
    return s;
  }
  auto data = blobs.ImportFile(dir + "/train.jsonl");
  if (!data.ok()) return data.status();
  v1::Dataset dataset;
  dataset.set_name("train");
  dataset.mutable_file()->set_name("train.jsonl");
  dataset.mutable_file()->set_sha256(data->sha256);
  dataset.mutable_file()->set_size(data->size);
  dataset.set_records(1);
  dataset.set_format("text");
  auto ds = registry.InsertDataset(dataset);
  if (!ds.ok()) return ds.status();
  rows.dataset_id = ds->id();
  return rows;
}

}  // namespace qwha::scheduler::testing
