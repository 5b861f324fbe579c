#include "worker/train/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "worker/io/atomic_file.h"
#include "worker/train/checkpoint.h"
#include "worker/train/loss.h"
#include "worker/train/test_util.h"

namespace qwha::train {
namespace {

namespace fs = std::filesystem;
using adapters::AdapterType;
using testing::MakeTinyAdaptedModel;
using testing::SyntheticBatchSource;
using TensorMap = std::map<std::string, torch::Tensor>;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("trainer_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  return dir.string();
}

SyntheticBatchSource MakeSource(int64_t num_batches = 5) {
  return SyntheticBatchSource(/*vocab=*/50, /*batch_size=*/3, /*seq_len=*/12, num_batches,
                              /*prompt_tokens=*/3, /*seed=*/7);
}

double BatchLoss(const model::LlamaModel& model, const Batch& batch) {
  torch::NoGradGuard no_grad;
  auto loss = CausalLmLoss(model.Forward(batch.input_ids), batch.labels);
  EXPECT_TRUE(loss.ok());
  return loss->loss.item<double>();
}

void ExpectBitwiseEqual(const TensorMap& a, const TensorMap& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [key, value] : a) {
    ASSERT_EQ(b.count(key), 1u) << what << " " << key;
    EXPECT_TRUE(torch::equal(value, b.at(key))) << what << " " << key;
  }
}

struct ResumeCase {
  const char* name;
  AdapterType type;
  TrainOptions options;
};

std::vector<ResumeCase> ResumeCases() {
  TrainOptions qwha;
  qwha.lr = 1e-2;
  qwha.max_steps = 6;
  qwha.schedule.type = ScheduleType::kCosine;
  qwha.schedule.warmup_steps = 2;
  qwha.clip_norm = 1.0;

  TrainOptions lora;
  lora.lr = 5e-3;
  lora.max_steps = 6;
  lora.grad_accum = 2;
  lora.schedule.type = ScheduleType::kLinear;
  lora.schedule.min_lr_ratio = 0.1;
  lora.adamw.weight_decay = 0.01;
  lora.clip_norm = 0.5;
  lora.adapter_dtype = torch::kBFloat16;
  lora.loss_normalization = LossNormalization::kPerMicroBatch;
  lora.activation_checkpointing = true;
  return {{"qwha float32", AdapterType::kQwhaDataFree, qwha},
          {"lora bfloat16, accumulation 2, checkpointing", AdapterType::kLora, lora}};
}

// A run stopped after 3 steps and resumed from its checkpoint in a fresh
// model, source and trainer ends bitwise where an uninterrupted run ends.
TEST(TrainerTest, ResumeIsBitwiseExact) {
  for (const ResumeCase& c : ResumeCases()) {
    SCOPED_TRACE(c.name);
    // Uninterrupted.
    auto model_a = MakeTinyAdaptedModel(c.type, 1);
    SyntheticBatchSource data_a = MakeSource();
    auto trainer_a = Trainer::Create(*model_a, data_a, c.options);
    ASSERT_TRUE(trainer_a.ok()) << trainer_a.status();
    std::vector<double> losses_a;
    (*trainer_a)->SetProgressCallback([&](const Progress& p) { losses_a.push_back(p.loss); });
    auto full = (*trainer_a)->Train();
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_EQ(full->step, 6);
    EXPECT_TRUE(full->finished);

    // Interrupted after 3 steps.
    TrainOptions options = c.options;
    options.checkpoint_dir = FreshDir(std::string("resume_") + adapters::AdapterTypeName(c.type));
    {
      auto model_b = MakeTinyAdaptedModel(c.type, 1);
      SyntheticBatchSource data_b = MakeSource();
      auto trainer_b = Trainer::Create(*model_b, data_b, options);
      ASSERT_TRUE(trainer_b.ok());
      auto first = (*trainer_b)->Train(/*max_new_steps=*/3);
      ASSERT_TRUE(first.ok()) << first.status();
      EXPECT_EQ(first->step, 3);
      EXPECT_FALSE(first->finished);
      EXPECT_EQ(first->checkpoint, (fs::path(options.checkpoint_dir) / "step-3").string());
    }
    // Continued in a fresh process state: new model, new source, new trainer.
    auto model_c = MakeTinyAdaptedModel(c.type, 1);
    SyntheticBatchSource data_c = MakeSource();
    auto trainer_c = Trainer::Create(*model_c, data_c, options);
    ASSERT_TRUE(trainer_c.ok());
    torch::manual_seed(999);  // Resume restores the generator state too
    ASSERT_TRUE((*trainer_c)->Resume().ok());
    EXPECT_TRUE(torch::equal(CaptureRngState().at("cpu"),
                             LoadLatestCheckpoint(options.checkpoint_dir)->rng_state.at("cpu")));
    EXPECT_EQ((*trainer_c)->step(), 3);
    EXPECT_EQ(data_c.position(), 3 * c.options.grad_accum);
    std::vector<double> losses_c;
    (*trainer_c)->SetProgressCallback([&](const Progress& p) { losses_c.push_back(p.loss); });
    auto rest = (*trainer_c)->Train();
    ASSERT_TRUE(rest.ok()) << rest.status();
    EXPECT_EQ(rest->step, 6);
    EXPECT_EQ(rest->steps_run, 3);
    EXPECT_EQ(rest->tokens_seen, full->tokens_seen);
    EXPECT_EQ(data_c.position(), data_a.position());

    ExpectBitwiseEqual(CollectAdapterState(*model_c), CollectAdapterState(*model_a), "adapters");
    ASSERT_EQ(losses_c.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(losses_c[i], losses_a[3 + i]) << "step " << 4 + i;
    EXPECT_EQ(rest->loss, full->loss);
    // The adapters did train.
    auto initial = MakeTinyAdaptedModel(c.type, 1);
    const TensorMap start = CollectAdapterState(*initial), end = CollectAdapterState(*model_a);
    bool moved = false;
    for (const auto& [key, value] : start) moved |= !torch::equal(value, end.at(key));
    EXPECT_TRUE(moved);
    for (const NamedParameter& p : (*trainer_c)->parameters()) {
      EXPECT_EQ(p.tensor.scalar_type(), c.options.adapter_dtype) << p.name;
    }
  }
}

TEST(TrainerTest, TrainingLowersTheLossOnARepeatedBatch) {
  for (AdapterType type : {AdapterType::kQwhaDataFree, AdapterType::kLora}) {
    SCOPED_TRACE(adapters::AdapterTypeName(type));
    auto model = MakeTinyAdaptedModel(type, 3);
    SyntheticBatchSource data(50, 4, 16, /*num_batches=*/1, /*prompt_tokens=*/0, 11);
    SyntheticBatchSource probe(50, 4, 16, 1, 0, 11);
    const Batch batch = *probe.Next();
    const double before = BatchLoss(*model, batch);
    TrainOptions options;
    options.lr = type == AdapterType::kLora ? 2e-2 : 5e-2;
    options.max_steps = 20;
    options.schedule.type = ScheduleType::kConstant;
    auto trainer = Trainer::Create(*model, data, options);
    ASSERT_TRUE(trainer.ok());
    std::vector<double> losses;
    (*trainer)->SetProgressCallback([&](const Progress& p) { losses.push_back(p.loss); });
    auto summary = (*trainer)->Train();
    ASSERT_TRUE(summary.ok()) << summary.status();
    const double after = BatchLoss(*model, batch);
    ASSERT_EQ(losses.size(), 20u);
    EXPECT_NEAR(losses.front(), before, 1e-5);  // step 1 sees the untrained model
    EXPECT_LT(after, 0.7 * before) << "before " << before << " after " << after;
    EXPECT_EQ(summary->skipped_steps, 0);
  }
}

TEST(TrainerTest, ReportsEvaluatesAndCheckpointsOnSchedule) {
  auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 4);
  SyntheticBatchSource data = MakeSource();
  TrainOptions options;
  options.lr = 1e-2;
  options.max_steps = 5;
  options.schedule.warmup_steps = 1;
  options.eval_every = 2;
  options.checkpoint_every = 2;
  options.keep_checkpoints = 2;
  options.checkpoint_dir = FreshDir("cadence");
  auto trainer = Trainer::Create(*model, data, options);
  ASSERT_TRUE(trainer.ok());
  auto schedule = LearningRateSchedule::Create(options.schedule, options.lr, options.max_steps);
  ASSERT_TRUE(schedule.ok());

  std::vector<Progress> reports;
  (*trainer)->SetProgressCallback([&](const Progress& p) { reports.push_back(p); });
  std::vector<int64_t> eval_steps;
  SyntheticBatchSource eval_data(50, 2, 12, 1, 0, 99);
  const Batch eval_batch = *eval_data.Next();
  (*trainer)->SetEvalFn([&](const model::LlamaModel& m) -> absl::StatusOr<double> {
    EXPECT_FALSE(torch::GradMode::is_enabled());
    eval_steps.push_back((*trainer)->step());
    return BatchLoss(m, eval_batch);
  });
  auto summary = (*trainer)->Train();
  ASSERT_TRUE(summary.ok()) << summary.status();

  EXPECT_EQ(eval_steps, (std::vector<int64_t>{2, 4, 5}));
  std::vector<int64_t> train_steps;
  for (const Progress& p : reports) {
    if (p.phase != "train") continue;
    train_steps.push_back(p.step);
    EXPECT_EQ(p.total_steps, 5);
    EXPECT_DOUBLE_EQ(p.lr, schedule->LearningRate(p.step)) << p.step;
    EXPECT_GT(p.tokens_per_second, 0);
    EXPECT_GT(p.grad_norm, 0);
    EXPECT_TRUE(std::isfinite(p.loss));
    if (p.step == 5) {
      EXPECT_EQ(p.eta_seconds, 0);
    } else {
      EXPECT_GT(p.eta_seconds, 0);
    }
  }
  EXPECT_EQ(train_steps, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  int evals = 0;
  for (const Progress& p : reports) evals += p.phase == "eval" && std::isfinite(p.eval_loss);
  EXPECT_EQ(evals, 3);
  EXPECT_TRUE(std::isfinite(summary->eval_loss));
  EXPECT_EQ(summary->tokens_seen, 5 * 3 * 12);

  const fs::path root(options.checkpoint_dir);
  EXPECT_FALSE(fs::exists(root / "step-2"));  // pruned: keep 2
  EXPECT_TRUE(fs::exists(root / "step-4"));
  EXPECT_TRUE(fs::exists(root / "step-5"));  // final
  EXPECT_EQ(summary->checkpoint, (root / "step-5").string());
  auto ckpt = LoadLatestCheckpoint(options.checkpoint_dir);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ(ckpt->step, 5);
  EXPECT_EQ(ckpt->epoch, 0);  // 5 micro-batches of a 5-batch epoch
  EXPECT_EQ(ckpt->data_position, "synthetic:5");
  EXPECT_EQ(ckpt->metrics.at("eval_loss"), summary->eval_loss);
  EXPECT_EQ(ckpt->metrics.at("loss"), summary->loss);

  // Resuming a finished run trains nothing more and does not evaluate again.
  auto model2 = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 4);
  SyntheticBatchSource data2 = MakeSource();
  auto again = Trainer::Create(*model2, data2, options);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Resume().ok());
  int calls = 0;
  (*again)->SetEvalFn([&](const model::LlamaModel&) -> absl::StatusOr<double> {
    ++calls;
    return 0.0;
  });
  auto done = (*again)->Train();
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->steps_run, 0);
  EXPECT_TRUE(done->finished);
  EXPECT_EQ(calls, 0);
}

