// The service end to end: real qwha-scheduler and qwha-worker processes on
// loopback, driven over gRPC, HTTP and qwhactl. Jobs fine-tune the bundled
// demo model (tests/fixtures/demo) for a few short steps on the CPU.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <set>
#include <thread>

#include "server/http/http_get.h"
#include "tests/e2e/harness.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::e2e {
namespace {

std::string TrainData() { return Runfile("tests/fixtures/demo/data/train.jsonl"); }

v1::Job Submit(Harness& h, const v1::JobSpec& spec, const std::string& key = "") {
  grpc::ClientContext context;
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  request.set_idempotency_key(key);
  v1::Job job;
  grpc::Status status = h.jobs().SubmitJob(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

std::vector<v1::JobEvent> Events(Harness& h, const std::string& id) {
  grpc::ClientContext context;
  v1::ListJobEventsRequest request;
  request.set_id(id);
  v1::ListJobEventsResponse response;
  EXPECT_TRUE(h.jobs().ListJobEvents(&context, request, &response).ok());
  return {response.events().begin(), response.events().end()};
}

TEST(ServiceE2eTest, SubmitSucceedPullWithDigestCheck) {
  Harness h("submit");
  ASSERT_TRUE(h.StartScheduler().ok());
  auto model = h.RegisterDemoModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_TRUE(h.StartWorker("w1").ok());
  v1::Job job = Submit(h, h.SmallJob(*model, *dataset, 4));
  auto done = h.WaitFinished(job.id(), 300);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::SUCCEEDED) << done->error();

  grpc::ClientContext context;
  v1::GetAdapterRequest get;
  get.set_id(done->adapter_id());
  v1::Adapter adapter;
  ASSERT_TRUE(h.registry().GetAdapter(&context, get, &adapter).ok());
  EXPECT_EQ(adapter.job_id(), job.id());
  std::set<std::string> names;
  for (const v1::FileInfo& file : adapter.files()) {
    names.insert(file.name());
    // gRPC download, whole and resumed from the middle.
    for (int64_t offset : {int64_t{0}, file.size() / 2}) {
      grpc::ClientContext dc;
      v1::DownloadRequest request;
      request.set_adapter_id(adapter.id());
      request.set_file(file.name());
      request.set_offset(offset);
      auto reader = h.registry().DownloadAdapter(&dc, request);
      std::string data;
      v1::Chunk chunk;
      while (reader->Read(&chunk)) data += chunk.data();
      ASSERT_TRUE(reader->Finish().ok());
      ASSERT_EQ(static_cast<int64_t>(data.size()), file.size() - offset) << file.name();
      if (offset == 0) EXPECT_EQ(io::Sha256Hex(data), file.sha256()) << file.name();
    }
    // HTTP GET, as curl would.
    auto http = http::HttpGet("127.0.0.1", h.http_port(),
                              absl::StrCat("/v1/adapters/", adapter.id(), "/files/", file.name()));
    ASSERT_TRUE(http.ok());
    EXPECT_EQ(http->status, 200);
    EXPECT_EQ(io::Sha256Hex(http->body), file.sha256());
  }
  EXPECT_TRUE(names.count("adapter.safetensors"));
  EXPECT_TRUE(names.count("adapter_config.json"));
  EXPECT_TRUE(names.count("metrics.json"));

  // qwhactl pulls and verifies too.
  auto [code, output] = h.Qwhactl({"adapters", "pull", adapter.id(), "--dir", h.dir() + "/pulled"});
  EXPECT_EQ(code, 0) << output;
  auto pulled = io::ReadFile(h.dir() + "/pulled/adapter.safetensors");
  ASSERT_TRUE(pulled.ok()) << output;
  for (const v1::FileInfo& file : adapter.files()) {
    if (file.name() == "adapter.safetensors") EXPECT_EQ(io::Sha256Hex(*pulled), file.sha256());
  }
  // The scheduler's metrics saw it (the gauge is refreshed every 0.5 s).
  bool counted = false;
  for (int i = 0; i < 50 && !counted; ++i) {
    auto metrics = http::HttpGet("127.0.0.1", h.http_port(), "/metrics");
    ASSERT_TRUE(metrics.ok());
    counted = metrics->body.find("qwha_jobs{state=\"succeeded\"} 1") != std::string::npos;
    if (!counted) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(counted);
}

TEST(ServiceE2eTest, BadInputIsRejectedNamingTheFieldAndStoresNothing) {
  Harness h("bad_input");
  ASSERT_TRUE(h.StartScheduler(3, {"--max-dataset-bytes", "200000"}).ok());
  auto model = h.RegisterDemoModel();
  ASSERT_TRUE(model.ok()) << model.status();
  std::string small = h.dir() + "/small.jsonl";
  ASSERT_TRUE(io::WriteFileAtomically(small, "{\"text\": \"In the beginning\"}\n").ok());
  auto dataset = h.UploadDataset(small, "small");
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  auto expect_rejected = [&](const v1::JobSpec& spec, grpc::StatusCode code,
                             const std::string& field) {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    v1::Job job;
    grpc::Status status = h.jobs().SubmitJob(&context, request, &job);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_NE(status.error_message().find(field), std::string::npos) << status.error_message();
  };
  v1::JobSpec bits = h.SmallJob(*model, *dataset, 2);
  bits.mutable_quantization()->set_bits(5);
  expect_rejected(bits, grpc::INVALID_ARGUMENT, "quantization.bits");
  v1::JobSpec unknown = h.SmallJob("m-doesnotexist", *dataset, 2);
  expect_rejected(unknown, grpc::NOT_FOUND, "base_model_id");
  v1::JobSpec group = h.SmallJob(*model, *dataset, 2);
  group.mutable_quantization()->set_group_size(48);  // 256 % 48 != 0
  expect_rejected(group, grpc::INVALID_ARGUMENT, "quantization.group_size");

  std::string bad = h.dir() + "/bad.jsonl";
  ASSERT_TRUE(io::WriteFileAtomically(bad, "{\"text\": \"ok\"}\n{\"text\": 42}\n").ok());
  auto malformed = h.UploadDataset(bad, "bad");
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(malformed.status().message()).find("line 2"), std::string::npos)
      << malformed.status();
  auto oversize = h.UploadDataset(TrainData(), "big");  // > 200000 bytes
  EXPECT_EQ(oversize.status().code(), absl::StatusCode::kInvalidArgument) << oversize.status();

  grpc::ClientContext context;
  v1::RegisterModelRequest outside;
  outside.set_name("etc");
  outside.set_path("/etc");
  v1::BaseModel ignored;
  grpc::Status status = h.registry().RegisterModel(&context, outside, &ignored);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("path"), std::string::npos) << status.error_message();

  // Nothing was stored: no jobs, one dataset, one model.
  grpc::ClientContext lc, dc, mc;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(h.jobs().ListJobs(&lc, v1::ListJobsRequest(), &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
  v1::ListDatasetsResponse datasets;
  ASSERT_TRUE(h.registry().ListDatasets(&dc, v1::ListDatasetsRequest(), &datasets).ok());
  EXPECT_EQ(datasets.datasets_size(), 1);
  v1::ListModelsResponse models;
  ASSERT_TRUE(h.registry().ListModels(&mc, v1::ListModelsRequest(), &models).ok());
  EXPECT_EQ(models.models_size(), 1);
}

TEST(ServiceE2eTest, WorkerKilledMidTrainingJobResumesElsewhere) {
  Harness h("worker_kill");
  ASSERT_TRUE(h.StartScheduler(/*lease_seconds=*/3).ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  auto first = h.StartWorker("w1");
  ASSERT_TRUE(first.ok());
  v1::Job job = Submit(h, h.SmallJob(*model, *dataset, 40));
  auto running = h.WaitFor(job.id(), 300, [](const v1::Job& j) {
    return j.state() == v1::RUNNING && !j.resume_checkpoint().empty() && j.progress().step() >= 4;
  });
  ASSERT_TRUE(running.ok()) << running.status();
  h.worker(*first).Signal(SIGKILL);
  h.worker(*first).Wait(10000);
  ASSERT_TRUE(h.StartWorker("w2").ok());
  auto done = h.WaitFinished(job.id(), 300);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  EXPECT_EQ(done->attempts(), 2);
  bool resumed = false;
  for (const auto& e : Events(h, job.id())) {
    resumed = resumed || e.message().find("resumes from step-") != std::string::npos;
  }
  EXPECT_TRUE(resumed);
}

TEST(ServiceE2eTest, SchedulerKilledAndRestartedLosesNothing) {
  Harness h("scheduler_kill");
  ASSERT_TRUE(h.StartScheduler(3).ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Submit(h, h.SmallJob(*model, *dataset, 6)).id());
  ASSERT_TRUE(h.StartWorker("w1").ok());
  ASSERT_TRUE(
      h.WaitFor(ids[0], 300, [](const v1::Job& j) { return j.state() == v1::RUNNING; }).ok());
  h.KillScheduler();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_TRUE(h.StartScheduler(3).ok());
  for (const std::string& id : ids) {
    auto done = h.WaitFinished(id, 400);
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state(), v1::SUCCEEDED) << id << ": " << done->error();
  }
  grpc::ClientContext context;
  v1::ListAdaptersResponse adapters;
  ASSERT_TRUE(h.registry().ListAdapters(&context, v1::ListAdaptersRequest(), &adapters).ok());
  EXPECT_EQ(adapters.adapters_size(), 3);
}

TEST(ServiceE2eTest, CancelReachesTheWorkerWithinFiveSeconds) {
  Harness h("cancel");
  ASSERT_TRUE(h.StartScheduler(15).ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  ASSERT_TRUE(h.StartWorker("w1").ok());
  v1::Job job = Submit(h, h.SmallJob(*model, *dataset, 100000));
  ASSERT_TRUE(h.WaitFor(job.id(), 300, [](const v1::Job& j) {
                 return j.state() == v1::RUNNING && j.progress().phase() == v1::TRAINING;
               }).ok());
  auto start = std::chrono::steady_clock::now();
  auto [code, output] = h.Qwhactl({"cancel", job.id()});
  EXPECT_EQ(code, 0) << output;
  auto done = h.WaitFinished(job.id(), 30);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::CANCELLED);
  EXPECT_LE(seconds, 5.5);
  // The worker is free again: a new job runs.
  v1::Job next = Submit(h, h.SmallJob(*model, *dataset, 2));
  auto finished = h.WaitFinished(next.id(), 300);
  ASSERT_TRUE(finished.ok());
  EXPECT_EQ(finished->state(), v1::SUCCEEDED) << finished->error();
}

TEST(ServiceE2eTest, TwoHundredConcurrentSubmitsAreAllAccountedFor) {
  Harness h("concurrent");
  ASSERT_TRUE(h.StartScheduler(3).ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  std::mutex mu;
  std::set<std::string> ids;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < 200; i += 16) {
        grpc::ClientContext context;
        v1::SubmitJobRequest request;
        *request.mutable_spec() = h.SmallJob(*model, *dataset, 2);
        request.set_idempotency_key(absl::StrCat("job-", i));
        v1::Job job;
        if (!h.jobs().SubmitJob(&context, request, &job).ok()) {
          ++failures;
          continue;
        }
        std::lock_guard<std::mutex> lock(mu);
        ids.insert(job.id());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ids.size(), 200u);
  std::set<std::string> listed;
  std::string token;
  do {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    request.set_page_size(64);
    request.set_page_token(token);
    v1::ListJobsResponse response;
    ASSERT_TRUE(h.jobs().ListJobs(&context, request, &response).ok());
    for (const auto& j : response.jobs()) listed.insert(j.id());
    token = response.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(listed, ids);
}

}  // namespace
}  // namespace qwha::e2e
