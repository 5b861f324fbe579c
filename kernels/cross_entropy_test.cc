// Softmax cross-entropy (loss and in-place gradient) against a float64
// reference on the logits' exact values, on the CPU and (when available) CUDA:
// vectorized and scalar CUDA paths (aligned V % 8 == 0, odd V, unaligned rows),
// large logits, targets at both ends of the vocabulary.
#include "kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/test_devices.h"

namespace qwha::kernels {
namespace {

// float64 loss and grad_scale · (softmax − onehot) of x (float64 [n, V]).
std::pair<torch::Tensor, torch::Tensor> Reference(const torch::Tensor& x, const torch::Tensor& y,
                                                  double scale) {
  const int64_t n = x.size(0), v = x.size(1);
  torch::Tensor loss = torch::empty({n}, torch::kFloat64);
  torch::Tensor grad = torch::empty({n, v}, torch::kFloat64);
  const double* xp = x.data_ptr<double>();
  double* gp = grad.data_ptr<double>();
  for (int64_t r = 0; r < n; ++r) {
    const double* row = xp + r * v;
    double mx = row[0];
    for (int64_t c = 1; c < v; ++c) mx = std::max(mx, row[c]);
    double z = 0;
    for (int64_t c = 0; c < v; ++c) z += std::exp(row[c] - mx);
    const int64_t t = y[r].item<int64_t>();
    loss[r] = std::log(z) + mx - row[t];
    for (int64_t c = 0; c < v; ++c) {
      gp[r * v + c] = scale * (std::exp(row[c] - mx) / z - (c == t ? 1.0 : 0.0));
    }
  }
  return {loss, grad};
}

TEST(CrossEntropyTest, MatchesFloat64Reference) {
  torch::manual_seed(5);
  struct Case {
    int64_t n, v;
    double spread;
    bool offset;  // rows start 2 elements into the buffer (unaligned on CUDA)
  };
  const Case cases[] = {{5, 128, 4.0, false}, {33, 1000, 4.0, false}, {4, 4104, 50.0, false},
                        {6, 7, 4.0, false},   {3, 1003, 4.0, true},   {1, 1, 1.0, false}};
  for (const torch::Device dev : Devices()) {
    for (const torch::ScalarType dtype :
         {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64}) {
      for (const Case& c : cases) {
        const std::string where = dev.str() + " " + c10::toString(dtype) +
                                  " n=" + std::to_string(c.n) + " V=" + std::to_string(c.v);
        const double spread = dtype == torch::kFloat16 ? std::min(c.spread, 8.0) : c.spread;
        torch::Tensor buffer = (torch::randn({c.n * c.v + 2}, torch::kFloat64) * spread).to(dtype);
        torch::Tensor logits = buffer.narrow(0, c.offset ? 2 : 0, c.n * c.v).view({c.n, c.v});
        torch::Tensor y = torch::randint(0, c.v, {c.n}, torch::kInt64);
        y[0] = c.v - 1;
        if (c.n > 1) y[1] = 0;
        const torch::Tensor exact = logits.to(torch::kFloat64).contiguous();
        const double scale = 0.37;
        auto [ref_loss, ref_grad] = Reference(exact, y, scale);

        // Loss only: the logits stay as they were.
        torch::Tensor x = logits.to(dev).clone();
        if (c.offset)
          x = torch::cat({x.new_zeros({2}), x.view({-1})}).narrow(0, 2, c.n * c.v).view({c.n, c.v});
        const torch::Tensor before = x.clone();
        torch::Tensor loss = SoftmaxCrossEntropy(x, y.to(dev));
        EXPECT_EQ(loss.scalar_type(), dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
        EXPECT_TRUE(torch::equal(x, before)) << where;
        const double loss_tol = dtype == torch::kFloat64 ? 1e-10 : 2e-5 * (1 + c.spread);
        EXPECT_LT((loss.to(torch::kCPU, torch::kFloat64) - ref_loss).abs().max().item<double>(),
                  loss_tol)
            << where;

        // With the gradient, written over the logits and rounded once.
        torch::Tensor loss2 = SoftmaxCrossEntropy(x, y.to(dev), scale);
        EXPECT_TRUE(torch::equal(loss2, loss)) << where;
        const torch::Tensor got = x.to(torch::kCPU, torch::kFloat64);
        const torch::Tensor err = (got - ref_grad).abs();
        // One rounding to the dtype (half an ulp, relative), plus the float32
        // arithmetic: exp(x − lse) carries lse's absolute error, |lse| · 2^-24.
        const double round = dtype == torch::kBFloat16  ? 1.0 / 256
                             : dtype == torch::kFloat16 ? 1.0 / 2048
                                                        : 0.0;
        const double arith = dtype == torch::kFloat64 ? 1e-13 : 3e-7 * (1 + spread);
        const torch::Tensor bound = ref_grad.abs() * (round + arith) + arith * scale;
        EXPECT_TRUE((err <= bound).all().item<bool>())
            << where << " max err " << err.max().item<double>();
        // Each row's gradient sums to about zero (softmax − onehot).
        EXPECT_LT(got.sum(1).abs().max().item<double>(), 1e-2 * scale + 1e-9) << where;
      }
    }
  }
}

TEST(CrossEntropyTest, RejectsBadArguments) {
  const torch::Tensor logits = torch::randn({3, 4});
  const torch::Tensor y = torch::zeros({3}, torch::kInt64);
  EXPECT_THROW(SoftmaxCrossEntropy(logits.view({12}), y), c10::Error);
  EXPECT_THROW(SoftmaxCrossEntropy(logits.t(), y), c10::Error);  // not contiguous
  EXPECT_THROW(SoftmaxCrossEntropy(logits, y.to(torch::kInt32)), c10::Error);
  EXPECT_THROW(SoftmaxCrossEntropy(logits, torch::zeros({2}, torch::kInt64)), c10::Error);
  EXPECT_THROW(SoftmaxCrossEntropy(logits.to(torch::kInt64), y), c10::Error);
}

}  // namespace
}  // namespace qwha::kernels
