#include "worker/model/checkpoint.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"

namespace qwha::model {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("checkpoint_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  fs::create_directories(dir);
  return dir.string();
}

ModelConfig TinyConfig(const std::string& model_type = "llama") {
  ModelConfig c;
  c.model_type = model_type;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 40;
  c.eos_token_ids = {2};
  if (model_type == "qwen2") c.qkv_bias = true;
  return c;
}

std::map<std::string, torch::Tensor> RandomTensors(const ModelConfig& c, int64_t seed) {
  torch::manual_seed(seed);
  std::map<std::string, torch::Tensor> out;
  for (const TensorSpec& s : ExpectedTensors(c)) out[s.name] = torch::randn(s.shape);
  return out;
}

bool Contains(const absl::Status& st, const std::string& part) {
  return std::string(st.message()).find(part) != std::string::npos;
}

TEST(CheckpointTest, ExpectedTensorsFollowTheConfig) {
  ModelConfig c = TinyConfig();
  std::vector<TensorSpec> specs = ExpectedTensors(c);
  // embed + per layer (2 norms + 7 weights) + final norm + lm_head.
  EXPECT_EQ(specs.size(), 1u + 2u * 9u + 1u + 1u);
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& s : specs) shapes[s.name] = s.shape;
  EXPECT_EQ(shapes["model.layers.1.self_attn.q_proj.weight"], (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(shapes["model.layers.1.self_attn.k_proj.weight"], (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(shapes["model.layers.1.self_attn.o_proj.weight"], (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(shapes["model.layers.0.mlp.down_proj.weight"], (std::vector<int64_t>{16, 32}));

  c.tie_word_embeddings = true;
  c.head_dim = 8;  // heads · head_dim != hidden
  specs = ExpectedTensors(c);
  EXPECT_EQ(specs.size(), 20u);
  for (const auto& s : specs) shapes[s.name] = s.shape;
  EXPECT_EQ(shapes["model.layers.0.self_attn.q_proj.weight"], (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(shapes["model.layers.0.self_attn.o_proj.weight"], (std::vector<int64_t>{16, 32}));

  ModelConfig q = TinyConfig("qwen2");
  int biases = 0;
  for (const auto& s : ExpectedTensors(q)) biases += s.name.find(".bias") != std::string::npos;
  EXPECT_EQ(biases, 2 * 3);  // q, k, v per layer
}

TEST(CheckpointTest, SingleFileRoundTripWithDtypes) {
  const ModelConfig c = TinyConfig("qwen2");
  const auto tensors = RandomTensors(c, 1);
  const std::string dir = FreshDir("single");
  SaveOptions opt;
  opt.dtype = torch::kBFloat16;
  ASSERT_TRUE(SaveModelDirectory(dir, c, tensors, opt).ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  auto cfg = LoadModelConfig(dir + "/config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->torch_dtype, torch::kBFloat16);
  auto loaded = LoadCheckpointTensors(dir, *cfg, torch::kFloat32);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const torch::Tensor& l = loaded->at(name);
    EXPECT_EQ(l.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(l, t.to(torch::kBFloat16).to(torch::kFloat32))) << name;
  }
}

TEST(CheckpointTest, ShardedRoundTrip) {
  const ModelConfig c = TinyConfig();
  const auto tensors = RandomTensors(c, 2);
  const std::string dir = FreshDir("sharded");
  SaveOptions opt;
  opt.max_shard_bytes = 4096;
  ASSERT_TRUE(SaveModelDirectory(dir, c, tensors, opt).ok());
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    shards += e.path().filename().string().rfind("model-", 0) == 0;
  }
  EXPECT_GT(shards, 2);
  Json index = Json::parse(*io::ReadFile(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  auto loaded = LoadCheckpointTensors(dir, c, torch::kFloat64);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(torch::equal(loaded->at(name), t.to(torch::kFloat64))) << name;
  }
  // Saving again unsharded removes the index so it cannot shadow the new file.
  ASSERT_TRUE(SaveModelDirectory(dir, c, tensors).ok());
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(LoadCheckpointTensors(dir, c, torch::kFloat32).ok());
}

TEST(CheckpointTest, ExtraTensorsAndTiedLmHeadAreIgnored) {
  ModelConfig c = TinyConfig();
  auto tensors = RandomTensors(c, 3);  // includes lm_head.weight
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch::randn({2});
  const std::string dir = FreshDir("extra");
  ASSERT_TRUE(io::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  c.tie_word_embeddings = true;
  auto loaded = LoadCheckpointTensors(dir, c, torch::kFloat32);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->count("lm_head.weight"), 0u);
  EXPECT_EQ(loaded->size(), ExpectedTensors(c).size());
}

TEST(CheckpointTest, ErrorsNameTheTensorAndFile) {
  const ModelConfig c = TinyConfig();
  const std::string name = "model.layers.1.mlp.up_proj.weight";

  {  // No weights at all.
    const std::string dir = FreshDir("none");
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(Contains(r.status(), dir)) << r.status();
  }
  {  // Missing tensor.
    auto tensors = RandomTensors(c, 4);
    tensors.erase(name);
    const std::string dir = FreshDir("missing");
    ASSERT_TRUE(io::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), name)) << r.status();
    EXPECT_TRUE(Contains(r.status(), dir + "/model.safetensors")) << r.status();
  }
  {  // Wrong shape.
    auto tensors = RandomTensors(c, 5);
    tensors[name] = torch::randn({32, 15});
    const std::string dir = FreshDir("shape");
    ASSERT_TRUE(io::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), name)) << r.status();
    EXPECT_TRUE(Contains(r.status(), "[32, 15]")) << r.status();
    EXPECT_TRUE(Contains(r.status(), "[32, 16]")) << r.status();
  }
  {  // Integer dtype.
    auto tensors = RandomTensors(c, 6);
    tensors[name] = torch::zeros({32, 16}, torch::kInt32);
    const std::string dir = FreshDir("dtype");
    ASSERT_TRUE(io::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), name)) << r.status();
    EXPECT_TRUE(Contains(r.status(), "non-float")) << r.status();
  }

  // Sharded defects, starting from a valid sharded directory.
  auto sharded = [&](const std::string& label) {
    const std::string dir = FreshDir(label);
    SaveOptions opt;
    opt.max_shard_bytes = 4096;
    EXPECT_TRUE(SaveModelDirectory(dir, c, RandomTensors(c, 7), opt).ok());
    return dir;
  };
  auto edit_index = [](const std::string& dir, const std::function<void(Json&)>& f) {
    const std::string path = dir + "/model.safetensors.index.json";
    Json j = Json::parse(*io::ReadFile(path));
    f(j);
    ASSERT_TRUE(io::WriteFileAtomically(path, j.dump()).ok());
  };
  {  // Tensor missing from the weight map.
    const std::string dir = sharded("wm_missing");
    edit_index(dir, [&](Json& j) { j["weight_map"].erase(name); });
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), name)) << r.status();
    EXPECT_TRUE(Contains(r.status(), "model.safetensors.index.json")) << r.status();
  }
  {  // Weight map points at a missing shard.
    const std::string dir = sharded("shard_missing");
    edit_index(dir, [&](Json& j) { j["weight_map"][name] = "model-99.safetensors"; });
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(Contains(r.status(), "model-99.safetensors")) << r.status();
  }
  {  // Weight map points at the wrong (existing) shard.
    const std::string dir = sharded("shard_wrong");
    std::string other;
    edit_index(dir, [&](Json& j) {
      other = j["weight_map"]["model.embed_tokens.weight"].get<std::string>();
      if (j["weight_map"][name] == other) other = j["weight_map"]["model.norm.weight"];
      j["weight_map"][name] = other;
    });
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), name)) << r.status();
    EXPECT_TRUE(Contains(r.status(), other)) << r.status();
  }
  {  // Shard name escaping the directory.
    const std::string dir = sharded("escape");
    edit_index(dir, [&](Json& j) { j["weight_map"][name] = "../x.safetensors"; });
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), "../x.safetensors")) << r.status();
  }
  {  // Malformed index.
    const std::string dir = sharded("bad_index");
    ASSERT_TRUE(io::WriteFileAtomically(dir + "/model.safetensors.index.json", "{\"x\": 1}").ok());
    auto r = LoadCheckpointTensors(dir, c, torch::kFloat32);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), "weight_map")) << r.status();
  }
}

TEST(CheckpointTest, SaveRejectsMissingOrMisshapedTensors) {
  const ModelConfig c = TinyConfig();
  auto tensors = RandomTensors(c, 8);
  const std::string name = "model.layers.0.input_layernorm.weight";
  tensors[name] = torch::ones({15});
  absl::Status st = SaveModelDirectory(FreshDir("save_bad"), c, tensors);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(st, name)) << st;
  tensors.erase(name);
  st = SaveModelDirectory(FreshDir("save_missing"), c, tensors);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(st, name)) << st;
}

}  // namespace
}  // namespace qwha::model
