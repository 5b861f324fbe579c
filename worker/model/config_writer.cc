// ModelConfigToJson: config.json text for transformers 4.x and 5.x.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/model/config.h"

namespace qwha::model {

namespace {
using Json = nlohmann::json;
}  // namespace

std::string ModelConfigToJson(const ModelConfig& c, torch::ScalarType dtype) {
  Json j = Json::object();
  if (!c.source_json.empty()) {
    Json base = Json::parse(c.source_json, nullptr, /*allow_exceptions=*/false);
    if (base.is_object()) j = base;
  }
  const bool v5_rope = j.contains("rope_parameters");
  const bool v5_dtype = j.contains("dtype") && !j.contains("torch_dtype");
  j["architectures"] = Json::array({c.Architecture()});
  j["model_type"] = c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.model_type != "qwen2") j["attention_bias"] = c.qkv_bias;
  j["mlp_bias"] = c.mlp_bias;
  j["bos_token_id"] = c.bos_token_id.has_value() ? Json(*c.bos_token_id) : Json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  if (c.pad_token_id.has_value()) j["pad_token_id"] = *c.pad_token_id;
  j[v5_dtype ? "dtype" : "torch_dtype"] = DtypeName(dtype);

  Json scaling = nullptr;
  const RopeScaling& r = c.rope_scaling;
  if (r.type == RopeType::kLinear) {
    scaling = {{"rope_type", "linear"}, {"factor", r.factor}};
  } else if (r.type == RopeType::kLlama3) {
    scaling = {{"rope_type", "llama3"},
               {"factor", r.factor},
               {"low_freq_factor", r.low_freq_factor},
               {"high_freq_factor", r.high_freq_factor},
               {"original_max_position_embeddings", r.original_max_position_embeddings}};
  }
  if (v5_rope) {
    Json p = scaling.is_null() ? Json{{"rope_type", "default"}} : scaling;
    p["rope_theta"] = c.rope_theta;
    j["rope_parameters"] = p;
    j.erase("rope_scaling");
    j.erase("rope_theta");
  } else {
    j["rope_theta"] = c.rope_theta;
    j["rope_scaling"] = scaling;
  }

  // Sliding window: mistral applies it to every layer; otherwise layer_types.
  if (c.sliding_window > 0 && !c.sliding_layers.empty()) {
    j["sliding_window"] = c.sliding_window;
    bool all = true;
    for (bool s : c.sliding_layers) all = all && s;
    if (c.model_type != "mistral" || !all) {
      Json types = Json::array();
      for (bool s : c.sliding_layers) types.push_back(s ? "sliding_attention" : "full_attention");
      j["layer_types"] = types;
      if (c.model_type == "qwen2") j["use_sliding_window"] = true;
    }
  } else {
    if (c.model_type != "llama") j["sliding_window"] = nullptr;
    if (c.model_type == "qwen2") j["use_sliding_window"] = false;
    if (j.contains("layer_types")) {
      j["layer_types"] =
          std::vector<std::string>(static_cast<size_t>(c.num_hidden_layers), "full_attention");
    }
  }
  return j.dump(2) + "\n";
}

}  // namespace qwha::model
