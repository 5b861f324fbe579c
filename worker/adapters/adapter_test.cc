#include "worker/adapters/adapter.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "worker/quant/quantizer.h"
#include "worker/testing/synthetic.h"

namespace qwha::adapters {
namespace {

constexpr auto kF64 = torch::kFloat64;
constexpr AdapterType kAllTypes[] = {AdapterType::kQwha, AdapterType::kQwhaDataFree,
                                     AdapterType::kLora, AdapterType::kLoftq,
                                     AdapterType::kCloq, AdapterType::kRandomWht};

LayerData SmallLayer(int64_t out, int64_t in, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor w = torch::randn({out, in});
  const torch::Tensor x = torch::randn({3 * in, in}, kF64);
  return {w, torch::round(w / 0.5) * 0.5, x.t().matmul(x)};
}

AdapterConfig Config(AdapterType type) {
  AdapterConfig cfg;
  cfg.type = type;
  cfg.rank = 2;
  cfg.scaling = 1.5;
  return cfg;
}

// Random values in every trainable tensor (so no gradient is trivially zero).
void Randomize(Adapter& adapter) {
  std::map<std::string, torch::Tensor> state = adapter.StateDict();
  for (auto& [name, t] : state) {
    if (t.is_floating_point()) t = torch::randn_like(t);
  }
  ASSERT_TRUE(adapter.LoadStateDict(state).ok());
}

TEST(AdapterTest, ParseAndNameRoundTrip) {
  for (AdapterType type : kAllTypes) {
    auto parsed = ParseAdapterType(AdapterTypeName(type));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, type);
  }
  auto bad = ParseAdapterType("dora");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("dora"), std::string::npos);
}

TEST(AdapterTest, ValidationNamesTheField) {
  auto expect_field = [](AdapterConfig cfg, int64_t out, int64_t in, const std::string& field) {
    const absl::Status s = ValidateAdapterConfig(cfg, out, in);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string::npos) << s.message();
  };
  AdapterConfig cfg;
  EXPECT_TRUE(ValidateAdapterConfig(cfg, 64, 48).ok());
  cfg.rank = 0;
  expect_field(cfg, 64, 64, "rank");
  cfg = AdapterConfig();
  cfg.num_params = -1;
  expect_field(cfg, 64, 64, "num_params");
  cfg.num_params = 64 * 64 + 1;
  expect_field(cfg, 64, 64, "num_params");
  cfg = AdapterConfig();
  cfg.alloc_alpha = -0.5;
  expect_field(cfg, 64, 64, "alloc_alpha");
  cfg = AdapterConfig();
  cfg.scaling = 0;
  expect_field(cfg, 64, 64, "scaling");
  cfg.scaling = std::nan("");
  expect_field(cfg, 64, 64, "scaling");
  cfg = AdapterConfig();
  cfg.damp = -1;
  expect_field(cfg, 64, 64, "damp");
  cfg = AdapterConfig();
  expect_field(cfg, 64, 100, "in_features");  // 100 = 25 * 4: no Hadamard matrix
  cfg.type = AdapterType::kLora;
  EXPECT_TRUE(ValidateAdapterConfig(cfg, 64, 100).ok());  // LoRA has no size constraint
}

TEST(AdapterTest, BudgetParams) {
  AdapterConfig cfg;
  cfg.rank = 8;
  EXPECT_EQ(BudgetParams(cfg, 128, 256), 8 * 384);
  cfg.num_params = 1000;
  EXPECT_EQ(BudgetParams(cfg, 128, 256), 1000);
  cfg.num_params = 0;
  cfg.rank = 100;  // 100 * 24 > 16 * 8: capped
  EXPECT_EQ(BudgetParams(cfg, 16, 8), 128);
  cfg.rank = int64_t{1} << 60;  // no overflow
  EXPECT_EQ(BudgetParams(cfg, 16, 8), 128);
}

