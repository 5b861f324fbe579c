// End to end on the CPU: a small random model saved as a Hugging Face
// directory, a real tokenizer, a JSONL dataset → RunRecipe → exported adapter.
#include "worker/pipeline/recipe.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"
#include "worker/model/llama.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("recipe_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  fs::create_directories(dir);
  return dir;
}

fs::path FixtureTokenizer() {
  if (const char* dir = std::getenv("QWHA_TOKENIZER_FIXTURES")) {
    return fs::path(dir) / "llama3_style/tokenizer.json";
  }
  const char* srcdir = std::getenv("TEST_SRCDIR");
  fs::path root = srcdir != nullptr ? fs::path(srcdir) / "qwha" : fs::path(".");
  return root / "tests/fixtures/tokenizer/llama3_style/tokenizer.json";
}

// A model directory whose vocabulary covers the fixture tokenizer.
fs::path MakeModelDir(const fs::path& dir) {
  if (fs::exists(dir / "tokenizer.json")) return dir;
  model::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 256;
  std::ifstream tok_in(FixtureTokenizer());
  EXPECT_TRUE(tok_in.good()) << FixtureTokenizer();
  nlohmann::json tok = nlohmann::json::parse(tok_in);
  c.vocab_size = 0;
  for (const auto& [k, v] : tok["model"]["vocab"].items()) {
    c.vocab_size = std::max<int64_t>(c.vocab_size, v.get<int64_t>() + 1);
  }
  for (const auto& t : tok["added_tokens"]) {
    c.vocab_size = std::max<int64_t>(c.vocab_size, t["id"].get<int64_t>() + 1);
  }
  auto model = model::LlamaModel::RandomInit(c, 7, torch::kCPU, torch::kFloat32);
  EXPECT_TRUE(model::SaveModel(*model, dir.string()).ok());
  fs::copy_file(FixtureTokenizer(), dir / "tokenizer.json");
  return dir;
}

fs::path MakeDataset(const fs::path& dir) {
  fs::path path = dir / "train.jsonl";
  std::ofstream out(path);
  for (int i = 0; i < 60; ++i) {
    out << nlohmann::json{{"prompt",
                           "Add " + std::to_string(i) + " and " + std::to_string(i % 7) + ":"},
                          {"completion", " " + std::to_string(i + i % 7)}}
               .dump()
        << "\n";
  }
  return path;
}

RecipeOptions BaseOptions(const fs::path& dir) {
  RecipeOptions o;
  o.model_dir = MakeModelDir(dir / "model").string();
  o.train_data = MakeDataset(dir).string();
  o.output_dir = (dir / "out").string();
  o.eval_fraction = 0.2;
  o.quant.bits = 2;
  o.quant.group_size = 32;
  o.adapter.rank = 2;
  o.seq_len = 32;
  o.batch_size = 4;
  o.calibration_batches = 2;
  o.train.max_steps = 12;
  o.train.lr = 5e-3;
  return o;
}

TEST(RecipeTest, RunsEndToEndAndExports) {
  fs::path dir = TempDir("e2e");
  RecipeOptions o = BaseOptions(dir);
  std::vector<std::string> phases;
  int progress_calls = 0;
  auto result = RunRecipe(
      o, [&](const std::string& p, const std::string&) { phases.push_back(p); },
      [&](const train::Progress&) { ++progress_calls; });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(phases,
            (std::vector<std::string>{"loading", "calibrating", "quantizing", "initializing",
                                      "training", "evaluating", "exporting"}));
  EXPECT_GE(progress_calls, 12);
  EXPECT_EQ(result->train.step, 12);
  std::printf("eval loss: quantized %.4f initialized %.4f trained %.4f\n",
              result->eval_loss_quantized, result->eval_loss_initialized, result->eval_loss_final);
  EXPECT_TRUE(std::isfinite(result->eval_loss_final));
  // Training on the task lowers the held-out loss.
  EXPECT_LT(result->eval_loss_final, result->eval_loss_initialized);

  // The export holds one adapter per projection (14 slots × 2 tensors).
  auto file = io::ReadSafetensors((dir / "out" / "adapter.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.size(), 28u);
  EXPECT_EQ(file->metadata.at("adapter_type"), "qwha");
  EXPECT_TRUE(file->tensors.count("model.layers.1.mlp.down_proj/spectrum_values"));
  std::ifstream metrics_in(dir / "out" / "metrics.json");
  nlohmann::json metrics = nlohmann::json::parse(metrics_in);
  EXPECT_EQ(metrics["layers"].size(), 14u);
  for (const auto& layer : metrics["layers"]) {
    EXPECT_LT(layer["relative_output_error_initialized"].get<double>(),
              layer["relative_output_error_quantized"].get<double>())
        << layer["slot"];
  }
  std::ifstream config_in(dir / "out" / "adapter_config.json");
  nlohmann::json config = nlohmann::json::parse(config_in);
  EXPECT_EQ(config["quantization"]["bits"], 2);
  EXPECT_TRUE(fs::exists(dir / "out" / "checkpoints"));
}

TEST(RecipeTest, BadInputNamesTheField) {
  fs::path dir = TempDir("bad");
  RecipeOptions o = BaseOptions(dir);
  o.quant.bits = 5;
  auto r = RunRecipe(o, nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("bits"), std::string::npos) << r.status();

  o = BaseOptions(dir);
  o.target_modules = {"q_proj", "wq"};
  r = RunRecipe(o, nullptr, nullptr);
  EXPECT_NE(r.status().message().find("wq"), std::string::npos) << r.status();

  o = BaseOptions(dir);
  std::ofstream(dir / "broken.jsonl") << "{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n";
  o.train_data = (dir / "broken.jsonl").string();
  r = RunRecipe(o, nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("broken.jsonl:2"), std::string::npos) << r.status();
  EXPECT_FALSE(fs::exists(dir / "out" / "adapter.safetensors"));

  o = BaseOptions(dir);
  o.model_dir = (dir / "missing").string();
  r = RunRecipe(o, nullptr, nullptr);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("missing"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace qwha::pipeline
