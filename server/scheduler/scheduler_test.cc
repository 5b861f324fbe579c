// The job state machine on a real SQLite store and blob store in a temp dir.
#include "server/scheduler/scheduler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include "server/scheduler/test_util.h"
#include "server/store/schema.h"
#include "worker/io/atomic_file.h"

namespace qwha::scheduler {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("scheduler_test");
    Open();
    // A model whose config says hidden 64 / intermediate 96, and a dataset.
    auto rows = testing::AddTinyModelAndDataset(
        dir_, R"({"hidden_size": 64, "intermediate_size": 96})", *registry_, *blobs_);
    ASSERT_TRUE(rows.ok()) << rows.status();
    model_id_ = rows->model_id;
    dataset_id_ = rows->dataset_id;
  }

  void Open(double lease_seconds = 30) {
    scheduler_.reset();
    registry_.reset();
    db_.reset();
    ASSERT_TRUE(testing::OpenTestStore(dir_, &db_, &blobs_, &registry_).ok());
    SchedulerOptions options;
    options.lease_seconds = lease_seconds;
    // Observers run after the commit and may read the store (the scheduler
    // process refreshes registry gauges from them): this must not deadlock.
    SchedulerObserver observer;
    observer.on_transition = [this](v1::JobState, v1::JobState) {
      ASSERT_TRUE(db_->Query("SELECT COUNT(*) FROM jobs").ok());
      ++transitions_;
    };
    scheduler_ = std::make_unique<Scheduler>(db_.get(), registry_.get(), options,
                                             std::make_unique<FitFirstPolicy>(), observer);
  }

  v1::JobSpec Spec(int priority = 0) {
    v1::JobSpec spec;
    spec.set_base_model_id(model_id_);
    spec.set_train_dataset_id(dataset_id_);
    spec.mutable_quantization()->set_bits(2);
    spec.set_priority(priority);
    return spec;
  }

  std::string Worker(int gpus = 0, int64_t free = int64_t{1} << 34) {
    v1::RegisterWorkerRequest request;
    request.set_name("w");
    request.mutable_capabilities()->set_gpu_count(gpus);
    request.mutable_capabilities()->set_free_memory_bytes(free);
    auto registered = scheduler_->RegisterWorker(request);
    EXPECT_TRUE(registered.ok());
    return registered->worker_id();
  }

  v1::AcquireJobResponse Acquire(const std::string& worker, int64_t free = int64_t{1} << 34) {
    v1::AcquireJobRequest request;
    request.set_worker_id(worker);
    request.set_free_memory_bytes(free);
    auto response = scheduler_->Acquire(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return *response;
  }

  std::string dir_, model_id_, dataset_id_;
  std::unique_ptr<store::Db> db_;
  std::unique_ptr<registry::BlobStore> blobs_;
  std::unique_ptr<registry::RegistryStore> registry_;
  std::unique_ptr<Scheduler> scheduler_;
  int transitions_ = 0;
};