TEST(TrainerTest, RequestStopEndsAfterTheStepAndCheckpoints) {
  auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 5);
  SyntheticBatchSource data = MakeSource();
  TrainOptions options;
  options.max_steps = 10;
  options.checkpoint_dir = FreshDir("stop");
  auto trainer = Trainer::Create(*model, data, options);
  ASSERT_TRUE(trainer.ok());
  Trainer* t = trainer->get();
  t->SetProgressCallback([t](const Progress& p) {
    if (p.step == 2) t->RequestStop();
  });
  auto summary = t->Train();
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->step, 2);
  EXPECT_TRUE(summary->stopped);
  EXPECT_FALSE(summary->finished);
  EXPECT_EQ(LoadLatestCheckpoint(options.checkpoint_dir)->step, 2);
}

TEST(TrainerTest, NonFiniteGradientSkipsTheUpdate) {
  auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 6);
  SyntheticBatchSource data = MakeSource();
  TrainOptions options;
  options.lr = 1e-2;
  options.max_steps = 3;
  auto trainer = Trainer::Create(*model, data, options);
  ASSERT_TRUE(trainer.ok());
  // Poison the gradient of one tensor during step 2 only.
  int backward_calls = 0;
  torch::Tensor poisoned = (*trainer)->parameters().front().tensor;
  poisoned.register_hook(
      [&backward_calls](torch::Tensor g) { return ++backward_calls == 2 ? g * std::nan("") : g; });
  std::map<int64_t, TensorMap> after_step;
  std::vector<double> norms;
  (*trainer)->SetProgressCallback([&](const Progress& p) {
    after_step[p.step] = CollectAdapterState(*model);
    norms.push_back(p.grad_norm);
  });
  auto summary = (*trainer)->Train();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->skipped_steps, 1);
  ASSERT_EQ(norms.size(), 3u);
  EXPECT_TRUE(std::isfinite(norms[0]));
  EXPECT_FALSE(std::isfinite(norms[1]));
  EXPECT_TRUE(std::isfinite(norms[2]));
  ExpectBitwiseEqual(after_step[2], after_step[1], "skipped step");
  for (const auto& [key, value] : after_step[3]) {
    EXPECT_TRUE(torch::isfinite(value.to(torch::kFloat64)).all().item<bool>()) << key;
  }
}

