// UploadReceiver (the header/data protocol) and DatasetValidator (streaming
// JSONL checks), on the demo fine-tuning set of tests/fixtures/demo.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

#include "absl/strings/str_cat.h"
#include "server/registry/dataset_validator.h"
#include "server/registry/upload_receiver.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

std::string DemoDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return srcdir != nullptr ? absl::StrCat(srcdir, "/qwha/tests/fixtures/demo")
                           : std::string("tests/fixtures/demo");
}

// Feeds `content` in pieces of random sizes (1 byte to 4 KiB).
absl::Status FeedInPieces(DatasetValidator& v, const std::string& content, uint32_t seed) {
  std::mt19937 rng(seed);
  for (size_t at = 0; at < content.size();) {
    size_t n = std::min<size_t>(content.size() - at, 1 + rng() % 4096);
    if (absl::Status s = v.Feed(std::string_view(content).substr(at, n)); !s.ok()) return s;
    at += n;
  }
  return v.Finish();
}

TEST(DatasetValidatorTest, DemoSetInAnyPiecesCountsRecordsAndForm) {
  auto content = io::ReadFile(DemoDir() + "/data/train.jsonl");
  ASSERT_TRUE(content.ok()) << content.status();
  for (uint32_t seed : {1u, 2u, 3u}) {
    DatasetValidator v("train");
    ASSERT_TRUE(FeedInPieces(v, *content, seed).ok());
    EXPECT_EQ(v.records(), 2000);
    EXPECT_EQ(v.format(), "prompt_completion");
  }
}

TEST(DatasetValidatorTest, NamesTheFirstBadLine) {
  auto content = io::ReadFile(DemoDir() + "/data/eval.jsonl");
  ASSERT_TRUE(content.ok());
  // Break line 57: cut it in the middle of its JSON.
  size_t at = 0;
  for (int line = 1; line < 57; ++line) at = content->find('\n', at) + 1;
  std::string broken = content->substr(0, at + 10) + "\n" + content->substr(at);
  DatasetValidator v("eval");
  absl::Status s = FeedInPieces(v, broken, 7);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dataset eval line 57: invalid JSON"), std::string::npos) << s;
  EXPECT_EQ(v.Feed("{\"text\": \"x\"}\n"), s);  // sticky
}

TEST(DatasetValidatorTest, BomCrlfBlankLinesMissingFinalNewline) {
  DatasetValidator v("chat");
  const std::string content =
      "\xEF\xBB\xBF{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
      "{\"role\": \"assistant\", \"content\": \"hello\"}]}\r\n\r\n   \n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
      "{\"role\": \"assistant\", \"content\": \"b\"}]}";
  for (char c : content) ASSERT_TRUE(v.Feed(std::string_view(&c, 1)).ok());
  ASSERT_TRUE(v.Finish().ok());
  EXPECT_EQ(v.records(), 2);
  EXPECT_EQ(v.format(), "messages");

  DatasetValidator mixed("mixed");
  absl::Status s =
      FeedInPieces(mixed, "{\"text\": \"a\"}\n\n{\"prompt\": \"p\", \"completion\": \"c\"}\n", 1);
  EXPECT_NE(s.message().find("dataset mixed line 3: form"), std::string::npos) << s;
  EXPECT_NE(s.message().find("of line 1"), std::string::npos) << s;

  DatasetValidator empty("empty");
  s = FeedInPieces(empty, "\n  \n", 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("dataset empty: no examples"), std::string::npos) << s;
}

TEST(ValidateNameTest, Rules) {
  EXPECT_TRUE(ValidateName("name", "llama-3.2-1b").ok());
  EXPECT_TRUE(ValidateName("name", "team/llama..v2").ok());
  EXPECT_FALSE(ValidateName("name", "").ok());
  EXPECT_FALSE(ValidateName("name", std::string(201, 'x')).ok());
  EXPECT_TRUE(ValidateName("name", std::string(200, 'x')).ok());
  EXPECT_FALSE(ValidateName("name", "/etc/passwd").ok());
  absl::Status s = ValidateName("file name", "a/../b");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("file name 'a/../b'"), std::string::npos) << s;
  EXPECT_FALSE(ValidateName("name", "..").ok());
}

class UploadReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/upload_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(io::RemoveTree(root_).ok());
    auto blobs = BlobStore::Open(root_);
    ASSERT_TRUE(blobs.ok());
    blobs_ = *std::move(blobs);
  }
  static v1::UploadChunk Data(const std::string& file, const std::string& bytes) {
    v1::UploadChunk chunk;
    chunk.mutable_data()->set_name(file);
    chunk.mutable_data()->set_data(bytes);
    return chunk;
  }
  static v1::UploadHeader Header(const std::string& name,
                                 std::vector<std::tuple<std::string, int64_t, std::string>> files) {
    v1::UploadHeader header;
    header.set_name(name);
    for (const auto& [file, size, sha] : files) {
      v1::FileInfo* f = header.add_files();
      f->set_name(file);
      f->set_size(size);
      f->set_sha256(sha);
    }
    return header;
  }
  std::string root_;
  std::unique_ptr<BlobStore> blobs_;
};

TEST_F(UploadReceiverTest, InterleavedFilesCommitInHeaderOrder) {
  UploadReceiver r(blobs_.get(), "model", 1000, 10);
  const std::string a = "aaaaaaaaaa", b = "bbbbb";
  ASSERT_TRUE(r.Header(Header("m", {{"config.json", 10, io::Sha256Hex(a)},
                                    {"model.safetensors", 5, ""},
                                    {"empty.json", 0, ""}}))
                  .ok());
  std::string seen;
  r.set_observer([&](const std::string& file, std::string_view data) {
    absl::StrAppend(&seen, file, ":", absl::string_view(data.data(), data.size()), ";");
    return absl::OkStatus();
  });
  ASSERT_TRUE(r.Message(Data("config.json", a.substr(0, 4))).ok());
  ASSERT_TRUE(r.Message(Data("model.safetensors", b)).ok());
  EXPECT_EQ(r.CheckComplete().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.Message(Data("config.json", a.substr(4))).ok());
  EXPECT_EQ(seen, "config.json:aaaa;model.safetensors:bbbbb;config.json:aaaaaa;");
  std::vector<std::string> committed;
  auto files = r.Commit(&committed);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].sha256(), io::Sha256Hex(a));
  EXPECT_EQ((*files)[1].sha256(), io::Sha256Hex(b));
  EXPECT_EQ((*files)[2].sha256(), io::Sha256Hex(""));
  EXPECT_EQ(committed.size(), 3u);
  EXPECT_TRUE(blobs_->Contains(io::Sha256Hex(b)));
}

TEST_F(UploadReceiverTest, ProtocolErrorsNameTheFileAndLeaveNothing) {
  {
    UploadReceiver r(blobs_.get(), "dataset", 100, 1);
    absl::Status s = r.Message(Data("x", "y"));
    EXPECT_NE(s.message().find("header"), std::string::npos) << s;
    EXPECT_NE(r.Header(Header("", {{"x", 1, ""}})).message().find("name"), std::string::npos);
    EXPECT_NE(r.Header(Header("d", {{"../x", 1, ""}})).message().find("file name '../x'"),
              std::string::npos);
    s = r.Header(Header("d", {{"big.jsonl", 101, ""}}));
    EXPECT_NE(s.message().find("big.jsonl"), std::string::npos) << s;
    EXPECT_NE(s.message().find("limit of 100 bytes"), std::string::npos) << s;
    EXPECT_FALSE(r.Header(Header("d", {{"a", 1, ""}, {"b", 1, ""}})).ok());  // max_files 1
    EXPECT_FALSE(r.Header(Header("d", {{"a", 1, "xyz"}})).ok());
    EXPECT_TRUE(r.Header(Header("d", {{"a", 1, ""}})).ok());  // failed headers left no trace
  }
  {
    UploadReceiver r(blobs_.get(), "dataset", 100, 1);
    ASSERT_TRUE(r.Header(Header("d", {{"t.jsonl", 4, std::string(64, 'A')}})).ok());
    EXPECT_EQ(r.Message(v1::UploadChunk()).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.Message(Data("other", "x")).message().find("'other'"), std::string::npos);
    ASSERT_TRUE(r.Message(Data("t.jsonl", "abcd")).ok());
    absl::Status s = r.Message(Data("t.jsonl", "e"));
    EXPECT_NE(s.message().find("t.jsonl: more than the 4 bytes"), std::string::npos) << s;
    std::vector<std::string> committed;
    auto files = r.Commit(&committed);  // declared digest (upper-case accepted) does not match
    EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(files.status().message().find("t.jsonl"), std::string::npos) << files.status();
    EXPECT_TRUE(committed.empty());
  }
  EXPECT_EQ(blobs_->TotalBytes(), 0);
}

}  // namespace
}  // namespace qwha::registry
