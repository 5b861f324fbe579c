// End to end on the CPU: a small random model saved as a Hugging Face
// directory, a real tokenizer, a JSONL dataset → RunRecipe → exported adapter.
#include "worker/pipeline/recipe.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/data/dataset.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"
#include "worker/model/llama.h"
#include "worker/pipeline/export.h"
#include "worker/tokenizer/tokenizer.h"

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

// Runs the recipe into dir/<out>; returns the result and the detail of the
// "quantizing" phase.
std::pair<absl::StatusOr<RecipeResult>, std::string> RunInto(RecipeOptions o, const fs::path& dir,
                                                             const std::string& out) {
  o.output_dir = (dir / out).string();
  std::string detail;
  auto result = RunRecipe(
      o,
      [&](const std::string& p, const std::string& d) {
        if (p == "quantizing") detail = d;
      },
      nullptr);
  return {std::move(result), detail};
}

void ExpectSameAdapters(const fs::path& a, const fs::path& b) {
  auto fa = io::ReadSafetensors((a / "adapter.safetensors").string());
  auto fb = io::ReadSafetensors((b / "adapter.safetensors").string());
  ASSERT_TRUE(fa.ok() && fb.ok());
  ASSERT_EQ(fa->tensors.size(), fb->tensors.size());
  for (const auto& [name, t] : fa->tensors) {
    ASSERT_TRUE(fb->tensors.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, fb->tensors.at(name))) << name << " differs";
  }
}

