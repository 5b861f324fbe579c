#include "worker/serve/serving_adapter.h"

#include <torch/cuda.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/fwht.h"
#include "worker/adapters/lora.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"
#include "worker/serve/serving_model.h"

namespace qwha::serve {
namespace {

constexpr char kTensorsFile[] = "adapter.safetensors";
constexpr char kConfigFile[] = "adapter_config.json";

absl::Status Invalid(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// The adapter settings that rebuild the training-time AdapterConfig.
struct ConfigFile {
  adapters::AdapterConfig config;
  std::vector<std::string> target_modules;
  int bits = 0;
  int group_size = 0;
  std::string method;
};

absl::StatusOr<ConfigFile> ReadConfig(const std::string& dir) {
  const std::string path = dir + "/" + kConfigFile;
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Invalid(path, "not a JSON object");
  ConfigFile out;
  try {
    absl::StatusOr<adapters::AdapterType> type =
        adapters::ParseAdapterType(j.at("adapter_type").get<std::string>());
    if (!type.ok()) return Invalid(path, std::string(type.status().message()));
    out.config.type = *type;
    out.config.rank = j.value("rank_equivalent", int64_t{64});
    out.config.num_params = j.value("num_params", int64_t{0});
    out.config.alloc_alpha = j.value("alloc_alpha", 1.0);
    out.config.scaling = j.at("scaling").get<double>();
    out.target_modules = j.at("target_modules").get<std::vector<std::string>>();
    const nlohmann::json& q = j.at("quantization");
    out.bits = q.at("bits").get<int>();
    out.group_size = q.at("group_size").get<int>();
    out.method = q.at("method").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return Invalid(path, e.what());
  }
  return out;
}

// "<slot>/<key>" → (slot, key).
absl::StatusOr<std::pair<std::string, std::string>> SplitKey(const std::string& key) {
  const size_t slash = key.rfind('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == key.size()) {
    return Invalid(kTensorsFile, absl::StrCat("key '", key, "' is not <slot name>/<key>"));
  }
  return std::make_pair(key.substr(0, slash), key.substr(slash + 1));
}

// name → shape from a safetensors header, without reading tensor data.
absl::StatusOr<std::map<std::string, std::vector<int64_t>>> ReadShapes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  unsigned char size_bytes[8];
  if (!in.read(reinterpret_cast<char*>(size_bytes), 8)) return Invalid(path, "short file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | size_bytes[i];
  if (n > (uint64_t{100} << 20)) return Invalid(path, "header larger than 100 MiB");
  std::string header(n, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(n)))
    return Invalid(path, "short header");
  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Invalid(path, "header is not a JSON object");
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") continue;
    if (!entry.is_object() || !entry.contains("shape") || !entry["shape"].is_array()) {
      return Invalid(path, absl::StrCat("tensor '", name, "' has no shape"));
    }
    out[name] = entry["shape"].get<std::vector<int64_t>>();
  }
  return out;
}

absl::Status CheckCompatible(const ConfigFile& file, const ServingModel& model) {
  const quant::QuantConfig& q = model.quant();
  const std::string method = file.method.empty() ? "rtn" : file.method;
  if (file.bits != q.bits || file.group_size != q.group_size ||
      method != quant::QuantMethodName(q.method)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the adapter was trained on a ", file.bits, "-bit ", method, " base (group size ",
        file.group_size, "); this server serves a ", q.bits, "-bit ",
        quant::QuantMethodName(q.method), " base (group size ", q.group_size, ")"));
  }
  std::set<std::string> a(file.target_modules.begin(), file.target_modules.end());
  std::set<std::string> b(model.target_modules().begin(), model.target_modules().end());
  if (a != b) {
    return absl::FailedPreconditionError(
        absl::StrCat("the adapter's base had [", absl::StrJoin(a, ","),
                     "] quantized; this server quantizes [", absl::StrJoin(b, ","), "]"));
  }
  return absl::OkStatus();
}

int64_t ElementSize(torch::ScalarType t) { return static_cast<int64_t>(c10::elementSize(t)); }

}  // namespace

