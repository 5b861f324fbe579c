#include "worker/train/trainer.h"

#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/train/checkpoint.h"
#include "worker/train/loss.h"

namespace qwha::train {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double MetricOr(const std::map<std::string, double>& metrics, const std::string& name,
                double fallback) {
  auto it = metrics.find(name);
  return it == metrics.end() ? fallback : it->second;
}

// Checks a batch and moves it to `device` as int64.
absl::StatusOr<Batch> PrepareBatch(Batch batch, const torch::Device& device, int64_t step) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("batch for step ", step + 1, ": ", what));
  };
  const torch::Tensor& ids = batch.input_ids;
  const torch::Tensor& labels = batch.labels;
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) < 2 ||
      (ids.scalar_type() != torch::kInt64 && ids.scalar_type() != torch::kInt32)) {
    return bad("input_ids must be int64/int32 [B, T] with T >= 2");
  }
  if (!labels.defined() || labels.sizes() != ids.sizes() ||
      (labels.scalar_type() != torch::kInt64 && labels.scalar_type() != torch::kInt32)) {
    return bad("labels must be int64/int32 with the shape of input_ids");
  }
  batch.input_ids = ids.to(device, torch::kInt64);
  batch.labels = labels.to(device, torch::kInt64);
  return batch;
}

}  // namespace

absl::Status ValidateTrainOptions(const TrainOptions& o) {
  if (absl::Status st = ValidateAdamWOptions(o.adamw); !st.ok()) return st;
  if (!(o.lr >= 0) || !std::isfinite(o.lr)) {
    return absl::InvalidArgumentError(absl::StrCat("lr must be finite and >= 0, got ", o.lr));
  }
  if (o.max_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_steps must be >= 1, got ", o.max_steps));
  }
  if (o.grad_accum < 1) {
    return absl::InvalidArgumentError(absl::StrCat("grad_accum must be >= 1, got ", o.grad_accum));
  }
  if (std::isnan(o.clip_norm)) return absl::InvalidArgumentError("clip_norm is NaN");
  if (o.eval_every < 0) {
    return absl::InvalidArgumentError(absl::StrCat("eval_every must be >= 0, got ", o.eval_every));
  }
  if (o.checkpoint_every < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint_every must be >= 0, got ", o.checkpoint_every));
  }
  if (o.loss_chunk_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss_chunk_tokens must be >= 0, got ", o.loss_chunk_tokens));
  }
  if (o.throughput_warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("throughput_warmup_steps must be >= 0, got ", o.throughput_warmup_steps));
  }
  if (o.progress_every < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("progress_every must be >= 1, got ", o.progress_every));
  }
  if (o.adapter_dtype != torch::kFloat32 && o.adapter_dtype != torch::kBFloat16 &&
      o.adapter_dtype != torch::kFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter_dtype must be float32, bfloat16 or float16, got ",
                     c10::toString(o.adapter_dtype)));
  }
  return LearningRateSchedule::Create(o.schedule, o.lr, o.max_steps).status();
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(model::LlamaModel& model,
                                                         BatchSource& data,
                                                         const TrainOptions& options) {
  if (absl::Status st = ValidateTrainOptions(options); !st.ok()) return st;
  auto schedule = LearningRateSchedule::Create(options.schedule, options.lr, options.max_steps);
  if (!schedule.ok()) return schedule.status();
  bool any_adapter = false;
  for (model::LinearSlot* slot : model.LinearSlots()) {
    if (slot->adapter() == nullptr) continue;
    any_adapter = true;
    slot->adapter()->To(slot->device(), options.adapter_dtype);
  }
  if (!any_adapter) {
    return absl::FailedPreconditionError("no adapter is attached to any linear slot of the model");
  }
  model.SetActivationCheckpointing(options.activation_checkpointing);
  std::unique_ptr<Trainer> trainer(new Trainer(model, data, options, *schedule));
  auto optimizer = AdamW::Create(trainer->CollectParameters(), options.adamw);
  if (!optimizer.ok()) return optimizer.status();
  trainer->optimizer_ = std::move(*optimizer);
  torch::manual_seed(options.seed);
  return trainer;
}

