#include "worker/model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"

namespace qwha::model {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("config.json ", source, ": field '", field, "': ", what));
}

// Typed access to the top-level object (or a nested one) with errors that
// name the source and the field path.
class Fields {
 public:
  Fields(const Json& obj, std::string source, std::string prefix = "")
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  // The value, or nullptr when absent or JSON null.
  const Json* Find(const std::string& key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
  std::string Name(const std::string& key) const { return prefix_ + key; }
  absl::Status Error(const std::string& key, const std::string& what) const {
    return FieldError(source_, Name(key), what);
  }

  absl::Status Int(const std::string& key, std::optional<int64_t> fallback, int64_t* out) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      if (!fallback.has_value()) return Error(key, "missing");
      *out = *fallback;
      return absl::OkStatus();
    }
    return ToInt(key, *v, out);
  }

  absl::Status ToInt(const std::string& key, const Json& v, int64_t* out) const {
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return absl::OkStatus();
    }
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
        *out = static_cast<int64_t>(d);
        return absl::OkStatus();
      }
    }
    return Error(key, absl::StrCat("must be an integer, got ", v.dump()));
  }

  absl::Status Double(const std::string& key, double fallback, double* out) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      *out = fallback;
      return absl::OkStatus();
    }
    if (!v->is_number()) return Error(key, absl::StrCat("must be a number, got ", v->dump()));
    *out = v->get<double>();
    if (!std::isfinite(*out)) return Error(key, "must be finite");
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& key, bool fallback, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      *out = fallback;
      return absl::OkStatus();
    }
    if (!v->is_boolean()) return Error(key, absl::StrCat("must be true or false, got ", v->dump()));
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& key, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return Error(key, absl::StrCat("must be a string, got ", v->dump()));
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // An int, a list of ints, or null/absent (empty result).
  absl::Status IntList(const std::string& key, std::vector<int64_t>* out) const {
    out->clear();
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (v->is_array()) {
      for (const Json& e : *v) {
        int64_t id;
        if (!e.is_number_integer()) {
          return Error(key,
                       absl::StrCat("must be an integer or a list of integers, got ", v->dump()));
        }
        id = e.get<int64_t>();
        out->push_back(id);
      }
      return absl::OkStatus();
    }
    if (!v->is_number_integer()) {
      return Error(key, absl::StrCat("must be an integer or a list of integers, got ", v->dump()));
    }
    out->push_back(v->get<int64_t>());
    return absl::OkStatus();
  }

  absl::Status OptionalId(const std::string& key, std::optional<int64_t>* out) const {
    std::vector<int64_t> ids;
    if (absl::Status st = IntList(key, &ids); !st.ok()) return st;
    if (ids.size() > 1) return Error(key, "must be a single integer");
    *out = ids.empty() ? std::nullopt : std::optional<int64_t>(ids[0]);
    return absl::OkStatus();
  }

 private:
  const Json& obj_;
  std::string source_;
  std::string prefix_;
};

struct Family {
  const char* model_type;
  const char* architecture;
  int64_t default_max_positions;
};
constexpr Family kFamilies[] = {
    {"llama", "LlamaForCausalLM", 2048},
    {"mistral", "MistralForCausalLM", 4096 * 32},
    {"qwen2", "Qwen2ForCausalLM", 32768},
};

const Family* FindFamily(const std::string& model_type) {
  for (const auto& f : kFamilies) {
    if (model_type == f.model_type) return &f;
  }
  return nullptr;
}

