// The run-job child end to end: the real qwha-worker binary on the demo model
// (tests/fixtures/demo) with a few training steps, driven and read exactly as
// the worker does it (ChildProcess + the JSON-lines protocol).
#include "worker/runtime/run_job.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qwha/v1/job.pb.h"
#include "worker/io/atomic_file.h"
#include "worker/runtime/child_process.h"
#include "worker/runtime/child_protocol.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return (srcdir != nullptr ? std::string(srcdir) + "/qwha/" : std::string("./")) + path;
}

std::string TempDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/run_job_" + name;
  EXPECT_TRUE(io::RemoveTree(dir).ok());
  EXPECT_TRUE(MakeDirs(dir).ok());
  return dir;
}

// The first `n` records of the demo fine-tuning set.
std::string SmallDataset(const std::string& dir, int n) {
  std::ifstream in(Runfile("tests/fixtures/demo/data/train.jsonl"));
  std::string text, line;
  for (int i = 0; i < n && std::getline(in, line); ++i) text += line + "\n";
  const std::string path = dir + "/train.jsonl";
  EXPECT_TRUE(io::WriteFileAtomically(path, text).ok());
  return path;
}

qwha::v1::JobSpec TinySpec(int64_t steps) {
  qwha::v1::JobSpec spec;
  spec.mutable_quantization()->set_bits(2);
  spec.mutable_adapter()->set_rank(1);
  spec.mutable_adapter()->add_target_modules("q_proj");
  spec.mutable_adapter()->add_target_modules("v_proj");
  auto* t = spec.mutable_training();
  t->set_max_steps(steps);
  t->set_batch_size(2);
  t->set_seq_len(32);
  t->set_calibration_batches(1);
  t->set_checkpoint_every(2);
  t->set_eval_fraction(0.2);
  t->set_seed(5);
  return spec;
}

struct ChildRun {
  std::vector<ChildEvent> events;
  std::vector<std::string> phases;
  std::vector<int64_t> steps;  // of "train" progress events
  ExitStatus exit;
};

ChildRun RunChild(const std::string& dir, const qwha::v1::JobSpec& spec, bool resume) {
  EXPECT_TRUE(io::WriteFileAtomically(dir + "/job.binpb", spec.SerializeAsString()).ok());
  std::vector<std::string> argv = {Runfile("worker/runtime/qwha-worker"),
                                   "run-job",
                                   "--job",
                                   dir + "/job.binpb",
                                   "--out",
                                   dir + "/out",
                                   "--model",
                                   Runfile("tests/fixtures/demo/model"),
                                   "--train",
                                   SmallDataset(dir, 40),
                                   "--device",
                                   "cpu",
                                   "--cache-dir",
                                   dir + "/cache"};
  if (resume) argv.push_back("--resume");
  auto child = ChildProcess::Start(argv);
  EXPECT_TRUE(child.ok()) << child.status();
  ChildRun run;
  std::vector<std::string> lines;
  while ((*child)->ReadLines(std::chrono::milliseconds(1000), &lines)) {
  }
  for (const std::string& line : lines) {
    auto event = DecodeChildEvent(line);
    EXPECT_TRUE(event.ok()) << "not an event: " << line;
    if (!event.ok()) continue;
    run.events.push_back(*event);
    if (event->type == ChildEvent::Type::kPhase) run.phases.push_back(event->phase);
    if (event->type == ChildEvent::Type::kProgress && event->progress.phase == "train") {
      run.steps.push_back(event->progress.step);
    }
  }
  run.exit = (*child)->Wait();
  return run;
}

