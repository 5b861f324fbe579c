// RegistryStore: base models, datasets, blob collection. Adapters are in
// registry_store_adapters.cc.
#include "server/registry/registry_store.h"

#include <cstdio>
#include <map>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qwha/v1/job.pb.h"
#include "server/registry/registry_rows.h"
#include "server/store/schema.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

using internal::CheckFiles;
using internal::FileSetDigest;
using internal::RecordBlobs;
using internal::ToTimestamp;
using store::AsInt;
using store::AsString;
using store::Row;

constexpr char kUnfinished[] = "state IN (1, 2, 3)";  // QUEUED, ASSIGNED, RUNNING

v1::FileInfo FileFromRow(const Row& row, size_t first) {
  v1::FileInfo f;
  f.set_name(AsString(row[first]));
  f.set_sha256(AsString(row[first + 1]));
  f.set_size(AsInt(row[first + 2]));
  return f;
}

// models(id, name, digest, source_path, created_at) plus its files.
v1::BaseModel ModelFromRow(const Row& row, const std::vector<Row>& files) {
  v1::BaseModel m;
  m.set_id(AsString(row[0]));
  m.set_name(AsString(row[1]));
  m.set_digest(AsString(row[2]));
  m.set_source_path(AsString(row[3]));
  *m.mutable_created_at() = ToTimestamp(store::AsDouble(row[4]));
  for (const Row& f : files) *m.add_files() = FileFromRow(f, 1);
  return m;
}

// datasets(id, name, file_name, sha256, size, records, format, created_at).
v1::Dataset DatasetFromRow(const Row& row) {
  v1::Dataset d;
  d.set_id(AsString(row[0]));
  d.set_name(AsString(row[1]));
  *d.mutable_file() = FileFromRow(row, 2);
  d.set_records(AsInt(row[5]));
  d.set_format(AsString(row[6]));
  *d.mutable_created_at() = ToTimestamp(store::AsDouble(row[7]));
  return d;
}

constexpr char kModelColumns[] = "SELECT id, name, digest, source_path, created_at FROM models";
constexpr char kDatasetColumns[] =
    "SELECT id, name, file_name, sha256, size, records, format, created_at FROM datasets";

}  // namespace