// Rope parameters from either dialect: 4.x top-level "rope_theta" and
// "rope_scaling", or 5.x "rope_parameters" {"rope_type", "rope_theta", ...}.
absl::Status ParseRope(const Fields& top, const std::string& source, ModelConfig* c) {
  const Json* params = top.Find("rope_parameters");
  const Json* scaling = top.Find("rope_scaling");
  std::string scaling_field = "rope_scaling";
  if (params != nullptr) {
    if (!params->is_object()) return top.Error("rope_parameters", "must be an object");
    if (params->contains("full_attention") || params->contains("sliding_attention")) {
      return top.Error("rope_parameters", "per-layer-type rope parameters are not supported");
    }
    Fields p(*params, source, "rope_parameters.");
    if (absl::Status st = p.Double("rope_theta", 0.0, &c->rope_theta); !st.ok()) return st;
    if (!p.Has("rope_theta")) {
      if (absl::Status st = top.Double("rope_theta", 10000.0, &c->rope_theta); !st.ok()) return st;
    }
    if (p.Has("partial_rotary_factor")) {
      double f;
      if (absl::Status st = p.Double("partial_rotary_factor", 1.0, &f); !st.ok()) return st;
      if (f != 1.0) return p.Error("partial_rotary_factor", "only 1.0 is supported");
    }
    if (scaling == nullptr) {
      scaling = params;
      scaling_field = "rope_parameters";
    }
  } else {
    if (absl::Status st = top.Double("rope_theta", 10000.0, &c->rope_theta); !st.ok()) return st;
  }
  c->rope_scaling = RopeScaling();
  if (scaling == nullptr) return absl::OkStatus();
  if (!scaling->is_object()) return top.Error(scaling_field, "must be an object or null");
  Fields s(*scaling, source, scaling_field + ".");
  std::string type = "default";
  if (s.Has("rope_type")) {
    if (absl::Status st = s.String("rope_type", &type); !st.ok()) return st;
  } else if (s.Has("type")) {
    if (absl::Status st = s.String("type", &type); !st.ok()) return st;
  }
  const std::string type_field = s.Has("rope_type") ? "rope_type" : "type";
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    c->rope_scaling.type = RopeType::kLinear;
  } else if (type == "llama3") {
    c->rope_scaling.type = RopeType::kLlama3;
  } else {
    return s.Error(type_field, absl::StrCat("unsupported rope type \"", type,
                                            "\" (supported: default, linear, llama3)"));
  }
  if (!s.Has("factor")) return s.Error("factor", "missing");
  if (absl::Status st = s.Double("factor", 1.0, &c->rope_scaling.factor); !st.ok()) return st;
  if (c->rope_scaling.type == RopeType::kLlama3) {
    for (const char* key : {"low_freq_factor", "high_freq_factor"}) {
      if (!s.Has(key)) return s.Error(key, "missing");
    }
    if (absl::Status st = s.Double("low_freq_factor", 1.0, &c->rope_scaling.low_freq_factor);
        !st.ok()) {
      return st;
    }
    if (absl::Status st = s.Double("high_freq_factor", 4.0, &c->rope_scaling.high_freq_factor);
        !st.ok()) {
      return st;
    }
    if (absl::Status st = s.Int("original_max_position_embeddings", std::nullopt,
                                &c->rope_scaling.original_max_position_embeddings);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

// Sliding-window layers: explicit "layer_types", else the family's rule.
absl::Status ParseSlidingWindow(const Fields& top, ModelConfig* c) {
  c->sliding_window = 0;
  c->sliding_layers.clear();
  int64_t window = 0;
  if (top.Has("sliding_window")) {
    if (absl::Status st = top.Int("sliding_window", 0, &window); !st.ok()) return st;
    if (window <= 0) return top.Error("sliding_window", "must be positive or null");
  }
  const int64_t layers = c->num_hidden_layers;
  if (const Json* types = top.Find("layer_types")) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != layers) {
      return top.Error("layer_types",
                       absl::StrCat("must be a list of num_hidden_layers = ", layers, " strings"));
    }
    bool any = false;
    for (const Json& t : *types) {
      if (t == "full_attention") {
        c->sliding_layers.push_back(false);
      } else if (t == "sliding_attention") {
        c->sliding_layers.push_back(true);
        any = true;
      } else {
        return top.Error("layer_types",
                         absl::StrCat("unsupported layer type ", t.dump(),
                                      " (supported: full_attention, sliding_attention)"));
      }
    }
    if (any && window == 0) {
      return top.Error("sliding_window", "layer_types has sliding_attention layers but no window");
    }
    if (!any) c->sliding_layers.clear();
    if (any) c->sliding_window = window;
    return absl::OkStatus();
  }
  if (window == 0) return absl::OkStatus();
  if (c->model_type == "qwen2") {
    bool use = false;
    if (absl::Status st = top.Bool("use_sliding_window", false, &use); !st.ok()) return st;
    if (!use) return absl::OkStatus();
    int64_t max_window_layers = 0;
    if (absl::Status st = top.Int("max_window_layers", 28, &max_window_layers); !st.ok()) {
      return st;
    }
    bool any = false;
    for (int64_t l = 0; l < layers; ++l) {
      c->sliding_layers.push_back(l >= max_window_layers);
      any = any || l >= max_window_layers;
    }
    if (!any) {
      c->sliding_layers.clear();
      return absl::OkStatus();
    }
  } else if (c->model_type == "mistral") {
    c->sliding_layers.assign(static_cast<size_t>(layers), true);
  } else {
    // LlamaConfig has no sliding window; a stray key is ignored as transformers does.
    return absl::OkStatus();
  }
  c->sliding_window = window;
  return absl::OkStatus();
}

}  // namespace

