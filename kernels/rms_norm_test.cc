// RMSNorm forward and backward against float64 references that round where
// transformers' LlamaRMSNorm rounds, on the CPU and (when available) CUDA:
// vectorized and scalar CUDA paths, float32/bfloat16/float16/float64, and the
// autograd function against autograd through the ATen composition; and
// RmsNormFwht (one CUDA kernel for 4096-wide 2-byte rows) against RmsNorm
// bit for bit and a float64 FWHT.
#include "kernels/rms_norm.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/fwht.h"
#include "kernels/test_devices.h"

namespace qwha::kernels {
namespace {

// Rounds float64 values to `dtype` and back.
torch::Tensor Round(const torch::Tensor& t, torch::ScalarType dtype) {
  return t.to(dtype).to(torch::kFloat64);
}

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor a64 = a.to(torch::kCPU, torch::kFloat64);
  const torch::Tensor b64 = b.to(torch::kCPU, torch::kFloat64);
  return ((a64 - b64).norm() / b64.norm()).item<double>();
}

TEST(RmsNormTest, ForwardAndBackwardMatchFloat64Reference) {
  torch::manual_seed(2);
  const double eps = 1e-5;
  for (const torch::Device dev : Devices()) {
    for (const torch::ScalarType dtype :
         {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64}) {
      for (const int64_t hidden : {int64_t{8}, int64_t{20}, int64_t{2048}, int64_t{3000}}) {
        const std::string where =
            dev.str() + " " + c10::toString(dtype) + " H=" + std::to_string(hidden);
        const torch::Tensor x = (torch::randn({3, 5, hidden}, torch::kFloat64) * 3).to(dtype);
        const torch::Tensor w = (1 + 0.3 * torch::randn({hidden}, torch::kFloat64)).to(dtype);
        const torch::Tensor dy = torch::randn({3, 5, hidden}, torch::kFloat64).to(dtype);
        const torch::Tensor x64 = x.to(torch::kFloat64), w64 = w.to(torch::kFloat64);
        const torch::Tensor dy64 = dy.to(torch::kFloat64);
        const torch::Tensor r = torch::rsqrt(x64.pow(2).mean(-1, true) + eps);
        const torch::Tensor y_ref = Round(w64 * Round(x64 * r, dtype), dtype);
        const torch::Tensor g = Round(dy64 * w64, dtype);
        const torch::Tensor dx_ref =
            r * (g - x64 * r * r * (g * x64).mean(-1, true));  // rounded once below

        const torch::Tensor xd = x.to(dev).requires_grad_(true);
        const torch::Tensor y = RmsNorm(xd, w.to(dev), eps);
        ASSERT_EQ(y.scalar_type(), dtype);
        ASSERT_EQ(y.sizes(), x.sizes());
        y.backward(dy.to(dev));
        const torch::Tensor dx = xd.grad();
        ASSERT_EQ(dx.scalar_type(), dtype);
        const double tol = dtype == torch::kFloat64    ? 1e-12
                           : dtype == torch::kFloat32  ? 2e-6
                           : dtype == torch::kBFloat16 ? 1e-2
                                                       : 2e-3;
        EXPECT_LT(RelErr(y, y_ref), tol) << where;
        EXPECT_LT(RelErr(dx, Round(dx_ref, dtype)), tol) << where;
        // Elementwise: at most a couple of ulps apart from the reference.
        const double ulps = dtype == torch::kBFloat16  ? 2.0 / 128
                            : dtype == torch::kFloat16 ? 2.0 / 1024
                                                       : tol;
        const torch::Tensor yerr = (y.detach().to(torch::kCPU, torch::kFloat64) - y_ref).abs();
        EXPECT_TRUE((yerr <= y_ref.abs() * ulps + 1e-6).all().item<bool>()) << where;
        EXPECT_EQ(RmsNormBackward(dy.to(dev), x.to(dev), w.to(dev), eps)
                      .to(torch::kCPU)
                      .equal(dx.to(torch::kCPU)),
                  true)
            << where;
      }
    }
  }
}

// The ATen composition with autograd, in float64: the gradient the fused
// function must reproduce.
TEST(RmsNormTest, GradientEqualsAutogradOfTheComposition) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({4, 33}, torch::kFloat64).requires_grad_(true);
  const torch::Tensor w = torch::randn({33}, torch::kFloat64);
  const torch::Tensor dy = torch::randn({4, 33}, torch::kFloat64);
  const torch::Tensor ref = w * (x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6));
  const torch::Tensor ref_grad = torch::autograd::grad({ref}, {x}, {dy})[0];
  const torch::Tensor x2 = x.detach().clone().requires_grad_(true);
  RmsNorm(x2, w, 1e-6).backward(dy);
  EXPECT_LT((x2.grad() - ref_grad).abs().max().item<double>(), 1e-12);
  EXPECT_LT((RmsNorm(x.detach(), w, 1e-6) - ref.detach()).abs().max().item<double>(), 1e-14);
}