TEST(AdapterTest, InitializeEveryTypeWithTheBudget) {
  const LayerData layer = SmallLayer(24, 32, 1);
  for (AdapterType type : kAllTypes) {
    auto adapter = InitializeAdapter(Config(type), layer);
    ASSERT_TRUE(adapter.ok()) << AdapterTypeName(type) << ": " << adapter.status();
    EXPECT_EQ((*adapter)->type(), type);
    EXPECT_EQ((*adapter)->NumTrainableParams(), 2 * (24 + 32)) << AdapterTypeName(type);
    for (const torch::Tensor& p : (*adapter)->TrainableParameters()) {
      EXPECT_TRUE(p.is_leaf() && p.requires_grad());
      EXPECT_EQ(p.scalar_type(), torch::kFloat32);
    }
  }
  LayerData no_gram = layer;
  no_gram.gram = torch::Tensor();
  for (AdapterType type : {AdapterType::kQwha, AdapterType::kCloq}) {
    auto adapter = InitializeAdapter(Config(type), no_gram);
    ASSERT_FALSE(adapter.ok());
    EXPECT_EQ(adapter.status().code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(InitializeAdapter(Config(AdapterType::kQwhaDataFree), no_gram).ok());
  LayerData bad = layer;
  bad.dequantized = layer.dequantized.slice(0, 1);
  EXPECT_EQ(InitializeAdapter(Config(AdapterType::kLora), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Central differences of L = ½‖Forward(x) − T‖² + Σ C ∘ ΔW on a few entries
// of every trainable tensor, in float64.
TEST(AdapterTest, GradientsMatchFiniteDifferences) {
  const int64_t out = 12, in = 48;
  const LayerData layer = SmallLayer(out, in, 2);
  for (AdapterType type : kAllTypes) {
    auto created = InitializeAdapter(Config(type), layer);
    ASSERT_TRUE(created.ok()) << created.status();
    Adapter& adapter = **created;
    adapter.To(torch::kCPU, kF64);
    Randomize(adapter);
    torch::manual_seed(3);
    const torch::Tensor x = torch::randn({5, in}, kF64);
    const torch::Tensor target = torch::randn({5, out}, kF64);
    const torch::Tensor c = torch::randn({out, in}, kF64);
    auto loss = [&] {
      return 0.5 * (adapter.Forward(x) - target).square().sum() + (adapter.DeltaWeight() * c).sum();
    };
    loss().backward();
    for (const torch::Tensor& p : adapter.TrainableParameters()) {
      const torch::Tensor grad = p.grad().clone();
      torch::Tensor flat = p.view(-1);
      for (int64_t i : {int64_t{0}, p.numel() / 2, p.numel() - 1}) {
        const double eps = 1e-6;
        double up, down;
        {
          torch::NoGradGuard no_grad;
          flat[i] += eps;
          up = loss().item<double>();
          flat[i] -= 2 * eps;
          down = loss().item<double>();
          flat[i] += eps;
        }
        const double numeric = (up - down) / (2 * eps);
        const double analytic = grad.view(-1)[i].item<double>();
        EXPECT_NEAR(analytic, numeric, 1e-6 * (1 + std::abs(numeric)))
            << AdapterTypeName(type) << " entry " << i;
      }
    }
  }
}

TEST(AdapterTest, MergedForwardEqualsUnmerged) {
  const LayerData layer = SmallLayer(16, 48, 4);
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({2, 3, 48}, kF64);
  const torch::Tensor deq = layer.dequantized.to(kF64);
  for (AdapterType type : kAllTypes) {
    auto adapter = InitializeAdapter(Config(type), layer);
    ASSERT_TRUE(adapter.ok());
    (*adapter)->To(torch::kCPU, kF64);
    Randomize(**adapter);
    const torch::Tensor merged = torch::matmul(x, (deq + (*adapter)->DeltaWeight()).t());
    const torch::Tensor unmerged = torch::matmul(x, deq.t()) + (*adapter)->Forward(x);
    EXPECT_TRUE(torch::allclose(merged, unmerged, 1e-10, 1e-10)) << AdapterTypeName(type);
  }
}

TEST(AdapterTest, StateDictRoundTripAndFailedLoadLeavesAdapterUnchanged) {
  const LayerData layer = SmallLayer(16, 32, 6);
  for (AdapterType type : kAllTypes) {
    const AdapterConfig cfg = Config(type);
    auto source = InitializeAdapter(cfg, layer);
    ASSERT_TRUE(source.ok());
    Randomize(**source);
    auto target = CreateEmptyAdapter(cfg, 16, 32);
    ASSERT_TRUE(target.ok()) << target.status();
    const std::map<std::string, torch::Tensor> state = (*source)->StateDict();
    ASSERT_TRUE((*target)->LoadStateDict(state).ok());
    EXPECT_TRUE((*target)->DeltaWeight().equal((*source)->DeltaWeight())) << AdapterTypeName(type);

    const torch::Tensor before = (*target)->DeltaWeight().detach().clone();
    for (const auto& [name, tensor] : state) {
      std::map<std::string, torch::Tensor> missing = state;
      missing.erase(name);
      const absl::Status s = (*target)->LoadStateDict(missing);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find(name), std::string::npos) << s.message();
      std::map<std::string, torch::Tensor> misshaped = state;
      misshaped[name] = tensor.slice(0, 1);
      for (auto& [other, t] : misshaped) {  // other entries valid but different
        if (other != name && t.is_floating_point()) t = t + 1;
      }
      const absl::Status m = (*target)->LoadStateDict(misshaped);
      EXPECT_EQ(m.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(m.message().find(name), std::string::npos) << m.message();
      EXPECT_TRUE((*target)->DeltaWeight().equal(before)) << AdapterTypeName(type);
    }
  }
}

TEST(AdapterTest, ToKeepsTrainableLeaves) {
  const LayerData layer = SmallLayer(8, 32, 7);
  for (AdapterType type : kAllTypes) {
    auto adapter = InitializeAdapter(Config(type), layer);
    ASSERT_TRUE(adapter.ok());
    const torch::Tensor delta = (*adapter)->DeltaWeight().detach().to(kF64);
    (*adapter)->To(torch::kCPU, kF64);
    for (const torch::Tensor& p : (*adapter)->TrainableParameters()) {
      EXPECT_TRUE(p.is_leaf() && p.requires_grad());
      EXPECT_EQ(p.scalar_type(), kF64);
    }
    EXPECT_TRUE(torch::allclose((*adapter)->DeltaWeight(), delta, 1e-6, 1e-6));
  }
}

TEST(AdapterTest, RelativeOutputErrorMatchesDefinition) {
  torch::manual_seed(8);
  const torch::Tensor w = torch::randn({6, 10}, kF64);
  const torch::Tensor deq = w + 0.1 * torch::randn({6, 10}, kF64);
  const torch::Tensor x = torch::randn({40, 10}, kF64);
  const torch::Tensor delta = 0.05 * torch::randn({6, 10}, kF64);
  const LayerData layer{w, deq, x.t().matmul(x)};
  const double ref =
      (x.matmul((w - deq - delta).t()).norm() / x.matmul(w.t()).norm()).item<double>();
  EXPECT_NEAR(RelativeOutputError(layer, delta), ref, 1e-12);
  const LayerData no_gram{w, deq, torch::Tensor()};
  EXPECT_NEAR(RelativeOutputError(no_gram, torch::Tensor()),
              ((w - deq).norm() / w.norm()).item<double>(), 1e-12);
}

// The paper's claim on a realistic synthetic layer: at 2 bits and a rank-8
// budget, QWHA's initialization leaves the least layer-output error.
TEST(AdapterTest, InitializationErrorOrdering) {
  testing::SyntheticLayerOptions opts;
  opts.out_features = 128;
  opts.in_features = 256;
  opts.tokens = 2048;
  opts.seed = 1;
  const testing::SyntheticLayer syn = testing::MakeSyntheticLayer(opts);
  quant::QuantConfig qcfg;
  qcfg.bits = 2;
  qcfg.group_size = 64;
  auto q = quant::QuantizeRtn(syn.weight, qcfg);
  ASSERT_TRUE(q.ok()) << q.status();
  const torch::Tensor x = syn.inputs.to(kF64);
  const LayerData layer{syn.weight, quant::Dequantize(*q), x.t().matmul(x)};

  std::map<AdapterType, double> err;
  AdapterConfig cfg;
  cfg.rank = 8;
  for (AdapterType type : kAllTypes) {
    cfg.type = type;
    auto adapter = InitializeAdapter(cfg, layer);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    err[type] = RelativeOutputError(layer, (*adapter)->DeltaWeight());
  }
  const double none = RelativeOutputError(layer, torch::Tensor());
  std::printf(
      "relative output error, 2-bit RTN g64, 128x256, rank-8 budget:\n"
      "  none %.5f  lora %.5f  random-wht %.5f  loftq %.5f  cloq %.5f\n"
      "  qwha-datafree %.5f  qwha %.5f\n",
      none, err[AdapterType::kLora], err[AdapterType::kRandomWht], err[AdapterType::kLoftq],
      err[AdapterType::kCloq], err[AdapterType::kQwhaDataFree], err[AdapterType::kQwha]);
  EXPECT_LT(err[AdapterType::kQwha], err[AdapterType::kQwhaDataFree]);
  EXPECT_LT(err[AdapterType::kQwha], err[AdapterType::kCloq]);
  EXPECT_LT(err[AdapterType::kCloq], err[AdapterType::kLoftq]);
  EXPECT_LT(err[AdapterType::kLoftq], none);
  EXPECT_NEAR(err[AdapterType::kLora], none, 1e-9);
  EXPECT_NEAR(err[AdapterType::kRandomWht], none, 1e-9);
}

}  // namespace
}  // namespace qwha::adapters
