#include "worker/quant/calibration.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "worker/testing/synthetic.h"

namespace qwha::quant {
namespace {

bool Contains(const absl::Status& st, const std::string& s) {
  return std::string(st.message()).find(s) != std::string::npos;
}

// Batches of different shapes and dtypes; Gram must equal float64 XᵀX of
// all their tokens concatenated.
void CheckAgainstConcatenation(const torch::Device& device) {
  qwha::testing::SyntheticLayerOptions o;
  o.in_features = 96;
  o.tokens = 600;
  o.seed = 42;
  const torch::Tensor x = qwha::testing::MakeSyntheticLayer(o).inputs;  // float32 [600, 96]
  const std::vector<torch::Tensor> batches = {
      x.slice(0, 0, 200).reshape({4, 50, 96}),
      x.slice(0, 200, 232).to(torch::kBFloat16),
      x.slice(0, 232, 300).to(torch::kFloat16),
      x.slice(0, 300, 600).reshape({3, 2, 50, 96}).to(torch::kFloat64),
      x.slice(0, 0, 0),  // no tokens
  };
  GramAccumulator acc(96);
  EXPECT_TRUE(torch::equal(acc.Gram(), torch::zeros({96, 96}, torch::kFloat64)));
  std::vector<torch::Tensor> rows;
  for (const torch::Tensor& b : batches) {
    ASSERT_TRUE(acc.Add(b.to(device)).ok());
    rows.push_back(b.to(torch::kFloat64).reshape({-1, 96}));
  }
  EXPECT_EQ(acc.tokens(), 600);
  const torch::Tensor cat = torch::cat(rows);
  const torch::Tensor ref = cat.t().mm(cat);
  const torch::Tensor g = acc.Gram();
  EXPECT_EQ(g.scalar_type(), torch::kFloat64);
  EXPECT_EQ(g.device().type(), device.type());
  const double rel = (g.cpu() - ref).abs().max().item<double>() / ref.abs().max().item<double>();
  EXPECT_LT(rel, 1e-12);
}

TEST(GramAccumulatorTest, EqualsFloat64GramOfConcatenatedBatches) {
  CheckAgainstConcatenation(torch::kCPU);
}

TEST(GramAccumulatorTest, EqualsFloat64GramOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  CheckAgainstConcatenation(torch::Device(torch::kCUDA));
}

TEST(GramAccumulatorTest, RejectsBadInput) {
  GramAccumulator acc(8);
  absl::Status st = acc.Add(torch::randn({4, 7}));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(st, "last dimension must be 8")) << st;
  torch::Tensor x = torch::randn({2, 3, 8});
  x[1][2][5] = std::nan("");
  st = acc.Add(x);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(st, "NaN")) << st;
  x[1][2][5] = -INFINITY;
  st = acc.Add(x);
  EXPECT_TRUE(Contains(st, "Inf")) << st;
  st = acc.Add(torch::ones({3, 8}, torch::kInt64));
  EXPECT_TRUE(Contains(st, "floating point")) << st;
  st = acc.Add(torch::Tensor());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.tokens(), 0);  // rejected batches leave no trace
  EXPECT_TRUE(torch::equal(acc.Gram(), torch::zeros({8, 8}, torch::kFloat64)));
}

TEST(DampGramTest, AddsLambdaTimesMeanDiagonal) {
  torch::manual_seed(9);
  const torch::Tensor a = torch::randn({300, 40}, torch::kFloat64);
  const torch::Tensor g = a.t().mm(a);
  const double lambda = 1e-2;
  const torch::Tensor damped = DampGram(g, lambda);
  const double mean = g.diagonal().mean().item<double>();
  const torch::Tensor ref = g + lambda * mean * torch::eye(40, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(damped, ref, 1e-15, 0));
  EXPECT_EQ(damped.scalar_type(), torch::kFloat64);
  EXPECT_FALSE(torch::equal(damped, g));  // input untouched, new tensor returned
  EXPECT_TRUE(torch::equal(g, a.t().mm(a)));

  const torch::Tensor g32 = g.to(torch::kFloat32);
  EXPECT_EQ(DampGram(g32, lambda).scalar_type(), torch::kFloat32);

  // Zero mean diagonal: adds lambda * I.
  const torch::Tensor zero = torch::zeros({5, 5}, torch::kFloat64);
  EXPECT_TRUE(torch::equal(DampGram(zero, 0.5), 0.5 * torch::eye(5, torch::kFloat64)));
}

}  // namespace
}  // namespace qwha::quant