// The chunked loss (the default) and the full-logits loss train the same
// adapters up to rounding; the steady-state figures leave the warm-up steps
// out; phase profiling names every phase.
TEST(TrainerTest, ChunkedLossTrainsLikeFullLogitsAndSteadyStateSkipsWarmup) {
  std::map<std::string, TensorMap> states;
  std::map<std::string, std::vector<double>> losses;
  for (int64_t chunk : {int64_t{0}, int64_t{5}, int64_t{1024}}) {
    auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 3);
    SyntheticBatchSource data = MakeSource();
    TrainOptions options;
    options.lr = 1e-2;
    options.max_steps = 5;
    options.loss_chunk_tokens = chunk;
    options.throughput_warmup_steps = 2;
    options.profile_phases = chunk == 5;
    auto trainer = Trainer::Create(*model, data, options);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    const std::string key = std::to_string(chunk);
    (*trainer)->SetProgressCallback([&](const Progress& p) { losses[key].push_back(p.loss); });
    auto summary = (*trainer)->Train();
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->steady_steps, 3);
    EXPECT_EQ(summary->steady_tokens, 3 * 3 * 12);  // 3 steps of 3 × 12 input tokens
    EXPECT_GT(summary->steady_seconds, 0);
    EXPECT_LE(summary->steady_seconds, summary->seconds);
    if (options.profile_phases) {
      for (const char* phase : {"data", "forward", "loss", "backward", "optimizer"}) {
        EXPECT_EQ(summary->phase_seconds.count(phase), 1u) << phase;
      }
    } else {
      EXPECT_TRUE(summary->phase_seconds.empty());
    }
    states[key] = CollectAdapterState(*model);
  }
  ASSERT_EQ(losses["0"].size(), 5u);
  for (const char* key : {"5", "1024"}) {
    ASSERT_EQ(losses[key].size(), 5u);
    for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(losses[key][i], losses["0"][i], 1e-5) << key;
    for (const auto& [name, value] : states["0"]) {
      if (!value.is_floating_point()) {
        EXPECT_TRUE(torch::equal(value, states[key].at(name))) << name;
        continue;
      }
      const double scale = value.abs().max().item<double>() + 1e-6;
      EXPECT_LT((value - states[key].at(name)).abs().max().item<double>(), 1e-4 * scale)
          << key << " " << name;
    }
  }

  // No more steps than the warm-up: no steady-state figures.
  auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 3);
  SyntheticBatchSource data = MakeSource();
  TrainOptions options;
  options.max_steps = 2;
  auto trainer = Trainer::Create(*model, data, options);
  ASSERT_TRUE(trainer.ok());
  auto summary = (*trainer)->Train();
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->steady_steps, 0);
  EXPECT_EQ(summary->steady_seconds, 0);
}

