#include "worker/adapters/lora.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace qwha::adapters {
namespace {

constexpr auto kF64 = torch::kFloat64;

// tr(M G Mᵀ).
double Weighted(const torch::Tensor& m, const torch::Tensor& g) {
  return (m.matmul(g) * m).sum().item<double>();
}

struct Problem {
  torch::Tensor error;  // E [out, in]
  torch::Tensor gram;   // G [in, in], positive definite, anisotropic
};

Problem RandomProblem(int64_t out, int64_t in, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::randn({3 * in, in}, kF64) * torch::linspace(0.1, 3.0, in, kF64);
  x.select(1, 1).mul_(10);  // an outlier feature
  return {torch::randn({out, in}, kF64), x.t().matmul(x) + 1e-3 * torch::eye(in, kF64)};
}

TEST(LoraTest, RankFromBudget) {
  AdapterConfig cfg;
  cfg.rank = 8;
  EXPECT_EQ(LoraRank(cfg, 128, 256), 8);
  cfg.num_params = 1000;  // floor(1000 / 384) = 2
  EXPECT_EQ(LoraRank(cfg, 128, 256), 2);
  cfg.num_params = 10;  // at least 1
  EXPECT_EQ(LoraRank(cfg, 128, 256), 1);
}

TEST(LoraTest, LoftqIsBestRankRApproximation) {
  const Problem p = RandomProblem(20, 30, 1);
  const int64_t r = 4;
  auto f = LoftqFactors(p.error, r);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->a.sizes(), (std::vector<int64_t>{r, 30}));
  EXPECT_EQ(f->b.sizes(), (std::vector<int64_t>{20, r}));
  // Independent: project E onto the top-r eigenvectors of E Eᵀ.
  auto [evals, evecs] = at::linalg_eigh(p.error.matmul(p.error.t()), "L");
  const torch::Tensor u = evecs.slice(1, 20 - r);  // ascending eigenvalues
  const torch::Tensor ref = u.matmul(u.t()).matmul(p.error);
  EXPECT_TRUE(torch::allclose(f->b.matmul(f->a), ref, 1e-9, 1e-9));
  // Balanced split: ‖A‖ = ‖B‖.
  EXPECT_NEAR(f->a.norm().item<double>(), f->b.norm().item<double>(), 1e-9);
}

TEST(LoraTest, CloqIsWeightedOptimumAndBeatsLoftq) {
  const Problem p = RandomProblem(24, 32, 2);
  const int64_t r = 5;
  auto cloq = LoraFactors();
  {
    auto f = CloqFactors(p.error, p.gram, r);
    ASSERT_TRUE(f.ok()) << f.status();
    cloq = *f;
  }
  const torch::Tensor delta = cloq.b.matmul(cloq.a);
  // Independent optimum with the symmetric square root G^{1/2} (not the
  // Cholesky factor): Δ* = P_r (E G^{1/2}) G^{-1/2}, P_r the top-r left
  // singular projector of E G^{1/2} (from an eigendecomposition).
  auto [gval, gvec] = at::linalg_eigh(p.gram, "L");
  const torch::Tensor root = gvec.matmul(torch::diag(gval.sqrt())).matmul(gvec.t());
  const torch::Tensor inv_root = gvec.matmul(torch::diag(gval.rsqrt())).matmul(gvec.t());
  const torch::Tensor m = p.error.matmul(root);
  auto [mval, mvec] = at::linalg_eigh(m.matmul(m.t()), "L");
  const torch::Tensor u = mvec.slice(1, 24 - r);
  const torch::Tensor ref = u.matmul(u.t()).matmul(m).matmul(inv_root);
  EXPECT_LT((delta - ref).abs().max().item<double>(), 1e-8 * ref.abs().max().item<double>());

  auto loftq = LoftqFactors(p.error, r);
  ASSERT_TRUE(loftq.ok());
  const double none = Weighted(p.error, p.gram);
  const double e_loftq = Weighted(p.error - loftq->b.matmul(loftq->a), p.gram);
  const double e_cloq = Weighted(p.error - delta, p.gram);
  // The optimum's residual is the tail of the weighted singular values.
  const double tail = mval.slice(0, 0, 24 - r).sum().item<double>();
  EXPECT_NEAR(e_cloq, tail, 1e-8 * none);
  EXPECT_LT(e_cloq, e_loftq);
  EXPECT_LT(e_loftq, none);
  // No random rank-r perturbation improves on it.
  for (int t = 0; t < 5; ++t) {
    const torch::Tensor d =
        delta + 1e-3 * torch::randn({24, r}, kF64).matmul(torch::randn({r, 32}, kF64));
    EXPECT_GT(Weighted(p.error - d, p.gram), e_cloq);
  }
}

TEST(LoraTest, FactorErrors) {
  const Problem p = RandomProblem(8, 16, 3);
  EXPECT_FALSE(LoftqFactors(p.error, 0).ok());
  EXPECT_FALSE(LoftqFactors(p.error, 9).ok());
  EXPECT_FALSE(CloqFactors(p.error, p.gram.slice(0, 0, 8), 2).ok());
  auto bad = CloqFactors(p.error, -p.gram, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LoraTest, ZeroInitLoraStartsAtZeroAndIsSeeded) {
  torch::manual_seed(4);
  const torch::Tensor w = torch::randn({16, 24});
  const LayerData layer{w, w + 0.01 * torch::randn({16, 24}), torch::Tensor()};
  AdapterConfig cfg;
  cfg.type = AdapterType::kLora;
  cfg.rank = 2;
  cfg.scaling = 4.0;
  cfg.seed = 9;
  auto a = InitializeAdapter(cfg, layer);
  auto b = InitializeAdapter(cfg, layer);
  ASSERT_TRUE(a.ok() && b.ok());
  auto* lora = dynamic_cast<LoraAdapter*>(a->get());
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(lora->rank(), 2);
  EXPECT_DOUBLE_EQ(lora->scale(), 2.0);  // scaling / r
  EXPECT_EQ((*a)->DeltaWeight().abs().max().item<float>(), 0.0f);
  const torch::Tensor la = (*a)->StateDict().at("lora_A");
  EXPECT_TRUE(la.equal((*b)->StateDict().at("lora_A")));
  EXPECT_LE(la.abs().max().item<double>(), 1.0 / std::sqrt(24.0));
  EXPECT_GT(la.abs().max().item<double>(), 0.5 / std::sqrt(24.0));
  cfg.seed = 10;
  auto c = InitializeAdapter(cfg, layer);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(la.equal((*c)->StateDict().at("lora_A")));
}

TEST(LoraTest, LoftqAndCloqAdaptersReproduceFactors) {
  const Problem p = RandomProblem(12, 20, 5);
  const torch::Tensor w = torch::randn({12, 20}, kF64);
  const LayerData layer{w, w - p.error, p.gram};
  AdapterConfig cfg;
  cfg.rank = 3;
  cfg.damp = 0;
  for (AdapterType type : {AdapterType::kLoftq, AdapterType::kCloq}) {
    cfg.type = type;
    auto adapter = InitializeAdapter(cfg, layer);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    auto f =
        type == AdapterType::kLoftq ? LoftqFactors(p.error, 3) : CloqFactors(p.error, p.gram, 3);
    ASSERT_TRUE(f.ok());
    EXPECT_TRUE(torch::allclose((*adapter)->DeltaWeight().to(kF64), f->b.matmul(f->a), 1e-5, 1e-5))
        << AdapterTypeName(type);
  }
}

}  // namespace
}  // namespace qwha::adapters
