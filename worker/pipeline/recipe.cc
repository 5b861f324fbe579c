#include "worker/pipeline/recipe.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "worker/data/batcher.h"
#include "worker/data/dataset.h"
#include "worker/io/atomic_file.h"
#include "worker/io/in_use_lock.h"
#include "worker/io/safetensors.h"
#include "worker/model/llama.h"
#include "worker/pipeline/base_cache.h"
#include "worker/pipeline/evaluate.h"
#include "worker/pipeline/export.h"
#include "worker/pipeline/stages.h"
#include "worker/tokenizer/tokenizer.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;

// The data batcher yields rows already shifted for next-token prediction
// (labels[t] is the target of position t); the trainer's BatchSource wants
// unshifted labels (labels[t] is the id at position t, the loss shifts). A
// row of L inputs becomes L + 1 tokens: the inputs plus the last target, with
// the labels moved one to the right.
train::Batch ToTrainerBatch(const data::Batch& b, int64_t pad_id) {
  torch::Tensor last = b.labels.slice(1, -1);
  last = torch::where(last < 0, torch::full_like(last, pad_id), last);
  torch::Tensor ignore = torch::full({b.labels.size(0), 1}, -100, b.labels.options());
  train::Batch out;
  out.input_ids = torch::cat({b.input_ids, last}, 1);
  out.labels = torch::cat({ignore, b.labels}, 1);
  out.epoch = b.epoch;
  return out;
}

class DatasetBatchSource : public train::BatchSource {
 public:
  DatasetBatchSource(std::unique_ptr<data::Batcher> batcher, int64_t pad_id)
      : batcher_(std::move(batcher)), pad_id_(pad_id) {}

  absl::StatusOr<train::Batch> Next() override { return ToTrainerBatch(batcher_->Next(), pad_id_); }
  std::string State() const override { return batcher_->State().ToJson(); }
  absl::Status Restore(const std::string& state) override {
    absl::StatusOr<data::BatcherState> parsed = data::BatcherState::FromJson(state);
    if (!parsed.ok()) return parsed.status();
    return batcher_->Restore(*parsed);
  }

 private:
  std::unique_ptr<data::Batcher> batcher_;
  int64_t pad_id_;
};

std::vector<torch::Tensor> CalibrationBatches(const data::Dataset& train,
                                              data::BatcherOptions options, int64_t count,
                                              int64_t pad_id) {
  options.shuffle = true;
  options.seed = options.seed + 1;  // a different order from training's first batches
  absl::StatusOr<std::unique_ptr<data::Batcher>> batcher = data::Batcher::Create(train, options);
  std::vector<torch::Tensor> out;
  if (!batcher.ok()) return out;
  count = std::min(count, (*batcher)->batches_per_epoch());
  for (int64_t i = 0; i < count; ++i) {
    out.push_back(ToTrainerBatch((*batcher)->Next(), pad_id).input_ids);
  }
  return out;
}

absl::Status ExportAdapters(const model::LlamaModel& model, const RecipeOptions& options,
                            const std::vector<SlotInitReport>& reports, const RecipeResult& result,
                            double seconds) {
  std::map<std::string, torch::Tensor> tensors;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    if (slot->adapter() == nullptr) continue;
    for (const auto& [key, value] : slot->adapter()->StateDict()) {
      tensors[slot->name() + "/" + key] = value.detach().to(torch::kCPU).contiguous();
    }
  }
  const std::string adapter_type = adapters::AdapterTypeName(options.adapter.type);
  absl::Status st =
      io::WriteSafetensors((fs::path(options.output_dir) / "adapter.safetensors").string(), tensors,
                           {{"format", "qwha.adapter.v1"}, {"adapter_type", adapter_type}});
  if (!st.ok()) return st;

  nlohmann::json config = {
      {"format", "qwha.adapter.v1"},
      {"adapter_type", adapter_type},
      {"base_model", options.model_dir},
      {"rank_equivalent", options.adapter.rank},
      {"num_params", options.adapter.num_params},
      {"alloc_alpha", options.adapter.alloc_alpha},
      {"scaling", options.adapter.scaling},
      {"target_modules", options.target_modules},
      {"quantization",
       {{"bits", options.quant.bits},
        {"group_size", options.quant.group_size},
        {"method", quant::QuantMethodName(options.quant.method)}}},
  };
  st = io::WriteFileAtomically((fs::path(options.output_dir) / "adapter_config.json").string(),
                               config.dump(2) + "\n");
  if (!st.ok()) return st;

  nlohmann::json layers = nlohmann::json::array();
  for (const auto& r : reports) {
    layers.push_back({{"slot", r.slot},
                      {"trainable_params", r.trainable_params},
                      {"relative_output_error_quantized", r.error_quantized},
                      {"relative_output_error_initialized", r.error_adapted}});
  }
  auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json metrics = {
      {"eval_loss_base", number(result.eval_loss_base)},
      {"eval_loss_quantized", number(result.eval_loss_quantized)},
      {"eval_loss_initialized", number(result.eval_loss_initialized)},
      {"eval_loss_final", number(result.eval_loss_final)},
      {"train_loss_last", number(result.train.loss)},
      {"steps", result.train.step},
      {"tokens_seen", result.train.tokens_seen},
      {"trainable_params", result.trainable_params},
      {"exact_match", number(result.exact_match)},
      {"exact_match_token_accuracy", number(result.exact_match_token_accuracy)},
      {"exact_match_samples", result.exact_match_samples},
      {"quantized_base_cache_hit", result.quantized_base_cache_hit},
      {"seconds", seconds},
      {"layers", layers},
  };
  return io::WriteFileAtomically((fs::path(options.output_dir) / "metrics.json").string(),
                                 metrics.dump(2) + "\n");
}

