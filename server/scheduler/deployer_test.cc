// The deployer on a real store, scheduler and registry, calling real gRPC
// InferenceService servers on loopback: in-process servers that record the
// LoadAdapter calls they get and answer as told, and addresses where nothing
// listens. (qwha-serve itself is exercised by tests/e2e/serve_e2e_test.)
#include "server/scheduler/deployer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qwha/v1/inference.grpc.pb.h"
#include "server/api/tls.h"
#include "server/scheduler/test_util.h"
#include "server/store/schema.h"
#include "worker/io/atomic_file.h"

namespace qwha::scheduler {
namespace {

using store::AsInt;
using store::AsString;

// An InferenceService that records LoadAdapter calls and answers with `code`
// (or, with `block`, waits until the call is cancelled).
class RecordingInference final : public v1::InferenceService::Service {
 public:
  grpc::Status LoadAdapter(grpc::ServerContext* context, const v1::LoadAdapterRequest* request,
                           v1::LoadedAdapter* response) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      loads_.push_back(request->adapter_id());
      auto it = context->client_metadata().find("authorization");
      authorization_ = it == context->client_metadata().end()
                           ? ""
                           : std::string(it->second.data(), it->second.size());
    }
    if (block_) {
      for (int i = 0; i < 1000 && !context->IsCancelled(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (code_ != grpc::StatusCode::OK) return grpc::Status(code_, "as the test says");
    response->set_adapter_id(request->adapter_id());
    response->set_digest(std::string(64, 'e'));
    return grpc::Status::OK;
  }
  std::vector<std::string> loads() {
    std::lock_guard<std::mutex> lock(mu_);
    return loads_;
  }
  // The last call's authorization metadata ("" without one).
  std::string authorization() {
    std::lock_guard<std::mutex> lock(mu_);
    return authorization_;
  }
  std::atomic<grpc::StatusCode> code_{grpc::StatusCode::OK};
  std::atomic<bool> block_{false};

 private:
  std::mutex mu_;
  std::vector<std::string> loads_;
  std::string authorization_;
};

struct InferenceServer {
  explicit InferenceServer(
      std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials()) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~InferenceServer() { server->Shutdown(std::chrono::system_clock::now()); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port); }
  RecordingInference service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

// A loopback address where nothing listens (a server was there and stopped).
std::string DeadAddress() {
  auto server = std::make_unique<InferenceServer>();
  std::string address = server->address();
  server.reset();
  return address;
}

class DeployerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("deployer_test");
    Open();
    auto rows =
        testing::AddTinyModelAndDataset(dir_, R"({"hidden_size": 64})", *registry_, *blobs_);
    ASSERT_TRUE(rows.ok()) << rows.status();
    model_id_ = rows->model_id;
    digest_ = rows->model_digest;
    dataset_id_ = rows->dataset_id;
  }

  // (Re)opens everything on the same files: a scheduler restart.
  void Open(DeployerOptions options = Fast()) {
    deployer_.reset();
    scheduler_.reset();
    servers_.reset();
    registry_.reset();
    db_.reset();
    ASSERT_TRUE(testing::OpenTestStore(dir_, &db_, &blobs_, &registry_).ok());
    servers_ = std::make_unique<registry::InferenceServerDirectory>(
        db_.get(), registry::InferenceServerOptions());
    scheduler_ = std::make_unique<Scheduler>(db_.get(), registry_.get(), SchedulerOptions(),
                                             std::make_unique<FitFirstPolicy>());
    DeployerObserver observer;
    observer.on_load_attempt = [this] { ++load_attempts_; };
    observer.on_target_done = [this](bool loaded) { ++(loaded ? loaded_ : failed_); };
    deployer_ =
        std::make_unique<Deployer>(db_.get(), scheduler_.get(), servers_.get(), options, observer);
  }

  static DeployerOptions Fast() {
    DeployerOptions options;
    options.max_attempts = 3;
    options.initial_backoff_seconds = 0.05;
    options.load_timeout_seconds = 10;
    options.token = "deploy-t0k";
    return options;
  }

  void Register(const std::string& address, const std::string& digest) {
    v1::RegisterInferenceServerRequest request;
    request.set_address(address);
    request.set_base_model_digest(digest);
    ASSERT_TRUE(servers_->Register(request).ok());
  }

