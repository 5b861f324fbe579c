#include "server/store/sqlite_db.h"

#include "absl/strings/str_cat.h"

namespace qwha::store {

int64_t AsInt(const Value& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  return 0;
}
double AsDouble(const Value& v) {
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return 0;
}
std::string AsString(const Value& v) {
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  return "";
}

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  std::unique_ptr<Db> db(new Db());
  db->path_ = path;
  int rc =
      sqlite3_open_v2(path.c_str(), &db->handle_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("store ", path, ": ", sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db->handle_, 10000);
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    absl::Status s = db->Exec(pragma);
    if (!s.ok()) return s;
  }
  return db;
}

Db::~Db() {
  if (handle_) sqlite3_close_v2(handle_);
}

absl::StatusOr<std::vector<Row>> Db::RunLocked(const std::string& sql,
                                               const std::vector<Value>& params) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(handle_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return absl::InternalError(
        absl::StrCat("store: prepare '", sql, "': ", sqlite3_errmsg(handle_)));
  }
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> owner(stmt, sqlite3_finalize);
  for (size_t i = 0; i < params.size(); ++i) {
    int index = static_cast<int>(i) + 1;
    const Value& v = params[i];
    if (std::holds_alternative<std::monostate>(v)) {
      sqlite3_bind_null(stmt, index);
    } else if (auto* n = std::get_if<int64_t>(&v)) {
      sqlite3_bind_int64(stmt, index, *n);
    } else if (auto* d = std::get_if<double>(&v)) {
      sqlite3_bind_double(stmt, index, *d);
    } else {
      const std::string& s = std::get<std::string>(v);
      sqlite3_bind_blob(stmt, index, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
  }
  std::vector<Row> rows;
  while (true) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      std::string msg = absl::StrCat("store: '", sql.substr(0, 80), "': ", sqlite3_errmsg(handle_));
      if ((rc & 0xff) == SQLITE_CONSTRAINT) return absl::AlreadyExistsError(msg);
      return absl::InternalError(msg);
    }
    int columns = sqlite3_column_count(stmt);
    Row row(columns);
    for (int c = 0; c < columns; ++c) {
      switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_INTEGER:
          row[c] = static_cast<int64_t>(sqlite3_column_int64(stmt, c));
          break;
        case SQLITE_FLOAT:
          row[c] = sqlite3_column_double(stmt, c);
          break;
        case SQLITE_NULL:
          break;
        default: {
          const void* data = sqlite3_column_blob(stmt, c);
          int size = sqlite3_column_bytes(stmt, c);
          row[c] = std::string(static_cast<const char*>(data), static_cast<size_t>(size));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<std::vector<Row>> Db::Query(const std::string& sql,
                                           const std::vector<Value>& params) {
  std::lock_guard<std::mutex> lock(mu_);
  return RunLocked(sql, params);
}

absl::Status Db::Exec(const std::string& sql, const std::vector<Value>& params) {
  return Query(sql, params).status();
}

absl::StatusOr<std::unique_ptr<Transaction>> Db::Begin() {
  std::unique_ptr<Transaction> tx(new Transaction(this));
  auto begun = RunLocked("BEGIN IMMEDIATE", {});
  if (!begun.ok()) return begun.status();
  tx->open_ = true;
  return tx;
}

Transaction::Transaction(Db* db) : db_(db), lock_(db->mu_) {}

Transaction::~Transaction() { Rollback(); }

absl::StatusOr<std::vector<Row>> Transaction::Query(const std::string& sql,
                                                    const std::vector<Value>& params) {
  return db_->RunLocked(sql, params);
}

absl::Status Transaction::Exec(const std::string& sql, const std::vector<Value>& params) {
  return Query(sql, params).status();
}

int64_t Transaction::changes() const { return sqlite3_changes64(db_->handle_); }

absl::Status Transaction::Commit() {
  if (!open_) return absl::FailedPreconditionError("store: transaction not open");
  auto done = db_->RunLocked("COMMIT", {});
  if (!done.ok()) return done.status();
  open_ = false;
  lock_.unlock();  // the Db is free for other callers from here on
  return absl::OkStatus();
}

void Transaction::Rollback() {
  if (!open_) return;
  (void)db_->RunLocked("ROLLBACK", {});
  open_ = false;
  lock_.unlock();
}

}  // namespace qwha::store