// Activation checkpointing changes where activations come from, not the
// result: the same losses and the same adapter after a few steps (to float32
// rounding), and a resumed run with it on is still bitwise exact.
TEST(TrainerTest, ActivationCheckpointingTrainsTheSameAdapter) {
  std::map<bool, TensorMap> states;
  std::map<bool, std::vector<double>> losses;
  for (bool on : {false, true}) {
    auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 3);
    SyntheticBatchSource data = MakeSource();
    TrainOptions options;
    options.lr = 1e-2;
    options.max_steps = 4;
    options.grad_accum = 2;
    options.activation_checkpointing = on;
    auto trainer = Trainer::Create(*model, data, options);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    EXPECT_EQ(model->activation_checkpointing(), on);
    (*trainer)->SetProgressCallback([&](const Progress& p) { losses[on].push_back(p.loss); });
    auto summary = (*trainer)->Train();
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->skipped_steps, 0);
    states[on] = CollectAdapterState(*model);
  }
  ASSERT_EQ(losses[true].size(), 4u);
  ASSERT_EQ(losses[false].size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(losses[true][i], losses[false][i], 1e-5) << i;
  for (const auto& [name, value] : states[false]) {
    if (!value.is_floating_point()) {
      EXPECT_TRUE(torch::equal(value, states[true].at(name))) << name;
      continue;
    }
    const double scale = value.abs().max().item<double>() + 1e-6;
    EXPECT_LT((value - states[true].at(name)).abs().max().item<double>(), 1e-4 * scale) << name;
  }
  // The adapter moved: the comparison above is not between two initial states.
  auto fresh = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 3);
  double moved = 0;
  for (const auto& [name, value] : CollectAdapterState(*fresh)) {
    if (value.is_floating_point()) {
      moved = std::max(moved, (value - states[true].at(name)).abs().max().item<double>());
    }
  }
  EXPECT_GT(moved, 1e-4);
}