TEST_F(SchedulerTest, BadSpecsNameTheFieldAndStoreNothing) {
  struct Case {
    std::function<void(v1::JobSpec&)> mutate;
    absl::StatusCode code;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](v1::JobSpec& s) { s.mutable_quantization()->set_bits(5); },
       absl::StatusCode::kInvalidArgument, "quantization.bits"},
      {[](v1::JobSpec& s) { s.mutable_quantization()->set_group_size(40); },
       absl::StatusCode::kInvalidArgument, "quantization.group_size"},
      {[](v1::JobSpec& s) { s.mutable_quantization()->set_method("awq"); },
       absl::StatusCode::kInvalidArgument, "quantization.method"},
      {[](v1::JobSpec& s) { s.mutable_adapter()->set_type("dora"); },
       absl::StatusCode::kInvalidArgument, "adapter.type"},
      {[](v1::JobSpec& s) { s.mutable_adapter()->add_target_modules("lm_head"); },
       absl::StatusCode::kInvalidArgument, "adapter.target_modules"},
      {[](v1::JobSpec& s) { s.mutable_training()->set_learning_rate(-1); },
       absl::StatusCode::kInvalidArgument, "training.learning_rate"},
      {[](v1::JobSpec& s) { s.mutable_training()->set_schedule("step"); },
       absl::StatusCode::kInvalidArgument, "training.schedule"},
      {[](v1::JobSpec& s) { s.set_priority(1000); }, absl::StatusCode::kInvalidArgument,
       "priority"},
      {[](v1::JobSpec& s) { (*s.mutable_labels())["Bad Key"] = "x"; },
       absl::StatusCode::kInvalidArgument, "labels"},
      {[](v1::JobSpec& s) { s.set_base_model_id("m-nothere"); }, absl::StatusCode::kNotFound,
       "base_model_id"},
      {[](v1::JobSpec& s) { s.set_train_dataset_id(""); }, absl::StatusCode::kInvalidArgument,
       "train_dataset_id"},
      {[](v1::JobSpec& s) { s.set_eval_dataset_id("d-nothere"); }, absl::StatusCode::kNotFound,
       "eval_dataset_id"},
  };
  for (const Case& c : cases) {
    v1::JobSpec spec = Spec();
    c.mutate(spec);
    auto job = scheduler_->Submit(spec, "");
    ASSERT_FALSE(job.ok()) << c.field;
    EXPECT_EQ(job.status().code(), c.code) << job.status();
    EXPECT_EQ(std::string(job.status().message()).rfind(c.field, 0), 0u) << job.status();
  }
  std::string next;
  auto jobs = scheduler_->List({}, &next);
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty());
  EXPECT_TRUE(scheduler_->Submit(Spec(), "").ok());  // group_size 0 (default) is fine
}

