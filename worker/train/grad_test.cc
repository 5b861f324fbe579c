#include "worker/train/grad.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "worker/train/loss.h"

namespace qwha::train {
namespace {

torch::Tensor WithGrad(torch::Tensor value, torch::Tensor grad) {
  torch::Tensor p = value.detach().clone().requires_grad_(true);
  if (grad.defined()) p.mutable_grad() = grad;
  return p;
}

double ReferenceNorm(const std::vector<torch::Tensor>& grads) {
  double sum = 0;
  for (const torch::Tensor& g : grads) {
    torch::Tensor c = g.to(torch::kFloat64).contiguous().flatten();
    for (int64_t i = 0; i < c.numel(); ++i) sum += c[i].item<double>() * c[i].item<double>();
  }
  return std::sqrt(sum);
}

TEST(ClipGradNormTest, ReportsGlobalNormAndClips) {
  torch::manual_seed(0);
  const torch::Tensor g1 = torch::randn({4, 3}) * 3, g2 = torch::randn({5}) * 2;
  const torch::Tensor g3 = torch::randn({6}).to(torch::kBFloat16);
  std::vector<torch::Tensor> params = {WithGrad(torch::zeros({4, 3}), g1.clone()),
                                       WithGrad(torch::zeros({5}), g2.clone()),
                                       WithGrad(torch::zeros({7}), torch::Tensor()),  // no grad
                                       WithGrad(torch::zeros({6}, torch::kBFloat16), g3.clone())};
  const double expected = ReferenceNorm({g1, g2, g3});
  ASSERT_GT(expected, 2.0);

  // Below the limit: reported, untouched.
  EXPECT_NEAR(ClipGradNorm(params, expected * 2), expected, 1e-5 * expected);
  EXPECT_TRUE(torch::equal(params[0].grad(), g1));
  // max_norm <= 0: reported, untouched.
  EXPECT_NEAR(ClipGradNorm(params, 0), expected, 1e-5 * expected);
  EXPECT_TRUE(torch::equal(params[1].grad(), g2));

  // Above: every gradient scaled by max / (norm + 1e-6), the new norm is max.
  const double max_norm = 1.5;
  EXPECT_NEAR(ClipGradNorm(params, max_norm), expected, 1e-5 * expected);
  const double coef = max_norm / (expected + 1e-6);
  EXPECT_TRUE(torch::allclose(params[0].grad(), g1 * coef, 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(params[1].grad(), g2 * coef, 1e-5, 1e-7));
  EXPECT_FALSE(params[2].grad().defined());
  EXPECT_NEAR(ReferenceNorm({params[0].grad(), params[1].grad(), params[3].grad()}), max_norm,
              1e-2);  // bf16 rounding of the third gradient
  EXPECT_NEAR(ClipGradNorm(params, -1), max_norm, 1e-2);
}

TEST(ClipGradNormTest, NonFiniteGradientsAreReportedAndLeftAlone) {
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    torch::Tensor g = torch::ones({3});
    g[1] = bad;
    std::vector<torch::Tensor> params = {WithGrad(torch::zeros({3}), g.clone()),
                                         WithGrad(torch::zeros({2}), torch::full({2}, 100.0))};
    const double norm = ClipGradNorm(params, 1.0);
    EXPECT_FALSE(std::isfinite(norm)) << bad;
    EXPECT_TRUE(torch::equal(params[1].grad(), torch::full({2}, 100.0)));
  }
}

TEST(ClipGradNormTest, NoGradientsGiveZero) {
  EXPECT_EQ(ClipGradNorm({}, 1.0), 0.0);
  EXPECT_EQ(ClipGradNorm({WithGrad(torch::ones({2}), torch::Tensor())}, 1.0), 0.0);
}

TEST(MicroBatchLossWeightTest, Values) {
  EXPECT_DOUBLE_EQ(MicroBatchLossWeight(LossNormalization::kPerToken, 3, 12, 4), 0.25);
  EXPECT_DOUBLE_EQ(MicroBatchLossWeight(LossNormalization::kPerToken, 0, 12, 4), 0.0);
  EXPECT_DOUBLE_EQ(MicroBatchLossWeight(LossNormalization::kPerToken, 0, 0, 4), 0.0);
  EXPECT_DOUBLE_EQ(MicroBatchLossWeight(LossNormalization::kPerMicroBatch, 3, 12, 4), 0.25);
  EXPECT_DOUBLE_EQ(MicroBatchLossWeight(LossNormalization::kPerMicroBatch, 9, 12, 3), 1.0 / 3);
}

// Accumulating per-token-weighted micro-batch losses gives the gradient of
// the whole batch, however unevenly the supervised tokens fall.
TEST(MicroBatchLossWeightTest, PerTokenAccumulationEqualsFullBatchGradient) {
  torch::manual_seed(4);
  const int64_t vocab = 11, hidden = 6;
  const torch::Tensor w0 = torch::randn({vocab, hidden}, torch::kFloat64);
  const torch::Tensor x = torch::randn({4, 5, hidden}, torch::kFloat64);
  torch::Tensor labels = torch::randint(0, vocab, {4, 5}, torch::kInt64);
  labels.index_put_({0, torch::indexing::Slice(0, 4)}, kIgnoreIndex);  // row 0: 0 targets
  labels.index_put_({2, torch::indexing::Slice(1, 3)}, kIgnoreIndex);

  torch::Tensor full_w = w0.clone().requires_grad_(true);
  auto full = CausalLmLoss(torch::matmul(x, full_w.t()), labels);
  ASSERT_TRUE(full.ok());
  full->loss.backward();

  torch::Tensor w = w0.clone().requires_grad_(true);
  const int64_t step_tokens = CountCausalLmTokens(labels);
  EXPECT_EQ(step_tokens, full->tokens);
  for (int64_t row = 0; row < 4; ++row) {  // four micro-batches of one sequence
    const torch::Tensor l = labels.narrow(0, row, 1);
    auto micro = CausalLmLoss(torch::matmul(x.narrow(0, row, 1), w.t()), l);
    ASSERT_TRUE(micro.ok());
    const double weight =
        MicroBatchLossWeight(LossNormalization::kPerToken, micro->tokens, step_tokens, 4);
    (micro->loss * weight).backward();
  }
  EXPECT_TRUE(torch::allclose(w.grad(), full_w.grad(), 1e-12, 1e-14));
}

}  // namespace
}  // namespace qwha::train