TEST(TrainerTest, ErrorsAreStatuses) {
  auto model = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 7);
  SyntheticBatchSource data = MakeSource();
  TrainOptions bad;
  bad.grad_accum = 0;
  EXPECT_EQ(Trainer::Create(*model, data, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = TrainOptions{};
  bad.schedule.warmup_steps = 2000;  // > max_steps
  EXPECT_EQ(Trainer::Create(*model, data, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = TrainOptions{};
  bad.loss_chunk_tokens = -1;
  EXPECT_EQ(Trainer::Create(*model, data, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = TrainOptions{};
  bad.throughput_warmup_steps = -1;
  EXPECT_EQ(Trainer::Create(*model, data, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = TrainOptions{};
  bad.adapter_dtype = torch::kFloat64;
  EXPECT_EQ(Trainer::Create(*model, data, bad).status().code(), absl::StatusCode::kInvalidArgument);

  auto plain =
      model::LlamaModel::RandomInit(testing::TinyConfig(), 1, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(Trainer::Create(*plain, data, TrainOptions{}).status().code(),
            absl::StatusCode::kFailedPrecondition);

  TrainOptions options;
  options.max_steps = 4;
  options.checkpoint_dir = FreshDir("errors");
  auto trainer = Trainer::Create(*model, data, options);
  ASSERT_TRUE(trainer.ok());
  EXPECT_EQ((*trainer)->Resume().code(), absl::StatusCode::kNotFound);

  // An evaluation error ends training with that error.
  (*trainer)->SetEvalFn([](const model::LlamaModel&) -> absl::StatusOr<double> {
    return absl::UnavailableError("eval set missing");
  });
  auto failed_eval = (*trainer)->Train();
  EXPECT_EQ(failed_eval.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(failed_eval.status().message()).find("step 4"), std::string::npos)
      << failed_eval.status();

  // A data error ends training with that error, naming the step.
  (*trainer)->SetEvalFn(nullptr);
  SyntheticBatchSource broken = MakeSource();
  broken.FailFromNowOn();
  auto model2 = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 7);
  auto t2 = Trainer::Create(*model2, broken, TrainOptions{});
  ASSERT_TRUE(t2.ok());
  auto failed = (*t2)->Train();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(failed.status().message()).find("step 1"), std::string::npos);

  // A checkpoint past max_steps does not fit this run.
  TrainOptions shorter = options;
  shorter.max_steps = 2;
  auto model3 = MakeTinyAdaptedModel(AdapterType::kQwhaDataFree, 7);
  SyntheticBatchSource data3 = MakeSource();
  auto t3 = Trainer::Create(*model3, data3, shorter);
  ASSERT_TRUE(t3.ok());
  ASSERT_TRUE(fs::exists(fs::path(options.checkpoint_dir) / "latest"));
  EXPECT_EQ((*t3)->Resume().code(), absl::StatusCode::kInvalidArgument);

  // A checkpoint of other adapters does not load.
  auto lora = MakeTinyAdaptedModel(AdapterType::kLora, 7);
  SyntheticBatchSource data4 = MakeSource();
  auto t4 = Trainer::Create(*lora, data4, options);
  ASSERT_TRUE(t4.ok());
  EXPECT_EQ((*t4)->Resume().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qwha::train