int64_t TensorBytes(const torch::Tensor& t) {
  if (!t.defined()) return 0;
  return static_cast<int64_t>(t.storage().nbytes());
}

torch::Tensor SpectrumInput(const torch::Tensor& x) {
  return kernels::Fwht(x, 1.0, /*transpose=*/true);
}

absl::StatusOr<AdapterFileContents> ReadAdapterFiles(const std::string& dir) {
  absl::StatusOr<ConfigFile> config = ReadConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<io::SafetensorsFile> file = io::ReadSafetensors(dir + "/" + kTensorsFile);
  if (!file.ok()) return file.status();
  AdapterFileContents out;
  out.type = config->config.type;
  out.scaling = config->config.scaling;
  out.target_modules = config->target_modules;
  out.bits = config->bits;
  out.group_size = config->group_size;
  out.quant_method = config->method;
  for (auto& [key, tensor] : file->tensors) {
    absl::StatusOr<std::pair<std::string, std::string>> parts = SplitKey(key);
    if (!parts.ok()) return parts.status();
    out.slots[parts->first][parts->second] = std::move(tensor);
  }
  if (out.slots.empty()) return Invalid(dir + "/" + kTensorsFile, "holds no adapter tensors");
  return out;
}

absl::StatusOr<int64_t> EstimateAdapterMemory(const std::string& dir, const ServingModel& model) {
  auto shapes = ReadShapes(dir + "/" + kTensorsFile);
  if (!shapes.ok()) return shapes.status();
  const int64_t elem = ElementSize(model.dtype());
  int64_t bytes = 0;
  for (const auto& [key, shape] : *shapes) {
    auto parts = SplitKey(key);
    if (!parts.ok()) return parts.status();
    std::optional<int64_t> index = model.SlotIndex(parts->first);
    if (!index) return Invalid(kTensorsFile, absl::StrCat("unknown slot '", parts->first, "'"));
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const std::string& name = parts->second;
    if (name == "spectrum_values") {
      const SlotInfo& info = model.slots()[*index];
      bytes += kernels::PackedSpectrumBytesBound(numel, info.out_features, info.in_features,
                                                 model.dtype());
    } else if (name == "lora_A" || name == "lora_B") {
      bytes += numel * elem;
    }
  }
  return bytes;
}