TEST(RunJobTest, TrainsExportsAndReportsOverTheProtocol) {
  const std::string dir = TempDir("e2e");
  ChildRun run = RunChild(dir, TinySpec(4), /*resume=*/false);
  ASSERT_TRUE(run.exit.success()) << run.exit.ToString();
  EXPECT_EQ(run.phases,
            (std::vector<std::string>{"loading", "calibrating", "quantizing", "initializing",
                                      "training", "evaluating", "exporting"}));
  EXPECT_EQ(run.steps, (std::vector<int64_t>{1, 2, 3, 4}));
  ASSERT_FALSE(run.events.empty());
  EXPECT_EQ(run.events.back().type, ChildEvent::Type::kDone);
  for (const ChildEvent& e : run.events) {
    if (e.type != ChildEvent::Type::kProgress || e.progress.phase != "train") continue;
    EXPECT_EQ(e.progress.total_steps, 4);
    EXPECT_TRUE(std::isfinite(e.progress.loss));
    EXPECT_GT(e.progress.tokens_per_second, 0);
  }

  const std::string out = dir + "/out";
  for (const char* file : {"adapter.safetensors", "adapter_config.json", "metrics.json"}) {
    EXPECT_TRUE(PathExists(out + "/" + file)) << file;
  }
  auto metrics = nlohmann::json::parse(*io::ReadFile(out + "/metrics.json"));
  for (const char* key : {"eval_loss_base", "eval_loss_quantized", "eval_loss_initialized",
                          "eval_loss_final", "train_loss_last"}) {
    ASSERT_TRUE(metrics.contains(key) && metrics[key].is_number()) << key << ": " << metrics;
    EXPECT_GT(metrics[key].get<double>(), 0) << key;
  }
  EXPECT_EQ(metrics["steps"], 4);
  // A checkpoint every 2 steps; `latest` names the newest.
  auto latest = io::ReadFile(out + "/checkpoints/latest");
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, "step-4\n");
  EXPECT_TRUE(PathExists(out + "/checkpoints/step-2/trainer_state.json"));
  // The quantized base went to the cache.
  auto cached = ListFilesRecursive(dir + "/cache");
  ASSERT_TRUE(cached.ok());
  EXPECT_FALSE(cached->empty());

  // Resume: a fresh output directory holding only the step-2 checkpoint (as
  // the worker lays out a checkpoint downloaded from the scheduler) continues
  // at step 3 and, on the CPU, ends with the same adapter bit for bit.
  const std::string resumed = TempDir("resumed");
  const std::string ckpt = resumed + "/out/checkpoints";
  auto names = ListFilesRecursive(out + "/checkpoints/step-2");
  ASSERT_TRUE(names.ok());
  for (const std::string& name : *names) {
    ASSERT_TRUE(LinkOrCopy(out + "/checkpoints/step-2/" + name, ckpt + "/step-2/" + name).ok());
  }
  ASSERT_TRUE(io::WriteFileAtomically(ckpt + "/latest", "step-2").ok());
  ChildRun second = RunChild(resumed, TinySpec(4), /*resume=*/true);
  ASSERT_TRUE(second.exit.success()) << second.exit.ToString();
  EXPECT_EQ(second.steps, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(*io::ReadFile(resumed + "/out/adapter.safetensors"),
            *io::ReadFile(out + "/adapter.safetensors"));
}

TEST(RunJobTest, InvalidSpecIsExitStatus2WithAnErrorNamingTheField) {
  const std::string dir = TempDir("invalid");
  qwha::v1::JobSpec spec = TinySpec(2);
  spec.mutable_training()->set_dtype("float8");
  ChildRun run = RunChild(dir, spec, false);
  EXPECT_EQ(run.exit.code, 2) << run.exit.ToString();
  ASSERT_EQ(run.events.size(), 1u);
  EXPECT_EQ(run.events[0].type, ChildEvent::Type::kError);
  EXPECT_EQ(run.events[0].code, absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run.events[0].detail.rfind("training.dtype:", 0), 0u) << run.events[0].detail;
}

TEST(RunJobTest, ParsesItsArguments) {
  auto args = ParseRunJobArgs({"--job", "j", "--out", "o", "--model", "m", "--train", "t", "--eval",
                               "e", "--device", "cuda:1", "--cache-dir", "c", "--resume"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->job_file, "j");
  EXPECT_EQ(args->eval_data, "e");
  EXPECT_EQ(args->device, "cuda:1");
  EXPECT_EQ(args->cache_dir, "c");
  EXPECT_TRUE(args->resume);
  auto missing = ParseRunJobArgs({"--job", "j", "--out", "o", "--model", "m"});
  EXPECT_NE(missing.status().message().find("--train"), std::string::npos) << missing.status();
  auto unknown = ParseRunJobArgs({"--bogus", "x"});
  EXPECT_NE(unknown.status().message().find("--bogus"), std::string::npos);
  auto no_value = ParseRunJobArgs({"--job"});
  EXPECT_NE(no_value.status().message().find("--job"), std::string::npos);
}

}  // namespace
}  // namespace qwha::runtime
