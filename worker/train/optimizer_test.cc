#include "worker/train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace qwha::train {
namespace {

// An independent float64 AdamW written from the paper's equations, element by
// element.
struct ReferenceAdamW {
  double beta1, beta2, eps, wd;
  std::vector<double> p, m, v;
  int64_t t = 0;

  void Step(const std::vector<double>& g, double lr) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(beta1, static_cast<double>(t)));
      const double v_hat = v[i] / (1 - std::pow(beta2, static_cast<double>(t)));
      p[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * p[i]);
    }
  }
};

std::vector<double> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous().flatten();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double MaxRelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1e-3, std::abs(b[i])));
  }
  return worst;
}

torch::Tensor Leaf(torch::Tensor t) { return t.detach().clone().requires_grad_(true); }

TEST(AdamWTest, MatchesFloat64ReferenceOverSeveralSteps) {
  for (double wd : {0.0, 0.1}) {
    torch::manual_seed(1);
    AdamWOptions opt;
    opt.beta1 = 0.85;
    opt.beta2 = 0.99;
    opt.eps = 1e-6;
    opt.weight_decay = wd;
    std::vector<NamedParameter> params = {{"a", Leaf(torch::randn({7, 5}))},
                                          {"b", Leaf(torch::randn({13}))}};
    std::vector<ReferenceAdamW> refs;
    for (const auto& p : params) {
      refs.push_back({opt.beta1, opt.beta2, opt.eps, wd, ToVector(p.tensor),
                      std::vector<double>(p.tensor.numel()),
                      std::vector<double>(p.tensor.numel())});
    }
    std::vector<torch::Tensor> initial;
    for (const auto& p : params) initial.push_back(p.tensor.detach().clone());
    auto adam = AdamW::Create(params, opt);
    ASSERT_TRUE(adam.ok()) << adam.status();
    const double lrs[] = {1e-2, 3e-2, 5e-3, 2e-2, 1e-2, 7e-3};
    for (double lr : lrs) {
      for (size_t i = 0; i < params.size(); ++i) {
        // Gradients of varied scale, so the moments matter.
        torch::Tensor g =
            torch::randn(params[i].tensor.sizes()) * std::exp(torch::randn({1}).item<double>());
        params[i].tensor.mutable_grad() = g;
        refs[i].Step(ToVector(g), lr);
      }
      ASSERT_TRUE((*adam)->Step(lr).ok());
      (*adam)->ZeroGrad();
      EXPECT_FALSE(params[0].tensor.grad().defined());
    }
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_LT(MaxRelDiff(ToVector(params[i].tensor), refs[i].p), 2e-6) << params[i].name;
      EXPECT_GT(MaxRelDiff(ToVector(params[i].tensor), ToVector(initial[i])), 1e-2);  // moved
    }
    const auto state = (*adam)->StateDict();
    EXPECT_EQ(state.at("a/step").item<int64_t>(), 6);
    EXPECT_LT(MaxRelDiff(ToVector(state.at("b/exp_avg")), refs[1].m), 1e-5);
    EXPECT_LT(MaxRelDiff(ToVector(state.at("b/exp_avg_sq")), refs[1].v), 1e-5);
    EXPECT_EQ(state.count("a/master"), 0u);
  }
}

TEST(AdamWTest, LowPrecisionParametersKeepFloat32Master) {
  for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat16}) {
    torch::manual_seed(2);
    torch::Tensor p = Leaf(torch::randn({64}).to(dtype));
    ReferenceAdamW ref{
        0.9, 0.999, 1e-8, 0.0, ToVector(p), std::vector<double>(64), std::vector<double>(64)};
    auto adam = AdamW::Create({{"p", p}}, AdamWOptions{});
    ASSERT_TRUE(adam.ok());
    // Updates far below the parameter's resolution: a plain low-precision
    // update would round every one of them away.
    const double lr = 1e-5;
    for (int step = 0; step < 20; ++step) {
      torch::Tensor g = torch::randn({64}).to(dtype);
      p.mutable_grad() = g;
      ref.Step(ToVector(g), lr);
      ASSERT_TRUE((*adam)->Step(lr).ok());
    }
    const auto state = (*adam)->StateDict();
    ASSERT_EQ(state.count("p/master"), 1u);
    const torch::Tensor& master = state.at("p/master");
    EXPECT_EQ(master.scalar_type(), torch::kFloat32);
    EXPECT_EQ(state.at("p/exp_avg").scalar_type(), torch::kFloat32);
    EXPECT_LT(MaxRelDiff(ToVector(master), ref.p), 1e-6);
    EXPECT_TRUE(torch::equal(p.detach(), master.to(dtype)));
    EXPECT_EQ(p.scalar_type(), dtype);
  }
}