TEST_F(SchedulerTest, JobRunsToSuccessAndLeavesAnAdapter) {
  auto job = scheduler_->Submit(Spec(), "");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::QUEUED);
  std::string worker = Worker();
  v1::AcquireJobResponse lease = Acquire(worker);
  ASSERT_TRUE(lease.has_job());
  EXPECT_EQ(lease.job().id(), job->id());
  EXPECT_EQ(lease.job().state(), v1::ASSIGNED);
  EXPECT_EQ(lease.base_model().id(), model_id_);
  EXPECT_EQ(lease.train_dataset().id(), dataset_id_);

  v1::ReportProgressRequest progress;
  progress.set_job_id(job->id());
  progress.set_lease_id(lease.lease_id());
  progress.mutable_progress()->set_phase(v1::TRAINING);
  progress.mutable_progress()->set_step(3);
  ASSERT_TRUE(scheduler_->ReportProgress(progress).ok());
  EXPECT_EQ(scheduler_->Get(job->id())->state(), v1::RUNNING);
  EXPECT_EQ(scheduler_->Get(job->id())->progress().step(), 3);

  // A wrong lease is refused.
  progress.set_lease_id("l-bogus");
  EXPECT_EQ(scheduler_->ReportProgress(progress).status().code(),
            absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(io::WriteFileAtomically(dir_ + "/adapter.safetensors", "weights").ok());
  auto blob = blobs_->ImportFile(dir_ + "/adapter.safetensors");
  ASSERT_TRUE(blob.ok());
  v1::CompleteJobRequest complete;
  complete.set_job_id(job->id());
  complete.set_lease_id(lease.lease_id());
  v1::FileInfo* file = complete.add_files();
  file->set_name("adapter.safetensors");
  file->set_sha256(blob->sha256);
  file->set_size(blob->size);
  complete.set_metrics_json("{\"eval_loss_final\": 1.5}");
  auto done = scheduler_->Complete(complete);
  ASSERT_TRUE(done.ok()) << done.status();
  auto finished = scheduler_->Get(job->id());
  EXPECT_EQ(finished->state(), v1::SUCCEEDED);
  EXPECT_EQ(finished->adapter_id(), done->adapter_id());
  auto adapter = registry_->GetAdapter(done->adapter_id());
  ASSERT_TRUE(adapter.ok());
  EXPECT_EQ(adapter->files(0).sha256(), blob->sha256);
  EXPECT_EQ(adapter->job_id(), job->id());

  auto events = scheduler_->Events(job->id(), 0, 0);
  ASSERT_TRUE(events.ok());
  std::vector<v1::JobState> states;
  for (const auto& e : *events) {
    if (e.type() == v1::JobEvent::STATE) states.push_back(e.job().state());
  }
  EXPECT_EQ(states,
            (std::vector<v1::JobState>{v1::QUEUED, v1::ASSIGNED, v1::RUNNING, v1::SUCCEEDED}));
  EXPECT_EQ(transitions_, 4);
  EXPECT_EQ(scheduler_->Cancel(job->id()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SchedulerTest, PriorityThenFifoAndPlacementByMemoryAndGpu) {
  v1::JobSpec big = Spec(0);
  big.mutable_resources()->set_min_memory_bytes(int64_t{80} << 30);
  v1::JobSpec gpu = Spec(5);
  gpu.mutable_resources()->set_require_gpu(true);
  std::string a = scheduler_->Submit(Spec(0), "")->id();
  std::string b = scheduler_->Submit(Spec(1), "")->id();
  std::string c = scheduler_->Submit(Spec(1), "")->id();
  std::string d = scheduler_->Submit(big, "")->id();
  std::string e = scheduler_->Submit(gpu, "")->id();
  std::string cpu = Worker(0);
  // The GPU job (priority 5) is skipped by a CPU worker; then 1 before 0, FIFO within.
  EXPECT_EQ(Acquire(cpu, int64_t{8} << 30).job().id(), b);
  EXPECT_EQ(Acquire(cpu, int64_t{8} << 30).job().id(), c);
  EXPECT_EQ(Acquire(cpu, int64_t{8} << 30).job().id(), a);
  EXPECT_FALSE(Acquire(cpu, int64_t{8} << 30).has_job());  // d needs 80 GiB
  std::string gpu_worker = Worker(1);
  EXPECT_EQ(Acquire(gpu_worker, int64_t{90} << 30).job().id(), e);
  EXPECT_EQ(Acquire(gpu_worker, int64_t{90} << 30).job().id(), d);
}

TEST_F(SchedulerTest, ExpiredLeaseRequeuesWithCheckpointThenFailsAfterMaxAttempts) {
  Open(/*lease_seconds=*/0.2);
  v1::JobSpec spec = Spec();
  spec.mutable_resources()->set_max_attempts(2);
  std::string id = scheduler_->Submit(spec, "")->id();
  std::string worker = Worker();
  v1::AcquireJobResponse first = Acquire(worker);
  ASSERT_TRUE(first.has_job());
  EXPECT_TRUE(first.checkpoint_files().empty());
  // Upload-and-commit a checkpoint, then go silent.
  ASSERT_TRUE(io::WriteFileAtomically(dir_ + "/ckpt", "state").ok());
  auto blob = blobs_->ImportFile(dir_ + "/ckpt");
  v1::FileInfo file;
  file.set_name("adapter.safetensors");
  file.set_sha256(blob->sha256);
  file.set_size(blob->size);
  ASSERT_TRUE(scheduler_->AddCheckpointFile(id, first.lease_id(), "step-5", file).ok());
  v1::CommitCheckpointRequest commit;
  commit.set_job_id(id);
  commit.set_lease_id(first.lease_id());
  commit.set_checkpoint("step-5");
  *commit.add_files() = file;
  ASSERT_TRUE(scheduler_->CommitCheckpoint(commit).ok());
  EXPECT_TRUE(*scheduler_->MayRead(id, first.lease_id(), blob->sha256));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(*scheduler_->Reap(), 1);
  EXPECT_EQ(scheduler_->Get(id)->state(), v1::QUEUED);

  v1::AcquireJobResponse second = Acquire(worker);
  ASSERT_TRUE(second.has_job());
  EXPECT_EQ(second.job().attempts(), 2);
  EXPECT_EQ(second.job().resume_checkpoint(), "step-5");
  ASSERT_EQ(second.checkpoint_files_size(), 1);
  EXPECT_EQ(second.checkpoint_files(0).sha256(), blob->sha256);
  // The old lease is dead.
  v1::HeartbeatRequest beat;
  beat.set_worker_id(worker);
  beat.set_job_id(id);
  beat.set_lease_id(first.lease_id());
  EXPECT_TRUE(scheduler_->Heartbeat(beat)->lease_lost());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(*scheduler_->Reap(), 1);
  auto failed = scheduler_->Get(id);
  EXPECT_EQ(failed->state(), v1::FAILED);
  EXPECT_NE(failed->error().find("2 attempts"), std::string::npos) << failed->error();
}

TEST_F(SchedulerTest, CancelQueuedAtOnceAndRunningThroughTheHeartbeat) {
  std::string queued = scheduler_->Submit(Spec(), "")->id();
  EXPECT_EQ(scheduler_->Cancel(queued)->state(), v1::CANCELLED);
  std::string running = scheduler_->Submit(Spec(), "")->id();
  std::string worker = Worker();
  v1::AcquireJobResponse lease = Acquire(worker);
  ASSERT_EQ(lease.job().id(), running);
  auto requested = scheduler_->Cancel(running);
  EXPECT_EQ(requested->state(), v1::ASSIGNED);
  EXPECT_TRUE(requested->cancel_requested());
  v1::HeartbeatRequest beat;
  beat.set_worker_id(worker);
  beat.set_job_id(running);
  beat.set_lease_id(lease.lease_id());
  EXPECT_TRUE(scheduler_->Heartbeat(beat)->cancel());
  v1::FailJobRequest fail;
  fail.set_job_id(running);
  fail.set_lease_id(lease.lease_id());
  fail.set_cancelled(true);
  ASSERT_TRUE(scheduler_->Fail(fail).ok());
  EXPECT_EQ(scheduler_->Get(running)->state(), v1::CANCELLED);
}

TEST_F(SchedulerTest, IdempotencyKeysAndRestartKeepEverything) {
  auto first = scheduler_->Submit(Spec(), "key-1");
  auto again = scheduler_->Submit(Spec(), "key-1");
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(first->id(), again->id());
  EXPECT_EQ(scheduler_->Submit(Spec(3), "key-1").status().code(), absl::StatusCode::kAlreadyExists);
  std::string worker = Worker();
  v1::AcquireJobResponse lease = Acquire(worker);
  ASSERT_TRUE(lease.has_job());
  for (int i = 0; i < 30; ++i) scheduler_->Submit(Spec(), "");
  Open();  // "restart": a new scheduler on the same files
  std::string next;
  JobFilter filter;
  filter.page_size = 20;
  auto page1 = scheduler_->List(filter, &next);
  ASSERT_TRUE(page1.ok());
  EXPECT_EQ(page1->size(), 20u);
  ASSERT_FALSE(next.empty());
  filter.page_token = next;
  auto page2 = scheduler_->List(filter, &next);
  EXPECT_EQ(page2->size(), 11u);
  EXPECT_TRUE(next.empty());
  EXPECT_EQ(scheduler_->Get(first->id())->state(), v1::ASSIGNED);
  // The old lease is still honoured after the restart.
  v1::HeartbeatRequest beat;
  beat.set_worker_id(worker);
  beat.set_job_id(first->id());
  beat.set_lease_id(lease.lease_id());
  EXPECT_FALSE(scheduler_->Heartbeat(beat)->lease_lost());
}

}  // namespace
}  // namespace qwha::scheduler

namespace qwha::scheduler {
namespace {

TEST_F(SchedulerTest, JobPastItsTimeoutFailsEvenWithALiveLease) {
  v1::JobSpec spec = Spec();
  spec.mutable_resources()->set_timeout_seconds(1);
  std::string id = scheduler_->Submit(spec, "")->id();
  v1::AcquireJobResponse lease = Acquire(Worker());
  ASSERT_EQ(lease.job().id(), id);
  EXPECT_EQ(*scheduler_->Reap(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_EQ(*scheduler_->Reap(), 1);
  auto job = scheduler_->Get(id);
  EXPECT_EQ(job->state(), v1::FAILED);
  EXPECT_NE(job->error().find("timed out"), std::string::npos) << job->error();
  EXPECT_EQ(scheduler_->CheckLease(id, lease.lease_id()).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace qwha::scheduler