// Two runs with one cache directory: the second reads the quantized base and
// the Grams from the cache and ends bitwise where the cold run ended. A
// damaged entry is detected, rebuilt, and serves again; a hit marks it used.
TEST(RecipeTest, CacheHitIsBitwiseIdenticalAndCorruptEntriesAreRebuilt) {
  fs::path dir = TempDir("cache");
  RecipeOptions o = BaseOptions(dir);
  o.quant.method = quant::QuantMethod::kGptq;  // quantization depends on the Grams too
  o.train.max_steps = 3;
  o.cache_dir = (dir / "cache").string();

  auto [cold, cold_detail] = RunInto(o, dir, "cold");
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_FALSE(cold->quantized_base_cache_hit);
  EXPECT_EQ(cold_detail.rfind("cache hit", 0), std::string::npos) << cold_detail;

  auto [warm, warm_detail] = RunInto(o, dir, "warm");
  ASSERT_TRUE(warm.ok()) << warm.status();
  EXPECT_TRUE(warm->quantized_base_cache_hit);
  EXPECT_EQ(warm_detail.rfind("cache hit", 0), 0u) << warm_detail;
  EXPECT_TRUE(warm->warnings.empty());
  EXPECT_EQ(warm->eval_loss_quantized, cold->eval_loss_quantized);
  EXPECT_EQ(warm->eval_loss_initialized, cold->eval_loss_initialized);
  EXPECT_EQ(warm->eval_loss_final, cold->eval_loss_final);
  ExpectSameAdapters(dir / "cold", dir / "warm");
  std::ifstream metrics_in(dir / "warm" / "metrics.json");
  EXPECT_EQ(nlohmann::json::parse(metrics_in)["quantized_base_cache_hit"], true);

  // Truncate one packed weight of the (only) entry.
  fs::path entry;
  for (const auto& digest : fs::directory_iterator(dir / "cache")) {
    for (const auto& key : fs::directory_iterator(digest.path())) {
      if (key.is_directory()) entry = key.path();  // beside it: <entry>.inuse, the readers' lock
    }
  }
  ASSERT_FALSE(entry.empty());
  const fs::path victim = entry / "model.layers.1.mlp.down_proj.quant.safetensors";
  ASSERT_TRUE(fs::exists(victim));
  fs::resize_file(victim, 100);

  auto [rebuilt, rebuilt_detail] = RunInto(o, dir, "rebuilt");
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_FALSE(rebuilt->quantized_base_cache_hit);
  ASSERT_FALSE(rebuilt->warnings.empty());
  EXPECT_NE(rebuilt->warnings[0].find("down_proj"), std::string::npos) << rebuilt->warnings[0];
  ExpectSameAdapters(dir / "cold", dir / "rebuilt");

  // A hit marks the entry used (its modification time: the worker's pruning
  // removes the least recently used entries first).
  const auto hour_ago = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(entry, hour_ago);
  auto [again, again_detail] = RunInto(o, dir, "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->quantized_base_cache_hit);
  ExpectSameAdapters(dir / "cold", dir / "again");
  EXPECT_GT(fs::last_write_time(entry), hour_ago + std::chrono::minutes(59));
  EXPECT_TRUE(fs::exists(entry.string() + ".inuse"));
}

// Exact match on prompt/completion eval data equals a plain greedy loop (full
// forward per token, no KV cache) run here on the exported merged model; the
// PEFT export of a CLoQ adapter holds the trained factors.
TEST(RecipeTest, ExactMatchMergedAndPeftExports) {
  fs::path dir = TempDir("exports");
  RecipeOptions o = BaseOptions(dir);
  {
    std::ofstream out(dir / "eval.jsonl");
    for (int i = 0; i < 6; ++i) {
      out << nlohmann::json{{"prompt", "Add " + std::to_string(3 * i) + " and 2:"},
                            {"completion", " " + std::to_string(3 * i + 2)}}
                 .dump()
          << "\n";
    }
  }
  o.eval_data = (dir / "eval.jsonl").string();
  o.eval_fraction = 0;
  o.adapter.type = adapters::AdapterType::kCloq;
  o.train.max_steps = 4;
  o.exact_match_samples = 4;
  o.export_merged = true;
  auto [result, detail] = RunInto(o, dir, "out");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exact_match_samples, 4);

  auto merged = model::LoadModel(result->merged_path, torch::kCPU, torch::kFloat32);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(fs::exists(fs::path(result->merged_path) / "tokenizer.json"));
  auto tok = tokenizer::Tokenizer::FromFile((fs::path(o.model_dir) / "tokenizer.json").string());
  ASSERT_TRUE(tok.ok());
  auto eval = data::LoadDataset(o.eval_data, **tok);
  ASSERT_TRUE(eval.ok()) << eval.status();
  int64_t exact = 0, tokens = 0, matched = 0;
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 4; ++i) {
    const data::Example& e = eval->examples[i];
    ASSERT_GT(e.prompt_length, 0);
    std::vector<int64_t> ids(e.ids.begin(), e.ids.begin() + e.prompt_length);
    int64_t ok = 0;
    const int64_t n = static_cast<int64_t>(e.ids.size()) - e.prompt_length;
    for (int64_t t = 0; t < n; ++t) {
      torch::Tensor logits = (*merged)->Forward(torch::tensor(ids).unsqueeze(0));
      const int64_t next = logits[0][-1].argmax().item<int64_t>();
      ok += next == e.ids[e.prompt_length + t] ? 1 : 0;
      ids.push_back(next);
    }
    exact += ok == n ? 1 : 0;
    matched += ok;
    tokens += n;
  }
  EXPECT_EQ(result->exact_match, static_cast<double>(exact) / 4.0);
  EXPECT_EQ(result->exact_match_token_accuracy,
            static_cast<double>(matched) / static_cast<double>(tokens));
  std::ifstream metrics_in(dir / "out" / "metrics.json");
  nlohmann::json metrics = nlohmann::json::parse(metrics_in);
  EXPECT_EQ(metrics["exact_match"].get<double>(), result->exact_match);
  EXPECT_EQ(metrics["exact_match_samples"], 4);

  // PEFT: CLoQ's scale is 1, so lora_alpha = r, and the factors are ours.
  auto peft = ReadPeftAdapter(result->peft_path);
  ASSERT_TRUE(peft.ok()) << peft.status();
  EXPECT_EQ(peft->lora_alpha, static_cast<double>(peft->r));
  auto ours = io::ReadSafetensors(result->adapter_path);
  ASSERT_TRUE(ours.ok());
  ASSERT_EQ(peft->layers.size(), 14u);
  for (const auto& [slot, layer] : peft->layers) {
    EXPECT_EQ(layer.scale, 1.0);
    EXPECT_TRUE(torch::equal(layer.a, ours->tensors.at(slot + "/lora_A"))) << slot;
    EXPECT_TRUE(torch::equal(layer.b, ours->tensors.at(slot + "/lora_B"))) << slot;
  }
}

}  // namespace
}  // namespace qwha::pipeline