template <typename T>
absl::Status Annotate(const absl::StatusOr<T>& v, const std::string& step) {
  return absl::Status(v.status().code(), absl::StrCat(step, ": ", v.status().message()));
}

using PhaseFn = std::function<void(const std::string&, const std::string&)>;

// The calibration Grams and the original weights, with the target slots
// quantized: steps 2 and 3 of the recipe.
struct PreparedBase {
  GramMap grams;
  WeightMap originals;
  bool cache_hit = false;
};

// Steps 2 and 3 computed (calibrate on the dense model, then quantize), or
// read from the quantized-base cache when options.cache_dir has the entry.
// A cold run writes the entry; cache problems become warnings.
absl::StatusOr<PreparedBase> CalibrateAndQuantize(model::LlamaModel& model,
                                                  const RecipeOptions& options,
                                                  const std::vector<torch::Tensor>& calibration,
                                                  const PhaseFn& phase,
                                                  std::vector<std::string>* warnings) {
  PreparedBase out;
  BaseCacheKey key;
  std::string entry;
  // Held while the entry is read or written: a worker pruning the cache
  // (runtime::PruneWorkCache, from any process) leaves the entry alone.
  std::optional<io::InUseLock> in_use;
  if (!options.cache_dir.empty()) {
    absl::StatusOr<std::string> digest = ModelDigest(options.model_dir);
    if (!digest.ok()) return digest.status();
    key = {
        *digest,       options.quant,        options.target_modules, CalibrationDigest(calibration),
        model.dtype(), model.device().type()};
    entry = BaseCacheEntryDir(options.cache_dir, key);
    if (absl::StatusOr<io::InUseLock> lock = io::InUseLock::Take(entry); lock.ok()) {
      in_use = std::move(*lock);
    } else if (lock.status().code() != absl::StatusCode::kNotFound) {  // NotFound: no entry yet
      warnings->push_back(absl::StrCat("cache: ", lock.status().message()));
    }
    absl::StatusOr<QuantizedBase> cached = LoadQuantizedBase(entry, key, model, model.device());
    if (cached.ok()) {
      io::MarkUsed(entry);  // pruning removes the least recently used entries first
      phase("calibrating", "cache hit: " + entry);
      phase("quantizing", "cache hit: " + entry);
      auto originals =
          SetQuantizedWeights(model, std::move(cached->weights), options.target_modules);
      if (!originals.ok()) return originals.status();
      out.originals = *std::move(originals);
      out.grams = std::move(cached->grams);
      out.cache_hit = true;
      return out;
    }
    if (cached.status().code() != absl::StatusCode::kNotFound) {
      warnings->push_back(absl::StrCat("rebuilding the cache entry: ", cached.status().message()));
      if (absl::Status st = io::RemoveTree(entry); !st.ok()) {
        warnings->push_back(absl::StrCat("cache: ", st.message()));
      }
    }
  }
  phase("calibrating", absl::StrCat(calibration.size(), " batches"));
  auto grams = CollectCalibration(model, calibration, options.target_modules);
  if (!grams.ok()) return Annotate(grams, "calibrate");
  phase("quantizing",
        absl::StrCat(options.quant.bits, "-bit ", quant::QuantMethodName(options.quant.method)));
  auto originals = QuantizeModel(model, options.quant, *grams, options.target_modules);
  if (!originals.ok()) return Annotate(originals, "quantize");
  out.grams = *std::move(grams);
  out.originals = *std::move(originals);
  if (!entry.empty()) {
    QuantizedBase base;
    for (const model::LinearSlot* slot : model.LinearSlots()) {
      if (out.originals.count(slot->name())) base.weights[slot->name()] = *slot->quantized();
    }
    base.grams = out.grams;
    if (absl::Status st = StoreQuantizedBase(entry, key, base); !st.ok()) {
      warnings->push_back(absl::StrCat("cache not written: ", st.message()));
    }
  }
  return out;
}

