#include "server/registry/registry_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "qwha/v1/job.pb.h"
#include "server/store/schema.h"
#include "worker/io/atomic_file.h"

namespace qwha::registry {
namespace {

class RegistryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/registry_store_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(io::RemoveTree(dir_).ok());
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    auto blobs = BlobStore::Open(dir_ + "/blobs");
    ASSERT_TRUE(blobs.ok()) << blobs.status();
    blobs_ = *std::move(blobs);
    auto db = store::Db::Open(dir_ + "/store.db");
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    ASSERT_TRUE(store::EnsureSchema(*db_).ok());
    registry_ = std::make_unique<RegistryStore>(db_.get(), blobs_.get());
  }

  v1::FileInfo Blob(const std::string& name, const std::string& content) {
    auto writer = blobs_->NewWriter(name, 1 << 20);
    EXPECT_TRUE(writer.ok());
    EXPECT_TRUE((*writer)->Append(content).ok());
    auto info = (*writer)->Commit();
    EXPECT_TRUE(info.ok()) << info.status();
    v1::FileInfo f;
    f.set_name(name);
    f.set_sha256(info->sha256);
    f.set_size(info->size);
    return f;
  }

  absl::StatusOr<v1::Adapter> AddAdapter(const std::string& job, const std::string& type,
                                         std::map<std::string, std::string> labels,
                                         const std::string& content) {
    v1::Adapter adapter;
    adapter.set_job_id(job);
    adapter.set_base_model_id("m-base");
    adapter.mutable_adapter()->set_type(type);
    *adapter.add_files() = Blob("adapter.safetensors", content);
    *adapter.add_files() = Blob("metrics.json", "{}");
    adapter.mutable_labels()->insert(labels.begin(), labels.end());
    auto tx = db_->Begin();
    EXPECT_TRUE(tx.ok());
    auto inserted = registry_->InsertAdapter(**tx, adapter);
    if (inserted.ok()) {
      EXPECT_TRUE((*tx)->Commit().ok());
    }
    return inserted;
  }

  void InsertJob(const std::string& id, int state, const std::string& model,
                 const std::string& dataset) {
    v1::JobSpec spec;
    spec.set_base_model_id(model);
    spec.set_train_dataset_id(dataset);
    static int64_t seq = 0;
    ASSERT_TRUE(db_->Exec("INSERT INTO jobs(id, seq, spec, state, priority, base_model_id, "
                          "min_memory, require_gpu, max_attempts, timeout_seconds, created_at, "
                          "queued_at, updated_at) VALUES(?, ?, ?, ?, 0, ?, 0, 0, 3, 0, 0, 0, 0)",
                          {id, ++seq, spec.SerializeAsString(), int64_t{state}, model})
                    .ok());
  }

  std::string dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<store::Db> db_;
  std::unique_ptr<RegistryStore> registry_;
};