Trainer::Trainer(model::LlamaModel& model, BatchSource& data, const TrainOptions& options,
                 LearningRateSchedule schedule)
    : model_(model), data_(data), options_(options), schedule_(std::move(schedule)) {}

Trainer::~Trainer() = default;

std::vector<NamedParameter> Trainer::CollectParameters() const {
  std::vector<NamedParameter> params;
  for (const model::LinearSlot* slot : model_.LinearSlots()) {
    if (slot->adapter() == nullptr) continue;
    const std::vector<torch::Tensor> tensors = slot->adapter()->TrainableParameters();
    for (size_t i = 0; i < tensors.size(); ++i) {
      params.push_back({absl::StrCat(slot->name(), ".adapter.", i), tensors[i]});
    }
  }
  return params;
}

absl::Status Trainer::Resume(const std::string& root) {
  try {
    return ResumeFrom(root.empty() ? options_.checkpoint_dir : root);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("Resume: ", e.what_without_backtrace()));
  }
}

absl::Status Trainer::ResumeFrom(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("Resume: no checkpoint directory given");
  auto ckpt = LoadLatestCheckpoint(dir);
  if (!ckpt.ok()) return ckpt.status();
  if (ckpt->step > options_.max_steps) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint in ", dir, " is at step ",
                                                   ckpt->step, ", past max_steps ",
                                                   options_.max_steps));
  }
  if (absl::Status st = RestoreAdapterState(model_, ckpt->adapter_state); !st.ok()) return st;
  if (absl::Status st = optimizer_->RebindParameters(CollectParameters()); !st.ok()) return st;
  if (absl::Status st = optimizer_->LoadStateDict(ckpt->optimizer_state); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer state in ", dir, ": ", st.message()));
  }
  if (absl::Status st = RestoreRngState(ckpt->rng_state); !st.ok()) return st;
  if (absl::Status st = data_.Restore(ckpt->data_position); !st.ok()) return st;
  step_ = ckpt->step;
  epoch_ = ckpt->epoch;
  tokens_seen_ = ckpt->tokens_seen;
  skipped_steps_ = static_cast<int64_t>(MetricOr(ckpt->metrics, "skipped_steps", 0));
  last_loss_ = MetricOr(ckpt->metrics, "loss", std::numeric_limits<double>::quiet_NaN());
  last_lr_ = MetricOr(ckpt->metrics, "lr", 0);
  last_grad_norm_ = MetricOr(ckpt->metrics, "grad_norm", 0);
  last_eval_loss_ = MetricOr(ckpt->metrics, "eval_loss", std::numeric_limits<double>::quiet_NaN());
  last_eval_step_ = static_cast<int64_t>(MetricOr(ckpt->metrics, "eval_step", -1));
  last_checkpoint_step_ = step_;
  return absl::OkStatus();
}

