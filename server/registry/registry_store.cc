#include "server/registry/registry_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qwha/v1/job.pb.h"
#include "server/store/schema.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

using store::AsInt;
using store::AsString;
using store::Row;

constexpr char kUnfinished[] = "state IN (1, 2, 3)";  // QUEUED, ASSIGNED, RUNNING
constexpr int kMaxPageSize = 1000;

google::protobuf::Timestamp ToTimestamp(double seconds) {
  google::protobuf::Timestamp t;
  int64_t whole = static_cast<int64_t>(std::floor(seconds));
  int64_t millis = std::llround((seconds - static_cast<double>(whole)) * 1000.0);
  if (millis >= 1000) ++whole, millis -= 1000;
  t.set_seconds(whole);
  t.set_nanos(static_cast<int32_t>(millis * 1000000));
  return t;
}

// Names, digests and sizes of `files` are well-formed, names unique, and
// each blob is stored.
absl::Status CheckFiles(const std::string& what,
                        const google::protobuf::RepeatedPtrField<v1::FileInfo>& files,
                        const BlobStore& blobs) {
  if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no files"));
  std::set<std::string> names;
  for (const v1::FileInfo& f : files) {
    if (f.name().empty() || !names.insert(f.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": file name '", f.name(), "' is empty or repeated"));
    }
    if (!io::IsSha256Hex(f.sha256()) || f.size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " file ", f.name(), ": malformed sha256 or size"));
    }
    if (!blobs.Contains(f.sha256())) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " file ", f.name(), ": blob ", f.sha256(), " is not stored"));
    }
  }
  return absl::OkStatus();
}

std::string FileSetDigest(const google::protobuf::RepeatedPtrField<v1::FileInfo>& files) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const v1::FileInfo& f : files) pairs.emplace_back(f.name(), f.sha256());
  return io::Sha256OfFileSet(std::move(pairs));
}

