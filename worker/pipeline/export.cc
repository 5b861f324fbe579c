#include "worker/pipeline/export.h"

#include <cmath>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/adapters/lora.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;

constexpr char kPeftWeights[] = "adapter_model.safetensors";
constexpr char kPeftConfig[] = "adapter_config.json";
constexpr char kKeyPrefix[] = "base_model.model.";
constexpr size_t kSuffixLength = sizeof(".lora_A.weight") - 1;  // = ".lora_B.weight"

absl::Status CopyFile(const std::string& from, const std::string& to) {
  absl::StatusOr<std::string> data = io::ReadFile(from);
  if (!data.ok()) return data.status();
  return io::WriteFileAtomically(to, *data);
}

// The rank_pattern / alpha_pattern key of a slot: its name without the
// leading "model." ("layers.3.mlp.down_proj"). PEFT matches a key k against
// the module name with re.match(".*\\.k$") (older releases) or "(.*\\.)?(k)$"
// (later ones); this form matches the full name under both.
std::string PatternKey(const std::string& slot) {
  return slot.rfind("model.", 0) == 0 ? slot.substr(6) : slot;
}

// The module name PEFT matches target_modules against: the slot's last part.
std::string ModuleName(const std::string& slot) { return slot.substr(slot.rfind('.') + 1); }

// The value of the most frequent key (the smallest among equally frequent).
template <typename T>
T MostCommon(const std::map<T, int>& counts) {
  T best = counts.begin()->first;
  for (const auto& [v, n] : counts) {
    if (n > counts.at(best)) best = v;
  }
  return best;
}

// The pattern value for `slot`: an entry whose key equals the slot name or is
// a dotted suffix of it.
template <typename T>
bool FindPattern(const nlohmann::json& patterns, const std::string& slot, T* out) {
  if (!patterns.is_object()) return false;
  for (const auto& [key, value] : patterns.items()) {
    if (slot == key ||
        (slot.size() > key.size() && slot.compare(slot.size() - key.size(), key.size(), key) == 0 &&
         slot[slot.size() - key.size() - 1] == '.')) {
      *out = value.template get<T>();
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status ExportMergedModel(const model::LlamaModel& model, const std::string& model_dir,
                               const std::string& tokenizer_path, const std::string& dir,
                               torch::ScalarType dtype) {
  model::SaveOptions save;
  save.dtype = dtype;
  if (absl::Status st = model::SaveModel(model, dir, save); !st.ok()) return st;
  if (absl::Status st = CopyFile(tokenizer_path, (fs::path(dir) / "tokenizer.json").string());
      !st.ok()) {
    return st;
  }
  for (const char* name :
       {"tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}) {
    const fs::path from = fs::path(model_dir) / name;
    std::error_code ec;
    if (!fs::exists(from, ec)) continue;
    if (absl::Status st = CopyFile(from.string(), (fs::path(dir) / name).string()); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

double PeftLoraAlpha(double scale, int64_t rank) {
  const double r = static_cast<double>(rank);
  double best = scale * r;
  double best_error = std::abs(best / r - scale);
  double up = best, down = best;
  for (int i = 0; i < 8 && best_error != 0; ++i) {
    up = std::nextafter(up, INFINITY);
    down = std::nextafter(down, -INFINITY);
    for (double alpha : {down, up}) {
      const double error = std::abs(alpha / r - scale);
      if (error < best_error) {
        best = alpha;
        best_error = error;
      }
    }
  }
  return best;
}

absl::Status ExportPeftAdapter(const model::LlamaModel& model,
                               const std::string& base_model_name_or_path, const std::string& dir) {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::pair<int64_t, double>> rank_alpha;  // slot → (r, alpha)
  std::map<int64_t, int> rank_counts;
  std::set<std::string> modules;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    const adapters::Adapter* adapter = slot->adapter();
    if (adapter == nullptr) continue;
    const auto* lora = dynamic_cast<const adapters::LoraAdapter*>(adapter);
    if (lora == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PEFT export: ", slot->name(), " has a ", adapters::AdapterTypeName(adapter->type()),
          " adapter; only lora, loftq and cloq adapters have a PEFT form"));
    }
    std::map<std::string, torch::Tensor> state = lora->StateDict();
    const std::string key = kKeyPrefix + slot->name();
    tensors[key + ".lora_A.weight"] =
        state.at("lora_A").detach().to(torch::kCPU, torch::kFloat32).contiguous();
    tensors[key + ".lora_B.weight"] =
        state.at("lora_B").detach().to(torch::kCPU, torch::kFloat32).contiguous();
    rank_alpha[slot->name()] = {lora->rank(), PeftLoraAlpha(lora->scale(), lora->rank())};
    ++rank_counts[lora->rank()];
    modules.insert(ModuleName(slot->name()));
  }
  if (tensors.empty()) return absl::InvalidArgumentError("PEFT export: the model has no adapters");

  const int64_t r = MostCommon(rank_counts);
  std::map<double, int> alpha_counts;
  for (const auto& [slot, ra] : rank_alpha) {
    if (ra.first == r) ++alpha_counts[ra.second];
  }
  const double alpha = MostCommon(alpha_counts);
  nlohmann::json rank_pattern = nlohmann::json::object();
  nlohmann::json alpha_pattern = nlohmann::json::object();
  for (const auto& [slot, ra] : rank_alpha) {
    if (ra.first != r) rank_pattern[PatternKey(slot)] = ra.first;
    if (ra.second != alpha) alpha_pattern[PatternKey(slot)] = ra.second;
  }
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model_name_or_path},
      {"r", r},
      {"lora_alpha", alpha},
      {"lora_dropout", 0.0},
      {"target_modules", std::vector<std::string>(modules.begin(), modules.end())},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"use_rslora", false},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
      {"revision", nullptr},
  };
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("PEFT export: create ", dir, ": ", ec.message()));
  absl::Status st =
      io::WriteSafetensors((fs::path(dir) / kPeftWeights).string(), tensors, {{"format", "pt"}});
  if (!st.ok()) return st;
  return io::WriteFileAtomically((fs::path(dir) / kPeftConfig).string(), config.dump(2) + "\n");
}

