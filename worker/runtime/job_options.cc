#include "worker/runtime/job_options.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/adapters/adapter.h"
#include "worker/pipeline/stages.h"
#include "worker/quant/quantizer.h"
#include "worker/train/schedule.h"

namespace qwha::runtime {
namespace {

// Defaults that job.proto documents differently from RecipeOptions (which
// serves qwha-train and library callers).
constexpr int64_t kDefaultMaxSteps = 100;        // TrainingConfig.max_steps
constexpr int64_t kDefaultCheckpointEvery = 50;  // TrainingConfig.checkpoint_every
// TrainingConfig.learning_rate (see worker/train/trainer.h on the spectrum
// scaling: ΔW moves by about lr/n per unit step of F, so spectrum adapters
// need a larger rate than LoRA's).
constexpr double kDefaultSpectrumLearningRate = 1e-2;
constexpr double kDefaultLoraLearningRate = 2e-4;

absl::Status Invalid(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

absl::Status ConvertQuantization(const qwha::v1::QuantizationConfig& q, quant::QuantConfig& out) {
  if (q.bits() == 0) return Invalid("quantization.bits", "required (2, 3 or 4)");
  if (q.bits() < 2 || q.bits() > 4) {
    return Invalid("quantization.bits", absl::StrCat("must be 2, 3 or 4, got ", q.bits()));
  }
  out.bits = q.bits();
  if (q.group_size() != 0) {
    if (q.group_size() != 32 && q.group_size() != 64 && q.group_size() != 128) {
      return Invalid("quantization.group_size",
                     absl::StrCat("must be 32, 64 or 128, got ", q.group_size()));
    }
    out.group_size = q.group_size();
  }
  if (!q.method().empty()) {
    absl::StatusOr<quant::QuantMethod> method = quant::ParseQuantMethod(q.method());
    if (!method.ok()) return Invalid("quantization.method", std::string(method.status().message()));
    out.method = *method;
  }
  return absl::OkStatus();
}

absl::Status ConvertAdapter(const qwha::v1::AdapterConfig& a, pipeline::RecipeOptions& out) {
  if (!a.type().empty()) {
    absl::StatusOr<adapters::AdapterType> type = adapters::ParseAdapterType(a.type());
    if (!type.ok()) return Invalid("adapter.type", std::string(type.status().message()));
    out.adapter.type = *type;
  }
  if (a.rank() < 0) return Invalid("adapter.rank", absl::StrCat("must be >= 0, got ", a.rank()));
  if (a.rank() > 0) out.adapter.rank = a.rank();
  if (a.param_count() < 0) {
    return Invalid("adapter.param_count", absl::StrCat("must be >= 0, got ", a.param_count()));
  }
  if (a.param_count() > 0 && !adapters::IsSpectrumType(out.adapter.type)) {
    return Invalid("adapter.param_count",
                   absl::StrCat("only for spectrum adapters (qwha, random-wht), not ",
                                adapters::AdapterTypeName(out.adapter.type)));
  }
  out.adapter.num_params = a.param_count();
  if (!std::isfinite(a.alpha()) || a.alpha() < 0) {
    return Invalid("adapter.alpha", absl::StrCat("must be finite and >= 0, got ", a.alpha()));
  }
  if (a.alpha() != 0) out.adapter.alloc_alpha = a.alpha();
  if (!std::isfinite(a.scaling()) || a.scaling() < 0) {
    return Invalid("adapter.scaling", absl::StrCat("must be finite and >= 0, got ", a.scaling()));
  }
  if (a.scaling() != 0) out.adapter.scaling = a.scaling();
  out.target_modules.assign(a.target_modules().begin(), a.target_modules().end());
  if (!out.target_modules.empty()) {
    absl::Status st = pipeline::ValidateTargetModules(out.target_modules);
    if (!st.ok()) return Invalid("adapter.target_modules", std::string(st.message()));
  }
  return absl::OkStatus();
}

// A TrainingConfig count: 0 keeps `current` (the default), negative is invalid.
absl::Status Count(const std::string& field, int64_t value, int64_t& current) {
  if (value < 0) return Invalid(field, absl::StrCat("must be >= 0, got ", value));
  if (value > 0) current = value;
  return absl::OkStatus();
}

absl::Status ConvertTraining(const qwha::v1::TrainingConfig& t, const torch::Device& device,
                             bool has_eval_data, pipeline::RecipeOptions& out) {
  out.train.max_steps = kDefaultMaxSteps;
  out.train.checkpoint_every = kDefaultCheckpointEvery;
  absl::Status st;
  if (!(st = Count("training.max_steps", t.max_steps(), out.train.max_steps)).ok()) return st;
  if (!(st = Count("training.batch_size", t.batch_size(), out.batch_size)).ok()) return st;
  if (!(st = Count("training.seq_len", t.seq_len(), out.seq_len)).ok()) return st;
  if (t.seq_len() == 1) return Invalid("training.seq_len", "must be at least 2, got 1");
  if (!(st = Count("training.grad_accum", t.grad_accum(), out.train.grad_accum)).ok()) return st;
  if (!(st = Count("training.eval_every", t.eval_every(), out.train.eval_every)).ok()) return st;
  if (!(st = Count("training.checkpoint_every", t.checkpoint_every(), out.train.checkpoint_every))
           .ok()) {
    return st;
  }
  if (!(st =
            Count("training.calibration_batches", t.calibration_batches(), out.calibration_batches))
           .ok()) {
    return st;
  }
  if (!(st =
            Count("training.exact_match_samples", t.exact_match_samples(), out.exact_match_samples))
           .ok()) {
    return st;
  }
  if (t.warmup_steps() < 0 || t.warmup_steps() > out.train.max_steps) {
    return Invalid("training.warmup_steps",
                   absl::StrCat("must be in [0, max_steps = ", out.train.max_steps, "], got ",
                                t.warmup_steps()));
  }
  out.train.schedule.warmup_steps = t.warmup_steps();

  if (!std::isfinite(t.learning_rate()) || t.learning_rate() < 0) {
    return Invalid("training.learning_rate",
                   absl::StrCat("must be finite and >= 0, got ", t.learning_rate()));
  }
  out.train.lr = t.learning_rate() != 0                       ? t.learning_rate()
                 : adapters::IsSpectrumType(out.adapter.type) ? kDefaultSpectrumLearningRate
                                                              : kDefaultLoraLearningRate;
  if (!std::isfinite(t.weight_decay()) || t.weight_decay() < 0) {
    return Invalid("training.weight_decay",
                   absl::StrCat("must be finite and >= 0, got ", t.weight_decay()));
  }
  out.train.adamw.weight_decay = t.weight_decay();
  if (!t.schedule().empty()) {
    absl::StatusOr<train::ScheduleType> type = train::ParseScheduleType(t.schedule());
    if (!type.ok()) return Invalid("training.schedule", std::string(type.status().message()));
    out.train.schedule.type = *type;
  }
  if (std::isnan(t.max_grad_norm()) || std::isinf(t.max_grad_norm())) {
    return Invalid("training.max_grad_norm",
                   absl::StrCat("must be finite, got ", t.max_grad_norm()));
  }
  if (t.max_grad_norm() != 0) out.train.clip_norm = t.max_grad_norm();  // negative: no clipping

  out.train.activation_checkpointing = t.activation_checkpointing();
  out.seed = t.seed();
  out.train.seed = t.seed();
  out.adapter.seed = t.seed();

  if (t.dtype().empty()) {
    out.dtype = device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  } else if (t.dtype() == "float32") {
    out.dtype = torch::kFloat32;
  } else if (t.dtype() == "bfloat16") {
    out.dtype = torch::kBFloat16;
  } else {
    return Invalid("training.dtype",
                   absl::StrCat("must be \"float32\" or \"bfloat16\", got \"", t.dtype(), "\""));
  }

  if (!(t.eval_fraction() >= 0 && t.eval_fraction() < 1)) {
    return Invalid("training.eval_fraction",
                   absl::StrCat("must be in [0, 1), got ", t.eval_fraction()));
  }
  if (has_eval_data) {
    out.eval_fraction = 0;  // the eval set replaces the held-out share
  } else if (t.eval_fraction() != 0) {
    out.eval_fraction = t.eval_fraction();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<pipeline::RecipeOptions> JobSpecToRecipeOptions(const qwha::v1::JobSpec& spec,
                                                               const JobPaths& paths,
                                                               const torch::Device& device) {
  pipeline::RecipeOptions out;
  if (paths.model_dir.empty()) return Invalid("model_dir", "required");
  if (paths.train_data.empty()) return Invalid("train_data", "required");
  if (paths.output_dir.empty()) return Invalid("output_dir", "required");
  out.model_dir = paths.model_dir;
  out.train_data = paths.train_data;
  out.eval_data = paths.eval_data;
  out.output_dir = paths.output_dir;
  out.cache_dir = paths.cache_dir;
  out.resume = paths.resume;
  out.device = device;

  if (absl::Status st = ConvertQuantization(spec.quantization(), out.quant); !st.ok()) return st;
  if (absl::Status st = ConvertAdapter(spec.adapter(), out); !st.ok()) return st;
  if (absl::Status st = ConvertTraining(spec.training(), device, !paths.eval_data.empty(), out);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = pipeline::ValidateRecipeOptions(out); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("job spec: ", st.message()));
  }
  return out;
}

}  // namespace qwha::runtime