  // Runs a job to SUCCEEDED through the worker side; returns (job id, adapter id).
  std::pair<std::string, std::string> SucceededJob(bool load_on_inference_servers) {
    v1::JobSpec spec;
    spec.set_base_model_id(model_id_);
    spec.set_train_dataset_id(dataset_id_);
    spec.mutable_quantization()->set_bits(2);
    spec.set_load_on_inference_servers(load_on_inference_servers);
    auto job = scheduler_->Submit(spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    v1::RegisterWorkerRequest worker;
    worker.set_name("w");
    worker.mutable_capabilities()->set_free_memory_bytes(int64_t{1} << 34);
    auto registered = scheduler_->RegisterWorker(worker);
    v1::AcquireJobRequest acquire;
    acquire.set_worker_id(registered->worker_id());
    acquire.set_free_memory_bytes(int64_t{1} << 34);
    auto lease = scheduler_->Acquire(acquire);
    EXPECT_TRUE(lease.ok() && lease->job().id() == job->id());
    EXPECT_TRUE(io::WriteFileAtomically(dir_ + "/adapter.safetensors", job->id()).ok());
    auto blob = blobs_->ImportFile(dir_ + "/adapter.safetensors");
    v1::CompleteJobRequest complete;
    complete.set_job_id(job->id());
    complete.set_lease_id(lease->lease_id());
    v1::FileInfo* file = complete.add_files();
    file->set_name("adapter.safetensors");
    file->set_sha256(blob->sha256);
    file->set_size(blob->size);
    auto done = scheduler_->Complete(complete);
    EXPECT_TRUE(done.ok()) << done.status();
    return {job->id(), done->adapter_id()};
  }

  // The job's "deployment: ..." LOG messages, in order.
  std::vector<std::string> DeploymentEvents(const std::string& job_id) {
    std::vector<std::string> messages;
    auto events = scheduler_->Events(job_id, 0, 0);
    EXPECT_TRUE(events.ok());
    for (const v1::JobEvent& e : *events) {
      if (e.type() == v1::JobEvent::LOG && e.message().rfind("deployment: ", 0) == 0) {
        messages.push_back(e.message());
      }
    }
    return messages;
  }

  std::string DeploymentState(const std::string& job_id) {
    auto rows = db_->Query("SELECT state FROM deployments WHERE job_id = ?", {job_id});
    EXPECT_TRUE(rows.ok());
    return rows->empty() ? "" : AsString((*rows)[0][0]);
  }

  // RunDue until the job's deployment is done or 10 s pass.
  void RunUntilDone(const std::string& job_id) {
    for (int i = 0; i < 1000 && DeploymentState(job_id) != "done"; ++i) {
      ASSERT_TRUE(deployer_->RunDue().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(DeploymentState(job_id), "done");
  }

  static bool Contains(const std::vector<std::string>& messages, const std::string& part) {
    for (const std::string& m : messages) {
      if (m.find(part) != std::string::npos) return true;
    }
    return false;
  }

  std::string dir_, model_id_, dataset_id_, digest_;
  std::unique_ptr<store::Db> db_;
  std::unique_ptr<registry::BlobStore> blobs_;
  std::unique_ptr<registry::RegistryStore> registry_;
  std::unique_ptr<registry::InferenceServerDirectory> servers_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Deployer> deployer_;
  int load_attempts_ = 0, loaded_ = 0, failed_ = 0;
};

TEST_F(DeployerTest, LoadsOnLiveServersOfTheJobsBaseModelOnly) {
  InferenceServer same, other, stale;
  Register(same.address(), digest_);
  Register(other.address(), std::string(64, '0'));
  Register(stale.address(), digest_);
  ASSERT_TRUE(db_->Exec("UPDATE inference_servers SET last_seen = last_seen - 100 WHERE "
                        "address = ?",
                        {stale.address()})
                  .ok());

  auto [plain_job, plain_adapter] = SucceededJob(false);
  auto [job, adapter] = SucceededJob(true);
  EXPECT_EQ(DeploymentState(plain_job), "") << "a job without the option queued a deployment";
  EXPECT_EQ(DeploymentState(job), "pending");

  auto worked = deployer_->RunDue();
  ASSERT_TRUE(worked.ok()) << worked.status();
  EXPECT_EQ(*worked, 1);
  EXPECT_EQ(same.service.loads(), std::vector<std::string>{adapter});
  EXPECT_EQ(same.service.authorization(), "Bearer deploy-t0k");  // the scheduler's token
  EXPECT_TRUE(other.service.loads().empty()) << "called a server of another base model";
  EXPECT_TRUE(stale.service.loads().empty()) << "called a server past its TTL";
  EXPECT_EQ(DeploymentState(job), "done");
  EXPECT_EQ(scheduler_->Get(job)->state(), v1::SUCCEEDED);

  const auto events = DeploymentEvents(job);
  ASSERT_EQ(events.size(), 4u) << absl::StrJoin(events, "\n");
  EXPECT_NE(events[0].find("queued"), std::string::npos) << events[0];
  EXPECT_NE(events[1].find("on 1 inference server(s): " + same.address()), std::string::npos)
      << events[1];
  EXPECT_NE(events[2].find("loaded adapter " + adapter + " on " + same.address()),
            std::string::npos)
      << events[2];
  EXPECT_NE(events[3].find("loaded on 1 of 1"), std::string::npos) << events[3];
  EXPECT_TRUE(DeploymentEvents(plain_job).empty());
  EXPECT_EQ(load_attempts_, 1);
  EXPECT_EQ(loaded_, 1);
  EXPECT_EQ(failed_, 0);

  // Nothing is due any more; no server is called twice.
  EXPECT_EQ(*deployer_->RunDue(), 0);
  EXPECT_EQ(same.service.loads().size(), 1u);
}

// The test certificates' file (tests/fixtures/tls).
std::string TlsFixture(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir != nullptr ? absl::StrCat(srcdir, "/qwha") : ".",
                      "/tests/fixtures/tls/", name);
}

TEST_F(DeployerTest, PushesReachTlsServersWithTheConfiguredRoots) {
  auto server_credentials =
      api::ServerCredentials({TlsFixture("server.pem"), TlsFixture("server.key")});
  ASSERT_TRUE(server_credentials.ok()) << server_credentials.status();
  InferenceServer secure(*server_credentials);
  Register(secure.address(), digest_);
  // Plaintext pushes cannot reach it: the deployment fails after its attempts.
  auto [plain_job, plain_adapter] = SucceededJob(true);
  RunUntilDone(plain_job);
  EXPECT_TRUE(secure.service.loads().empty());
  EXPECT_EQ(failed_, 1);
  // With the CA (the scheduler's --serve-tls-ca), the push loads it.
  DeployerOptions options = Fast();
  auto roots = api::ChannelCredentials(TlsFixture("ca.pem"), "--serve-tls-ca");
  ASSERT_TRUE(roots.ok()) << roots.status();
  options.credentials = *roots;
  Open(options);
  auto [job, adapter] = SucceededJob(true);
  RunUntilDone(job);
  EXPECT_EQ(secure.service.loads(), std::vector<std::string>{adapter});
  EXPECT_EQ(secure.service.authorization(), "Bearer deploy-t0k");
}

TEST_F(DeployerTest, UnreachableServerIsRetriedWithBackoffThenMarkedFailed) {
  const std::string dead = DeadAddress();
  Register(dead, digest_);
  auto [job, adapter] = SucceededJob(true);
  ASSERT_EQ(*deployer_->RunDue(), 1);
  EXPECT_EQ(DeploymentState(job), "pending");
  EXPECT_EQ(*deployer_->RunDue(), 0) << "retried before its backoff";
  RunUntilDone(job);

  auto target =
      db_->Query("SELECT state, attempts, error FROM deployment_targets WHERE address = ?", {dead});
  ASSERT_TRUE(target.ok());
  ASSERT_EQ(target->size(), 1u);
  EXPECT_EQ(AsString((*target)[0][0]), "failed");
  EXPECT_EQ(AsInt((*target)[0][1]), 3);
  EXPECT_NE(AsString((*target)[0][2]).find("UNAVAILABLE"), std::string::npos);
  const auto events = DeploymentEvents(job);
  EXPECT_TRUE(Contains(events, dead + " did not answer (attempt 1/3)"));
  EXPECT_TRUE(Contains(events, dead + " did not answer (attempt 2/3)"));
  EXPECT_TRUE(Contains(events, "gave up on " + dead + " after 3 attempts: UNAVAILABLE"));
  EXPECT_TRUE(Contains(events, "loaded on 0 of 1"));
  EXPECT_EQ(load_attempts_, 3);
  EXPECT_EQ(failed_, 1);
}

TEST_F(DeployerTest, OtherErrorsFailThatServerAtOnceAndTheRestStillLoad) {
  InferenceServer refuses, accepts;
  refuses.service.code_ = grpc::StatusCode::FAILED_PRECONDITION;
  Register(refuses.address(), digest_);
  Register(accepts.address(), digest_);
  auto [job, adapter] = SucceededJob(true);
  ASSERT_EQ(*deployer_->RunDue(), 1);
  EXPECT_EQ(DeploymentState(job), "done");
  EXPECT_EQ(refuses.service.loads().size(), 1u);
  EXPECT_EQ(accepts.service.loads().size(), 1u);
  const auto events = DeploymentEvents(job);
  EXPECT_TRUE(Contains(events, refuses.address() + " refused adapter " + adapter +
                                   ": FAILED_PRECONDITION: as the test says"));
  EXPECT_TRUE(Contains(events, "loaded on 1 of 2"));
  EXPECT_EQ(loaded_, 1);
  EXPECT_EQ(failed_, 1);
}

TEST_F(DeployerTest, NoLiveServerFinishesAtOnceAndSaysSo) {
  auto [job, adapter] = SucceededJob(true);
  ASSERT_EQ(*deployer_->RunDue(), 1);
  EXPECT_EQ(DeploymentState(job), "done");
  EXPECT_TRUE(Contains(DeploymentEvents(job), "no live inference server serves base model"));
}

TEST_F(DeployerTest, PendingDeploymentsArePickedUpAgainAfterARestart) {
  InferenceServer server;
  server.service.code_ = grpc::StatusCode::UNAVAILABLE;  // e.g. its registry is down
  Register(server.address(), digest_);
  auto [retried_job, retried_adapter] = SucceededJob(true);
  ASSERT_EQ(*deployer_->RunDue(), 1);
  EXPECT_EQ(DeploymentState(retried_job), "pending");
  // A second job succeeds and the scheduler dies before its deployment ran.
  auto [fresh_job, fresh_adapter] = SucceededJob(true);

  Open();  // restart: new scheduler and deployer on the same store
  server.service.code_ = grpc::StatusCode::OK;
  RunUntilDone(retried_job);
  RunUntilDone(fresh_job);
  const auto loads = server.service.loads();
  EXPECT_EQ(std::count(loads.begin(), loads.end(), retried_adapter), 2);  // failed once, then ok
  EXPECT_EQ(std::count(loads.begin(), loads.end(), fresh_adapter), 1);
  EXPECT_TRUE(Contains(DeploymentEvents(retried_job), "loaded on 1 of 1"));
  EXPECT_TRUE(Contains(DeploymentEvents(fresh_job), "loaded on 1 of 1"));
}

TEST_F(DeployerTest, StopCancelsACallInFlightWithoutCountingIt) {
  InferenceServer slow;
  slow.service.block_ = true;
  Register(slow.address(), digest_);
  auto [job, adapter] = SucceededJob(true);
  std::thread runner([&] { EXPECT_TRUE(deployer_->RunDue().ok()); });
  for (int i = 0; i < 500 && slow.service.loads().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(slow.service.loads().size(), 1u);
  deployer_->Stop();
  runner.join();
  EXPECT_EQ(DeploymentState(job), "pending");
  auto target = db_->Query("SELECT state, attempts FROM deployment_targets");
  ASSERT_EQ(target->size(), 1u);
  EXPECT_EQ(AsString((*target)[0][0]), "pending");
  EXPECT_EQ(AsInt((*target)[0][1]), 0);
  EXPECT_EQ(load_attempts_, 0);
}

}  // namespace
}  // namespace qwha::scheduler