absl::Status RecordBlobs(store::Transaction& tx,
                         const google::protobuf::RepeatedPtrField<v1::FileInfo>& files,
                         double now) {
  for (const v1::FileInfo& f : files) {
    absl::Status s = tx.Exec("INSERT OR IGNORE INTO blobs(sha256, size, created_at) VALUES(?, ?, ?)",
                             {f.sha256(), f.size(), now});
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

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

// Page tokens: web-safe base64 of "<created_at %.17g> <id>" of the last row.
std::string EncodePageToken(double created_at, const std::string& id) {
  char number[64];
  std::snprintf(number, sizeof(number), "%.17g", created_at);
  return absl::WebSafeBase64Escape(absl::StrCat(number, " ", id));
}

absl::Status DecodePageToken(const std::string& token, double* created_at, std::string* id) {
  std::string plain;
  size_t space = std::string::npos;
  if (absl::WebSafeBase64Unescape(token, &plain)) space = plain.find(' ');
  if (space == std::string::npos || !absl::SimpleAtod(plain.substr(0, space), created_at) ||
      space + 1 >= plain.size()) {
    return absl::InvalidArgumentError("page_token: not a token returned by ListAdapters");
  }
  *id = plain.substr(space + 1);
  return absl::OkStatus();
}

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
        auto jobs = tx.Query(
            absl::StrCat("SELECT id FROM jobs WHERE base_model_id = ? AND ", kUnfinished,
                         " ORDER BY seq LIMIT 5"),
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
      "dataset", id, "SELECT sha256 FROM datasets WHERE id = ?", "DELETE FROM datasets WHERE id = ?",
      [&](store::Transaction& tx) -> absl::Status {
        auto jobs = tx.Query(absl::StrCat("SELECT id, spec FROM jobs WHERE ", kUnfinished,
                                          " ORDER BY seq"));
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

absl::StatusOr<v1::Adapter> RegistryStore::InsertAdapter(store::Transaction& tx,
                                                         v1::Adapter adapter) {
  if (adapter.job_id().empty()) return absl::InvalidArgumentError("adapter job_id: required");
  if (absl::Status s = CheckFiles("adapter of job " + adapter.job_id(), adapter.files(), *blobs_);
      !s.ok()) {
    return s;
  }
  if (adapter.adapter().type().empty()) adapter.mutable_adapter()->set_type("qwha");
  const double now = store::NowSeconds();
  adapter.set_id(NewId("a"));
  adapter.set_digest(FileSetDigest(adapter.files()));
  *adapter.mutable_created_at() = ToTimestamp(now);
  absl::Status s = tx.Exec(
      "INSERT INTO adapters(id, job_id, record, base_model_id, adapter_type, created_at) "
      "VALUES(?, ?, ?, ?, ?, ?)",
      {adapter.id(), adapter.job_id(), adapter.SerializeAsString(), adapter.base_model_id(),
       adapter.adapter().type(), now});
  for (const auto& [key, value] : adapter.labels()) {
    if (!s.ok()) break;
    s = tx.Exec("INSERT INTO adapter_labels(adapter_id, key, value) VALUES(?, ?, ?)",
                {adapter.id(), key, value});
  }
  for (const v1::FileInfo& f : adapter.files()) {
    if (!s.ok()) break;
    s = tx.Exec("INSERT INTO adapter_files(adapter_id, name, sha256, size) VALUES(?, ?, ?, ?)",
                {adapter.id(), f.name(), f.sha256(), f.size()});
  }
  if (s.ok()) s = RecordBlobs(tx, adapter.files(), now);
  if (!s.ok()) return s;
  return adapter;
}

absl::StatusOr<v1::Adapter> RegistryStore::GetAdapter(const std::string& id) {
  auto rows = db_->Query("SELECT record FROM adapters WHERE id = ?", {id});
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return absl::NotFoundError(absl::StrCat("adapter ", id, " not found"));
  v1::Adapter adapter;
  if (!adapter.ParseFromString(AsString((*rows)[0][0]))) {
    return absl::DataLossError(absl::StrCat("adapter ", id, ": stored record is corrupt"));
  }
  return adapter;
}

absl::StatusOr<std::vector<v1::Adapter>> RegistryStore::ListAdapters(
    const AdapterFilter& filter, std::string* next_page_token) {
  const int page_size = std::clamp(filter.page_size, 1, kMaxPageSize);
  std::string sql = "SELECT record, created_at, id FROM adapters a WHERE 1";
  std::vector<store::Value> params;
  for (const auto& [column, value] : {std::make_pair("job_id", filter.job_id),
                                      std::make_pair("base_model_id", filter.base_model_id),
                                      std::make_pair("adapter_type", filter.adapter_type)}) {
    if (value.empty()) continue;
    absl::StrAppend(&sql, " AND a.", column, " = ?");
    params.push_back(value);
  }
  for (const auto& [key, value] : filter.labels) {
    absl::StrAppend(&sql, " AND EXISTS(SELECT 1 FROM adapter_labels l WHERE l.adapter_id = a.id",
                    " AND l.key = ? AND l.value = ?)");
    params.push_back(key);
    params.push_back(value);
  }
  if (!filter.page_token.empty()) {
    double created_at = 0;
    std::string id;
    if (absl::Status s = DecodePageToken(filter.page_token, &created_at, &id); !s.ok()) return s;
    absl::StrAppend(&sql, " AND (a.created_at < ? OR (a.created_at = ? AND a.id < ?))");
    params.insert(params.end(), {created_at, created_at, id});
  }
  absl::StrAppend(&sql, " ORDER BY a.created_at DESC, a.id DESC LIMIT ?");
  params.push_back(int64_t{page_size} + 1);
  auto rows = db_->Query(sql, params);
  if (!rows.ok()) return rows.status();
  std::vector<v1::Adapter> adapters;
  next_page_token->clear();
  for (size_t i = 0; i < rows->size() && i < static_cast<size_t>(page_size); ++i) {
    const Row& row = (*rows)[i];
    v1::Adapter& adapter = adapters.emplace_back();
    if (!adapter.ParseFromString(AsString(row[0]))) {
      return absl::DataLossError(absl::StrCat("adapter ", AsString(row[2]), ": corrupt record"));
    }
  }
  if (rows->size() > static_cast<size_t>(page_size)) {
    const Row& last = (*rows)[page_size - 1];
    *next_page_token = EncodePageToken(store::AsDouble(last[1]), AsString(last[2]));
  }
  return adapters;
}

absl::Status RegistryStore::DeleteAdapter(const std::string& id) {
  return DeleteAndCollect("adapter", id, "SELECT sha256 FROM adapter_files WHERE adapter_id = ?",
                          "DELETE FROM adapters WHERE id = ?", nullptr);
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
    if (absl::Status s = (*tx)->Exec("DELETE FROM blobs WHERE sha256 = ?", {sha}); !s.ok()) return s;
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