// RmsNormFwht: the normalized rows bit for bit RmsNorm's on the same device,
// the transform within rounding of a float64 FWHT of them (one fused kernel
// on CUDA for 4096 in bfloat16/float16; the two ops elsewhere).
TEST(RmsNormTest, RmsNormFwhtEqualsRmsNormThenFwht) {
  torch::manual_seed(4);
  const double eps = 1e-5;
  for (const torch::Device dev : Devices()) {
    for (const torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
      for (const int64_t hidden : {int64_t{4096}, int64_t{2048}}) {
        const std::string where =
            dev.str() + " " + c10::toString(dtype) + " H=" + std::to_string(hidden);
        const torch::Tensor x =
            (torch::randn({3, 5, hidden}, torch::kFloat64) * 3).to(dtype).to(dev);
        const torch::Tensor w =
            (1 + 0.3 * torch::randn({hidden}, torch::kFloat64)).to(dtype).to(dev);
        const auto [y, z] = RmsNormFwht(x, w, eps, 0.5, /*transpose=*/true);
        ASSERT_EQ(y.sizes(), x.sizes()) << where;
        ASSERT_EQ(z.sizes(), x.sizes()) << where;
        ASSERT_EQ(z.scalar_type(), dtype) << where;
        EXPECT_TRUE(y.equal(RmsNorm(x, w, eps))) << where;
        // z against the float64 transform of y, row by row: within a few
        // units of the dtype's rounding of the row's scale.
        const torch::Tensor ref = Fwht(y.to(torch::kCPU, torch::kFloat64), 0.5, true);
        const torch::Tensor err = (z.to(torch::kCPU, torch::kFloat64) - ref).abs();
        const torch::Tensor row_scale = ref.abs().amax(-1, /*keepdim=*/true);
        const double ulp = dtype == torch::kBFloat16  ? 1.0 / 128
                           : dtype == torch::kFloat16 ? 1.0 / 1024
                                                      : 2e-5;
        EXPECT_TRUE((err <= row_scale * ulp).all().item<bool>())
            << where << ": max error / row scale " << (err / row_scale).max().item<double>();
        EXPECT_LT(RelErr(z, ref), ulp / 2) << where;
      }
    }
  }
}

// RmsNormFwht with z in chunks of 4 rows: y unchanged, z the chunks of the
// z in rows bit for bit (the CUDA kernel sums each row in the one-row
// kernel's order), -1 rows zeros, rows past a multiple of 4 normalized too.
TEST(RmsNormTest, RmsNormFwhtInChunksOfFourRows) {
  torch::manual_seed(5);
  const double eps = 1e-5;
  for (const torch::Device dev : Devices()) {
    for (int kernel : ChunkKernels(dev)) {
      UseChunkKernel(dev, kernel);
      for (const torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
        for (const int64_t hidden : {int64_t{4096}, int64_t{2048}}) {
          const std::string where = dev.str() + " " + c10::toString(dtype) +
                                    " H=" + std::to_string(hidden) + " kernel " +
                                    std::to_string(kernel);
          const torch::Tensor x =
              (torch::randn({9, hidden}, torch::kFloat64) * 3).to(dtype).to(dev);
          const torch::Tensor w =
              (1 + 0.3 * torch::randn({hidden}, torch::kFloat64)).to(dtype).to(dev);
          const torch::Tensor rows =
              torch::tensor({8, 0, -1, 3, 2, 7, 1, -1}, torch::kInt32).to(dev);
          const auto [y, zc] = RmsNormFwht(x, w, eps, 0.5, /*transpose=*/true, rows);
          const auto [y_rows, z_rows] = RmsNormFwht(x, w, eps, 0.5, /*transpose=*/true);
          ASSERT_EQ(zc.sizes(), (std::vector<int64_t>{2, hidden, 4})) << where;
          EXPECT_TRUE(y.equal(y_rows)) << where;
          EXPECT_TRUE(zc.equal(ChunkRows(z_rows, rows))) << where;
        }
      }
    }
  }
  const torch::Tensor x = torch::randn({2, 8});
  EXPECT_THROW(RmsNormFwht(x, torch::ones({8}), eps, 1.0, false, torch::tensor({0, 1, 0, 1})),
               c10::Error);
  EXPECT_THROW(RmsNormFwht(torch::randn({1, 2, 8}), torch::ones({8}), eps, 1.0, false,
                           torch::tensor({0, 1, 0, 1}, torch::kInt32)),
               c10::Error);
}

TEST(RmsNormTest, RejectsBadArguments) {
  const torch::Tensor x = torch::randn({2, 8});
  EXPECT_THROW(RmsNorm(x, torch::ones({7}), 1e-5), c10::Error);
  EXPECT_THROW(RmsNorm(x, torch::ones({8}, torch::kFloat64), 1e-5), c10::Error);
  EXPECT_THROW(RmsNorm(x.to(torch::kInt64), torch::ones({8}, torch::kInt64), 1e-5), c10::Error);
  EXPECT_THROW(RmsNormBackward(torch::randn({2, 7}), x, torch::ones({8}), 1e-5), c10::Error);
  EXPECT_THROW(RmsNormFwht(x, torch::ones({7}), 1e-5), c10::Error);
}

}  // namespace
}  // namespace qwha::kernels
