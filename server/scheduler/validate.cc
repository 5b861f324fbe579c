#include "server/scheduler/validate.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/scheduler/status_macros.h"

namespace qwha::scheduler {
namespace {

absl::Status Invalid(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

template <typename T>
absl::Status InRange(const std::string& field, T value, T lo, T hi) {
  if (value < lo || value > hi) {
    return Invalid(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

absl::Status FiniteInRange(const std::string& field, double value, double lo, double hi) {
  if (!std::isfinite(value)) return Invalid(field, "must be a finite number");
  return InRange(field, value, lo, hi);
}

absl::Status OneOf(const std::string& field, const std::string& value,
                   const std::set<std::string>& allowed) {
  if (value.empty() || allowed.count(value)) return absl::OkStatus();
  return Invalid(field, absl::StrCat("'", value, "' is not one of ", absl::StrJoin(allowed, ", ")));
}

const std::set<std::string> kModules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                        "gate_proj", "up_proj", "down_proj"};

// group_size must divide every adapted layer's input size.
absl::Status CheckGroupSize(int32_t group_size, const v1::BaseModel& model,
                            registry::RegistryStore& registry) {
  for (const v1::FileInfo& file : model.files()) {
    if (file.name() != "config.json") continue;
    auto text = registry.blobs()->Read(file.sha256(), 0, file.size());
    if (!text.ok()) return absl::OkStatus();  // the worker reports unreadable configs
    nlohmann::json config = nlohmann::json::parse(*text, nullptr, false);
    if (config.is_discarded()) return absl::OkStatus();
    for (const char* key : {"hidden_size", "intermediate_size"}) {
      if (!config.contains(key) || !config[key].is_number_integer()) continue;
      int64_t size = config[key].get<int64_t>();
      if (size % group_size != 0) {
        return Invalid("quantization.group_size",
                       absl::StrCat(group_size, " does not divide the model's ", key, " ", size));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels,
                            const std::string& field) {
  if (labels.size() > 32) return Invalid(field, "at most 32 labels");
  for (const auto& [key, value] : labels) {
    bool ok = !key.empty() && key.size() <= 63;
    for (char c : key) {
      ok = ok &&
           ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-');
    }
    if (!ok)
      return Invalid(field, absl::StrCat("key '", key, "' must be 1-63 characters of [a-z0-9_.-]"));
    if (value.size() > 256)
      return Invalid(absl::StrCat(field, ".", key), "value longer than 256 bytes");
  }
  return absl::OkStatus();
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec, registry::RegistryStore& registry) {
  const v1::QuantizationConfig& q = spec.quantization();
  if (q.bits() != 2 && q.bits() != 3 && q.bits() != 4) {
    return Invalid("quantization.bits", absl::StrCat("must be 2, 3 or 4, got ", q.bits()));
  }
  RETURN_IF_ERROR(InRange<int32_t>("quantization.group_size", q.group_size(), 0, 8192));
  RETURN_IF_ERROR(OneOf("quantization.method", q.method(), {"rtn", "gptq"}));

  const v1::AdapterConfig& a = spec.adapter();
  RETURN_IF_ERROR(OneOf("adapter.type", a.type(), {"qwha", "lora", "loftq", "cloq", "random-wht"}));
  RETURN_IF_ERROR(InRange<int32_t>("adapter.rank", a.rank(), 0, 4096));
  RETURN_IF_ERROR(InRange<int64_t>("adapter.param_count", a.param_count(), 0, int64_t{1} << 40));
  if (a.param_count() > 0 &&
      !(a.type().empty() || a.type() == "qwha" || a.type() == "random-wht")) {
    return Invalid("adapter.param_count",
                   "only spectrum adapters (qwha, random-wht) take a parameter count");
  }
  RETURN_IF_ERROR(FiniteInRange("adapter.alpha", a.alpha(), 0, 16));
  RETURN_IF_ERROR(FiniteInRange("adapter.scaling", a.scaling(), 0, 1e9));
  std::set<std::string> seen;
  for (const std::string& m : a.target_modules()) {
    if (!kModules.count(m)) {
      return Invalid("adapter.target_modules",
                     absl::StrCat("'", m, "' is not one of ", absl::StrJoin(kModules, ", ")));
    }
    if (!seen.insert(m).second)
      return Invalid("adapter.target_modules", absl::StrCat("'", m, "' twice"));
  }

  const v1::TrainingConfig& t = spec.training();
  RETURN_IF_ERROR(InRange<int64_t>("training.max_steps", t.max_steps(), 0, 10'000'000));
  RETURN_IF_ERROR(FiniteInRange("training.learning_rate", t.learning_rate(), 0, 1));
  RETURN_IF_ERROR(InRange<int64_t>("training.batch_size", t.batch_size(), 0, 4096));
  RETURN_IF_ERROR(InRange<int64_t>("training.seq_len", t.seq_len(), 0, 131072));
  if (t.seq_len() != 0 && t.seq_len() < 2) return Invalid("training.seq_len", "must be at least 2");
  RETURN_IF_ERROR(InRange<int64_t>("training.grad_accum", t.grad_accum(), 0, 4096));
  RETURN_IF_ERROR(FiniteInRange("training.weight_decay", t.weight_decay(), 0, 1));
  RETURN_IF_ERROR(InRange<int64_t>("training.warmup_steps", t.warmup_steps(), 0, 10'000'000));
  RETURN_IF_ERROR(OneOf("training.schedule", t.schedule(), {"cosine", "linear"}));
  if (!std::isfinite(t.max_grad_norm())) return Invalid("training.max_grad_norm", "must be finite");
  RETURN_IF_ERROR(InRange<int64_t>("training.eval_every", t.eval_every(), 0, 10'000'000));
  RETURN_IF_ERROR(
      InRange<int64_t>("training.checkpoint_every", t.checkpoint_every(), 0, 10'000'000));
  RETURN_IF_ERROR(
      InRange<int64_t>("training.calibration_batches", t.calibration_batches(), 0, 100000));
  RETURN_IF_ERROR(OneOf("training.dtype", t.dtype(), {"float32", "bfloat16"}));
  RETURN_IF_ERROR(FiniteInRange("training.eval_fraction", t.eval_fraction(), 0, 0.5));
  RETURN_IF_ERROR(
      InRange<int64_t>("training.exact_match_samples", t.exact_match_samples(), 0, 1'000'000));

  const v1::Resources& r = spec.resources();
  RETURN_IF_ERROR(
      InRange<int64_t>("resources.min_memory_bytes", r.min_memory_bytes(), 0, int64_t{1} << 50));
  RETURN_IF_ERROR(
      InRange<int64_t>("resources.timeout_seconds", r.timeout_seconds(), 0, 30 * 86400));
  RETURN_IF_ERROR(InRange<int32_t>("resources.max_attempts", r.max_attempts(), 0, 100));
  RETURN_IF_ERROR(InRange<int32_t>("priority", spec.priority(), -100, 100));
  if (spec.name().size() > 200) return Invalid("name", "longer than 200 bytes");
  RETURN_IF_ERROR(ValidateLabels(spec.labels(), "labels"));

  if (spec.base_model_id().empty()) return Invalid("base_model_id", "required");
  auto model = registry.GetModel(spec.base_model_id());
  if (!model.ok()) {
    if (model.status().code() != absl::StatusCode::kNotFound) return model.status();
    return absl::NotFoundError(
        absl::StrCat("base_model_id: model ", spec.base_model_id(), " not found"));
  }
  if (spec.train_dataset_id().empty()) return Invalid("train_dataset_id", "required");
  for (const auto& [field, id] :
       {std::make_pair(std::string("train_dataset_id"), spec.train_dataset_id()),
        std::make_pair(std::string("eval_dataset_id"), spec.eval_dataset_id())}) {
    if (id.empty()) continue;
    auto dataset = registry.GetDataset(id);
    if (!dataset.ok()) {
      if (dataset.status().code() != absl::StatusCode::kNotFound) return dataset.status();
      return absl::NotFoundError(absl::StrCat(field, ": dataset ", id, " not found"));
    }
  }
  if (q.group_size() > 0) return CheckGroupSize(q.group_size(), *model, registry);
  return absl::OkStatus();
}

}  // namespace qwha::scheduler
