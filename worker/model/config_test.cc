#include "worker/model/config.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace qwha::model {
namespace {

using Json = nlohmann::json;

// A Llama-3.1-like config.json (transformers 4.x dialect).
Json Llama3Json() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
    "vocab_size": 256,
    "tie_word_embeddings": true,
    "attention_bias": false,
    "mlp_bias": false,
    "bos_token_id": 1,
    "eos_token_id": [2, 3],
    "torch_dtype": "bfloat16",
    "quantization_note": "kept"
  })");
}

absl::StatusOr<ModelConfig> Parse(const Json& j) { return ParseModelConfig(j.dump(), "test.json"); }

TEST(ModelConfigTest, ParsesLlama3) {
  auto c = Parse(Llama3Json());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->Architecture(), "LlamaForCausalLM");
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 128);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->vocab_size, 256);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 256);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2, 3}));
  EXPECT_FALSE(c->pad_token_id.has_value());
  EXPECT_EQ(c->torch_dtype, torch::kBFloat16);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_FALSE(c->UsesSlidingWindow(0));
}

TEST(ModelConfigTest, DefaultsForOptionalKeys) {
  Json j = Llama3Json();
  for (const char* key :
       {"num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
        "rope_theta", "rope_scaling", "tie_word_embeddings", "attention_bias", "mlp_bias",
        "bos_token_id", "eos_token_id", "torch_dtype", "model_type"}) {
    j.erase(key);
  }
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "llama");  // from architectures
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->torch_dtype, torch::kFloat32);
}

TEST(ModelConfigTest, ModelTypeWithoutArchitectures) {
  Json j = Llama3Json();
  j.erase("architectures");
  j["model_type"] = "mistral";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Architecture(), "MistralForCausalLM");
}

// transformers 5.x writes "rope_parameters" and "dtype".
TEST(ModelConfigTest, ParsesTransformers5Dialect) {
  Json j = Llama3Json();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j.erase("torch_dtype");
  j["dtype"] = "float32";
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 250000.0},
                          {"factor", 4.0},           {"low_freq_factor", 2.0},
                          {"high_freq_factor", 8.0}, {"original_max_position_embeddings", 128}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 250000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 2.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 8.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 128);
  EXPECT_EQ(c->torch_dtype, torch::kFloat32);

  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
}

TEST(ModelConfigTest, LinearScalingWithLegacyTypeKey) {
  Json j = Llama3Json();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
  j["rope_scaling"] = nullptr;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
}

TEST(ModelConfigTest, Qwen2HasQkvBiasWithoutTheKey) {
  Json j = Llama3Json();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["model_type"] = "qwen2";
  j.erase("attention_bias");
  j["sliding_window"] = 32;  // ignored: use_sliding_window is false by default
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_EQ(c->sliding_window, 0);

  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 32);
  EXPECT_FALSE(c->UsesSlidingWindow(0));
  EXPECT_TRUE(c->UsesSlidingWindow(1));

  j["layer_types"] = {"sliding_attention", "full_attention"};  // takes precedence
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->UsesSlidingWindow(0));
  EXPECT_FALSE(c->UsesSlidingWindow(1));
}

TEST(ModelConfigTest, MistralSlidingWindowAndNullHeadDim) {
  Json j = Llama3Json();
  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["sliding_window"] = 8;
  j["head_dim"] = nullptr;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->sliding_window, 8);
  EXPECT_TRUE(c->UsesSlidingWindow(0));
  EXPECT_TRUE(c->UsesSlidingWindow(1));
  j["sliding_window"] = nullptr;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ExplicitHeadDimAndBiases) {
  Json j = Llama3Json();
  j["head_dim"] = 32;
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  j["eos_token_id"] = 5;
  j["pad_token_id"] = 0;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_TRUE(c->o_bias);
  EXPECT_TRUE(c->mlp_bias);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{5});
  EXPECT_EQ(c->pad_token_id, 0);
}

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_DOUBLE_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_DOUBLE_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_DOUBLE_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_DOUBLE_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
            b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.sliding_layers, b.sliding_layers);
}

