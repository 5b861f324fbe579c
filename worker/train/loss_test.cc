#include "worker/train/loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace qwha::train {
namespace {

// −log softmax by hand in float64 (max-shifted sum of exponentials), averaged
// over supervised positions; also the gradient (softmax − onehot) / N.
struct Reference {
  double loss = 0;
  int64_t tokens = 0;
  torch::Tensor grad;
};

Reference ReferenceCrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  const torch::Tensor x = logits.to(torch::kFloat64).contiguous();
  Reference ref;
  ref.grad = torch::zeros({B, T, V}, torch::kFloat64);
  double sum = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t y = labels[b][t].item<int64_t>();
      if (y == kIgnoreIndex) continue;
      const double* row = x.data_ptr<double>() + (b * T + t) * V;
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
      sum += std::log(z) + mx - row[y];
      ++ref.tokens;
      for (int64_t v = 0; v < V; ++v) {
        ref.grad[b][t][v] = std::exp(row[v] - mx) / z - (v == y ? 1.0 : 0.0);
      }
    }
  }
  ref.loss = ref.tokens > 0 ? sum / static_cast<double>(ref.tokens) : 0.0;
  if (ref.tokens > 0) ref.grad /= static_cast<double>(ref.tokens);
  return ref;
}

TEST(LossTest, TokenCrossEntropyMatchesFloat64Reference) {
  torch::manual_seed(0);
  const torch::Tensor logits = (torch::randn({3, 7, 19}) * 4).requires_grad_(true);
  torch::Tensor labels = torch::randint(0, 19, {3, 7}, torch::kInt64);
  labels[0][2] = kIgnoreIndex;
  labels[1][0] = kIgnoreIndex;
  labels[2][6] = kIgnoreIndex;
  auto result = TokenCrossEntropy(logits, labels);
  ASSERT_TRUE(result.ok()) << result.status();
  const Reference ref = ReferenceCrossEntropy(logits.detach(), labels);
  EXPECT_EQ(result->tokens, 18);
  EXPECT_EQ(ref.tokens, 18);
  EXPECT_EQ(result->loss.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(result->loss.item<double>(), ref.loss, 1e-6 * ref.loss);
  EXPECT_GT(ref.loss, 1.0);
  result->loss.backward();
  EXPECT_LT((logits.grad().to(torch::kFloat64) - ref.grad).abs().max().item<double>(), 1e-7);

  // float64 logits stay float64 and agree to rounding.
  auto r64 = TokenCrossEntropy(logits.detach().to(torch::kFloat64), labels);
  ASSERT_TRUE(r64.ok());
  EXPECT_EQ(r64->loss.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(r64->loss.item<double>(), ref.loss, 1e-12);
  // bfloat16 logits are upcast; int32 labels are accepted.
  auto rbf = TokenCrossEntropy(logits.detach().to(torch::kBFloat16), labels.to(torch::kInt32));
  ASSERT_TRUE(rbf.ok());
  EXPECT_EQ(rbf->loss.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(rbf->loss.item<double>(), ref.loss, 2e-2 * ref.loss);
}

TEST(LossTest, CausalLmLossShiftsLabels) {
  torch::manual_seed(1);
  const torch::Tensor logits = torch::randn({2, 6, 13}, torch::kFloat64);
  torch::Tensor labels = torch::randint(0, 13, {2, 6}, torch::kInt64);
  labels[0][0] = kIgnoreIndex;  // never scored anyway (no logit predicts position 0)
  labels[1][3] = kIgnoreIndex;
  auto result = CausalLmLoss(logits, labels);
  ASSERT_TRUE(result.ok());
  const Reference ref =
      ReferenceCrossEntropy(logits.narrow(1, 0, 5), labels.narrow(1, 1, 5).contiguous());
  EXPECT_EQ(result->tokens, 9);
  EXPECT_EQ(CountCausalLmTokens(labels), 9);
  EXPECT_NEAR(result->loss.item<double>(), ref.loss, 1e-12);
}

TEST(LossTest, NoSupervisedTokensGiveZeroLossWithGraph) {
  const torch::Tensor logits = torch::randn({1, 4, 5}).requires_grad_(true);
  const torch::Tensor labels = torch::full({1, 4}, kIgnoreIndex, torch::kInt64);
  auto result = TokenCrossEntropy(logits, labels);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->tokens, 0);
  EXPECT_EQ(result->loss.item<double>(), 0.0);
  result->loss.backward();
  EXPECT_EQ(logits.grad().abs().sum().item<double>(), 0.0);
  // A single position has nothing to predict.
  auto one = CausalLmLoss(torch::randn({2, 1, 5}), torch::zeros({2, 1}, torch::kInt64));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->tokens, 0);
  EXPECT_EQ(CountCausalLmTokens(torch::zeros({2, 1}, torch::kInt64)), 0);
}

// ChunkedCausalLmLoss against the float64 reference on the logits h Wᵀ:
// value and d/dhidden (reference: dlogits · W), for chunk sizes that divide the
// supervised positions, do not, and exceed them.
TEST(LossTest, ChunkedCausalLmLossMatchesFloat64Reference) {
  torch::manual_seed(3);
  const int64_t B = 3, T = 9, H = 16, V = 37;
  const torch::Tensor w = torch::randn({V, H}, torch::kFloat64) / 2;
  const torch::Tensor hidden64 = torch::randn({B, T, H}, torch::kFloat64);
  torch::Tensor labels = torch::randint(0, V, {B, T}, torch::kInt64);
  labels[0][1] = kIgnoreIndex;
  labels[1][4] = kIgnoreIndex;
  labels[2][8] = kIgnoreIndex;
  const torch::Tensor logits64 = torch::matmul(hidden64, w.t());
  const Reference ref =
      ReferenceCrossEntropy(logits64.narrow(1, 0, T - 1), labels.narrow(1, 1, T - 1).contiguous());
  ASSERT_EQ(ref.tokens, B * (T - 1) - 3);
  // d loss / d hidden[:, :-1] = dlogits · W; the last position gets nothing.
  torch::Tensor ref_grad = torch::zeros({B, T, H}, torch::kFloat64);
  ref_grad.narrow(1, 0, T - 1).copy_(torch::matmul(ref.grad, w));

  for (int64_t chunk : {int64_t{1}, int64_t{7}, int64_t{21}, int64_t{1000}}) {
    for (torch::ScalarType dtype : {torch::kFloat64, torch::kFloat32}) {
      const torch::Tensor hidden = hidden64.to(dtype).clone().requires_grad_(true);
      auto r = ChunkedCausalLmLoss(hidden, w.to(dtype), labels, chunk);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->tokens, ref.tokens);
      EXPECT_EQ(r->loss.scalar_type(), dtype);
      const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-5;
      EXPECT_NEAR(r->loss.item<double>(), ref.loss, tol * ref.loss) << chunk;
      // An outer weight (as the trainer's micro-batch weight) scales the gradient.
      (r->loss * 0.5).backward();
      const double err =
          (hidden.grad().to(torch::kFloat64) - 0.5 * ref_grad).abs().max().item<double>();
      EXPECT_LT(err, dtype == torch::kFloat64 ? 1e-13 : 1e-6) << chunk << " " << dtype;
    }
  }
  // bfloat16: logits in bfloat16, log-softmax in float32, as CausalLmLoss on
  // bfloat16 logits; a float32 loss.
  const torch::Tensor hbf = hidden64.to(torch::kBFloat16).clone().requires_grad_(true);
  const torch::Tensor wbf = w.to(torch::kBFloat16);
  auto rbf = ChunkedCausalLmLoss(hbf, wbf, labels, 5);
  ASSERT_TRUE(rbf.ok()) << rbf.status();
  EXPECT_EQ(rbf->loss.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(rbf->loss.item<double>(), ref.loss, 2e-2 * ref.loss);
  auto full = CausalLmLoss(torch::matmul(hbf.detach(), wbf.t()), labels);
  ASSERT_TRUE(full.ok());
  EXPECT_NEAR(rbf->loss.item<double>(), full->loss.item<double>(), 1e-5 * ref.loss);
  rbf->loss.backward();
  const double rel =
      ((hbf.grad().to(torch::kFloat64) - ref_grad).norm() / ref_grad.norm()).item<double>();
  EXPECT_LT(rel, 2e-2);
  EXPECT_GT(ref_grad.abs().max().item<double>(), 1e-3);  // not a trivial gradient

  // Without grad mode nothing is recorded and the value is the same.
  {
    torch::NoGradGuard no_grad;
    auto r = ChunkedCausalLmLoss(hidden64, w, labels, 4);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->loss.requires_grad());
    EXPECT_NEAR(r->loss.item<double>(), ref.loss, 1e-12 * ref.loss);
  }
}

