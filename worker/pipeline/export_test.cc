#include "worker/pipeline/export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "worker/adapters/lora.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"
#include "worker/train/test_util.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;
using train::testing::MakeTinyAdaptedModel;

fs::path TempDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("export_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  fs::create_directories(dir);
  return dir;
}

torch::Tensor Ids(int64_t vocab) {
  torch::manual_seed(5);
  return torch::randint(0, vocab, {2, 10}, torch::kInt64);
}

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

TEST(ExportTest, MergedModelLoadsAndComputesTheAdaptedModel) {
  fs::path dir = TempDir("merged");
  auto model = MakeTinyAdaptedModel(adapters::AdapterType::kLoftq, 4);
  std::ofstream(dir / "tokenizer.json") << "{\"model\": {}}";
  fs::create_directories(dir / "base");
  std::ofstream(dir / "base" / "generation_config.json") << "{\"eos_token_id\": 2}";
  ASSERT_TRUE(ExportMergedModel(*model, (dir / "base").string(), (dir / "tokenizer.json").string(),
                                (dir / "merged").string(), torch::kFloat32)
                  .ok());
  EXPECT_EQ(*io::ReadFile((dir / "merged" / "tokenizer.json").string()), "{\"model\": {}}");
  EXPECT_TRUE(fs::exists(dir / "merged" / "generation_config.json"));

  auto merged = model::LoadModel((dir / "merged").string(), torch::kCPU, torch::kFloat32);
  ASSERT_TRUE(merged.ok()) << merged.status();
  // Each projection is deq(Q) + scale · B A, computed here in float64.
  for (const model::LinearSlot* slot : model->LinearSlots()) {
    const auto* lora = dynamic_cast<const adapters::LoraAdapter*>(slot->adapter());
    ASSERT_NE(lora, nullptr);
    auto state = lora->StateDict();
    torch::Tensor ref =
        quant::Dequantize(*slot->quantized(), torch::kFloat32).to(torch::kFloat64) +
        lora->scale() *
            state.at("lora_B").to(torch::kFloat64).matmul(state.at("lora_A").to(torch::kFloat64));
    const model::LinearSlot* m = (*merged)->FindLinear(slot->name());
    ASSERT_NE(m, nullptr);
    EXPECT_LT(MaxAbs(m->weight(), ref), 1e-6) << slot->name();
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = Ids(model->config().vocab_size);
  EXPECT_LT(MaxAbs((*merged)->Forward(ids), model->Forward(ids)), 1e-4);
}

TEST(ExportTest, LoraAlphaReproducesScaleExactly) {
  for (int64_t r : {1, 2, 3, 7, 12, 63, 64, 100}) {
    // LoRA: scale = scaling / r in double; PEFT's lora_alpha / r equals it.
    for (double scaling : {1.0, 16.0, 0.1, 1.0 / 3.0, 2.0 / 7.0, 1e-3 / 3.0}) {
      const double scale = scaling / static_cast<double>(r);
      EXPECT_EQ(PeftLoraAlpha(scale, r) / static_cast<double>(r), scale) << scaling << " r=" << r;
    }
    EXPECT_EQ(PeftLoraAlpha(1.0, r), static_cast<double>(r));  // LoftQ / CLoQ
    // An arbitrary scale: within one ulp where no exact alpha exists.
    for (double scale : {0.1, 0.37, 1.0 / 3.0}) {
      const double got = PeftLoraAlpha(scale, r) / static_cast<double>(r);
      EXPECT_LE(std::abs(got - scale), std::nextafter(scale, 1.0) - scale) << scale << " r=" << r;
    }
  }
}

// Reads the exported files with the safetensors reader and JSON, not with
// ReadPeftAdapter: keys, shapes, config fields, and (alpha / r) · B A = ΔW.
TEST(ExportTest, PeftFilesHoldPeftKeysAndReproduceDeltaW) {
  fs::path dir = TempDir("peft");
  auto model = MakeTinyAdaptedModel(adapters::AdapterType::kLoftq, 6);
  ASSERT_TRUE(ExportPeftAdapter(*model, "org/base-model", dir.string()).ok());

  std::ifstream config_in(dir / "adapter_config.json");
  nlohmann::json config = nlohmann::json::parse(config_in);
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["base_model_name_or_path"], "org/base-model");
  EXPECT_EQ(config["bias"], "none");
  EXPECT_EQ(config["fan_in_fan_out"], false);
  EXPECT_EQ(config["use_rslora"], false);
  EXPECT_EQ(config["lora_dropout"].get<double>(), 0.0);
  EXPECT_EQ(config["target_modules"], nlohmann::json({"down_proj", "gate_proj", "k_proj", "o_proj",
                                                      "q_proj", "up_proj", "v_proj"}));
  const int64_t r = config["r"].get<int64_t>();
  const double alpha = config["lora_alpha"].get<double>();
  EXPECT_EQ(r, 2);
  EXPECT_TRUE(config["rank_pattern"].empty());

  auto file = io::ReadSafetensors((dir / "adapter_model.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.size(), 28u);
  for (const model::LinearSlot* slot : model->LinearSlots()) {
    const std::string key = "base_model.model." + slot->name();
    ASSERT_TRUE(file->tensors.count(key + ".lora_A.weight")) << key;
    const torch::Tensor a = file->tensors.at(key + ".lora_A.weight");
    const torch::Tensor b = file->tensors.at(key + ".lora_B.weight");
    EXPECT_EQ(a.sizes(), (std::vector<int64_t>{r, slot->in_features()}));
    EXPECT_EQ(b.sizes(), (std::vector<int64_t>{slot->out_features(), r}));
    EXPECT_EQ(a.scalar_type(), torch::kFloat32);
    torch::Tensor delta =
        (alpha / static_cast<double>(r)) * b.to(torch::kFloat64).matmul(a.to(torch::kFloat64));
    torch::NoGradGuard no_grad;
    EXPECT_LT(MaxAbs(delta, slot->adapter()->DeltaWeight()), 1e-6) << slot->name();
  }
  EXPECT_EQ(file->tensors.count("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            1u);

  // QWHA has no PEFT form.
  auto qwha = MakeTinyAdaptedModel(adapters::AdapterType::kQwhaDataFree, 6);
  EXPECT_EQ(ExportPeftAdapter(*qwha, "b", (dir / "q").string()).code(),
            absl::StatusCode::kInvalidArgument);
}

// Layers with their own rank and scale go to rank_pattern / alpha_pattern;
// reading the files back and attaching them to a fresh dense model gives the
// logits of the original adapters.
TEST(ExportTest, PeftRoundTripWithPerLayerRanks) {
  fs::path dir = TempDir("peft_patterns");
  auto config = train::testing::TinyConfig();
  auto model = model::LlamaModel::RandomInit(config, 8, torch::kCPU, torch::kFloat32);
  torch::manual_seed(3);
  for (model::LinearSlot* slot : model->LinearSlots()) {
    const bool down = slot->name().find("down_proj") != std::string::npos;
    const int64_t r = down ? 3 : 2;
    const double scale = down ? 0.37 : 1.0 / 3.0;
    auto lora = std::make_unique<adapters::LoraAdapter>(
        adapters::AdapterType::kLora, slot->out_features(), slot->in_features(), r, scale,
        torch::randn({r, slot->in_features()}) * 0.2,
        torch::randn({slot->out_features(), r}) * 0.2);
    ASSERT_TRUE(slot->AttachAdapter(std::move(lora)).ok());
  }
  ASSERT_TRUE(ExportPeftAdapter(*model, "base", dir.string()).ok());
  std::ifstream config_in(dir / "adapter_config.json");
  nlohmann::json json = nlohmann::json::parse(config_in);
  EXPECT_EQ(json["r"], 2);
  EXPECT_EQ(json["rank_pattern"]["layers.1.mlp.down_proj"], 3);
  EXPECT_EQ(json["alpha_pattern"].size(), 2u);

  auto read = ReadPeftAdapter(dir.string());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->layers.size(), 14u);
  EXPECT_DOUBLE_EQ(read->layers.at("model.layers.0.mlp.down_proj").scale, 0.37);
  EXPECT_EQ(read->layers.at("model.layers.0.mlp.up_proj").scale, 1.0 / 3.0);

  auto fresh = model::LlamaModel::RandomInit(config, 8, torch::kCPU, torch::kFloat32);
  ASSERT_TRUE(AttachPeftAdapter(*fresh, *read).ok());
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = Ids(config.vocab_size);
  EXPECT_LT(MaxAbs(fresh->Forward(ids), model->Forward(ids)), 1e-5);

  // A lora_A without its lora_B is rejected, naming the layer.
  auto file = io::ReadSafetensors((dir / "adapter_model.safetensors").string());
  file->tensors.erase("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight");
  ASSERT_TRUE(
      io::WriteSafetensors((dir / "adapter_model.safetensors").string(), file->tensors).ok());
  auto bad = ReadPeftAdapter(dir.string());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("layers.1.mlp.up_proj"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace qwha::pipeline
