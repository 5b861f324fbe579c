#include "worker/pipeline/stages.h"

#include <gtest/gtest.h>

#include "worker/train/test_util.h"

namespace qwha::pipeline {
namespace {

using train::testing::TinyConfig;

std::vector<torch::Tensor> Batches(int count, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> batches;
  for (int i = 0; i < count; ++i) batches.push_back(torch::randint(0, 50, {2, 16}, torch::kInt64));
  return batches;
}

TEST(StagesTest, TargetModules) {
  EXPECT_TRUE(ValidateTargetModules(AllTargetModules()).ok());
  absl::Status bad = ValidateTargetModules({"q_proj", "qkv"});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("'qkv'"), std::string::npos) << bad;
  EXPECT_FALSE(ValidateTargetModules({}).ok());
  EXPECT_TRUE(IsTarget("model.layers.0.self_attn.q_proj", {"q_proj"}));
  EXPECT_FALSE(IsTarget("model.layers.0.self_attn.q_proj", {"k_proj"}));
  EXPECT_FALSE(IsTarget("model.layers.0.self_attn.xq_proj", {"q_proj"}));
}

// The Grams equal float64 XᵀX of the inputs each slot really received,
// captured independently; slots fed the same tensor share one Gram.
TEST(StagesTest, CalibrationGramsMatchCapturedInputs) {
  auto model = model::LlamaModel::RandomInit(TinyConfig(), 3, torch::kCPU, torch::kFloat32);
  auto batches = Batches(3, 11);
  std::map<std::string, torch::Tensor> reference;
  model->SetLinearInputHook([&](const model::LinearSlot& slot, const torch::Tensor& x) {
    torch::Tensor x64 = x.reshape({-1, x.size(-1)}).to(torch::kFloat64);
    torch::Tensor g = x64.t().matmul(x64);
    auto it = reference.find(slot.name());
    if (it == reference.end()) {
      reference[slot.name()] = g;
    } else {
      it->second = it->second + g;
    }
  });
  {
    torch::NoGradGuard no_grad;
    for (const auto& b : batches) model->Forward(b);
  }
  model->SetLinearInputHook({});

  auto grams = CollectCalibration(*model, batches, AllTargetModules());
  ASSERT_TRUE(grams.ok()) << grams.status();
  ASSERT_EQ(grams->size(), 14u);
  for (const auto& [name, g] : *grams) {
    const torch::Tensor& ref = reference.at(name);
    EXPECT_LT(((g - ref).norm() / ref.norm()).item<double>(), 1e-12) << name;
  }
  EXPECT_TRUE(grams->at("model.layers.0.self_attn.q_proj")
                  .is_same(grams->at("model.layers.0.self_attn.v_proj")));
  EXPECT_TRUE(
      grams->at("model.layers.1.mlp.gate_proj").is_same(grams->at("model.layers.1.mlp.up_proj")));
  EXPECT_FALSE(grams->at("model.layers.0.self_attn.q_proj")
                   .is_same(grams->at("model.layers.0.self_attn.o_proj")));

  auto only_down = CollectCalibration(*model, batches, {"down_proj"});
  ASSERT_TRUE(only_down.ok());
  EXPECT_EQ(only_down->size(), 2u);
  EXPECT_EQ(CollectCalibration(*model, {}, AllTargetModules()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StagesTest, QuantizeThenAttachReducesEveryLayerError) {
  auto model = model::LlamaModel::RandomInit(TinyConfig(), 5, torch::kCPU, torch::kFloat32);
  auto batches = Batches(4, 12);
  auto grams = CollectCalibration(*model, batches, AllTargetModules());
  ASSERT_TRUE(grams.ok()) << grams.status();

  quant::QuantConfig qc;
  qc.bits = 2;
  qc.group_size = 32;
  qc.method = quant::QuantMethod::kGptq;
  auto no_grams = QuantizeModel(*model, qc, {}, AllTargetModules());
  EXPECT_EQ(no_grams.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(no_grams.status().message().find("q_proj"), std::string::npos);

  torch::Tensor dense_logits;
  {
    torch::NoGradGuard no_grad;
    dense_logits = model->Forward(batches[0]);
  }
  auto originals = QuantizeModel(*model, qc, *grams, AllTargetModules());
  ASSERT_TRUE(originals.ok()) << originals.status();
  EXPECT_EQ(originals->size(), 14u);
  for (const auto* slot : model->LinearSlots()) EXPECT_TRUE(slot->is_quantized()) << slot->name();
  EXPECT_EQ(QuantizeModel(*model, qc, *grams, AllTargetModules()).status().code(),
            absl::StatusCode::kFailedPrecondition);

  adapters::AdapterConfig ac;
  ac.type = adapters::AdapterType::kQwha;
  ac.rank = 4;
  auto reports = AttachAdapters(*model, ac, *originals, *grams);
  ASSERT_TRUE(reports.ok()) << reports.status();
  ASSERT_EQ(reports->size(), 14u);
  for (const auto& r : *reports) {
    EXPECT_GT(r.trainable_params, 0) << r.slot;
    EXPECT_LT(r.error_adapted, r.error_quantized) << r.slot;
  }

  // The adapters bring the model's logits closer to the dense model's, and
  // the merged and unmerged paths agree.
  torch::NoGradGuard no_grad;
  torch::Tensor merged = model->Forward(batches[0]);
  model->SetAdapterMode(model::AdapterMode::kUnmerged);
  torch::Tensor unmerged = model->Forward(batches[0]);
  EXPECT_LT((merged - unmerged).abs().max().item<double>(), 1e-4);
  std::vector<std::unique_ptr<adapters::Adapter>> detached;
  for (auto* slot : model->LinearSlots()) detached.push_back(slot->DetachAdapter());
  torch::Tensor quantized_only = model->Forward(batches[0]);
  EXPECT_LT((merged - dense_logits).norm().item<double>(),
            (quantized_only - dense_logits).norm().item<double>());
}

}  // namespace
}  // namespace qwha::pipeline