TEST(LossTest, ChunkedCausalLmLossEdgeCasesAndErrors) {
  const torch::Tensor w = torch::randn({5, 4});
  const torch::Tensor hidden = torch::randn({2, 3, 4}).requires_grad_(true);
  // Nothing supervised: zero, still attached to the graph.
  auto none = ChunkedCausalLmLoss(hidden, w, torch::full({2, 3}, kIgnoreIndex, torch::kInt64));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->tokens, 0);
  EXPECT_EQ(none->loss.item<double>(), 0.0);
  none->loss.backward();
  EXPECT_EQ(hidden.grad().abs().sum().item<double>(), 0.0);
  auto one = ChunkedCausalLmLoss(torch::randn({2, 1, 4}), w, torch::zeros({2, 1}, torch::kInt64));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->tokens, 0);

  auto code = [](const absl::StatusOr<LossResult>& r) { return r.status().code(); };
  const torch::Tensor labels = torch::zeros({2, 3}, torch::kInt64);
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(ChunkedCausalLmLoss(hidden.view({6, 4}), w, labels)), kBad);
  EXPECT_EQ(code(ChunkedCausalLmLoss(hidden, torch::randn({5, 3}), labels)), kBad);
  EXPECT_EQ(code(ChunkedCausalLmLoss(hidden, w.to(torch::kFloat64), labels)), kBad);
  EXPECT_EQ(code(ChunkedCausalLmLoss(hidden, w, torch::zeros({2, 4}, torch::kInt64))), kBad);
  EXPECT_EQ(code(ChunkedCausalLmLoss(hidden, w, labels.to(torch::kFloat32))), kBad);
  EXPECT_EQ(code(ChunkedCausalLmLoss(hidden, w, labels, 0)), kBad);
  for (int64_t bad : {int64_t{5}, int64_t{-1}}) {
    torch::Tensor l = labels.clone();
    l[1][2] = bad;
    EXPECT_EQ(code(ChunkedCausalLmLoss(hidden, w, l)), kBad) << bad;
  }
  // Position 0's label is never scored, so any value there is accepted.
  torch::Tensor first = labels.clone();
  first[0][0] = 77;
  EXPECT_TRUE(ChunkedCausalLmLoss(hidden, w, first).ok());
}

TEST(LossTest, RejectsMalformedInputs) {
  const torch::Tensor logits = torch::randn({2, 3, 5});
  const torch::Tensor labels = torch::zeros({2, 3}, torch::kInt64);
  auto code = [](const absl::StatusOr<LossResult>& r) { return r.status().code(); };
  EXPECT_EQ(code(TokenCrossEntropy(logits.view({6, 5}), labels)),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(TokenCrossEntropy(logits, torch::zeros({2, 4}, torch::kInt64))),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(TokenCrossEntropy(logits, labels.to(torch::kFloat32))),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(TokenCrossEntropy(torch::zeros({2, 3, 5}, torch::kInt64), labels)),
            absl::StatusCode::kInvalidArgument);
  for (int64_t bad : {int64_t{5}, int64_t{-1}, int64_t{-101}}) {
    torch::Tensor l = labels.clone();
    l[1][2] = bad;
    auto r = TokenCrossEntropy(logits, l);
    EXPECT_EQ(code(r), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(code(CausalLmLoss(logits, torch::zeros({2, 2}, torch::kInt64))),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qwha::train
