#include "server/store/sqlite_db.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "server/store/schema.h"

namespace qwha::store {
namespace {

std::string FreshPath(const std::string& name) {
  std::string path = ::testing::TempDir() + "/" + name;
  ::unlink(path.c_str());
  ::unlink((path + "-wal").c_str());
  ::unlink((path + "-shm").c_str());
  return path;
}

TEST(SqliteDbTest, SchemaIsCreatedOnceAndVersionChecked) {
  std::string path = FreshPath("schema.db");
  {
    auto db = Db::Open(path);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(EnsureSchema(**db).ok());
    ASSERT_TRUE(EnsureSchema(**db).ok());  // idempotent
    auto mode = (*db)->Query("PRAGMA journal_mode");
    ASSERT_TRUE(mode.ok());
    EXPECT_EQ(AsString((*mode)[0][0]), "wal");
    ASSERT_TRUE((*db)->Exec("UPDATE meta SET value = '99' WHERE key = 'schema_version'").ok());
  }
  auto db = Db::Open(path);
  ASSERT_TRUE(db.ok());
  absl::Status s = EnsureSchema(**db);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("99"), std::string::npos);
}

TEST(SqliteDbTest, VersionOneStoreIsUpgradedInPlaceKeepingItsRows) {
  std::string path = FreshPath("upgrade.db");
  {
    // What a version-1 scheduler left: its tables (a job row among them)
    // and no inference_servers / deployments tables.
    auto db = Db::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(EnsureSchema(**db).ok());
    for (const char* table : {"deployment_targets", "deployments", "inference_servers"}) {
      ASSERT_TRUE((*db)->Exec(std::string("DROP TABLE ") + table).ok());
    }
    ASSERT_TRUE((*db)->Exec("UPDATE meta SET value = '1' WHERE key = 'schema_version'").ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO blobs(sha256, size, created_at) VALUES('ab', 1, 0)").ok());
  }
  auto db = Db::Open(path);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(EnsureSchema(**db).ok());
  auto version = (*db)->Query("SELECT value FROM meta WHERE key = 'schema_version'");
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(AsString((*version)[0][0]), std::to_string(kSchemaVersion));
  EXPECT_EQ(AsInt((*(*db)->Query("SELECT COUNT(*) FROM blobs"))[0][0]), 1);
  EXPECT_TRUE((*db)->Query("SELECT COUNT(*) FROM deployments").ok());
  EXPECT_TRUE((*db)->Query("SELECT COUNT(*) FROM inference_servers").ok());
}

TEST(SqliteDbTest, TransactionsCommitRollBackAndSerialize) {
  auto db = Db::Open(FreshPath("tx.db"));
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t(k TEXT PRIMARY KEY, n INTEGER, x REAL, b BLOB)").ok());
  {
    auto tx = (*db)->Begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE((*tx)
                    ->Exec("INSERT INTO t VALUES(?, ?, ?, ?)",
                           {std::string("a"), int64_t{1}, 2.5, std::string("\0\1", 2)})
                    .ok());
  }  // rolled back by the destructor
  auto rows = (*db)->Query("SELECT COUNT(*) FROM t");
  EXPECT_EQ(AsInt((*rows)[0][0]), 0);

  // Eight threads increment one counter 50 times each inside transactions.
  ASSERT_TRUE((*db)->Exec("INSERT INTO t(k, n) VALUES('c', 0)").ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto tx = (*db)->Begin();
        ASSERT_TRUE(tx.ok());
        auto n = (*tx)->Query("SELECT n FROM t WHERE k = 'c'");
        ASSERT_TRUE(n.ok());
        ASSERT_TRUE((*tx)->Exec("UPDATE t SET n = ? WHERE k = 'c'", {AsInt((*n)[0][0]) + 1}).ok());
        ASSERT_TRUE((*tx)->Commit().ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  rows = (*db)->Query("SELECT n FROM t WHERE k = 'c'");
  EXPECT_EQ(AsInt((*rows)[0][0]), 400);

  auto dup = (*db)->Exec("INSERT INTO t(k) VALUES('c')");
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES('b', 7, 0.25, ?)", {std::string("x\0y", 3)}).ok());
  rows = (*db)->Query("SELECT n, x, b FROM t WHERE k = 'b'");
  EXPECT_EQ(AsInt((*rows)[0][0]), 7);
  EXPECT_EQ(AsDouble((*rows)[0][1]), 0.25);
  EXPECT_EQ(AsString((*rows)[0][2]), std::string("x\0y", 3));
}

}  // namespace
}  // namespace qwha::store
