#include "worker/model/checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"

namespace qwha::model {
namespace {

using Json = nlohmann::json;

std::string Join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsFloating(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16 ||
         t == torch::kFloat64;
}

// name -> shard file name, from the index (validated).
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  Json root = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing object \"weight_map\""));
  }
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry '", it.key(), "' is not a file name"));
    }
    const std::string file = it->get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": weight_map entry '", it.key(),
                                                     "' names \"", file,
                                                     "\", not a file in the directory"));
    }
    out[it.key()] = file;
  }
  return out;
}

}  // namespace

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    specs.push_back({p + "input_layernorm.weight", {h}});
    const std::pair<const char*, std::vector<int64_t>> attn[] = {
        {"q_proj", {q_out, h}}, {"k_proj", {kv_out, h}}, {"v_proj", {kv_out, h}}};
    for (const auto& [name, shape] : attn) {
      specs.push_back({p + "self_attn." + name + ".weight", shape});
      if (c.qkv_bias) specs.push_back({p + "self_attn." + name + ".bias", {shape[0]}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {h, q_out}});
    if (c.o_bias) specs.push_back({p + "self_attn.o_proj.bias", {h}});
    specs.push_back({p + "post_attention_layernorm.weight", {h}});
    const std::pair<const char*, std::vector<int64_t>> mlp[] = {
        {"gate_proj", {inter, h}}, {"up_proj", {inter, h}}, {"down_proj", {h, inter}}};
    for (const auto& [name, shape] : mlp) {
      specs.push_back({p + "mlp." + name + ".weight", shape});
      if (c.mlp_bias) specs.push_back({p + "mlp." + name + ".bias", {shape[0]}});
    }
  }
  specs.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}});
  return specs;
}

absl::StatusOr<std::map<std::string, torch::Tensor>> LoadCheckpointTensors(
    const std::string& dir, const ModelConfig& config, torch::ScalarType dtype,
    const torch::Device& device) {
  if (!IsFloating(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", dir, ": compute dtype must be floating"));
  }
  const std::vector<TensorSpec> specs = ExpectedTensors(config);

  // Which file holds each expected tensor.
  std::map<std::string, std::string> file_of;  // tensor -> file name
  const std::string single = Join(dir, kSingleWeightsFile);
  const std::string index = Join(dir, kShardIndexFile);
  std::error_code ec;
  std::string source;  // names the file that should list a missing tensor
  if (std::filesystem::exists(single, ec)) {
    for (const auto& s : specs) file_of[s.name] = kSingleWeightsFile;
    source = single;
  } else if (std::filesystem::exists(index, ec)) {
    absl::StatusOr<std::map<std::string, std::string>> wm = ReadWeightMap(index);
    if (!wm.ok()) return wm.status();
    for (const auto& s : specs) {
      auto it = wm->find(s.name);
      if (it == wm->end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index, ": tensor '", s.name, "' is missing from weight_map"));
      }
      file_of[s.name] = it->second;
    }
    source = index;
  } else {
    return absl::NotFoundError(absl::StrCat("model directory ", dir, ": neither ",
                                            kSingleWeightsFile, " nor ", kShardIndexFile));
  }

  std::map<std::string, std::vector<const TensorSpec*>> by_file;
  for (const auto& s : specs) by_file[file_of[s.name]].push_back(&s);

  std::map<std::string, torch::Tensor> out;
  for (const auto& [file, wanted] : by_file) {
    const std::string path = Join(dir, file);
    absl::StatusOr<io::SafetensorsFile> st = io::ReadSafetensors(path);
    if (!st.ok()) return st.status();
    for (const TensorSpec* s : wanted) {
      auto it = st->tensors.find(s->name);
      if (it == st->tensors.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", s->name, "' is missing"));
      }
      const torch::Tensor& t = it->second;
      if (t.sizes().vec() != s->shape) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", s->name, "' has shape ", ShapeString(t.sizes().vec()),
                         ", the config needs ", ShapeString(s->shape)));
      }
      if (!IsFloating(t.scalar_type())) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor '", s->name, "' has non-float dtype ", c10::toString(t.scalar_type())));
      }
      out[s->name] = t.to(device, dtype).contiguous();
    }
    // st (the whole shard) is released here.
  }
  return out;
}

absl::Status SaveModelDirectory(const std::string& dir, const ModelConfig& config,
                                const std::map<std::string, torch::Tensor>& tensors,
                                const SaveOptions& options) {
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kBFloat16 &&
      options.dtype != torch::kFloat16) {
    return absl::InvalidArgumentError(
        "SaveModelDirectory: dtype must be float32, bfloat16 or "
        "float16");
  }
  if (absl::Status st = ValidateModelConfig(config, dir + "/config.json"); !st.ok()) return st;
  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  std::vector<std::pair<std::string, torch::Tensor>> ordered;
  for (const auto& s : specs) {
    auto it = tensors.find(s.name);
    if (it == tensors.end() || !it->second.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SaveModelDirectory ", dir, ": tensor '", s.name, "' is missing"));
    }
    if (it->second.sizes().vec() != s.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SaveModelDirectory ", dir, ": tensor '", s.name, "' has shape ",
          ShapeString(it->second.sizes().vec()), ", the config needs ", ShapeString(s.shape)));
    }
    ordered.emplace_back(s.name, it->second.detach().to(torch::kCPU, options.dtype).contiguous());
  }

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("create directory ", dir, ": ", ec.message()));
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (options.max_shard_bytes <= 0) {
    std::map<std::string, torch::Tensor> all(ordered.begin(), ordered.end());
    if (absl::Status st = io::WriteSafetensors(Join(dir, kSingleWeightsFile), all, metadata);
        !st.ok()) {
      return st;
    }
  } else {
    // Greedy shards in model order.
    std::vector<std::map<std::string, torch::Tensor>> shards(1);
    int64_t shard_bytes = 0;
    int64_t total_bytes = 0;
    for (const auto& [name, t] : ordered) {
      const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
      if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
        shards.emplace_back();
        shard_bytes = 0;
      }
      shards.back()[name] = t;
      shard_bytes += bytes;
      total_bytes += bytes;
    }
    Json weight_map = Json::object();
    const int n = static_cast<int>(shards.size());
    for (int i = 0; i < n; ++i) {
      const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, n);
      if (absl::Status st = io::WriteSafetensors(Join(dir, file), shards[i], metadata); !st.ok()) {
        return st;
      }
      for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    }
    Json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    if (absl::Status st = io::WriteFileAtomically(Join(dir, kShardIndexFile), index.dump(2) + "\n");
        !st.ok()) {
      return st;
    }
  }
  // A stale file of the other layout would shadow or confuse the new weights.
  std::filesystem::remove(
      Join(dir, options.max_shard_bytes <= 0 ? kShardIndexFile : kSingleWeightsFile), ec);
  return io::WriteFileAtomically(Join(dir, kConfigFile), ModelConfigToJson(config, options.dtype));
}

}  // namespace qwha::model