// The dtype of the merged export: the checkpoint's, where it can be written.
torch::ScalarType MergedDtype(const model::ModelConfig& config) {
  const torch::ScalarType t = config.torch_dtype;
  return t == torch::kBFloat16 || t == torch::kFloat16 ? t : torch::kFloat32;
}

bool IsLoraFamily(adapters::AdapterType type) {
  return type == adapters::AdapterType::kLora || type == adapters::AdapterType::kLoftq ||
         type == adapters::AdapterType::kCloq;
}

}  // namespace

absl::Status ValidateRecipeOptions(const RecipeOptions& o) {
  if (o.model_dir.empty()) return absl::InvalidArgumentError("model_dir: required");
  if (o.train_data.empty()) return absl::InvalidArgumentError("train_data: required");
  if (o.output_dir.empty()) return absl::InvalidArgumentError("output_dir: required");
  if (o.seq_len < 2) return absl::InvalidArgumentError("seq_len: must be at least 2");
  if (o.batch_size < 1) return absl::InvalidArgumentError("batch_size: must be at least 1");
  if (o.calibration_batches < 1) {
    return absl::InvalidArgumentError("calibration_batches: must be at least 1");
  }
  if (!o.eval_data.empty() && o.eval_fraction != 0) {
    return absl::InvalidArgumentError("eval_fraction: must be 0 when eval_data is given");
  }
  if (o.exact_match_samples < 0) {
    return absl::InvalidArgumentError("exact_match_samples: must be >= 0");
  }
  if (!o.target_modules.empty()) {
    absl::Status st = ValidateTargetModules(o.target_modules);
    if (!st.ok()) return st;
  }
  return train::ValidateTrainOptions(o.train);
}