std::string ModelConfig::Architecture() const {
  const Family* f = FindFamily(model_type);
  return f != nullptr ? f->architecture : "LlamaForCausalLM";
}

bool ModelConfig::UsesSlidingWindow(int64_t layer) const {
  return sliding_window > 0 && layer >= 0 && layer < static_cast<int64_t>(sliding_layers.size()) &&
         sliding_layers[static_cast<size_t>(layer)];
}

absl::StatusOr<torch::ScalarType> ParseDtypeName(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype \"", name, "\" (supported: float32, bfloat16, float16)"));
}

const char* DtypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "float32";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    case torch::kFloat64:
      return "float64";
    default:
      return "unknown";
  }
}

absl::Status ValidateModelConfig(const ModelConfig& c, const std::string& source) {
  auto err = [&](const std::string& field, const std::string& what) {
    return FieldError(source, field, what);
  };
  if (FindFamily(c.model_type) == nullptr) {
    return err("model_type", absl::StrCat("unsupported model_type \"", c.model_type,
                                          "\" (supported: llama, mistral, qwen2)"));
  }
  const std::pair<const char*, int64_t> positive[] = {
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
  };
  for (const auto& [field, value] : positive) {
    if (value <= 0) return err(field, absl::StrCat("must be positive, got ", value));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return err("num_key_value_heads",
               absl::StrCat(c.num_key_value_heads,
                            " does not divide num_attention_heads = ", c.num_attention_heads));
  }
  if (c.head_dim % 2 != 0) {
    return err("head_dim", absl::StrCat("must be even for rotary embeddings, got ", c.head_dim));
  }
  if (!(c.rms_norm_eps > 0)) return err("rms_norm_eps", "must be positive");
  if (!(c.rope_theta > 0)) return err("rope_theta", "must be positive");
  const RopeScaling& r = c.rope_scaling;
  if (r.type != RopeType::kDefault && !(r.factor > 0)) {
    return err("rope_scaling.factor", "must be positive");
  }
  if (r.type == RopeType::kLlama3) {
    if (!(r.low_freq_factor > 0)) return err("rope_scaling.low_freq_factor", "must be positive");
    if (!(r.high_freq_factor > r.low_freq_factor)) {
      return err("rope_scaling.high_freq_factor", "must exceed low_freq_factor");
    }
    if (r.original_max_position_embeddings <= 0) {
      return err("rope_scaling.original_max_position_embeddings", "must be positive");
    }
  }
  if (c.sliding_window < 0) return err("sliding_window", "must be positive or null");
  if (!c.sliding_layers.empty() &&
      static_cast<int64_t>(c.sliding_layers.size()) != c.num_hidden_layers) {
    return err("layer_types", "must have num_hidden_layers entries");
  }
  const std::pair<const char*, std::optional<int64_t>> ids[] = {{"bos_token_id", c.bos_token_id},
                                                                {"pad_token_id", c.pad_token_id}};
  for (const auto& [field, id] : ids) {
    if (id.has_value() && (*id < 0 || *id >= c.vocab_size)) {
      return err(field, absl::StrCat(*id, " is outside [0, vocab_size = ", c.vocab_size, ")"));
    }
  }
  for (int64_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return err("eos_token_id",
                 absl::StrCat(id, " is outside [0, vocab_size = ", c.vocab_size, ")"));
    }
  }
  if (c.model_type == "qwen2" && (!c.qkv_bias || c.o_bias)) {
    return err("attention_bias", "qwen2 has q/k/v biases and no o_proj bias");
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json ", source, ": not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json ", source, ": top level is not a JSON object"));
  }
  Fields top(root, source);
  ModelConfig c;
  c.source_json = json_text;

  // model_type, else inferred from architectures; both must agree.
  std::string model_type;
  if (absl::Status st = top.String("model_type", &model_type); !st.ok()) return st;
  if (const Json* archs = top.Find("architectures")) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
      return top.Error("architectures", "must be a non-empty list of strings");
    }
    const std::string arch = (*archs)[0].get<std::string>();
    const Family* by_arch = nullptr;
    for (const auto& f : kFamilies) {
      if (arch == f.architecture) by_arch = &f;
    }
    if (by_arch == nullptr) {
      return top.Error("architectures",
                       absl::StrCat("unsupported architecture \"", arch,
                                    "\" (supported: LlamaForCausalLM, MistralForCausalLM, "
                                    "Qwen2ForCausalLM)"));
    }
    if (model_type.empty()) model_type = by_arch->model_type;
    if (model_type != by_arch->model_type) {
      return top.Error("architectures", absl::StrCat("\"", arch, "\" does not match model_type \"",
                                                     model_type, "\""));
    }
  }
  if (model_type.empty()) return top.Error("model_type", "missing (and no architectures)");
  const Family* family = FindFamily(model_type);
  if (family == nullptr) {
    return top.Error("model_type", absl::StrCat("unsupported model_type \"", model_type,
                                                "\" (supported: llama, mistral, qwen2)"));
  }
  c.model_type = model_type;

  for (auto [key, out] : {std::pair<const char*, int64_t*>{"hidden_size", &c.hidden_size},
                          {"intermediate_size", &c.intermediate_size},
                          {"num_hidden_layers", &c.num_hidden_layers},
                          {"num_attention_heads", &c.num_attention_heads},
                          {"vocab_size", &c.vocab_size}}) {
    if (absl::Status st = top.Int(key, std::nullopt, out); !st.ok()) return st;
    if (*out <= 0) return top.Error(key, absl::StrCat("must be positive, got ", *out));
  }
  if (absl::Status st =
          top.Int("num_key_value_heads", c.num_attention_heads, &c.num_key_value_heads);
      !st.ok()) {
    return st;
  }
  if (top.Has("head_dim")) {
    if (absl::Status st = top.Int("head_dim", 0, &c.head_dim); !st.ok()) return st;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return top.Error("head_dim", absl::StrCat("absent, and hidden_size = ", c.hidden_size,
                                                " is not divisible by num_attention_heads = ",
                                                c.num_attention_heads));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (absl::Status st = top.Int("max_position_embeddings", family->default_max_positions,
                                &c.max_position_embeddings);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = top.Double("rms_norm_eps", 1e-6, &c.rms_norm_eps); !st.ok()) return st;
  if (absl::Status st = ParseRope(top, source, &c); !st.ok()) return st;
  if (top.Has("partial_rotary_factor")) {
    double f;
    if (absl::Status st = top.Double("partial_rotary_factor", 1.0, &f); !st.ok()) return st;
    if (f != 1.0) return top.Error("partial_rotary_factor", "only 1.0 is supported");
  }

  std::string act = "silu";
  if (absl::Status st = top.String("hidden_act", &act); !st.ok()) return st;
  if (act != "silu") {
    return top.Error("hidden_act",
                     absl::StrCat("unsupported activation \"", act, "\" (supported: silu)"));
  }
  if (absl::Status st = top.Bool("tie_word_embeddings", false, &c.tie_word_embeddings); !st.ok()) {
    return st;
  }
  bool attention_bias = false;
  if (absl::Status st = top.Bool("attention_bias", false, &attention_bias); !st.ok()) return st;
  if (model_type == "qwen2") {
    // Qwen2Attention: q/k/v always have a bias, o_proj never (no config key).
    c.qkv_bias = true;
    c.o_bias = false;
  } else {
    c.qkv_bias = attention_bias;
    c.o_bias = attention_bias;
  }
  if (absl::Status st = top.Bool("mlp_bias", false, &c.mlp_bias); !st.ok()) return st;

  if (absl::Status st = top.OptionalId("bos_token_id", &c.bos_token_id); !st.ok()) return st;
  if (absl::Status st = top.IntList("eos_token_id", &c.eos_token_ids); !st.ok()) return st;
  if (absl::Status st = top.OptionalId("pad_token_id", &c.pad_token_id); !st.ok()) return st;

  for (const char* key : {"dtype", "torch_dtype"}) {
    if (!top.Has(key)) continue;
    std::string name;
    if (absl::Status st = top.String(key, &name); !st.ok()) return st;
    auto dtype = ParseDtypeName(name);
    if (!dtype.ok()) return top.Error(key, std::string(dtype.status().message()));
    c.torch_dtype = *dtype;
    break;
  }
  if (absl::Status st = ParseSlidingWindow(top, &c); !st.ok()) return st;
  if (absl::Status st = ValidateModelConfig(c, source); !st.ok()) return st;
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseModelConfig(*text, path);
}

}  // namespace qwha::model