TEST(AdamWTest, SkipsParametersWithoutGradient) {
  torch::Tensor a = Leaf(torch::randn({3})), b = Leaf(torch::randn({4}));
  const torch::Tensor a0 = a.detach().clone(), b0 = b.detach().clone();
  auto adam = AdamW::Create({{"a", a}, {"b", b}}, AdamWOptions{});
  ASSERT_TRUE(adam.ok());
  a.mutable_grad() = torch::ones({3});
  ASSERT_TRUE((*adam)->Step(0.1).ok());
  EXPECT_TRUE(torch::equal(b.detach(), b0));
  const auto state = (*adam)->StateDict();
  EXPECT_EQ(state.at("a/step").item<int64_t>(), 1);
  EXPECT_EQ(state.at("b/step").item<int64_t>(), 0);
  // The first Adam step moves each element by lr (m̂ / sqrt(v̂) = sign(g)).
  EXPECT_TRUE(torch::allclose(a0 - a.detach(), torch::full({3}, 0.1), 0, 1e-6));
}

TEST(AdamWTest, StateRoundTripContinuesBitwise) {
  torch::manual_seed(3);
  AdamWOptions opt;
  opt.weight_decay = 0.01;
  auto make = [] {
    torch::manual_seed(30);
    return std::vector<NamedParameter>{{"w", Leaf(torch::randn({5, 3}))},
                                       {"h", Leaf(torch::randn({6}).to(torch::kBFloat16))}};
  };
  std::vector<NamedParameter> pa = make(), pb = make();
  auto a = AdamW::Create(pa, opt);
  ASSERT_TRUE(a.ok());
  std::vector<std::vector<torch::Tensor>> grads;
  for (int s = 0; s < 5; ++s) {
    grads.push_back({torch::randn({5, 3}), torch::randn({6}).to(torch::kBFloat16)});
  }
  auto apply = [](std::vector<NamedParameter>& params, AdamW& adam,
                  const std::vector<torch::Tensor>& g) {
    for (size_t i = 0; i < params.size(); ++i) params[i].tensor.mutable_grad() = g[i].clone();
    ASSERT_TRUE(adam.Step(0.01).ok());
  };
  for (int s = 0; s < 2; ++s) apply(pa, **a, grads[s]);
  const auto saved = (*a)->StateDict();

  // A fresh optimizer on fresh tensors continues from the saved state.
  auto b = AdamW::Create(pb, opt);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->LoadStateDict(saved).ok());
  {
    torch::NoGradGuard no_grad;
    pb[0].tensor.copy_(pa[0].tensor);  // the float32 parameter travels with the model
  }
  EXPECT_TRUE(torch::equal(pb[1].tensor, pa[1].tensor));  // written back from the master
  for (int s = 2; s < 5; ++s) {
    apply(pa, **a, grads[s]);
    apply(pb, **b, grads[s]);
  }
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].tensor, pb[i].tensor)) << pa[i].name;
  }
  for (const auto& [key, value] : (*a)->StateDict()) {
    EXPECT_TRUE(torch::equal(value, (*b)->StateDict().at(key))) << key;
  }
}

