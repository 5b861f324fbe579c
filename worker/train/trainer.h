// The training loop for adapters attached to a model::LlamaModel.
//
// Only the adapters' trainable tensors train; the (quantized) base is frozen.
// One optimizer step:
//
//   grad_accum × { batch = data.Next(); h = model.ForwardHidden(batch.input_ids);
//                  (ChunkedCausalLmLoss(h, model.lm_head(), batch.labels) · weight).backward() }
//   norm = ClipGradNorm(params, clip_norm)        non-finite: skip the update
//   AdamW step at lr = schedule(step)             then drop the gradients
//   progress callback; evaluation and checkpoint when due
//
// A run stopped after k steps (RequestStop, a step limit, a crash after a
// checkpoint) and continued with Resume() computes bitwise the same adapter
// values on the CPU as an uninterrupted run: the checkpoint holds the adapter
// values, the optimizer moments and master copies, the step (the schedule's
// position), the generator states and the data position.
//
// Usage (worker/train/trainer_test.cc has a complete example):
//   auto trainer = Trainer::Create(model, data, options);       // adapters attached
//   (*trainer)->SetProgressCallback(...); (*trainer)->SetEvalFn(...);
//   if (resuming) (*trainer)->Resume();                         // latest checkpoint
//   auto summary = (*trainer)->Train();
//
// Thread safety: Train, Resume and SaveCheckpoint run on one thread at a time;
// RequestStop may be called from any thread at any time. The model and the
// data source are borrowed and must outlive the trainer; nothing else may use
// the model while Train runs.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/llama.h"
#include "worker/train/batch_source.h"
#include "worker/train/grad.h"
#include "worker/train/optimizer.h"
#include "worker/train/progress.h"
#include "worker/train/schedule.h"

namespace qwha::train {

struct TrainOptions {
  // --- Optimizer: AdamW (worker/train/optimizer.h) ---
  // Peak learning rate. 2e-4 is what the QWHA reference implementation
  // (github.com/vantaa89/qwha, GSM8K recipe; 5e-5 for Alpaca) uses. Note its
  // spectrum scaling: there ΔW = (4000 / sqrt(out)) / n · F·H, i.e. an
  // AdapterConfig::scaling of about 70 for 3k-4k wide layers. A spectrum
  // adapter's step on ΔW grows with lr · scaling / n, so with scaling = 1 the
  // equivalent rate is about 70× larger (≈ 1e-2). LoRA-family adapters use
  // the usual LoRA rates (1e-4 .. 3e-4).
  double lr = 2e-4;
  // betas (0.9, 0.999), eps 1e-8, weight_decay 0 (decoupled).
  AdamWOptions adamw;

  // --- Learning-rate schedule (worker/train/schedule.h) over max_steps ---
  // Cosine decay to 0 without warmup by default; the reference recipe uses
  // warmup_steps ≈ 6% of max_steps.
  ScheduleOptions schedule;

  // --- Loop ---
  int64_t max_steps = 1000;  // optimizer steps of the whole run, >= 1
  int64_t grad_accum = 1;    // micro-batches per optimizer step, >= 1
  LossNormalization loss_normalization = LossNormalization::kPerToken;
  double clip_norm = 1.0;  // global gradient-norm limit; <= 0 disables clipping

  // Evaluate (with the EvalFn, if one is set) every eval_every steps and after
  // the last step; 0 = only after the last step.
  int64_t eval_every = 0;
  // Write a checkpoint every checkpoint_every steps and whenever Train returns
  // after completing a step; 0 = only when Train returns. No checkpoints if
  // checkpoint_dir is empty.
  int64_t checkpoint_every = 0;
  std::string checkpoint_dir;
  int keep_checkpoints = 3;  // newest step directories kept; <= 0 keeps all
  // Call the progress callback every progress_every steps (and after the last).
  int64_t progress_every = 1;

  // Create() seeds the default CPU and CUDA generators with this (the loop
  // itself draws no random numbers; data order belongs to the BatchSource).
  uint64_t seed = 0;

  // Dtype the adapter parameters are stored in (float32, bfloat16, float16).
  // Low-precision parameters keep a float32 master copy in the optimizer. The
  // compute dtype is the model's own (LlamaModel::dtype(), chosen when it is
  // loaded); logits and the loss are float32.
  torch::ScalarType adapter_dtype = torch::kFloat32;

  // Supervised positions whose logits the loss forms at a time
  // (ChunkedCausalLmLoss: the [B, T, V] logits never exist); 0 forms the whole
  // float32 logits (model.Forward + CausalLmLoss). The loss is the same
  // function either way.
  int64_t loss_chunk_tokens = 1024;

  // Steps at the start of each Train call left out of TrainSummary's
  // steady-state figures (they carry the start-up costs: kernel loading,
  // allocator growth, library autotuning).
  int64_t throughput_warmup_steps = 3;
  // Synchronize the device after each phase of a step (data, forward, loss,
  // backward, optimizer) and add the phase times of the steady-state steps up in
  // TrainSummary::phase_seconds. For profiling: the synchronizations cost a
  // little throughput.
  bool profile_phases = false;

