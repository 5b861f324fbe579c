// A thin owner of one SQLite connection: WAL journal, synchronous=FULL (every
// commit is fsynced), foreign keys on, busy timeout. Statements are prepared
// per call; values bind by position.
//
// Thread safety: a Db serializes every call with its own mutex, so one Db may
// be shared by all threads of the scheduler. A Transaction holds that mutex
// from Begin to Commit/Rollback: statements inside it must go through the
// Transaction, not the Db.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::store {

// A bound parameter or a column value. monostate is SQL NULL. A string binds
// as a BLOB (byte-exact: serialized protos are strings too), and SQLite never
// finds a BLOB equal to TEXT: a column written from a bound string matches a
// bound string, never a text literal ('loaded'). Write and compare such a
// column the same way throughout (server/scheduler/deployer.cc writes its
// states as literals for that reason).
using Value = std::variant<std::monostate, int64_t, double, std::string>;
using Row = std::vector<Value>;

int64_t AsInt(const Value& v);         // 0 for NULL
double AsDouble(const Value& v);       // 0 for NULL
std::string AsString(const Value& v);  // "" for NULL; text and blobs alike

class Db;

// Runs statements inside one BEGIN IMMEDIATE … COMMIT. If neither Commit nor
// Rollback is called, the destructor rolls back.
class Transaction {
 public:
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // Runs `sql` with `params`; returns the result rows (empty for writes).
  // Internal / AlreadyExists (unique constraint) naming the statement.
  absl::StatusOr<std::vector<Row>> Query(const std::string& sql,
                                         const std::vector<Value>& params = {});
  absl::Status Exec(const std::string& sql, const std::vector<Value>& params = {});
  int64_t changes() const;  // rows changed by the last Exec
  // Durable when OK (synchronous=FULL). Commit and Rollback release the
  // Db's lock; the Transaction must not be used afterwards.
  absl::Status Commit();
  void Rollback();

 private:
  friend class Db;
  explicit Transaction(Db* db);
  Db* db_;
  std::unique_lock<std::mutex> lock_;
  bool open_ = false;
};

class Db {
 public:
  // Opens (creating if needed) the database file. Internal naming the path.
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // One statement in its own implicit transaction.
  absl::StatusOr<std::vector<Row>> Query(const std::string& sql,
                                         const std::vector<Value>& params = {});
  absl::Status Exec(const std::string& sql, const std::vector<Value>& params = {});

  // Starts BEGIN IMMEDIATE (takes the write lock at once).
  absl::StatusOr<std::unique_ptr<Transaction>> Begin();

  const std::string& path() const { return path_; }

 private:
  friend class Transaction;
  Db() = default;
  absl::StatusOr<std::vector<Row>> RunLocked(const std::string& sql,
                                             const std::vector<Value>& params);
  sqlite3* handle_ = nullptr;
  std::string path_;
  std::mutex mu_;
};

}  // namespace qwha::store