TEST_F(RegistryStoreTest, ModelsInsertGetListDelete) {
  v1::BaseModel model;
  model.set_name("tiny");
  *model.add_files() = Blob("config.json", "{\"hidden_size\": 8}");
  *model.add_files() = Blob("model.safetensors", "weights");
  auto inserted = registry_->InsertModel(model);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->id().size(), 14u);
  EXPECT_EQ(inserted->id().substr(0, 2), "m-");
  EXPECT_EQ(inserted->digest(), io::Sha256OfFileSet({{"model.safetensors", model.files(1).sha256()},
                                                     {"config.json", model.files(0).sha256()}}));
  EXPECT_GT(inserted->created_at().seconds(), 0);

  auto got = registry_->GetModel(inserted->id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), inserted->SerializeAsString());
  auto list = registry_->ListModels();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].files_size(), 2);

  EXPECT_EQ(registry_->GetModel("m-nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(registry_->GetModel("m-nope").status().message().find("m-nope"), std::string::npos);

  // A blob that is not stored is refused.
  v1::BaseModel missing;
  missing.set_name("missing");
  *missing.add_files() = model.files(0);
  missing.mutable_files(0)->set_sha256(std::string(64, 'a'));
  EXPECT_EQ(registry_->InsertModel(missing).status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(registry_->DeleteModel(inserted->id()).ok());
  EXPECT_FALSE(blobs_->Contains(model.files(0).sha256()));
  EXPECT_FALSE(blobs_->Contains(model.files(1).sha256()));
  EXPECT_EQ(registry_->DeleteModel(inserted->id()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(blobs_->TotalBytes(), 0);
}

TEST_F(RegistryStoreTest, DeleteModelRefusedWhileUnfinishedJobsUseIt) {
  v1::BaseModel model;
  model.set_name("busy");
  *model.add_files() = Blob("config.json", "{}");
  auto inserted = registry_->InsertModel(model);
  ASSERT_TRUE(inserted.ok());
  InsertJob("j-queued", /*QUEUED=*/1, inserted->id(), "d-x");
  absl::Status refused = registry_->DeleteModel(inserted->id());
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("j-queued"), std::string::npos) << refused;
  EXPECT_TRUE(registry_->GetModel(inserted->id()).ok());
  EXPECT_TRUE(blobs_->Contains(model.files(0).sha256()));

  ASSERT_TRUE(db_->Exec("UPDATE jobs SET state = 4 WHERE id = ?", {"j-queued"}).ok());  // SUCCEEDED
  // (The Db binds strings as blobs, which never equal SQL text literals.)
  absl::Status deleted = registry_->DeleteModel(inserted->id());
  EXPECT_TRUE(deleted.ok()) << deleted;
}

TEST_F(RegistryStoreTest, DatasetsAndSharedBlobsSurviveUntilLastReference) {
  v1::Dataset dataset;
  dataset.set_name("train");
  *dataset.mutable_file() = Blob("train.jsonl", "{\"text\": \"hi\"}\n");
  dataset.set_records(1);
  dataset.set_format("text");
  auto first = registry_->InsertDataset(dataset);
  auto second = registry_->InsertDataset(dataset);  // same content, second row
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->id(), second->id());
  auto list = registry_->ListDatasets();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].file().sha256(), dataset.file().sha256());

  InsertJob("j-running", /*RUNNING=*/3, "m-x", first->id());
  EXPECT_EQ(registry_->DeleteDataset(first->id()).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(db_->Exec("UPDATE jobs SET state = 6").ok());  // CANCELLED

  ASSERT_TRUE(registry_->DeleteDataset(first->id()).ok());
  EXPECT_TRUE(blobs_->Contains(dataset.file().sha256()));  // still named by the second
  ASSERT_TRUE(registry_->DeleteDataset(second->id()).ok());
  EXPECT_FALSE(blobs_->Contains(dataset.file().sha256()));
  EXPECT_EQ(registry_->GetDataset(first->id()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryStoreTest, AdaptersFilterPaginateAndCollect) {
  std::set<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto a = AddAdapter(absl::StrCat("j-", i % 2), i < 5 ? "" : "lora",
                        {{"team", i % 3 == 0 ? "nlp" : "vision"}}, absl::StrCat("content ", i));
    ASSERT_TRUE(a.ok()) << a.status();
    ids.insert(a->id());
    if (i == 0) {
      EXPECT_EQ(a->adapter().type(), "qwha");
    }
  }
  // Newest first, pages of 3, every adapter exactly once.
  std::vector<std::string> seen;
  AdapterFilter filter;
  filter.page_size = 3;
  double last_created = 1e300;
  int pages = 0;
  do {
    std::string next;
    auto page = registry_->ListAdapters(filter, &next);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const v1::Adapter& a : *page) {
      double created = a.created_at().seconds() + a.created_at().nanos() * 1e-9;
      EXPECT_LE(created, last_created);
      last_created = created;
      seen.push_back(a.id());
    }
    filter.page_token = next;
    ++pages;
  } while (!filter.page_token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), ids);
  EXPECT_EQ(seen.size(), 7u);

  std::string next;
  AdapterFilter by_job;
  by_job.job_id = "j-1";
  EXPECT_EQ(registry_->ListAdapters(by_job, &next)->size(), 3u);
  AdapterFilter by_type;
  by_type.adapter_type = "qwha";
  EXPECT_EQ(registry_->ListAdapters(by_type, &next)->size(), 5u);
  AdapterFilter by_label;
  by_label.labels = {{"team", "nlp"}};
  by_label.job_id = "j-0";
  EXPECT_EQ(registry_->ListAdapters(by_label, &next)->size(), 2u);  // i = 0, 6
  AdapterFilter bad_token;
  bad_token.page_token = "garbage!";
  EXPECT_EQ(registry_->ListAdapters(bad_token, &next).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Deleting collects the unique blob but keeps the metrics.json every adapter shares.
  const std::string id = *ids.begin();
  auto adapter = registry_->GetAdapter(id);
  ASSERT_TRUE(adapter.ok());
  EXPECT_EQ(adapter->digest(),
            io::Sha256OfFileSet({{"adapter.safetensors", adapter->files(0).sha256()},
                                 {"metrics.json", adapter->files(1).sha256()}}));
  ASSERT_TRUE(registry_->DeleteAdapter(id).ok());
  EXPECT_FALSE(blobs_->Contains(adapter->files(0).sha256()));
  EXPECT_TRUE(blobs_->Contains(adapter->files(1).sha256()));
  EXPECT_EQ(registry_->GetAdapter(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->DeleteAdapter(id).code(), absl::StatusCode::kNotFound);
  auto labels = db_->Query("SELECT COUNT(*) FROM adapter_labels WHERE adapter_id = ?", {id});
  EXPECT_EQ(store::AsInt((*labels)[0][0]), 0);
}

TEST_F(RegistryStoreTest, DeletesWaitForBlobWriters) {
  v1::Dataset dataset;
  dataset.set_name("d");
  *dataset.mutable_file() = Blob("t.jsonl", "{\"text\": \"a\"}\n");
  auto inserted = registry_->InsertDataset(dataset);
  ASSERT_TRUE(inserted.ok());
  std::atomic<bool> deleted{false};
  std::thread deleter;
  {
    BlobWriteGuard guard = registry_->GuardBlobWrites();
    deleter = std::thread([&] {
      EXPECT_TRUE(registry_->DeleteDataset(inserted->id()).ok());
      deleted = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // A writer holding the guard may still count on the blob and the row.
    EXPECT_FALSE(deleted);
    EXPECT_TRUE(blobs_->Contains(dataset.file().sha256()));
    EXPECT_TRUE(registry_->GetDataset(inserted->id()).ok());  // reads are not blocked
  }
  deleter.join();
  EXPECT_TRUE(deleted);
  EXPECT_FALSE(blobs_->Contains(dataset.file().sha256()));
}

TEST_F(RegistryStoreTest, CheckpointReferencesKeepBlobsAndUsageCounts) {
  v1::BaseModel model;
  model.set_name("m");
  *model.add_files() = Blob("config.json", "shared bytes");
  auto inserted = registry_->InsertModel(model);
  ASSERT_TRUE(inserted.ok());
  InsertJob("j-done", 4, "m-other", "d-x");
  absl::Status checkpoint = db_->Exec(
      "INSERT INTO job_checkpoints(job_id, checkpoint, name, sha256, size) "
      "VALUES(?, 'step-1', 'state.bin', ?, 12)",
      {"j-done", model.files(0).sha256()});
  ASSERT_TRUE(checkpoint.ok()) << checkpoint;
  auto usage = registry_->Usage();
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->model_bytes, 12);
  EXPECT_EQ(usage->stored_bytes, 12);
  ASSERT_TRUE(registry_->DeleteModel(inserted->id()).ok());
  EXPECT_TRUE(*registry_->BlobReferenced(model.files(0).sha256()));
  EXPECT_TRUE(blobs_->Contains(model.files(0).sha256()));

  // A committed but unnamed blob goes; a named one stays.
  v1::FileInfo orphan = Blob("orphan", "nobody names me");
  ASSERT_TRUE(registry_->RemoveUnreferencedBlobs({orphan.sha256(), model.files(0).sha256()}).ok());
  EXPECT_FALSE(blobs_->Contains(orphan.sha256()));
  EXPECT_TRUE(blobs_->Contains(model.files(0).sha256()));
}

}  // namespace
}  // namespace qwha::registry
