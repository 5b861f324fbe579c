#include "server/registry/blob_store.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string data(n, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  return data;
}

int CountEntries(const std::string& dir) {
  int n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/blob_store_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(io::RemoveTree(root_).ok());
    auto store = BlobStore::Open(root_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  std::string root_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, WriteCommitAndReadAtOffsets) {
  const std::string data = RandomBytes(3 * 1000 * 1000 + 17, 1);
  auto writer = store_->NewWriter("test blob", 1 << 30);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (size_t at = 0; at < data.size(); at += 65536) {
    ASSERT_TRUE((*writer)->Append(std::string_view(data).substr(at, 65536)).ok());
  }
  EXPECT_EQ((*writer)->size(), static_cast<int64_t>(data.size()));
  const std::string sha = io::Sha256Hex(data);
  EXPECT_FALSE(store_->Contains(sha));  // invisible until committed
  auto info = (*writer)->Commit(sha, static_cast<int64_t>(data.size()));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->sha256, sha);
  EXPECT_EQ(info->size, static_cast<int64_t>(data.size()));
  EXPECT_TRUE(store_->Contains(sha));
  auto path = store_->PathOf(sha);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, absl::StrCat(root_, "/", sha.substr(0, 2), "/", sha));
  EXPECT_EQ(*io::ReadFile(*path), data);

  EXPECT_EQ(*store_->Read(sha, 0, 10), data.substr(0, 10));
  EXPECT_EQ(*store_->Read(sha, 1234567, 1 << 20), data.substr(1234567, 1 << 20));
  EXPECT_EQ(*store_->Read(sha, data.size() - 5, 100), data.substr(data.size() - 5));  // short
  EXPECT_EQ(*store_->Read(sha, data.size() + 5, 100), "");
  EXPECT_EQ(store_->Read(std::string(64, '0'), 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->TotalBytes(), static_cast<int64_t>(data.size()));
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0);

  // The same content again is fine (idempotent), then Remove is idempotent.
  auto again = store_->NewWriter("again", 1 << 30);
  ASSERT_TRUE((*again)->Append(data).ok());
  ASSERT_TRUE((*again)->Commit().ok());
  EXPECT_EQ(store_->TotalBytes(), static_cast<int64_t>(data.size()));
  ASSERT_TRUE(store_->Remove(sha).ok());
  EXPECT_FALSE(store_->Contains(sha));
  EXPECT_TRUE(store_->Remove(sha).ok());
  EXPECT_EQ(store_->Remove("../etc").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BlobStoreTest, DigestOrSizeMismatchIsDataLossAndLeavesNothing) {
  const std::string data = RandomBytes(100000, 2);
  {
    auto writer = store_->NewWriter("dataset train.jsonl", 1 << 20);
    ASSERT_TRUE((*writer)->Append(data).ok());
    auto info = (*writer)->Commit(std::string(64, 'a'));
    EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(info.status().message().find("dataset train.jsonl"), std::string::npos);
  }
  {
    auto writer = store_->NewWriter("model.safetensors", 1 << 20);
    ASSERT_TRUE((*writer)->Append(data).ok());
    auto info = (*writer)->Commit("", 99);
    EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss);
  }
  EXPECT_FALSE(store_->Contains(io::Sha256Hex(data)));
  EXPECT_EQ(store_->TotalBytes(), 0);
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0);
}

TEST_F(BlobStoreTest, LimitIsInvalidArgumentNamingTheBlob) {
  auto writer = store_->NewWriter("dataset big.jsonl", 1000);
  ASSERT_TRUE((*writer)->Append(std::string(1000, 'x')).ok());
  absl::Status over = (*writer)->Append("y");
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(over.message().find("dataset big.jsonl"), std::string::npos) << over;
  EXPECT_NE(over.message().find("1000"), std::string::npos) << over;
  writer->reset();  // abandoned: the temp file goes
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0);
  EXPECT_EQ(store_->TotalBytes(), 0);
}

TEST_F(BlobStoreTest, ImportFileAndStaleTempFilesAreRemovedOnOpen) {
  const std::string data = RandomBytes(2500000, 3);
  const std::string source = root_ + "-source.bin";
  ASSERT_TRUE(io::WriteFileAtomically(source, data).ok());
  auto info = store_->ImportFile(source);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->sha256, io::Sha256Hex(data));
  EXPECT_EQ(*io::ReadFile(*store_->PathOf(info->sha256)), data);
  EXPECT_EQ(store_->ImportFile(root_ + "-missing").status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(io::WriteFileAtomically(root_ + "/tmp/crashed-writer", "partial").ok());
  auto reopened = BlobStore::Open(root_);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0);
  EXPECT_TRUE((*reopened)->Contains(info->sha256));
}

}  // namespace
}  // namespace qwha::registry