TEST(ModelConfigTest, JsonRoundTripKeepsUnknownKeys) {
  std::vector<Json> inputs;
  inputs.push_back(Llama3Json());
  Json mistral = Llama3Json();
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["model_type"] = "mistral";
  mistral["sliding_window"] = 8;
  mistral["rope_scaling"] = nullptr;
  inputs.push_back(mistral);
  Json qwen = Llama3Json();
  qwen["architectures"] = {"Qwen2ForCausalLM"};
  qwen["model_type"] = "qwen2";
  qwen["sliding_window"] = 16;
  qwen["use_sliding_window"] = true;
  qwen["max_window_layers"] = 1;
  inputs.push_back(qwen);
  Json v5 = Llama3Json();
  v5.erase("rope_scaling");
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 1e4}};
  inputs.push_back(v5);
  for (const Json& in : inputs) {
    auto c = Parse(in);
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string text = ModelConfigToJson(*c, torch::kFloat16);
    Json out = Json::parse(text);
    EXPECT_EQ(out["quantization_note"], "kept");
    EXPECT_EQ(out.contains("dtype") ? out["dtype"] : out["torch_dtype"], "float16");
    auto back = ParseModelConfig(text, "roundtrip");
    ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
    ExpectSameConfig(*c, *back);
    EXPECT_EQ(back->torch_dtype, torch::kFloat16);

    // And from a config built in code (no source JSON).
    ModelConfig fresh = *c;
    fresh.source_json.clear();
    auto back2 = ParseModelConfig(ModelConfigToJson(fresh, torch::kFloat32), "fresh");
    ASSERT_TRUE(back2.ok()) << back2.status();
    ExpectSameConfig(*c, *back2);
  }
}

TEST(ModelConfigTest, LoadMissingFileNamesThePath) {
  auto c = LoadModelConfig("/nonexistent/dir/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(c.status().message()).find("/nonexistent/dir/config.json"),
            std::string::npos);
}

struct BadCase {
  const char* what;
  std::function<void(Json&)> mutate;
  const char* field;  // expected in the message as "field '<field>'"; "" = no field
  const char* fragment;
};