absl::Status Trainer::RunStep(std::map<std::string, double>* phase_seconds) {
  const torch::Device device = model_.device();
  // Phase timing (profiling only): wait for the device, then read the clock.
  auto phase_start = std::chrono::steady_clock::now();
  auto end_phase = [&](const char* name) {
    if (phase_seconds == nullptr) return;
    if (device.is_cuda()) torch::cuda::synchronize();
    (*phase_seconds)[name] += SecondsSince(phase_start);
    phase_start = std::chrono::steady_clock::now();
  };
  std::vector<Batch> batches;
  batches.reserve(static_cast<size_t>(options_.grad_accum));
  int64_t step_tokens = 0, input_tokens = 0;
  std::vector<int64_t> micro_tokens;
  for (int64_t i = 0; i < options_.grad_accum; ++i) {
    auto next = data_.Next();
    if (!next.ok()) {
      return absl::Status(next.status().code(), absl::StrCat("data source at step ", step_ + 1,
                                                             ": ", next.status().message()));
    }
    auto batch = PrepareBatch(std::move(*next), device, step_);
    if (!batch.ok()) return batch.status();
    micro_tokens.push_back(CountCausalLmTokens(batch->labels));
    step_tokens += micro_tokens.back();
    input_tokens += batch->input_ids.numel();
    batches.push_back(std::move(*batch));
  }
  end_phase("data");

  optimizer_->ZeroGrad();
  torch::Tensor loss_sum =
      torch::scalar_tensor(0.0, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  for (size_t i = 0; i < batches.size(); ++i) {
    const double weight = MicroBatchLossWeight(options_.loss_normalization, micro_tokens[i],
                                               step_tokens, options_.grad_accum);
    if (micro_tokens[i] == 0 || weight == 0) continue;  // nothing supervised
    absl::StatusOr<LossResult> loss;
    if (options_.loss_chunk_tokens > 0) {
      const torch::Tensor hidden = model_.ForwardHidden(batches[i].input_ids);
      end_phase("forward");
      loss = ChunkedCausalLmLoss(hidden, model_.lm_head(), batches[i].labels,
                                 options_.loss_chunk_tokens);
    } else {
      const torch::Tensor logits = model_.Forward(batches[i].input_ids);
      end_phase("forward");
      loss = CausalLmLoss(logits, batches[i].labels);
    }
    if (!loss.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step_ + 1, " micro-batch ", i, ": ", loss.status().message()));
    }
    end_phase("loss");
    (loss->loss * weight).backward();
    loss_sum += loss->loss.detach().to(torch::kFloat64) * weight;
    end_phase("backward");
  }

  std::vector<torch::Tensor> tensors;
  for (const NamedParameter& p : optimizer_->parameters()) tensors.push_back(p.tensor);
  const double grad_norm = ClipGradNorm(tensors, options_.clip_norm);
  const double lr = schedule_.LearningRate(step_ + 1);
  if (std::isfinite(grad_norm)) {
    if (absl::Status st = optimizer_->Step(lr); !st.ok()) return st;
  } else {
    ++skipped_steps_;
  }
  optimizer_->ZeroGrad();
  end_phase("optimizer");

  ++step_;
  epoch_ = batches.back().epoch;
  tokens_seen_ += input_tokens;
  last_loss_ = step_tokens > 0 ? loss_sum.item<double>() : std::numeric_limits<double>::quiet_NaN();
  last_lr_ = lr;
  last_grad_norm_ = grad_norm;
  return absl::OkStatus();
}

absl::Status Trainer::Evaluate() {
  torch::NoGradGuard no_grad;
  auto loss = eval_(model_);
  if (!loss.ok()) {
    return absl::Status(loss.status().code(),
                        absl::StrCat("evaluation at step ", step_, ": ", loss.status().message()));
  }
  last_eval_loss_ = *loss;
  last_eval_step_ = step_;
  return absl::OkStatus();
}

void Trainer::Report(const std::string& phase, double seconds, int64_t steps_run,
                     int64_t tokens_run) {
  if (!progress_) return;
  Progress p;
  p.phase = phase;
  p.step = step_;
  p.total_steps = options_.max_steps;
  p.epoch = epoch_;
  p.loss = last_loss_;
  p.lr = last_lr_;
  p.grad_norm = last_grad_norm_;
  p.eval_loss = last_eval_loss_;
  if (seconds > 0) p.tokens_per_second = static_cast<double>(tokens_run) / seconds;
  if (steps_run > 0) {
    p.eta_seconds =
        seconds / static_cast<double>(steps_run) * static_cast<double>(options_.max_steps - step_);
  }
  progress_(p);
}