absl::StatusOr<std::unique_ptr<ServingAdapter>> ServingAdapter::Create(
    const AdapterFileContents& files, const ServingModel& model, std::string digest) {
  ConfigFile config;
  config.target_modules = files.target_modules;
  config.bits = files.bits;
  config.group_size = files.group_size;
  config.method = files.quant_method;
  if (absl::Status st = CheckCompatible(config, model); !st.ok()) return st;

  // The training-time config (only type, scaling and the state's shapes matter
  // for an adapter rebuilt from its state).
  adapters::AdapterConfig cfg;
  cfg.type = files.type;
  cfg.scaling = files.scaling;

  std::unique_ptr<ServingAdapter> out(new ServingAdapter());
  out->digest_ = std::move(digest);
  out->type_ = files.type;
  out->slots_.resize(model.slots().size());
  const torch::NoGradGuard no_grad;
  for (const auto& [slot_name, state] : files.slots) {
    std::optional<int64_t> index = model.SlotIndex(slot_name);
    if (!index) return Invalid(slot_name, "the model has no such projection");
    const SlotInfo& info = model.slots()[*index];
    const int64_t out_f = info.out_features;
    const int64_t in_f = info.in_features;
    SlotDelta& delta = out->slots_[*index];
    try {
      if (adapters::IsSpectrumType(files.type)) {
        auto values_it = state.find("spectrum_values");
        if (values_it == state.end()) return Invalid(slot_name, "missing entry spectrum_values");
        auto index_it = state.find("spectrum_index");
        if (index_it == state.end()) return Invalid(slot_name, "missing entry spectrum_index");
        // The library's checks of the config for this slot (scaling, budget,
        // a Hadamard size for in_features); PackSpectrum checks the entries
        // (equal lengths, strictly increasing indices in range).
        adapters::AdapterConfig slot_cfg = cfg;
        slot_cfg.num_params = values_it->second.numel();
        if (absl::Status st = adapters::ValidateAdapterConfig(slot_cfg, out_f, in_f); !st.ok()) {
          return Invalid(slot_name, std::string(st.message()));
        }
        if (index_it->second.numel() == 0 && values_it->second.numel() == 0) continue;
        absl::StatusOr<kernels::PackedSpectrum> packed = kernels::PackSpectrum(
            index_it->second, values_it->second, out_f, in_f,
            cfg.scaling / static_cast<double>(in_f), model.dtype(), model.device());
        if (!packed.ok()) return Invalid(slot_name, std::string(packed.status().message()));
        delta.kind = SlotDelta::Kind::kSpectrum;
        delta.spectrum = *std::move(packed);
      } else {
        auto a_it = state.find("lora_A");
        if (a_it == state.end() || a_it->second.dim() != 2) {
          return Invalid(slot_name, "missing or malformed entry lora_A");
        }
        adapters::AdapterConfig slot_cfg = cfg;
        slot_cfg.rank = a_it->second.size(0);
        auto adapter = adapters::CreateEmptyAdapter(slot_cfg, out_f, in_f);
        if (!adapter.ok()) return Invalid(slot_name, std::string(adapter.status().message()));
        const auto& lora = static_cast<const adapters::LoraAdapter&>(**adapter);
        if (lora.rank() != slot_cfg.rank) {
          return Invalid(slot_name, absl::StrCat("rank ", slot_cfg.rank, " does not fit [", out_f,
                                                 ", ", in_f, "]"));
        }
        if (absl::Status st = (*adapter)->LoadStateDict(state); !st.ok()) {
          return Invalid(slot_name, std::string(st.message()));
        }
        auto sd = lora.StateDict();
        delta.kind = SlotDelta::Kind::kLora;
        delta.lora_a = sd.at("lora_A").to(model.device(), model.dtype()).contiguous();
        delta.lora_b = (sd.at("lora_B").to(torch::kFloat64) * lora.scale())
                           .to(model.device(), model.dtype())
                           .contiguous();
      }
    } catch (const c10::Error& e) {
      return Invalid(slot_name, e.what_without_backtrace());
    }
  }
  out->ForEachTensor([&](const torch::Tensor& t) { out->memory_bytes_ += TensorBytes(t); });
  static std::atomic<uint64_t> next_serial{1};
  out->serial_ = next_serial.fetch_add(1);
  // Ready on every stream when Create returns: the engine reads the tensors
  // from its own stream, not the one they were converted on.
  if (model.device().is_cuda()) torch::cuda::synchronize(model.device().index());
  return out;
}

torch::Tensor ServingAdapter::ApplyDelta(int64_t index, const torch::Tensor& x,
                                         const torch::Tensor& xh) const {
  const SlotDelta& d = slot(index);
  if (d.kind == SlotDelta::Kind::kSpectrum) {
    const torch::Tensor z = xh.defined() ? xh : SpectrumInput(x);
    const int64_t m = x.size(0);
    torch::Tensor y = torch::zeros({m, d.spectrum.rows}, x.options());
    const torch::Tensor rows =
        torch::arange(m, torch::TensorOptions().dtype(torch::kInt32).device(x.device()));
    kernels::SpectrumApply(z, {{&d.spectrum, 0, 0, m}}, rows, y);
    return y;
  }
  TORCH_CHECK(d.kind == SlotDelta::Kind::kLora, "slot ", index, " has no adapter");
  return torch::matmul(torch::matmul(x, d.lora_a.t()), d.lora_b.t());
}

void ServingAdapter::ForEachTensor(const std::function<void(const torch::Tensor&)>& fn) const {
  for (const SlotDelta& d : slots_) {
    if (d.spectrum.entries.defined()) {
      fn(d.spectrum.row_ptr);
      fn(d.spectrum.entries);
    }
    if (d.lora_a.defined()) fn(d.lora_a);
    if (d.lora_b.defined()) fn(d.lora_b);
  }
}

}  // namespace qwha::serve