  // Recompute each decoder layer's activations in backward instead of keeping
  // them (LlamaModel::SetActivationCheckpointing, set by Create): activation
  // memory of one layer instead of all, for one more forward pass of the
  // layers. The gradients and so the trained adapter are unchanged.
  bool activation_checkpointing = false;
};

// OK iff every field is in its documented range; the message names the field.
absl::Status ValidateTrainOptions(const TrainOptions& options);

// Evaluates the model (called with gradients off) and returns its eval loss.
using EvalFn = std::function<absl::StatusOr<double>(const model::LlamaModel&)>;

struct TrainSummary {
  int64_t step = 0;           // steps completed, including those before a Resume
  int64_t steps_run = 0;      // steps this Train call ran
  int64_t skipped_steps = 0;  // steps whose update was skipped for a non-finite gradient
  int64_t tokens_seen = 0;    // input tokens consumed, including those before a Resume
  double loss = std::numeric_limits<double>::quiet_NaN();       // last step's loss
  double eval_loss = std::numeric_limits<double>::quiet_NaN();  // last evaluation
  double seconds = 0;                                           // wall time of this call
  // The steps of this call after its first options.throughput_warmup_steps:
  // how many, their wall time (each step ends with a device synchronization;
  // evaluations and checkpoints between steps are not counted) and their input
  // tokens. Zero when the call ran no more steps than the warm-up.
  int64_t steady_steps = 0;
  double steady_seconds = 0;
  int64_t steady_tokens = 0;
  // With options.profile_phases: seconds per phase ("data", "forward", "loss",
  // "backward", "optimizer") summed over the steady-state steps; else empty.
  std::map<std::string, double> phase_seconds;
  bool finished = false;   // step == max_steps
  bool stopped = false;    // RequestStop ended the call early
  std::string checkpoint;  // last checkpoint directory written, or ""
};

class Trainer {
 public:
  // A trainer for the adapters attached to `model`'s linear slots. Moves each
  // adapter to its slot's device in options.adapter_dtype, collects the
  // trainable tensors (named "<slot name>.adapter.<i>"), builds the optimizer
  // and schedule and seeds the generators. InvalidArgument for invalid
  // options; FailedPrecondition if no slot has an adapter.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(model::LlamaModel& model,
                                                         BatchSource& data,
                                                         const TrainOptions& options);

  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  ~Trainer();

  void SetProgressCallback(ProgressCallback callback) { progress_ = std::move(callback); }
  void SetEvalFn(EvalFn eval) { eval_ = std::move(eval); }

  // Continues from the newest checkpoint under `root` (options.checkpoint_dir
  // if empty): adapter values, optimizer state, step, epoch, token count,
  // metrics, generator states and the data position (BatchSource::Restore).
  // Call before Train, on a trainer whose model has the same adapters
  // attached. NotFound if there is no checkpoint; InvalidArgument if it does
  // not match the model or options (e.g. its step exceeds max_steps). On error
  // the model and trainer may be partly restored: discard them.
  absl::Status Resume(const std::string& root = "");

  // Runs steps until max_steps, until `max_new_steps` more steps have run
  // (< 0: no such limit) or until RequestStop — then evaluates if the run is
  // finished and writes a checkpoint (when checkpoint_dir is set). Errors
  // from the data source, the EvalFn, checkpoint writes or LibTorch (as
  // Internal) are returned naming the step; the last checkpoint stays valid
  // (an EvalFn error first checkpoints the step that completed).
  absl::StatusOr<TrainSummary> Train(int64_t max_new_steps = -1);

  // Makes Train return after the step in progress (sticky: later Train calls
  // return at once). Thread-safe.
  void RequestStop() { stop_requested_.store(true); }

  // Writes a checkpoint of the current state into options.checkpoint_dir and
  // returns its directory. FailedPrecondition if checkpoint_dir is empty.
  absl::StatusOr<std::string> SaveCheckpoint();

  int64_t step() const { return step_; }
  const TrainOptions& options() const { return options_; }
  // The trainable tensors (updated in place by Train).
  const std::vector<NamedParameter>& parameters() const { return optimizer_->parameters(); }

 private:
  Trainer(model::LlamaModel& model, BatchSource& data, const TrainOptions& options,
          LearningRateSchedule schedule);

  // The adapters' trainable tensors, named "<slot name>.adapter.<i>".
  std::vector<NamedParameter> CollectParameters() const;
  absl::Status ResumeFrom(const std::string& dir);
  absl::StatusOr<std::string> WriteCheckpoint();
  // One optimizer step: grad_accum micro-batches, clip, update. With
  // `phase_seconds` (options.profile_phases), synchronizes after each phase and
  // adds its time there.
  absl::Status RunStep(std::map<std::string, double>* phase_seconds);
  absl::Status Evaluate();
  void Report(const std::string& phase, double seconds, int64_t steps_run, int64_t tokens_run);

  model::LlamaModel& model_;
  BatchSource& data_;
  TrainOptions options_;
  LearningRateSchedule schedule_;
  std::unique_ptr<AdamW> optimizer_;
  ProgressCallback progress_;
  EvalFn eval_;
  std::atomic<bool> stop_requested_{false};

  // Run state, saved in checkpoints.
  int64_t step_ = 0;
  int64_t epoch_ = 0;
  int64_t tokens_seen_ = 0;
  int64_t skipped_steps_ = 0;
  double last_loss_ = std::numeric_limits<double>::quiet_NaN();
  double last_lr_ = 0;
  double last_grad_norm_ = 0;
  double last_eval_loss_ = std::numeric_limits<double>::quiet_NaN();
  int64_t last_eval_step_ = -1;
  int64_t last_checkpoint_step_ = -1;
  std::string last_checkpoint_;
};

}  // namespace qwha::train
