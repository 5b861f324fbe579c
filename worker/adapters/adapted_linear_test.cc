#include "worker/adapters/adapted_linear.h"

#include <gtest/gtest.h>

#include "worker/quant/quantizer.h"
#include "worker/testing/synthetic.h"

namespace qwha::adapters {
namespace {

std::vector<torch::Device> Devices() {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  return devices;
}

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.to(torch::kCPU, torch::kFloat64);
  auto b64 = b.to(torch::kCPU, torch::kFloat64);
  return ((a64 - b64).norm() / b64.norm()).item<double>();
}

struct Fixture {
  quant::QuantizedWeight base;
  torch::Tensor w;
};

Fixture MakeBase(int64_t out, int64_t in, const torch::Device& device, uint64_t seed) {
  testing::SyntheticLayerOptions opt;
  opt.out_features = out;
  opt.in_features = in;
  opt.tokens = 64;
  opt.seed = seed;
  auto layer = testing::MakeSyntheticLayer(opt, device);
  quant::QuantConfig cfg;
  cfg.bits = 3;
  cfg.group_size = 32;
  auto q = quant::QuantizeRtn(layer.weight, cfg);
  EXPECT_TRUE(q.ok()) << q.status();
  return {*q, layer.weight};
}

// Merged forward and both gradients equal the float64 reference of
// y = x (deq + Δ)ᵀ computed with plain autograd.
TEST(AdaptedLinearTest, MergedMatchesFloat64Reference) {
  for (const auto& device : Devices()) {
    Fixture f = MakeBase(48, 64, device, 7);
    torch::Tensor x =
        torch::randn({2, 5, 64}, torch::dtype(torch::kFloat32).device(device)).requires_grad_(true);
    torch::Tensor delta =
        (0.01 * torch::randn({48, 64}, torch::dtype(torch::kFloat32).device(device)))
            .requires_grad_(true);
    torch::Tensor y = MergedLinear(x, f.base, delta, torch::kFloat32);
    torch::Tensor gy = torch::randn_like(y);
    y.backward(gy);

    torch::Tensor x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
    torch::Tensor d64 = delta.detach().to(torch::kFloat64).requires_grad_(true);
    torch::Tensor deq64 = quant::Dequantize(f.base, torch::kFloat32).to(torch::kFloat64);
    torch::Tensor y64 = torch::matmul(x64, (deq64 + d64).t());
    y64.backward(gy.to(torch::kFloat64));

    EXPECT_LT(RelErr(y, y64), 1e-5) << device;
    EXPECT_LT(RelErr(x.grad(), x64.grad()), 1e-5) << device;
    EXPECT_LT(RelErr(delta.grad(), d64.grad()), 1e-5) << device;
  }
}

TEST(AdaptedLinearTest, FrozenBaseHasNoDelta) {
  Fixture f = MakeBase(32, 64, torch::kCPU, 3);
  torch::Tensor x = torch::randn({7, 64}).requires_grad_(true);
  torch::Tensor y = MergedLinear(x, f.base, torch::Tensor(), torch::kFloat32);
  y.sum().backward();
  torch::Tensor deq = quant::Dequantize(f.base, torch::kFloat32);
  EXPECT_LT(RelErr(y, torch::matmul(x.detach(), deq.t())), 1e-6);
  EXPECT_LT(RelErr(x.grad(), torch::ones({7, 32}).matmul(deq)), 1e-6);
}

// Merged and unmerged paths agree for every adapter type, and both equal the
// plain x·(deq+ΔW)ᵀ.
TEST(AdaptedLinearTest, MergedEqualsUnmergedForEveryAdapter) {
  for (const auto& device : Devices()) {
    Fixture f = MakeBase(40, 64, device, 11);
    torch::Tensor deq = quant::Dequantize(f.base, torch::kFloat32);
    testing::SyntheticLayerOptions opt;
    opt.out_features = 40;
    opt.in_features = 64;
    opt.tokens = 256;
    opt.seed = 5;
    torch::Tensor xs = testing::MakeSyntheticLayer(opt, device).inputs;
    LayerData layer{f.w, deq, torch::matmul(xs.t().to(torch::kFloat64), xs.to(torch::kFloat64))};
    for (auto type : {AdapterType::kQwha, AdapterType::kQwhaDataFree, AdapterType::kLora,
                      AdapterType::kLoftq, AdapterType::kCloq, AdapterType::kRandomWht}) {
      AdapterConfig cfg;
      cfg.type = type;
      cfg.rank = 4;
      auto adapter = InitializeAdapter(cfg, layer);
      ASSERT_TRUE(adapter.ok()) << adapter.status();
      // Give zero-initialized adapters non-zero values so the check means something.
      {
        torch::NoGradGuard no_grad;
        for (auto& p : (*adapter)->TrainableParameters()) p.add_(0.01 * torch::randn_like(p));
      }
      torch::Tensor x = torch::randn({3, 64}, torch::dtype(torch::kFloat32).device(device));
      torch::Tensor merged = MergedLinear(x, f.base, (*adapter)->DeltaWeight(), torch::kFloat32);
      torch::Tensor unmerged = UnmergedLinear(x, f.base, adapter->get(), torch::kFloat32);
      torch::Tensor ref = torch::matmul(
          x.to(torch::kFloat64),
          (deq.to(torch::kFloat64) + (*adapter)->DeltaWeight().detach().to(torch::kFloat64)).t());
      EXPECT_LT(RelErr(merged, ref), 1e-5) << AdapterTypeName(type) << " " << device;
      EXPECT_LT(RelErr(unmerged, ref), 1e-5) << AdapterTypeName(type) << " " << device;
    }
  }
}

}  // namespace
}  // namespace qwha::adapters