TEST(AdamWTest, LoadStateDictRejectsMismatchAndLeavesStateUnchanged) {
  torch::Tensor p = Leaf(torch::randn({4}));
  auto adam = AdamW::Create({{"p", p}}, AdamWOptions{});
  ASSERT_TRUE(adam.ok());
  p.mutable_grad() = torch::ones({4});
  ASSERT_TRUE((*adam)->Step(0.1).ok());
  const auto good = (*adam)->StateDict();

  auto missing = good;
  missing.erase("p/exp_avg_sq");
  auto wrong_shape = good;
  wrong_shape["p/exp_avg"] = torch::zeros({5});
  auto unknown = good;
  unknown["q/exp_avg"] = torch::zeros({4});
  auto wrong_dtype = good;
  wrong_dtype["p/exp_avg"] = torch::zeros({4}, torch::kFloat64);
  for (const auto* bad : {&missing, &wrong_shape, &unknown, &wrong_dtype}) {
    absl::Status st = (*adam)->LoadStateDict(*bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  }
  EXPECT_NE(std::string((*adam)->LoadStateDict(missing).message()).find("p/exp_avg_sq"),
            std::string::npos);
  for (const auto& [key, value] : (*adam)->StateDict()) {
    EXPECT_TRUE(torch::equal(value, good.at(key))) << key;
  }
}

TEST(AdamWTest, RebindKeepsStateAndMaster) {
  torch::Tensor h = Leaf(torch::randn({8}).to(torch::kBFloat16));
  auto adam = AdamW::Create({{"h", h}}, AdamWOptions{});
  ASSERT_TRUE(adam.ok());
  h.mutable_grad() = torch::randn({8}).to(torch::kBFloat16);
  ASSERT_TRUE((*adam)->Step(1e-4).ok());
  const auto before = (*adam)->StateDict();

  // A replacement tensor holding the same values keeps the precise master;
  // one element changed from outside takes the new value.
  torch::Tensor replacement = Leaf(h.detach().clone());
  {
    torch::NoGradGuard no_grad;
    replacement[3] = 5.0;
  }
  ASSERT_TRUE((*adam)->RebindParameters({{"h", replacement}}).ok());
  const auto after = (*adam)->StateDict();
  EXPECT_TRUE(torch::equal(after.at("h/exp_avg"), before.at("h/exp_avg")));
  for (int64_t i = 0; i < 8; ++i) {
    const double expect = i == 3 ? 5.0 : before.at("h/master")[i].item<double>();
    EXPECT_EQ(after.at("h/master")[i].item<double>(), expect) << i;
  }
  EXPECT_EQ((*adam)->parameters()[0].tensor.data_ptr(), replacement.data_ptr());

  EXPECT_FALSE((*adam)->RebindParameters({{"x", Leaf(torch::zeros({8}))}}).ok());
  EXPECT_FALSE((*adam)->RebindParameters({{"h", Leaf(torch::zeros({9}))}}).ok());
}

TEST(AdamWTest, CreateAndStepValidateInputs) {
  torch::Tensor p = Leaf(torch::randn({2}));
  AdamWOptions bad;
  bad.beta1 = 1.0;
  EXPECT_EQ(AdamW::Create({{"p", p}}, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = AdamWOptions{};
  bad.eps = 0;
  EXPECT_FALSE(AdamW::Create({{"p", p}}, bad).ok());
  bad = AdamWOptions{};
  bad.weight_decay = -1;
  EXPECT_FALSE(AdamW::Create({{"p", p}}, bad).ok());
  EXPECT_FALSE(AdamW::Create({{"p", p}, {"p", Leaf(torch::randn({2}))}}, {}).ok());
  EXPECT_FALSE(AdamW::Create({{"a/b", p}}, {}).ok());
  EXPECT_FALSE(AdamW::Create({{"q", torch::randn({2})}}, {}).ok());  // no grad
  EXPECT_FALSE(AdamW::Create({{"q", p * 2}}, {}).ok());              // not a leaf
  EXPECT_FALSE(AdamW::Create({{"q", torch::zeros({2}, torch::kInt64)}}, {}).ok());

  auto adam = AdamW::Create({{"p", p}}, {});
  ASSERT_TRUE(adam.ok());
  p.mutable_grad() = torch::ones({2});
  EXPECT_EQ((*adam)->Step(-1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*adam)->Step(std::nan("")).code(), absl::StatusCode::kInvalidArgument);
  p.mutable_grad() = torch::ones({3});
  EXPECT_EQ((*adam)->Step(0.1).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qwha::train
