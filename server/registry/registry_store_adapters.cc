// RegistryStore: adapters (insert inside the caller's transaction, get,
// filtered newest-first pages, delete).
#include <algorithm>
#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/registry/registry_rows.h"
#include "server/registry/registry_store.h"
#include "server/store/schema.h"

namespace qwha::registry {
namespace {

using internal::CheckFiles;
using internal::FileSetDigest;
using internal::RecordBlobs;
using internal::ToTimestamp;
using store::AsString;
using store::Row;

constexpr int kMaxPageSize = 1000;

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

absl::StatusOr<std::vector<v1::Adapter>> RegistryStore::ListAdapters(const AdapterFilter& filter,
                                                                     std::string* next_page_token) {
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

}  // namespace qwha::registry