absl::StatusOr<std::string> Trainer::SaveCheckpoint() {
  if (options_.checkpoint_dir.empty()) {
    return absl::FailedPreconditionError("SaveCheckpoint: options.checkpoint_dir is empty");
  }
  try {
    return WriteCheckpoint();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("checkpoint at step ", step_, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::string> Trainer::WriteCheckpoint() {
  TrainingCheckpoint ckpt;
  ckpt.step = step_;
  ckpt.epoch = epoch_;
  ckpt.tokens_seen = tokens_seen_;
  ckpt.data_position = data_.State();
  ckpt.metrics = {{"loss", last_loss_},
                  {"lr", last_lr_},
                  {"grad_norm", last_grad_norm_},
                  {"eval_loss", last_eval_loss_},
                  {"eval_step", static_cast<double>(last_eval_step_)},
                  {"skipped_steps", static_cast<double>(skipped_steps_)}};
  ckpt.adapter_state = CollectAdapterState(model_);
  for (auto& [name, tensor] : optimizer_->StateDict()) ckpt.optimizer_state[name] = tensor.cpu();
  ckpt.rng_state = CaptureRngState();
  auto dir = train::SaveCheckpoint(options_.checkpoint_dir, ckpt, options_.keep_checkpoints);
  if (!dir.ok()) return dir.status();
  last_checkpoint_step_ = step_;
  last_checkpoint_ = *dir;
  return dir;
}

absl::StatusOr<TrainSummary> Trainer::Train(int64_t max_new_steps) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = step_;
  const int64_t first_tokens = tokens_seen_;
  const int64_t end =
      max_new_steps < 0 ? options_.max_steps : std::min(options_.max_steps, step_ + max_new_steps);
  const bool checkpoints = !options_.checkpoint_dir.empty();
  TrainSummary summary;
  try {
    while (step_ < end && !stop_requested_.load()) {
      const bool steady = step_ - first_step >= options_.throughput_warmup_steps;
      const auto step_start = std::chrono::steady_clock::now();
      const int64_t tokens_before = tokens_seen_;
      std::map<std::string, double>* phases =
          steady && options_.profile_phases ? &summary.phase_seconds : nullptr;
      if (absl::Status st = RunStep(phases); !st.ok()) return st;
      if (steady) {
        // RunStep has read the loss back already; this wait is for its last kernels.
        if (model_.device().is_cuda()) torch::cuda::synchronize();
        summary.steady_seconds += SecondsSince(step_start);
        summary.steady_tokens += tokens_seen_ - tokens_before;
        ++summary.steady_steps;
      }
      const bool last = step_ == options_.max_steps;
      if (step_ % options_.progress_every == 0 || last || step_ == end) {
        Report("train", SecondsSince(start), step_ - first_step, tokens_seen_ - first_tokens);
      }
      if (eval_ && ((options_.eval_every > 0 && step_ % options_.eval_every == 0) || last)) {
        if (absl::Status st = Evaluate(); !st.ok()) {
          // The step itself completed: keep it (best effort) before failing.
          if (checkpoints && last_checkpoint_step_ != step_) SaveCheckpoint().IgnoreError();
          return st;
        }
        Report("eval", SecondsSince(start), step_ - first_step, tokens_seen_ - first_tokens);
      }
      if (checkpoints && options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0) {
        if (auto dir = SaveCheckpoint(); !dir.ok()) return dir.status();
      }
    }
    // A finished run restored from its final checkpoint may still lack its evaluation.
    if (eval_ && step_ == options_.max_steps && last_eval_step_ != step_) {
      if (absl::Status st = Evaluate(); !st.ok()) return st;
      Report("eval", SecondsSince(start), step_ - first_step, tokens_seen_ - first_tokens);
    }
    if (checkpoints && last_checkpoint_step_ != step_) {
      if (auto dir = SaveCheckpoint(); !dir.ok()) return dir.status();
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("training step ", step_ + 1, ": ", e.what_without_backtrace()));
  }
  summary.step = step_;
  summary.steps_run = step_ - first_step;
  summary.skipped_steps = skipped_steps_;
  summary.tokens_seen = tokens_seen_;
  summary.loss = last_loss_;
  summary.eval_loss = last_eval_loss_;
  summary.seconds = SecondsSince(start);
  summary.finished = step_ == options_.max_steps;
  summary.stopped = stop_requested_.load() && !summary.finished;
  summary.checkpoint = last_checkpoint_;
  return summary;
}

}  // namespace qwha::train
