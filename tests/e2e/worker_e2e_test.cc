// The worker end to end, against the real qwha-scheduler (harness.h): what
// the service tests do not look at — the worker's /metrics, its blob cache
// across jobs, a training child that survives a scheduler restart, and
// token errors. Jobs fine-tune the demo model for a few steps on the CPU.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <regex>
#include <thread>

#include "server/http/http_get.h"
#include "tests/e2e/harness.h"
#include "worker/io/atomic_file.h"

namespace qwha::e2e {
namespace {

std::string TrainData() { return Runfile("tests/fixtures/demo/data/train.jsonl"); }

v1::Job Submit(Harness& h, const v1::JobSpec& spec) {
  grpc::ClientContext context;
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::Job job;
  grpc::Status status = h.jobs().SubmitJob(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

std::string Log(Harness& h, int worker) {
  return io::ReadFile(h.worker(worker).log_path()).value_or("");
}

// The /metrics port the worker printed ("metrics on http://127.0.0.1:P/metrics").
int MetricsPort(Harness& h, int worker) {
  const std::regex pattern("metrics on http://[^:]+:([0-9]+)/metrics");
  for (int i = 0; i < 200; ++i) {
    std::smatch m;
    const std::string log = Log(h, worker);
    if (std::regex_search(log, m, pattern)) return std::stoi(m[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

// The value of the sample line `series` ("name{labels}") in a scrape; -1 if absent.
double Sample(const std::string& scrape, const std::string& series) {
  const size_t at = scrape.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(scrape.substr(at + series.size() + 2));
}

// A scrape of the worker's /metrics once it has counted `jobs` succeeded jobs
// and is idle again, or the last one after 20 s: the worker counts a job when
// the scheduler has taken its result, so a client can see the job finished a
// moment before the worker's own metrics do.
absl::StatusOr<http::GetResult> ScrapeAfterJobs(int port, double jobs) {
  absl::StatusOr<http::GetResult> scrape;
  for (int i = 0; i < 200; ++i) {
    scrape = http::HttpGet("127.0.0.1", port, "/metrics");
    if (scrape.ok() &&
        Sample(scrape->body, "qwha_worker_jobs_total{outcome=\"succeeded\"}") == jobs &&
        Sample(scrape->body, "qwha_worker_job_phase{phase=\"idle\"}") == 1) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return scrape;
}

TEST(WorkerE2eTest, MetricsAndTheBlobCacheAcrossJobs) {
  Harness h("worker_metrics");
  ASSERT_TRUE(h.StartScheduler().ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  auto worker = h.StartWorker("w1");
  ASSERT_TRUE(worker.ok());
  const int port = MetricsPort(h, *worker);
  ASSERT_GT(port, 0) << Log(h, *worker);

  auto first = h.WaitFinished(Submit(h, h.SmallJob(*model, *dataset, 2)).id(), 300);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->state(), v1::SUCCEEDED) << first->error();
  auto scrape = ScrapeAfterJobs(port, 1);
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ(Sample(scrape->body, "qwha_worker_jobs_total{outcome=\"succeeded\"}"), 1);
  EXPECT_EQ(Sample(scrape->body, "qwha_worker_job_phase{phase=\"idle\"}"), 1);
  EXPECT_EQ(Sample(scrape->body, "qwha_worker_job_phase{phase=\"training\"}"), 0);
  const double fetched = Sample(scrape->body, "qwha_worker_blob_fetched_bytes_total");
  EXPECT_GT(fetched, 8e6);  // the demo model's weights and the dataset
  EXPECT_GT(Sample(scrape->body, "qwha_worker_blob_uploaded_bytes_total"), 0);
  EXPECT_GT(Sample(scrape->body, "qwha_worker_device_memory_total_bytes{device=\"cpu\"}"), 0);

  // Same model and dataset again: nothing is fetched a second time.
  auto second = h.WaitFinished(Submit(h, h.SmallJob(*model, *dataset, 2)).id(), 300);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->state(), v1::SUCCEEDED) << second->error();
  scrape = ScrapeAfterJobs(port, 2);
  ASSERT_TRUE(scrape.ok());
  EXPECT_EQ(Sample(scrape->body, "qwha_worker_jobs_total{outcome=\"succeeded\"}"), 2);
  EXPECT_EQ(Sample(scrape->body, "qwha_worker_blob_fetched_bytes_total"), fetched);
}

TEST(WorkerE2eTest, TrainingContinuesThroughASchedulerRestart) {
  Harness h("worker_scheduler_restart");
  ASSERT_TRUE(h.StartScheduler(/*lease_seconds=*/10).ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  auto worker = h.StartWorker("w1");
  ASSERT_TRUE(worker.ok());
  v1::Job job = Submit(h, h.SmallJob(*model, *dataset, 30));
  ASSERT_TRUE(h.WaitFor(job.id(), 300, [](const v1::Job& j) {
                 return j.progress().phase() == v1::TRAINING && j.progress().step() >= 2;
               }).ok());
  h.KillScheduler();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_TRUE(h.StartScheduler(10).ok());
  auto done = h.WaitFinished(job.id(), 400);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  // The same lease and training process carried on: one attempt, one start.
  EXPECT_EQ(done->attempts(), 1) << Log(h, *worker);
  const std::string log = Log(h, *worker);
  size_t starts = 0;
  for (size_t at = 0; (at = log.find(": loading: fetching inputs", at)) != std::string::npos;
       ++at) {
    ++starts;
  }
  EXPECT_EQ(starts, 1u) << log;
  EXPECT_TRUE(h.worker(*worker).Running());
}

// A scheduler that comes back without its state (data directory lost) does
// not know the worker or its job: the worker registers again, kills the
// training child of the job it no longer owns, and takes new jobs.
TEST(WorkerE2eTest, ASchedulerThatLostItsStateGetsTheWorkerBack) {
  Harness h("worker_state_lost");
  ASSERT_TRUE(h.StartScheduler(/*lease_seconds=*/10).ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok());
  auto worker = h.StartWorker("w1");
  ASSERT_TRUE(worker.ok());
  v1::Job job = Submit(h, h.SmallJob(*model, *dataset, 100000));
  ASSERT_TRUE(h.WaitFor(job.id(), 300, [](const v1::Job& j) {
                 return j.progress().phase() == v1::TRAINING;
               }).ok());
  h.KillScheduler();
  ASSERT_TRUE(io::RemoveTree(h.dir() + "/data").ok());
  ASSERT_TRUE(h.StartScheduler(10).ok());
  // Heartbeats every ≤ 2 s: NotFound → register again → lease_lost → kill.
  bool dropped = false;
  for (int i = 0; i < 300 && !dropped; ++i) {
    dropped = Log(h, *worker).find(job.id() + ": lost") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string log = Log(h, *worker);
  ASSERT_TRUE(dropped) << log;
  EXPECT_NE(log.find("registering again"), std::string::npos) << log;
  EXPECT_NE(log.find("killed by signal 9"), std::string::npos) << log;

  auto model2 = h.RegisterDemoModel();
  auto dataset2 = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model2.ok() && dataset2.ok());
  auto done = h.WaitFinished(Submit(h, h.SmallJob(*model2, *dataset2, 2)).id(), 300);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::SUCCEEDED) << done->error() << Log(h, *worker);
}

TEST(WorkerE2eTest, AWrongTokenStopsTheWorkerWithAClearError) {
  Harness h("worker_token");
  ASSERT_TRUE(h.StartScheduler(3, {"--token", "s3cret"}).ok());
  auto wrong = h.StartWorker("w1", {"--token", "guess"});
  ASSERT_TRUE(wrong.ok());
  const int status = h.worker(*wrong).Wait(30000);
  ASSERT_GE(status, 0) << "the worker did not exit: " << Log(h, *wrong);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(Log(h, *wrong).find("RegisterWorker"), std::string::npos) << Log(h, *wrong);

  // The token from QWHA_TOKEN works.
  ::setenv("QWHA_TOKEN", "s3cret", 1);
  auto right = h.StartWorker("w2");
  ::unsetenv("QWHA_TOKEN");
  ASSERT_TRUE(right.ok());
  bool registered = false;
  for (int i = 0; i < 200 && !registered; ++i) {
    registered = Log(h, *right).find("registered with") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(registered) << Log(h, *right);
  EXPECT_TRUE(h.worker(*right).Running());
}

// TLS end to end: a scheduler serving TLS (the test certificates), a worker
// and qwhactl that trust its CA; a job runs through, and clients without the
// CA, or with another one, are refused with an error that says what to set.
TEST(WorkerE2eTest, AJobRunsOverTlsAndPlaintextClientsAreRefused) {
  const std::string tls = Runfile("tests/fixtures/tls");
  Harness h("worker_tls");
  h.set_tls_ca(tls + "/ca.pem");  // the harness's own calls
  ASSERT_TRUE(
      h.StartScheduler(3, {"--tls-cert", tls + "/server.pem", "--tls-key", tls + "/server.key"})
          .ok());
  auto model = h.RegisterDemoModel();
  auto dataset = h.UploadDataset(TrainData(), "kjv");
  ASSERT_TRUE(model.ok() && dataset.ok()) << model.status() << dataset.status();
  auto worker = h.StartWorker("w1", {"--tls-ca", tls + "/ca.pem"});
  ASSERT_TRUE(worker.ok());
  auto job = h.WaitFinished(Submit(h, h.SmallJob(*model, *dataset, 2)).id(), 300);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error() << Log(h, *worker);
  auto [rc, out] = h.Qwhactl({"--tls-ca", tls + "/ca.pem", "get", job->id()});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("SUCCEEDED"), std::string::npos) << out;

  // Without the CA: refused, with the hint; with another CA: refused.
  std::tie(rc, out) = h.Qwhactl({"get", job->id()});
  EXPECT_EQ(rc, 6) << out;
  EXPECT_NE(out.find("give its CA with --tls-ca"), std::string::npos) << out;
  std::tie(rc, out) = h.Qwhactl({"--tls-ca", tls + "/other-ca.pem", "get", job->id()});
  EXPECT_EQ(rc, 6) << out;
  // A CA file that does not exist is a usage error naming the flag.
  std::tie(rc, out) = h.Qwhactl({"--tls-ca", h.dir() + "/missing.pem", "get", job->id()});
  EXPECT_EQ(rc, 3) << out;
  EXPECT_NE(out.find("--tls-ca: cannot read"), std::string::npos) << out;
  // A worker without the CA cannot register.
  auto plain = h.StartWorker("w2");
  ASSERT_TRUE(plain.ok());
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(Log(h, *plain).find("registered with"), std::string::npos) << Log(h, *plain);
}

}  // namespace
}  // namespace qwha::e2e