TEST(ModelConfigTest, EveryValidationErrorNamesFileAndField) {
  const BadCase cases[] = {
      {"missing model_type and architectures",
       [](Json& j) { j.erase("model_type"), j.erase("architectures"); }, "model_type", "missing"},
      {"unsupported model_type",
       [](Json& j) { j.erase("architectures"), j["model_type"] = "gpt2"; }, "model_type", "gpt2"},
      {"unsupported architecture", [](Json& j) { j["architectures"] = {"GPT2LMHeadModel"}; },
       "architectures", "GPT2LMHeadModel"},
      {"architecture/model_type mismatch", [](Json& j) { j["model_type"] = "qwen2"; },
       "architectures", "does not match"},
      {"architectures not a list", [](Json& j) { j["architectures"] = "LlamaForCausalLM"; },
       "architectures", "list"},
      {"model_type not a string", [](Json& j) { j["model_type"] = 3; }, "model_type", "string"},
      {"missing hidden_size", [](Json& j) { j.erase("hidden_size"); }, "hidden_size", "missing"},
      {"hidden_size string", [](Json& j) { j["hidden_size"] = "64"; }, "hidden_size", "integer"},
      {"hidden_size fractional", [](Json& j) { j["hidden_size"] = 64.5; }, "hidden_size",
       "integer"},
      {"hidden_size negative", [](Json& j) { j["hidden_size"] = -64; }, "hidden_size", "positive"},
      {"missing intermediate_size", [](Json& j) { j.erase("intermediate_size"); },
       "intermediate_size", "missing"},
      {"missing num_hidden_layers", [](Json& j) { j.erase("num_hidden_layers"); },
       "num_hidden_layers", "missing"},
      {"zero num_hidden_layers", [](Json& j) { j["num_hidden_layers"] = 0; }, "num_hidden_layers",
       "positive"},
      {"missing num_attention_heads", [](Json& j) { j.erase("num_attention_heads"); },
       "num_attention_heads", "missing"},
      {"missing vocab_size", [](Json& j) { j.erase("vocab_size"); }, "vocab_size", "missing"},
      {"kv heads do not divide", [](Json& j) { j["num_key_value_heads"] = 3; },
       "num_key_value_heads", "does not divide"},
      {"kv heads zero", [](Json& j) { j["num_key_value_heads"] = 0; }, "num_key_value_heads",
       "positive"},
      {"hidden not divisible by heads",
       [](Json& j) { j["num_attention_heads"] = 3, j["num_key_value_heads"] = 3; }, "head_dim",
       "not divisible"},
      {"odd head_dim", [](Json& j) { j["head_dim"] = 15; }, "head_dim", "even"},
      {"head_dim zero", [](Json& j) { j["head_dim"] = 0; }, "head_dim", "positive"},
      {"max_position_embeddings zero", [](Json& j) { j["max_position_embeddings"] = 0; },
       "max_position_embeddings", "positive"},
      {"rms_norm_eps string", [](Json& j) { j["rms_norm_eps"] = "1e-5"; }, "rms_norm_eps",
       "number"},
      {"rms_norm_eps negative", [](Json& j) { j["rms_norm_eps"] = -1e-5; }, "rms_norm_eps",
       "positive"},
      {"rope_theta zero", [](Json& j) { j["rope_theta"] = 0; }, "rope_theta", "positive"},
      {"rope_theta string", [](Json& j) { j["rope_theta"] = "1e4"; }, "rope_theta", "number"},
      {"rope_scaling not an object", [](Json& j) { j["rope_scaling"] = 5; }, "rope_scaling",
       "object"},
      {"rope type yarn", [](Json& j) { j["rope_scaling"]["rope_type"] = "yarn"; },
       "rope_scaling.rope_type", "yarn"},
      {"legacy rope type dynamic",
       [](Json& j) {
         j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
       },
       "rope_scaling.type", "dynamic"},
      {"rope factor missing", [](Json& j) { j["rope_scaling"].erase("factor"); },
       "rope_scaling.factor", "missing"},
      {"rope factor negative", [](Json& j) { j["rope_scaling"]["factor"] = -2.0; },
       "rope_scaling.factor", "positive"},
      {"llama3 low_freq_factor missing",
       [](Json& j) { j["rope_scaling"].erase("low_freq_factor"); }, "rope_scaling.low_freq_factor",
       "missing"},
      {"llama3 original_max_position_embeddings missing",
       [](Json& j) { j["rope_scaling"].erase("original_max_position_embeddings"); },
       "rope_scaling.original_max_position_embeddings", "missing"},
      {"llama3 high <= low", [](Json& j) { j["rope_scaling"]["high_freq_factor"] = 1.0; },
       "rope_scaling.high_freq_factor", "exceed"},
      {"llama3 low_freq_factor zero", [](Json& j) { j["rope_scaling"]["low_freq_factor"] = 0.0; },
       "rope_scaling.low_freq_factor", "positive"},
      {"v5 rope_parameters unsupported type",
       [](Json& j) {
         j.erase("rope_scaling");
         j["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 1e4}};
       },
       "rope_parameters.rope_type", "longrope"},
      {"v5 per-layer-type rope parameters",
       [](Json& j) {
         j.erase("rope_scaling");
         j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}}}};
       },
       "rope_parameters", "per-layer-type"},
      {"partial rotary", [](Json& j) { j["partial_rotary_factor"] = 0.5; }, "partial_rotary_factor",
       "1.0"},
      {"hidden_act gelu", [](Json& j) { j["hidden_act"] = "gelu"; }, "hidden_act", "gelu"},
      {"tie_word_embeddings string", [](Json& j) { j["tie_word_embeddings"] = "yes"; },
       "tie_word_embeddings", "true or false"},
      {"attention_bias number", [](Json& j) { j["attention_bias"] = 1; }, "attention_bias",
       "true or false"},
      {"mlp_bias string", [](Json& j) { j["mlp_bias"] = "no"; }, "mlp_bias", "true or false"},
      {"bos list of two",
       [](Json& j) {
         j["bos_token_id"] = {1, 2};
       },
       "bos_token_id", "single"},
      {"bos out of range", [](Json& j) { j["bos_token_id"] = 256; }, "bos_token_id", "outside"},
      {"eos string", [](Json& j) { j["eos_token_id"] = "2"; }, "eos_token_id", "integer"},
      {"eos list with a string",
       [](Json& j) {
         j["eos_token_id"] = {2, "x"};
       },
       "eos_token_id", "integer"},
      {"eos out of range",
       [](Json& j) {
         j["eos_token_id"] = {2, -1};
       },
       "eos_token_id", "outside"},
      {"pad out of range", [](Json& j) { j["pad_token_id"] = 1000; }, "pad_token_id", "outside"},
      {"torch_dtype int8", [](Json& j) { j["torch_dtype"] = "int8"; }, "torch_dtype", "int8"},
      {"v5 dtype number", [](Json& j) { j.erase("torch_dtype"), j["dtype"] = 32; }, "dtype",
       "string"},
      {"sliding_window zero",
       [](Json& j) {
         j["architectures"] = {"MistralForCausalLM"}, j["model_type"] = "mistral";
         j["sliding_window"] = 0;
       },
       "sliding_window", "positive"},
      {"sliding_window string", [](Json& j) { j["sliding_window"] = "8"; }, "sliding_window",
       "integer"},
      {"layer_types wrong length", [](Json& j) { j["layer_types"] = {"full_attention"}; },
       "layer_types", "num_hidden_layers"},
      {"layer_types unknown",
       [](Json& j) {
         j["layer_types"] = {"full_attention", "chunked"};
       },
       "layer_types", "chunked"},
      {"sliding layers without window",
       [](Json& j) {
         j["layer_types"] = {"full_attention", "sliding_attention"};
       },
       "sliding_window", "no window"},
  };
  for (const BadCase& bad : cases) {
    Json j = Llama3Json();
    bad.mutate(j);
    auto c = Parse(j);
    ASSERT_FALSE(c.ok()) << bad.what;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad.what;
    const std::string msg(c.status().message());
    EXPECT_NE(msg.find("config.json test.json"), std::string::npos) << bad.what << ": " << msg;
    EXPECT_NE(msg.find(std::string("field '") + bad.field + "'"), std::string::npos)
        << bad.what << ": " << msg;
    EXPECT_NE(msg.find(bad.fragment), std::string::npos) << bad.what << ": " << msg;
  }
}

TEST(ModelConfigTest, MalformedJson) {
  for (const char* text : {"{not json", "[1, 2]", ""}) {
    auto c = ParseModelConfig(text, "bad.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(c.status().message()).find("config.json bad.json"), std::string::npos)
        << c.status();
  }
}

TEST(ModelConfigTest, ValidateCatchesInconsistentStructs) {
  auto c = Parse(Llama3Json());
  ASSERT_TRUE(c.ok());
  ModelConfig bad = *c;
  bad.sliding_window = 4;
  bad.sliding_layers = {true};  // 1 entry for 2 layers
  EXPECT_EQ(ValidateModelConfig(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = *c;
  bad.model_type = "qwen2";
  bad.qkv_bias = false;
  EXPECT_NE(std::string(ValidateModelConfig(bad, "x").message()).find("attention_bias"),
            std::string::npos);
}

TEST(ModelConfigTest, DtypeNames) {
  for (auto t : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    auto back = ParseDtypeName(DtypeName(t));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, t);
  }
  EXPECT_FALSE(ParseDtypeName("float8").ok());
}

}  // namespace
}  // namespace qwha::model