absl::StatusOr<RecipeResult> RunRecipe(const RecipeOptions& input, const PhaseCallback& on_phase,
                                       const train::ProgressCallback& on_progress) {
  const auto start = std::chrono::steady_clock::now();
  RecipeOptions options = input;
  if (options.target_modules.empty()) options.target_modules = AllTargetModules();
  if (options.tokenizer_path.empty()) {
    options.tokenizer_path = (fs::path(options.model_dir) / "tokenizer.json").string();
  }
  if (options.train.checkpoint_dir.empty()) {
    options.train.checkpoint_dir = (fs::path(options.output_dir) / "checkpoints").string();
  }
  if (absl::Status st = ValidateRecipeOptions(options); !st.ok()) return st;
  auto phase = [&](const std::string& name, const std::string& detail) {
    if (on_phase) on_phase(name, detail);
  };

  // 1. Load the tokenizer, the model and the data.
  phase("loading", options.model_dir);
  auto tokenizer = tokenizer::Tokenizer::FromFile(options.tokenizer_path);
  if (!tokenizer.ok()) return Annotate(tokenizer, "load tokenizer");
  auto model = model::LoadModel(options.model_dir, options.device, options.dtype);
  if (!model.ok()) return Annotate(model, "load model");
  if (options.eager_attention) {
    (*model)->SetAttentionImpl(model::AttentionImpl::kEager).IgnoreError();  // always available
  }
  data::DatasetOptions data_options;
  data_options.train_path = options.train_data;
  data_options.eval_path = options.eval_data;
  data_options.eval_fraction = options.eval_data.empty() ? options.eval_fraction : 0.0;
  data_options.seed = options.seed;
  auto split = data::LoadDatasets(data_options, **tokenizer);
  if (!split.ok()) return Annotate(split, "load data");
  const int64_t pad_id = (*tokenizer)->eos_id().value_or(0);
  data::BatcherOptions batching;
  batching.batch_size = options.batch_size;
  batching.packing.seq_len = options.seq_len;
  batching.packing.pad_id = static_cast<int32_t>(pad_id);
  batching.seed = options.seed;
  data::BatcherOptions eval_batching = batching;
  eval_batching.shuffle = false;
  std::filesystem::create_directories(options.output_dir);

  RecipeResult result;
  auto loss_base = EvalLoss(**model, split->eval, eval_batching, options.eval_batches);
  if (!loss_base.ok()) return Annotate(loss_base, "evaluate base model");
  result.eval_loss_base = *loss_base;

  // 2–3. Calibrate on the dense model (Σ XᵀX of every target projection's
  // input), then quantize the target projections, keeping the originals for
  // step 4 — or read both from the quantized-base cache.
  auto base = CalibrateAndQuantize(
      **model, options,
      CalibrationBatches(split->train, batching, options.calibration_batches, pad_id), phase,
      &result.warnings);
  if (!base.ok()) return base.status();
  result.quantized_base_cache_hit = base->cache_hit;
  auto loss_q = EvalLoss(**model, split->eval, eval_batching, options.eval_batches);
  if (!loss_q.ok()) return Annotate(loss_q, "evaluate quantized model");
  result.eval_loss_quantized = *loss_q;

  // 4. Initialize one adapter per quantized projection.
  phase("initializing", adapters::AdapterTypeName(options.adapter.type));
  auto reports = AttachAdapters(**model, options.adapter, base->originals, base->grams);
  if (!reports.ok()) return Annotate(reports, "initialize adapters");
  base->originals.clear();
  base->grams.clear();
  for (const auto& r : *reports) result.trainable_params += r.trainable_params;
  auto loss_init = EvalLoss(**model, split->eval, eval_batching, options.eval_batches);
  if (!loss_init.ok()) return Annotate(loss_init, "evaluate initialized adapters");
  result.eval_loss_initialized = *loss_init;

  // 5. Train the adapters.
  phase("training", absl::StrCat(options.train.max_steps, " steps"));
  auto batcher = data::Batcher::Create(split->train, batching);
  if (!batcher.ok()) return Annotate(batcher, "batch training data");
  DatasetBatchSource source(*std::move(batcher), pad_id);
  auto trainer = train::Trainer::Create(**model, source, options.train);
  if (!trainer.ok()) return Annotate(trainer, "create trainer");
  (*trainer)->SetProgressCallback(on_progress);
  const data::Dataset& eval_set = split->eval;
  (*trainer)->SetEvalFn([&](const model::LlamaModel& m) {
    return EvalLoss(m, eval_set, eval_batching, options.eval_batches);
  });
  if (options.resume) {
    absl::Status resumed = (*trainer)->Resume();
    if (!resumed.ok() && resumed.code() != absl::StatusCode::kNotFound) {
      return absl::Status(resumed.code(), absl::StrCat("resume: ", resumed.message()));
    }
  }
  auto summary = (*trainer)->Train();
  if (!summary.ok()) return Annotate(summary, "train");
  result.train = *summary;

  // 6. Evaluate the trained adapters.
  phase("evaluating", "");
  auto loss_final = EvalLoss(**model, split->eval, eval_batching, options.eval_batches);
  if (!loss_final.ok()) return Annotate(loss_final, "evaluate trained adapters");
  result.eval_loss_final = *loss_final;
  if (options.exact_match_samples > 0) {
    auto em = ExactMatch(**model, split->eval, options.exact_match_samples);
    if (!em.ok()) return Annotate(em, "exact match");
    result.exact_match = em->ExactMatch();
    result.exact_match_token_accuracy = em->TokenAccuracy();
    result.exact_match_samples = em->samples;
    if (em->samples == 0) {
      result.warnings.push_back("exact match: the eval split has no prompt/completion records");
    }
  }

  // 7. Export the adapter, its configuration and the metrics.
  phase("exporting", options.output_dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  absl::Status exported = ExportAdapters(**model, options, *reports, result, seconds);
  if (!exported.ok())
    return absl::Status(exported.code(), absl::StrCat("export: ", exported.message()));
  result.adapter_path = (fs::path(options.output_dir) / "adapter.safetensors").string();
  if (options.export_merged) {
    result.merged_path = (fs::path(options.output_dir) / "merged").string();
    absl::Status st = ExportMergedModel(**model, options.model_dir, options.tokenizer_path,
                                        result.merged_path, MergedDtype((*model)->config()));
    if (!st.ok())
      return absl::Status(st.code(), absl::StrCat("export merged model: ", st.message()));
  }
  if (IsLoraFamily(options.adapter.type)) {
    result.peft_path = (fs::path(options.output_dir) / "peft").string();
    absl::Status st = ExportPeftAdapter(**model, options.model_dir, result.peft_path);
    if (!st.ok())
      return absl::Status(st.code(), absl::StrCat("export PEFT adapter: ", st.message()));
  }
  return result;
}

}  // namespace qwha::pipeline