std::string NewId(const std::string& prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char hex[16];
  std::snprintf(hex, sizeof(hex), "%012llx",
                static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
  return absl::StrCat(prefix, "-", hex);
}

absl::StatusOr<v1::BaseModel> RegistryStore::InsertModel(v1::BaseModel model) {
  if (model.name().empty()) return absl::InvalidArgumentError("model name: required");
  if (absl::Status s = CheckFiles("model " + model.name(), model.files(), *blobs_); !s.ok()) {
    return s;
  }
  const double now = store::NowSeconds();
  model.set_id(NewId("m"));
  model.set_digest(FileSetDigest(model.files()));
  *model.mutable_created_at() = ToTimestamp(now);
  auto tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = (*tx)->Exec(
      "INSERT INTO models(id, name, digest, source_path, created_at) VALUES(?, ?, ?, ?, ?)",
      {model.id(), model.name(), model.digest(), model.source_path(), now});
  for (const v1::FileInfo& f : model.files()) {
    if (!s.ok()) break;
    s = (*tx)->Exec("INSERT INTO model_files(model_id, name, sha256, size) VALUES(?, ?, ?, ?)",
                    {model.id(), f.name(), f.sha256(), f.size()});
  }
  if (s.ok()) s = RecordBlobs(**tx, model.files(), now);
  if (s.ok()) s = (*tx)->Commit();
  if (!s.ok()) return s;
  return model;
}

absl::StatusOr<v1::BaseModel> RegistryStore::GetModel(const std::string& id) {
  auto rows = db_->Query(absl::StrCat(kModelColumns, " WHERE id = ?"), {id});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return absl::NotFoundError(absl::StrCat("model ", id, " not found"));
  auto files = db_->Query(
      "SELECT model_id, name, sha256, size FROM model_files WHERE model_id = ? ORDER BY name",
      {id});
  if (!files.ok()) return files.status();
  return ModelFromRow((*rows)[0], *files);
}

absl::StatusOr<std::vector<v1::BaseModel>> RegistryStore::ListModels() {
  auto tx = db_->Begin();  // one consistent snapshot of both tables
  if (!tx.ok()) return tx.status();
  auto rows = (*tx)->Query(absl::StrCat(kModelColumns, " ORDER BY created_at DESC, id DESC"));
  if (!rows.ok()) return rows.status();
  auto files =
      (*tx)->Query("SELECT model_id, name, sha256, size FROM model_files ORDER BY model_id, name");
  if (!files.ok()) return files.status();
  std::map<std::string, std::vector<Row>> by_model;
  for (Row& f : *files) by_model[AsString(f[0])].push_back(std::move(f));
  std::vector<v1::BaseModel> models;
  for (const Row& row : *rows) models.push_back(ModelFromRow(row, by_model[AsString(row[0])]));
  return models;
}

absl::Status RegistryStore::DeleteModel(const std::string& id) {
  return DeleteAndCollect(
      "model", id, "SELECT sha256 FROM model_files WHERE model_id = ?",
      "DELETE FROM models WHERE id = ?", [&](store::Transaction& tx) -> absl::Status {
        auto jobs = tx.Query(absl::StrCat("SELECT id FROM jobs WHERE base_model_id = ? AND ",
                                          kUnfinished, " ORDER BY seq LIMIT 5"),
                             {id});
        if (!jobs.ok()) return jobs.status();
        if (jobs->empty()) return absl::OkStatus();
        std::vector<std::string> ids;
        for (const Row& r : *jobs) ids.push_back(AsString(r[0]));
        return absl::FailedPreconditionError(
            absl::StrCat("model ", id, " is used by unfinished jobs (", absl::StrJoin(ids, ", "),
                         "); cancel them or wait for them to finish"));
      });
}

absl::StatusOr<v1::Dataset> RegistryStore::InsertDataset(v1::Dataset dataset) {
  if (dataset.name().empty()) return absl::InvalidArgumentError("dataset name: required");
  google::protobuf::RepeatedPtrField<v1::FileInfo> files;
  *files.Add() = dataset.file();
  if (absl::Status s = CheckFiles("dataset " + dataset.name(), files, *blobs_); !s.ok()) return s;
  const double now = store::NowSeconds();
  dataset.set_id(NewId("d"));
  *dataset.mutable_created_at() = ToTimestamp(now);
  auto tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  absl::Status s = (*tx)->Exec(
      "INSERT INTO datasets(id, name, file_name, sha256, size, records, format, created_at) "
      "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
      {dataset.id(), dataset.name(), dataset.file().name(), dataset.file().sha256(),
       dataset.file().size(), dataset.records(), dataset.format(), now});
  if (s.ok()) s = RecordBlobs(**tx, files, now);
  if (s.ok()) s = (*tx)->Commit();
  if (!s.ok()) return s;
  return dataset;
}

absl::StatusOr<v1::Dataset> RegistryStore::GetDataset(const std::string& id) {
  auto rows = db_->Query(absl::StrCat(kDatasetColumns, " WHERE id = ?"), {id});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return absl::NotFoundError(absl::StrCat("dataset ", id, " not found"));
  return DatasetFromRow((*rows)[0]);
}

absl::StatusOr<std::vector<v1::Dataset>> RegistryStore::ListDatasets() {
  auto rows = db_->Query(absl::StrCat(kDatasetColumns, " ORDER BY created_at DESC, id DESC"));
  if (!rows.ok()) return rows.status();
  std::vector<v1::Dataset> datasets;
  for (const Row& row : *rows) datasets.push_back(DatasetFromRow(row));
  return datasets;
}

absl::Status RegistryStore::DeleteDataset(const std::string& id) {
  return DeleteAndCollect(
      "dataset", id, "SELECT sha256 FROM datasets WHERE id = ?",
      "DELETE FROM datasets WHERE id = ?", [&](store::Transaction& tx) -> absl::Status {
        auto jobs = tx.Query(
            absl::StrCat("SELECT id, spec FROM jobs WHERE ", kUnfinished, " ORDER BY seq"));
        if (!jobs.ok()) return jobs.status();
        std::vector<std::string> users;
        for (const Row& r : *jobs) {
          v1::JobSpec spec;
          if (spec.ParseFromString(AsString(r[1])) &&
              (spec.train_dataset_id() == id || spec.eval_dataset_id() == id)) {
            users.push_back(AsString(r[0]));
          }
        }
        if (users.empty()) return absl::OkStatus();
        if (users.size() > 5) users.resize(5);
        return absl::FailedPreconditionError(
            absl::StrCat("dataset ", id, " is used by unfinished jobs (",
                         absl::StrJoin(users, ", "), "); cancel them or wait for them to finish"));
      });
}

absl::StatusOr<bool> RegistryStore::ReferencedIn(store::Transaction& tx,
                                                 const std::string& sha256) {
  auto rows = tx.Query(
      "SELECT EXISTS(SELECT 1 FROM model_files WHERE sha256 = ?1)"
      " OR EXISTS(SELECT 1 FROM datasets WHERE sha256 = ?1)"
      " OR EXISTS(SELECT 1 FROM adapter_files WHERE sha256 = ?1)"
      " OR EXISTS(SELECT 1 FROM job_checkpoints WHERE sha256 = ?1)",
      {sha256});
  if (!rows.ok()) return rows.status();
  return AsInt((*rows)[0][0]) != 0;
}

absl::StatusOr<bool> RegistryStore::BlobReferenced(const std::string& sha256) {
  auto tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  return ReferencedIn(**tx, sha256);
}

absl::Status RegistryStore::DeleteAndCollect(
    const std::string& what, const std::string& id, const std::string& candidates_sql,
    const std::string& delete_sql, const std::function<absl::Status(store::Transaction&)>& check) {
  std::unique_lock<std::shared_mutex> gc(gc_mu_);
  auto tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  auto candidates = (*tx)->Query(candidates_sql, {id});
  if (!candidates.ok()) return candidates.status();
  if (absl::Status s = (*tx)->Exec(delete_sql, {id}); !s.ok()) return s;
  if ((*tx)->changes() == 0) return absl::NotFoundError(absl::StrCat(what, " ", id, " not found"));
  if (check) {
    if (absl::Status s = check(**tx); !s.ok()) return s;
  }
  std::set<std::string> garbage;
  for (const Row& row : *candidates) {
    auto referenced = ReferencedIn(**tx, AsString(row[0]));
    if (!referenced.ok()) return referenced.status();
    if (!*referenced) garbage.insert(AsString(row[0]));
  }
  for (const std::string& sha : garbage) {
    if (absl::Status s = (*tx)->Exec("DELETE FROM blobs WHERE sha256 = ?", {sha}); !s.ok())
      return s;
  }
  if (absl::Status s = (*tx)->Commit(); !s.ok()) return s;
  tx->reset();
  // The rows are gone for good; a blob that fails to unlink is only leaked.
  for (const std::string& sha : garbage) (void)blobs_->Remove(sha);
  return absl::OkStatus();
}

absl::Status RegistryStore::RemoveUnreferencedBlobs(const std::vector<std::string>& sha256s) {
  std::unique_lock<std::shared_mutex> gc(gc_mu_);
  std::vector<std::string> garbage;
  {
    auto tx = db_->Begin();
    if (!tx.ok()) return tx.status();
    for (const std::string& sha : sha256s) {
      auto referenced = ReferencedIn(**tx, sha);
      if (!referenced.ok()) return referenced.status();
      if (*referenced) continue;
      if (absl::Status s = (*tx)->Exec("DELETE FROM blobs WHERE sha256 = ?", {sha}); !s.ok()) {
        return s;
      }
      garbage.push_back(sha);
    }
    if (absl::Status s = (*tx)->Commit(); !s.ok()) return s;
  }
  absl::Status result;
  for (const std::string& sha : garbage) result.Update(blobs_->Remove(sha));
  return result;
}

absl::StatusOr<RegistryUsage> RegistryStore::Usage() {
  auto rows = db_->Query(
      "SELECT (SELECT COALESCE(SUM(size), 0) FROM model_files),"
      " (SELECT COALESCE(SUM(size), 0) FROM datasets),"
      " (SELECT COALESCE(SUM(size), 0) FROM adapter_files)");
  if (!rows.ok()) return rows.status();
  RegistryUsage usage;
  usage.model_bytes = AsInt((*rows)[0][0]);
  usage.dataset_bytes = AsInt((*rows)[0][1]);
  usage.adapter_bytes = AsInt((*rows)[0][2]);
  usage.stored_bytes = blobs_->TotalBytes();
  return usage;
}

}  // namespace qwha::registry
