// Spectrum scatter/gather against plain loops, their adjointness, and their
// gradients, on the CPU and (when available) on CUDA.
#include "kernels/spectrum.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/test_devices.h"

namespace qwha::kernels {
namespace {

// count unique flat indices into [0, rows*n).
torch::Tensor RandomIndex(int64_t rows, int64_t n, int64_t count) {
  return std::get<0>(torch::randperm(rows * n, torch::kInt64).narrow(0, 0, count).sort());
}

TEST(SpectrumTest, ScatterAndGatherMatchReference) {
  torch::manual_seed(1);
  for (torch::Device dev : Devices()) {
    for (torch::ScalarType dtype :
         {torch::kFloat32, torch::kFloat64, torch::kBFloat16, torch::kFloat16}) {
      const int64_t rows = 7, n = 96, count = 50;
      torch::Tensor idx = RandomIndex(rows, n, count);
      torch::Tensor values = torch::randn({count}, torch::kFloat64).to(dtype);
      torch::Tensor dense = SpectrumScatter(values.to(dev), idx.to(dev), rows, n);
      ASSERT_EQ(dense.sizes(), (std::vector<int64_t>{rows, n}));
      ASSERT_EQ(dense.scalar_type(), dtype);
      ASSERT_EQ(dense.device(), dev);
      torch::Tensor ref = torch::zeros({rows * n}, torch::kFloat64);
      for (int64_t t = 0; t < count; ++t) {
        ref[idx[t].item<int64_t>()] = values[t].item<double>();
      }
      EXPECT_TRUE(torch::equal(dense.to(torch::kCPU, torch::kFloat64), ref.view({rows, n})));

      torch::Tensor d = torch::randn({rows, n}, torch::kFloat64).to(dtype);
      torch::Tensor g = SpectrumGather(d.to(dev), idx.to(dev));
      ASSERT_EQ(g.sizes(), (std::vector<int64_t>{count}));
      for (int64_t t = 0; t < count; ++t) {
        EXPECT_EQ(g[t].item<double>(), d.view(-1)[idx[t].item<int64_t>()].item<double>());
      }
    }
  }
}

TEST(SpectrumTest, EmptyIndexAndNonContiguousDense) {
  for (torch::Device dev : Devices()) {
    torch::Tensor idx = torch::empty({0}, torch::kInt64).to(dev);
    torch::Tensor dense = SpectrumScatter(torch::empty({0}).to(dev), idx, 3, 4);
    EXPECT_EQ(dense.count_nonzero().item<int64_t>(), 0);
    EXPECT_EQ(SpectrumGather(dense, idx).numel(), 0);
    // Flat indices address the logical row-major layout, whatever the strides.
    torch::Tensor t = torch::randn({8, 4}).to(dev).t();  // [4, 8] view
    torch::Tensor i2 = torch::tensor({0, 9, 31}, torch::kInt64).to(dev);
    torch::Tensor g = SpectrumGather(t, i2).cpu();
    torch::Tensor tc = t.contiguous().view(-1).cpu();
    EXPECT_EQ(g[1].item<float>(), tc[9].item<float>());
    EXPECT_EQ(g[2].item<float>(), tc[31].item<float>());
  }
}

TEST(SpectrumTest, ScatterAndGatherAreAdjoint) {
  // <Scatter(v), D> = <v, Gather(D)>.
  torch::manual_seed(2);
  for (torch::Device dev : Devices()) {
    const int64_t rows = 16, n = 172, count = 300;
    torch::Tensor idx = RandomIndex(rows, n, count).to(dev);
    torch::Tensor v = torch::randn({count}, torch::kFloat64).to(dev);
    torch::Tensor d = torch::randn({rows, n}, torch::kFloat64).to(dev);
    const double lhs = (SpectrumScatter(v, idx, rows, n) * d).sum().item<double>();
    const double rhs = (v * SpectrumGather(d, idx)).sum().item<double>();
    EXPECT_NEAR(lhs, rhs, 1e-10 * (1 + std::abs(lhs)));
  }
}

TEST(SpectrumTest, Gradients) {
  torch::manual_seed(3);
  for (torch::Device dev : Devices()) {
    const int64_t rows = 5, n = 24, count = 20;
    torch::Tensor idx = RandomIndex(rows, n, count).to(dev);
    // Scatter: d/dv Σ W ⊙ Scatter(v) = Gather(W).
    torch::Tensor v = torch::randn({count}, torch::kFloat64).to(dev).requires_grad_(true);
    torch::Tensor w = torch::randn({rows, n}, torch::kFloat64).to(dev);
    (SpectrumScatter(v, idx, rows, n) * w).sum().backward();
    EXPECT_TRUE(torch::allclose(v.grad(), w.view(-1).index({idx})));
    // Gather: d/dD Σ u ⊙ Gather(D) = Scatter(u), in D's shape.
    torch::Tensor d = torch::randn({rows, n}, torch::kFloat64).to(dev).requires_grad_(true);
    torch::Tensor u = torch::randn({count}, torch::kFloat64).to(dev);
    (SpectrumGather(d, idx) * u).sum().backward();
    torch::Tensor expected = torch::zeros({rows * n}, torch::kFloat64).to(dev);
    expected.index_put_({idx}, u);
    EXPECT_TRUE(torch::allclose(d.grad(), expected.view({rows, n})));
    // Finite differences through a non-linear loss (float64).
    torch::Tensor v2 = torch::randn({count}, torch::kFloat64).to(dev).requires_grad_(true);
    auto loss = [&](const torch::Tensor& x) {
      return SpectrumGather(SpectrumScatter(x, idx, rows, n).pow(3) * w, idx).sum();
    };
    torch::Tensor grad = torch::autograd::grad({loss(v2)}, {v2})[0].cpu();
    torch::Tensor x0 = v2.detach();
    for (int64_t t = 0; t < count; t += 3) {
      torch::Tensor e = torch::zeros_like(x0);
      e[t] = 1e-6;
      const double fd = (loss(x0 + e).item<double>() - loss(x0 - e).item<double>()) / 2e-6;
      EXPECT_NEAR(grad[t].item<double>(), fd, 1e-5 * (1 + std::abs(fd)));
    }
  }
}

TEST(SpectrumTest, ValidationNamesArgument) {
  torch::Tensor v = torch::randn({4});
  torch::Tensor idx = torch::tensor({0, 5, 7, 11}, torch::kInt64);
  EXPECT_TRUE(ValidateSpectrumIndex(v, idx, 3, 4).ok());
  struct Case {
    absl::Status status;
    std::string word;
  };
  std::vector<Case> cases = {
      {ValidateSpectrumIndex(v, idx, 2, 4), "outside"},
      {ValidateSpectrumIndex(v, torch::tensor({0, -1, 2, 3}, torch::kInt64), 3, 4), "outside"},
      {ValidateSpectrumIndex(v, idx.to(torch::kInt32), 3, 4), "flat_index"},
      {ValidateSpectrumIndex(v.view({2, 2}), idx, 3, 4), "values"},
      {ValidateSpectrumIndex(v.to(torch::kInt64), idx, 3, 4), "values"},
      {ValidateSpectrumIndex(v.narrow(0, 0, 3), idx, 3, 4), "entries"},
      {ValidateSpectrumIndex(torch::Tensor(), idx, 3, 4), "values"},
      {ValidateSpectrumIndex(v, idx, -1, 4), "rows"},
  };
  if (torch::cuda::is_available()) {
    cases.push_back({ValidateSpectrumIndex(v.cuda(), idx, 3, 4), "device"});
  }
  for (const Case& c : cases) {
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(c.status.message()).find(c.word), std::string::npos)
        << c.status.message();
  }
}

}  // namespace
}  // namespace qwha::kernels
