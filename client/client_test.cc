// Client against a real in-process gRPC server (fake_scheduler.h): resumable,
// sha256-verified downloads, uploads, metadata, status codes, Watch.
#include "client/client.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>

#include "client/fake_scheduler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
  return bytes;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

int64_t SizeOf(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_TRUE(io::RemoveTree(dir_).ok());
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    content_ = RandomBytes(10'000, 7);
    server_.registry.AddAdapter(
        "a-1", {{"adapter.safetensors", content_}, {"config/adapter.json", "{\"rank\": 64}"}});
    ClientOptions options;
    options.address = server_.address();
    options.token = "s3cret";
    client_ = std::make_unique<Client>(options);
  }

  testing::FakeScheduler server_;
  std::unique_ptr<Client> client_;
  std::string dir_;
  std::string content_;
};

TEST_F(ClientTest, DownloadsAndVerifies) {
  const std::string dest = dir_ + "/adapter.safetensors";
  int64_t last_done = 0, last_total = 0;
  ASSERT_TRUE(client_
                  ->DownloadAdapterFile("a-1", "adapter.safetensors", dest,
                                        [&](int64_t done, int64_t total) {
                                          last_done = done;
                                          last_total = total;
                                        })
                  .ok());
  EXPECT_EQ(*io::ReadFile(dest), content_);
  EXPECT_FALSE(Exists(dest + ".part"));
  EXPECT_EQ(last_done, 10'000);
  EXPECT_EQ(last_total, 10'000);
  // The token travels as bearer metadata on every call.
  for (const std::string& value : server_.registry.authorization) EXPECT_EQ(value, "Bearer s3cret");
}

TEST_F(ClientTest, ResumesWithinOneCallWhenTheStreamEndsEarly) {
  server_.registry.CutDownloads(/*streams=*/1, /*bytes=*/4'000, grpc::StatusCode::OK);
  const std::string dest = dir_ + "/adapter.safetensors";
  ASSERT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
  EXPECT_THAT(server_.registry.download_offsets, ElementsAre(0, 4'000));
  EXPECT_EQ(*io::ReadFile(dest), content_);
  EXPECT_FALSE(Exists(dest + ".part"));
}

TEST_F(ClientTest, KeepsThePartAndResumesFromItsSizeOnTheNextCall) {
  server_.registry.CutDownloads(1, 6'000, grpc::StatusCode::INTERNAL);
  const std::string dest = dir_ + "/adapter.safetensors";
  absl::Status first = client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest);
  EXPECT_EQ(first.code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(Exists(dest));
  EXPECT_EQ(SizeOf(dest + ".part"), 6'000);

  ASSERT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
  EXPECT_THAT(server_.registry.download_offsets, ElementsAre(0, 6'000));
  EXPECT_EQ(*io::ReadFile(dest), content_);
  EXPECT_FALSE(Exists(dest + ".part"));
}

TEST_F(ClientTest, RetriesUnavailableStreams) {
  server_.registry.CutDownloads(2, 3'000, grpc::StatusCode::UNAVAILABLE);
  const std::string dest = dir_ + "/adapter.safetensors";
  ASSERT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
  EXPECT_THAT(server_.registry.download_offsets, ElementsAre(0, 3'000, 6'000));
  EXPECT_EQ(*io::ReadFile(dest), content_);
}

TEST_F(ClientTest, WrongDigestIsDataLossAndLeavesNoFile) {
  server_.registry.SetAdvertisedSha256("a-1", "adapter.safetensors", io::Sha256Hex("other"));
  const std::string dest = dir_ + "/adapter.safetensors";
  absl::Status status = client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(io::Sha256Hex("other")));
  EXPECT_THAT(std::string(status.message()), HasSubstr(io::Sha256Hex(content_)));
  EXPECT_FALSE(Exists(dest));
  EXPECT_FALSE(Exists(dest + ".part"));
}

TEST_F(ClientTest, CorruptPartIsDetectedOnResume) {
  const std::string dest = dir_ + "/adapter.safetensors";
  // A .part whose bytes are not the file's start: the digest check catches it.
  ASSERT_TRUE(io::WriteFileAtomically(dest + ".part", std::string(5'000, 'x')).ok());
  absl::Status status = client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(server_.registry.download_offsets, ElementsAre(5'000));
  EXPECT_FALSE(Exists(dest));
  EXPECT_FALSE(Exists(dest + ".part"));
  // The next try starts over and succeeds.
  ASSERT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
  EXPECT_EQ(*io::ReadFile(dest), content_);
}

TEST_F(ClientTest, OversizedPartIsDiscarded) {
  const std::string dest = dir_ + "/adapter.safetensors";
  ASSERT_TRUE(io::WriteFileAtomically(dest + ".part", std::string(20'000, 'x')).ok());
  ASSERT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
  EXPECT_THAT(server_.registry.download_offsets, ElementsAre(0));
  EXPECT_EQ(*io::ReadFile(dest), content_);
}

TEST_F(ClientTest, ExistingVerifiedFileIsNotDownloadedAgain) {
  const std::string dest = dir_ + "/adapter.safetensors";
  ASSERT_TRUE(io::WriteFileAtomically(dest, content_).ok());
  ASSERT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
  EXPECT_TRUE(server_.registry.download_offsets.empty());
}

TEST_F(ClientTest, UnknownFileOrAdapterIsNotFound) {
  EXPECT_EQ(client_->DownloadAdapterFile("a-1", "nope", dir_ + "/x").code(),
            absl::StatusCode::kNotFound);
  auto missing = client_->GetAdapter("a-404");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "adapter a-404");  // the server's message, kept
}

TEST_F(ClientTest, PullDownloadsEveryFile) {
  auto adapter = client_->PullAdapter("a-1", dir_ + "/pulled");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(*io::ReadFile(dir_ + "/pulled/adapter.safetensors"), content_);
  EXPECT_EQ(*io::ReadFile(dir_ + "/pulled/config/adapter.json"), "{\"rank\": 64}");
}

TEST_F(ClientTest, PullRefusesNamesOutsideTheDirectory) {
  server_.registry.AddAdapter("a-evil", {{"../escape", "x"}});
  auto adapter = client_->PullAdapter("a-evil", dir_ + "/pulled");
  EXPECT_EQ(adapter.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(Exists(dir_ + "/escape"));
}

TEST_F(ClientTest, UploadDatasetSendsSizeAndDigestThenMiBChunks) {
  const std::string data = RandomBytes((5 << 20) / 2, 3);  // 2.5 MiB: three chunks
  const std::string path = dir_ + "/train.jsonl";
  ASSERT_TRUE(io::WriteFileAtomically(path, data).ok());
  auto dataset = client_->UploadDataset(path, "train");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->name(), "train");
  const auto& header = server_.registry.upload_header;
  ASSERT_EQ(header.files_size(), 1);
  EXPECT_EQ(header.files(0).name(), "train.jsonl");
  EXPECT_EQ(header.files(0).size(), static_cast<int64_t>(data.size()));
  EXPECT_EQ(header.files(0).sha256(), io::Sha256Hex(data));
  EXPECT_EQ(server_.registry.uploaded["train.jsonl"], data);
  EXPECT_EQ(server_.registry.largest_upload_chunk, kChunkBytes);
}

TEST_F(ClientTest, UploadModelSendsEveryFileSorted) {
  ASSERT_EQ(::mkdir((dir_ + "/model").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir_ + "/model/sub").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir_ + "/model/.cache").c_str(), 0755), 0);
  ASSERT_TRUE(io::WriteFileAtomically(dir_ + "/model/config.json", "{}").ok());
  ASSERT_TRUE(io::WriteFileAtomically(dir_ + "/model/sub/b.safetensors", "bb").ok());
  ASSERT_TRUE(io::WriteFileAtomically(dir_ + "/model/.cache/skip", "no").ok());
  ASSERT_EQ(::symlink((dir_ + "/model/config.json").c_str(), (dir_ + "/model/a.json").c_str()), 0);
  auto model = client_->UploadModel(dir_ + "/model/", "tiny");
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const auto& file : server_.registry.upload_header.files()) names.push_back(file.name());
  EXPECT_THAT(names, ElementsAre("a.json", "config.json", "sub/b.safetensors"));
  EXPECT_EQ(server_.registry.uploaded["sub/b.safetensors"], "bb");
  EXPECT_EQ(client_->UploadModel(dir_ + "/nope", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, WatchStreamsUntilTheJobFinishes) {
  using qwha::v1::JobEvent;
  server_.jobs.SetEvents(
      "j-9", {testing::MakeEvent("j-9", 1, JobEvent::STATE, qwha::v1::QUEUED),
              testing::MakeEvent("j-9", 2, JobEvent::STATE, qwha::v1::RUNNING),
              testing::MakeEvent("j-9", 3, JobEvent::PROGRESS, qwha::v1::RUNNING, 5, 10),
              testing::MakeEvent("j-9", 4, JobEvent::STATE, qwha::v1::SUCCEEDED)});
  std::vector<int64_t> sequences;
  auto job = client_->Watch("j-9", [&](const JobEvent& event) {
    sequences.push_back(event.sequence());
    return true;
  });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), qwha::v1::SUCCEEDED);
  EXPECT_THAT(sequences, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(client_->Watch("j-404", [](const JobEvent&) { return true; }).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, WatchReconnectsAfterTheLastSequenceSeen) {
  using qwha::v1::JobEvent;
  server_.jobs.SetEvents(
      "j-9", {testing::MakeEvent("j-9", 1, JobEvent::STATE, qwha::v1::RUNNING),
              testing::MakeEvent("j-9", 2, JobEvent::PROGRESS, qwha::v1::RUNNING, 5, 10),
              testing::MakeEvent("j-9", 3, JobEvent::STATE, qwha::v1::FAILED)});
  server_.jobs.CutNextWatch(2);
  std::vector<int64_t> sequences;
  auto job = client_->Watch("j-9", [&](const JobEvent& event) {
    sequences.push_back(event.sequence());
    return true;
  });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), qwha::v1::FAILED);
  EXPECT_THAT(sequences, ElementsAre(1, 2, 3));  // each event once
  EXPECT_THAT(server_.jobs.watch_after, ElementsAre(0, 2));
}

TEST_F(ClientTest, WatchStopsWhenTheCallbackSaysSo) {
  using qwha::v1::JobEvent;
  server_.jobs.SetEvents("j-9",
                         {testing::MakeEvent("j-9", 1, JobEvent::STATE, qwha::v1::QUEUED),
                          testing::MakeEvent("j-9", 2, JobEvent::STATE, qwha::v1::RUNNING),
                          testing::MakeEvent("j-9", 3, JobEvent::STATE, qwha::v1::SUCCEEDED)});
  int calls = 0;
  auto job = client_->Watch("j-9", [&](const JobEvent&) { return ++calls < 2; });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(job->state(), qwha::v1::RUNNING);
}

TEST_F(ClientTest, ConcurrentDownloadsToOneDestinationAreRefused) {
  const std::string dest = dir_ + "/adapter.safetensors";
  int fd = ::open((dest + ".part").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);  // as a running download holds it
  absl::Status status = client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  ::close(fd);
  EXPECT_TRUE(client_->DownloadAdapterFile("a-1", "adapter.safetensors", dest).ok());
}

TEST(ClientUnreachableTest, IsUnavailable) {
  ClientOptions options;
  options.address = "127.0.0.1:1";
  options.timeout = std::chrono::seconds(5);
  Client client(options);
  EXPECT_EQ(client.GetJob("j-1").status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace qwha::client
