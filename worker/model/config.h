// The architecture of a LLaMA-family decoder, read from a Hugging Face
// config.json (model_type "llama", "mistral" or "qwen2").
//
// Both config.json dialects are accepted: transformers 4.x ("rope_theta",
// "rope_scaling", "torch_dtype") and 5.x ("rope_parameters", "dtype").
// Defaults for absent optional keys are those of the transformers config
// classes (LlamaConfig, MistralConfig, Qwen2Config).
//
// Thread safety: all functions are pure and safe to call concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::model {

enum class RopeType {
  kDefault,  // inv_freq_i = theta^(-2i/d)
  kLinear,   // inv_freq / factor
  kLlama3,   // Llama 3.1 band-wise scaling (low / medium / high frequencies)
};

struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;                           // linear, llama3
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // llama3
};

struct ModelConfig {
  std::string model_type = "llama";  // "llama", "mistral" or "qwen2"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // divides num_attention_heads (GQA)
  int64_t head_dim = 0;             // even; need not equal hidden / heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;  // informational; not enforced
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;  // lm_head shares embed_tokens
  bool qkv_bias = false;             // q/k/v projections carry a bias
  bool o_bias = false;               // o_proj carries a bias
  bool mlp_bias = false;             // gate/up/down carry a bias
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json: an int or a list
  std::optional<int64_t> pad_token_id;
  torch::ScalarType torch_dtype = torch::kFloat32;  // the checkpoint's dtype
  // Sliding-window attention: a query at position q sees keys k with
  // q - window < k <= q. 0 = none. sliding_layers[l] says whether layer l
  // uses it ("layer_types" if present; else mistral: all layers; qwen2:
  // "use_sliding_window" and "max_window_layers"; llama: none, the key is
  // ignored as transformers does).
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;

  // The config.json text this was parsed from ("" if built in code); keys
  // this struct does not model are preserved from it by ModelConfigToJson.
  std::string source_json;

  // "LlamaForCausalLM", "MistralForCausalLM" or "Qwen2ForCausalLM".
  std::string Architecture() const;
  // Whether layer l attends through a sliding window.
  bool UsesSlidingWindow(int64_t layer) const;
};

// Parses config.json text. `source` (usually the path) prefixes every error.
// InvalidArgument naming the source and the field ("config.json /m/config.json:
// field 'num_key_value_heads': 3 does not divide num_attention_heads = 4") for
// malformed JSON, a missing required field, a value of the wrong type or out of
// range, an unsupported model_type / architecture, hidden_act other than
// "silu", an unsupported rope type (dynamic, yarn, longrope, ...),
// partial_rotary_factor != 1 or an unsupported dtype.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);

// Reads and parses `path` (NotFound etc. naming the path on I/O failure).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// OK iff the numbers are consistent (positive sizes, kv heads divide heads,
// even head_dim, rope parameters, sliding_layers sized num_hidden_layers when
// non-empty). Errors name the field. ParseModelConfig runs it.
absl::Status ValidateModelConfig(const ModelConfig& config, const std::string& source = "");

// config.json text readable by transformers 4.x and 5.x. Keys of
// config.source_json that this struct does not model are kept; "torch_dtype"
// (or "dtype" if the source used it) is set to `dtype`.
std::string ModelConfigToJson(const ModelConfig& config, torch::ScalarType dtype);

// "float32" <-> torch::kFloat32, "bfloat16", "float16"; InvalidArgument else.
absl::StatusOr<torch::ScalarType> ParseDtypeName(const std::string& name);
const char* DtypeName(torch::ScalarType dtype);

}  // namespace qwha::model