absl::StatusOr<PeftAdapter> ReadPeftAdapter(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / kPeftConfig).string();
  const std::string weights_path = (fs::path(dir) / kPeftWeights).string();
  absl::StatusOr<std::string> text = io::ReadFile(config_path);
  if (!text.ok()) return text.status();
  auto bad = [](const std::string& path, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("PEFT adapter ", path, ": ", what));
  };
  nlohmann::json config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return bad(config_path, "not a JSON object");
  PeftAdapter out;
  bool rslora = false;
  nlohmann::json rank_pattern, alpha_pattern;
  try {
    if (config.value("peft_type", "") != "LORA") {
      return bad(config_path, "peft_type is not \"LORA\"");
    }
    out.r = config.at("r").get<int64_t>();
    out.lora_alpha = config.at("lora_alpha").get<double>();
    if (config.contains("target_modules") && config["target_modules"].is_array()) {
      out.target_modules = config["target_modules"].get<std::vector<std::string>>();
    }
    if (config.contains("base_model_name_or_path") &&
        config["base_model_name_or_path"].is_string()) {
      out.base_model_name_or_path = config["base_model_name_or_path"].get<std::string>();
    }
    rslora = config.value("use_rslora", false);
    rank_pattern = config.value("rank_pattern", nlohmann::json::object());
    alpha_pattern = config.value("alpha_pattern", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    return bad(config_path, e.what());
  }
  if (out.r < 1) return bad(config_path, "r must be >= 1");

  absl::StatusOr<io::SafetensorsFile> file = io::ReadSafetensors(weights_path);
  if (!file.ok()) return file.status();
  const std::string prefix = kKeyPrefix;
  for (const auto& [key, tensor] : file->tensors) {
    const bool is_a = absl::EndsWith(key, ".lora_A.weight");
    const bool is_b = absl::EndsWith(key, ".lora_B.weight");
    if (key.rfind(prefix, 0) != 0 || !(is_a || is_b) || tensor.dim() != 2) {
      return bad(weights_path, absl::StrCat("unexpected tensor \"", key, "\""));
    }
    const std::string slot = key.substr(prefix.size(), key.size() - prefix.size() - kSuffixLength);
    PeftLayer& layer = out.layers[slot];
    (is_a ? layer.a : layer.b) = tensor.to(torch::kFloat32);
  }
  for (auto& [slot, layer] : out.layers) {
    if (!layer.a.defined() || !layer.b.defined()) {
      return bad(weights_path, absl::StrCat(slot, ": lora_A and lora_B must both be present"));
    }
    int64_t r = out.r;
    double alpha = out.lora_alpha;
    try {
      FindPattern(rank_pattern, slot, &r);
      FindPattern(alpha_pattern, slot, &alpha);
    } catch (const nlohmann::json::exception& e) {
      return bad(config_path, absl::StrCat("rank_pattern / alpha_pattern: ", e.what()));
    }
    if (layer.a.size(0) != r || layer.b.size(1) != r) {
      return bad(weights_path, absl::StrCat(slot, ": lora_A ", layer.a.size(0), " × ",
                                            layer.a.size(1), " and lora_B ", layer.b.size(0), " × ",
                                            layer.b.size(1), " do not have rank ", r));
    }
    layer.scale =
        rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
  }
  return out;
}

absl::Status AttachPeftAdapter(model::LlamaModel& model, const PeftAdapter& adapter) {
  for (const auto& [name, layer] : adapter.layers) {
    model::LinearSlot* slot = model.FindLinear(name);
    if (slot == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("PEFT adapter: the model has no ", name));
    }
    if (layer.a.size(1) != slot->in_features() || layer.b.size(0) != slot->out_features()) {
      return absl::InvalidArgumentError(
          absl::StrCat("PEFT adapter: ", name, " is ", layer.b.size(0), " × ", layer.a.size(1),
                       ", the slot ", slot->out_features(), " × ", slot->in_features()));
    }
    auto lora = std::make_unique<adapters::LoraAdapter>(
        adapters::AdapterType::kLora, slot->out_features(), slot->in_features(), layer.a.size(0),
        layer.scale, layer.a.clone(), layer.b.clone());
    lora->To(slot->device(), slot->dtype());
    if (absl::Status st = slot->AttachAdapter(std::move(lora)); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace qwha::pipeline
