// FWHT against an independent float64 reference: Sylvester matrices built by
// the recursion H_2m = [[H, H], [H, -H]], combined with H_K from hadamard_k.h by
// explicit Kronecker products. Every case runs on the CPU and, when available,
// on CUDA (compared to the reference and to the CPU result).
#include "kernels/fwht.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/hadamard_k.h"
#include "kernels/test_devices.h"

namespace qwha::kernels {
namespace {

// Sylvester H_m (float64) by recursion.
torch::Tensor RefSylvester(int64_t m) {
  torch::Tensor h = torch::ones({1, 1}, torch::kFloat64);
  while (h.size(0) < m) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
  return h;
}

torch::Tensor RefHk(int64_t k) {
  torch::Tensor h = torch::empty({k, k}, torch::kFloat64);
  const int8_t* src = FindHadamardK(static_cast<int>(k));
  for (int64_t i = 0; i < k * k; ++i) h.data_ptr<double>()[i] = src[i];
  return h;
}

// A ⊗ B by broadcasting.
torch::Tensor RefKron(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t p = a.size(0), q = b.size(0);
  return (a.view({p, 1, p, 1}) * b.view({1, q, 1, q})).reshape({p * q, p * q});
}

torch::Tensor RefMatrix(int64_t k, int64_t m) {
  return k == 1 ? RefSylvester(m) : RefKron(RefHk(k), RefSylvester(m));
}

// scale * x · H (or Hᵀ) in float64 on the CPU, x [..., n] with n = k * m.
// Dense for small n; for large n via H_K ⊗ H_m1 ⊗ H_m2 (m = m1 * m2).
torch::Tensor RefTransform(const torch::Tensor& x, int64_t k, int64_t m, double scale,
                           bool transpose) {
  torch::Tensor xd = x.detach().to(torch::kCPU, torch::kFloat64);
  const int64_t n = k * m;
  torch::Tensor y;
  if (n <= 1024) {
    torch::Tensor h = RefMatrix(k, m);
    y = torch::matmul(xd.reshape({-1, n}), transpose ? h.t() : h);
  } else {
    int64_t m1 = 1;
    while (m1 * m1 < m) m1 *= 2;
    const int64_t m2 = m / m1;
    torch::Tensor v = xd.reshape({-1, k, m1, m2});
    torch::Tensor hk = k == 1 ? torch::ones({1, 1}, torch::kFloat64) : RefHk(k);
    if (transpose) hk = hk.t();
    // y[c, b', d'] = Σ H_K[a, c] H_m1[b, b'] H_m2[d, d'] x[a, b, d].
    v = torch::einsum("rabd,ac->rcbd", {v, hk});
    v = torch::einsum("rcbd,be->rced", {v, RefSylvester(m1)});
    y = torch::einsum("rced,df->rcef", {v, RefSylvester(m2)});
  }
  return (y * scale).reshape(x.sizes());
}

double RelErr(const torch::Tensor& y, const torch::Tensor& ref) {
  torch::Tensor yd = y.detach().to(torch::kCPU, torch::kFloat64);
  const double denom = ref.norm().item<double>();
  return (yd - ref).norm().item<double>() / (denom > 0 ? denom : 1.0);
}

double Tolerance(torch::ScalarType t, int64_t n) {
  const double log_n = std::max(1.0, std::log2(static_cast<double>(n)));
  switch (t) {
    case torch::kFloat64:
      return 1e-12;
    case torch::kFloat32:
      return 1e-6 * log_n;
    case torch::kFloat16:
      return 2e-3;
    default:
      return 1e-2;
  }
}

// Random input of `rows` rows on device, never all zero.
torch::Tensor RandomInput(int64_t rows, int64_t n, torch::ScalarType dtype, torch::Device dev) {
  return torch::randn({rows, n}, torch::kFloat64).to(dev, dtype);
}

struct SizeCase {
  int64_t k;
  int64_t m;
};

// Powers of two 1..32768 and K·2^m for every K with small m, plus model sizes.
std::vector<SizeCase> AllSizes() {
  std::vector<SizeCase> sizes;
  for (int64_t m = 1; m <= kMaxFwhtSize; m *= 2) sizes.push_back({1, m});
  for (int k : kSupportedHadamardK) {
    for (int64_t m : {1, 2, 8, 64}) {
      if (k == 20 && m > 1) continue;  // 20·2^j, j >= 1, factors as 40·2^(j-1).
      if (k * m <= kMaxFwhtSize) sizes.push_back({k, m});
    }
  }
  for (SizeCase s : {SizeCase{172, 64},
                     {28, 512},
                     {12, 256},
                     {40, 128},
                     {108, 128},
                     {12, 2048},
                     {60, 512},
                     {172, 128}}) {
    sizes.push_back(s);
  }
  return sizes;
}

TEST(FactorHadamardSizeTest, FactorsSupportedSizes) {
  for (int64_t m = 1; m <= kMaxFwhtSize; m *= 2) {
    auto f = FactorHadamardSize(m);
    ASSERT_TRUE(f.ok()) << m;
    EXPECT_EQ(f->k, 1);
    EXPECT_EQ(f->pow2, m);
  }
  for (int k : kSupportedHadamardK) {
    auto f = FactorHadamardSize(k);
    ASSERT_TRUE(f.ok()) << k;
    EXPECT_EQ(f->k, k);
    EXPECT_EQ(f->pow2, 1);
  }
  const std::vector<std::array<int64_t, 3>> known = {
      {11008, 172, 64},  {14336, 28, 512}, {3072, 12, 256}, {5120, 40, 128},
      {13824, 108, 128}, {40, 40, 1},      {80, 40, 2},     {24, 12, 2}};
  for (const auto& [n, k, m] : known) {
    auto f = FactorHadamardSize(n);
    ASSERT_TRUE(f.ok()) << n;
    EXPECT_EQ(f->k, k) << n;
    EXPECT_EQ(f->pow2, m) << n;
  }
}

TEST(FactorHadamardSizeTest, RejectsUnsupportedSizes) {
  for (int64_t n : {int64_t{0}, int64_t{-4}, int64_t{3}, int64_t{7}, int64_t{100}, int64_t{44},
                    int64_t{65536}, int64_t{172 * 256}, int64_t{12 * 4096}}) {
    auto f = FactorHadamardSize(n);
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_NE(std::string(f.status().message()).find(std::to_string(n)), std::string::npos);
  }
}

TEST(HadamardMatrixTest, MatchesReferenceAndIsOrthogonal) {
  for (SizeCase s : std::vector<SizeCase>{
           {1, 1}, {1, 2}, {1, 64}, {12, 1}, {12, 4}, {40, 2}, {172, 1}, {156, 2}, {28, 8}}) {
    const int64_t n = s.k * s.m;
    torch::Tensor h = HadamardMatrix(n);
    EXPECT_TRUE(torch::equal(h, RefMatrix(s.k, s.m))) << n;
    EXPECT_TRUE(torch::equal(torch::matmul(h, h.t()), n * torch::eye(n, torch::kFloat64))) << n;
  }
  EXPECT_EQ(HadamardMatrix(24, torch::kFloat32).scalar_type(), torch::kFloat32);
}

TEST(FwhtTest, MatchesReferenceForEverySizeFamily) {
  torch::manual_seed(1);
  for (torch::Device dev : Devices()) {
    for (SizeCase s : AllSizes()) {
      const int64_t n = s.k * s.m;
      const int64_t rows = std::max<int64_t>(2, 8192 / n);
      torch::Tensor x = RandomInput(rows, n, torch::kFloat32, dev);
      torch::Tensor y = Fwht(x);
      ASSERT_EQ(y.sizes(), x.sizes());
      ASSERT_EQ(y.device(), x.device());
      EXPECT_LT(RelErr(y, RefTransform(x, s.k, s.m, 1.0, false)), Tolerance(torch::kFloat32, n))
          << "n = " << n << " on " << dev;
    }
  }
}

TEST(FwhtTest, DtypesScaleAndTranspose) {
  torch::manual_seed(2);
  for (torch::Device dev : Devices()) {
    std::vector<torch::ScalarType> dtypes = {torch::kFloat32, torch::kBFloat16, torch::kFloat16};
    if (dev.is_cpu()) dtypes.push_back(torch::kFloat64);
    for (torch::ScalarType dtype : dtypes) {
      for (SizeCase s : std::vector<SizeCase>{{1, 1},
                                              {1, 16},
                                              {1, 2048},
                                              {1, 16384},
                                              {12, 64},
                                              {20, 1},
                                              {40, 32},
                                              {172, 64},
                                              {108, 4}}) {
        const int64_t n = s.k * s.m;
        for (bool transpose : {false, true}) {
          const double scale = 1.0 / std::sqrt(static_cast<double>(n));
          torch::Tensor x = RandomInput(std::max<int64_t>(3, 4096 / n), n, dtype, dev);
          torch::Tensor y = Fwht(x, scale, transpose);
          ASSERT_EQ(y.scalar_type(), dtype);
          torch::Tensor ref = RefTransform(x, s.k, s.m, scale, transpose);
          EXPECT_LT(RelErr(y, ref), Tolerance(dtype, n))
              << "n = " << n << " dtype " << dtype << " transpose " << transpose << " on " << dev;
          if (!dev.is_cpu()) {
            torch::Tensor y_cpu = Fwht(x.cpu(), scale, transpose);
            EXPECT_LT(RelErr(y, y_cpu.to(torch::kFloat64)), 2 * Tolerance(dtype, n)) << n;
          }
        }
      }
    }
  }
}

#ifdef QWHA_WITH_CUDA
// Few rows split each row's m-tiles of the K-mix over several blocks (decode
// steps), many rows do not (training): both against the CPU path.
TEST(FwhtTest, CudaSplitAndWholeRowsMatchTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(4);
  for (int64_t n : {int64_t{11008}, int64_t{172 * 128}, int64_t{12 * 64}}) {
    for (int64_t rows : {1, 32, 300}) {
      for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
        torch::Tensor x = RandomInput(rows, n, dtype, torch::kCUDA);
        torch::Tensor y = Fwht(x, 0.5, /*transpose=*/true);
        torch::Tensor want = Fwht(x.cpu(), 0.5, /*transpose=*/true);
        EXPECT_LT(RelErr(y, want.to(torch::kFloat64)), 2 * Tolerance(dtype, n))
            << "n " << n << " rows " << rows << " " << dtype;
      }
    }
  }
}
#endif

TEST(FwhtTest, InverseRoundTrip) {
  // H Hᵀ = n I: Fwht(Fwht(x), 1/n, transpose) = x.
  for (torch::Device dev : Devices()) {
    for (int64_t n : {64, 96, 5120, 11008}) {
      torch::Tensor x = RandomInput(4, n, torch::kFloat32, dev);
      torch::Tensor back = Fwht(Fwht(x), 1.0 / n, /*transpose=*/true);
      EXPECT_LT(RelErr(back, x.to(torch::kCPU, torch::kFloat64)), 1e-5) << n;
    }
  }
}

TEST(FwhtTest, LeadingDimsAndLayouts) {
  torch::manual_seed(3);
  for (torch::Device dev : Devices()) {
    const int64_t n = 96;  // 12 · 8
    // 1-D (no batch dimension), 3-D, and zero rows.
    torch::Tensor v = torch::randn({n}, torch::kFloat32).to(dev);
    EXPECT_EQ(Fwht(v).sizes(), v.sizes());
    EXPECT_LT(RelErr(Fwht(v), RefTransform(v, 12, 8, 1.0, false)), 1e-5);
    torch::Tensor x3 = torch::randn({2, 3, n}, torch::kFloat32).to(dev);
    EXPECT_LT(RelErr(Fwht(x3, 0.5), RefTransform(x3, 12, 8, 0.5, false)), 1e-5);
    torch::Tensor empty = torch::empty({0, n}, torch::kFloat32).to(dev);
    EXPECT_EQ(Fwht(empty).sizes(), empty.sizes());
    // Non-contiguous: a transposed view (last-dim stride != 1) and a column
    // slice (row stride 2n), each against the contiguous copy's reference.
    torch::Tensor t = torch::randn({n, 5}, torch::kFloat32).to(dev).t();
    ASSERT_FALSE(t.is_contiguous());
    EXPECT_LT(RelErr(Fwht(t), RefTransform(t.contiguous(), 12, 8, 1.0, false)), 1e-5);
    torch::Tensor wide = torch::randn({6, 2 * 1024}, torch::kBFloat16).to(dev);
    torch::Tensor slice = wide.slice(1, 1024, 2048);
    EXPECT_LT(RelErr(Fwht(slice), RefTransform(slice, 1, 1024, 1.0, false)), 1e-2);
    torch::Tensor odd = wide.slice(1, 1, 1025);  // misaligned start
    EXPECT_LT(RelErr(Fwht(odd), RefTransform(odd, 1, 1024, 1.0, false)), 1e-2);
  }
}

TEST(FwhtTest, GradientIsTransposedTransform) {
  torch::manual_seed(4);
  for (torch::Device dev : Devices()) {
    const auto dtype = dev.is_cpu() ? torch::kFloat64 : torch::kFloat32;
    for (SizeCase s : std::vector<SizeCase>{{1, 256}, {12, 16}, {172, 2}}) {
      const int64_t n = s.k * s.m;
      for (bool transpose : {false, true}) {
        torch::Tensor x = RandomInput(3, n, dtype, dev).requires_grad_(true);
        torch::Tensor w = RandomInput(3, n, dtype, dev);
        const double scale = 0.25;
        (Fwht(x, scale, transpose) * w).sum().backward();
        // ∂/∂x Σ w ⊙ (s x·H) = s w·Hᵀ.
        torch::Tensor expected = RefTransform(w, s.k, s.m, scale, !transpose);
        EXPECT_LT(RelErr(x.grad(), expected), dev.is_cpu() ? 1e-12 : 1e-5) << n;
      }
    }
  }
}

TEST(FwhtTest, GradientMatchesFiniteDifferences) {
  torch::manual_seed(5);
  for (int64_t n : {8, 12}) {
    for (bool transpose : {false, true}) {
      torch::Tensor x = torch::randn({2, n}, torch::kFloat64).requires_grad_(true);
      torch::Tensor w = torch::randn({2, n}, torch::kFloat64);
      auto loss = [&](const torch::Tensor& in) {
        return (Fwht(in, 0.7, transpose).pow(2) * w).sum();
      };
      torch::Tensor grad = torch::autograd::grad({loss(x)}, {x})[0];
      const double eps = 1e-6;
      torch::Tensor xd = x.detach();
      for (int64_t i = 0; i < xd.numel(); ++i) {
        torch::Tensor e = torch::zeros_like(xd);
        e.view(-1)[i] = eps;
        const double fd = (loss(xd + e).item<double>() - loss(xd - e).item<double>()) / (2 * eps);
        EXPECT_NEAR(grad.view(-1)[i].item<double>(), fd, 1e-6 * (1 + std::abs(fd))) << i;
      }
    }
  }
}

// The attention output's copy with its FWHT (serving's o projection): rows
// copied exactly to their places, each one's transform against the float64
// reference, with and without a row map, at the fused width (4096 on CUDA)
// and another (the copy, then Fwht).
TEST(FwhtTest, CopyRowsFwhtCopiesAndTransforms) {
  torch::manual_seed(6);
  for (torch::Device dev : Devices()) {
    for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
      for (int64_t n : {int64_t{4096}, int64_t{2048}}) {
        for (bool mapped : {false, true}) {
          const std::string where = dev.str() + " " + c10::toString(dtype) +
                                    " n=" + std::to_string(n) + (mapped ? " mapped" : "");
          const int64_t m = 5, total = 7;
          const torch::Tensor x = RandomInput(m, n, dtype, dev);
          const torch::Tensor rows =
              mapped ? torch::tensor({6, 0, 3, 2, 5}, torch::kInt64).to(dev) : torch::Tensor();
          torch::Tensor out = torch::zeros({total, n}, x.options());
          const torch::Tensor z = CopyRowsFwht(x, rows, out, 0.5, /*transpose=*/true);
          ASSERT_EQ(z.sizes(), out.sizes()) << where;
          ASSERT_EQ(z.scalar_type(), dtype) << where;
          const torch::Tensor at = mapped ? rows.cpu() : torch::arange(m, torch::kInt64);
          EXPECT_TRUE(out.cpu().index_select(0, at).equal(x.cpu())) << where;
          const torch::Tensor ref = RefTransform(x.cpu().to(torch::kFloat64), 1, n, 0.5, true);
          EXPECT_LT(RelErr(z.cpu().index_select(0, at), ref), Tolerance(dtype, n)) << where;
          // Rows not in the map keep what they held.
          if (mapped) {
            EXPECT_EQ(out.cpu()
                          .index_select(0, torch::tensor({1, 4}, torch::kInt64))
                          .abs()
                          .max()
                          .item<double>(),
                      0.0)
                << where;
          }
        }
      }
    }
  }
  const torch::Tensor x = torch::randn({2, 8});
  torch::Tensor out = torch::zeros({2, 4});
  EXPECT_THROW(CopyRowsFwht(x, torch::Tensor(), out), c10::Error);
  out = torch::zeros({1, 8});
  EXPECT_THROW(CopyRowsFwht(x, torch::Tensor(), out), c10::Error);
  out = torch::zeros({4, 8});
  EXPECT_THROW(CopyRowsFwht(x, torch::tensor({0, 1}, torch::kInt32), out), c10::Error);
}

// ChunkRows against its definition, and CopyRowsFwht's chunked z: the
// chunks of its z in rows (bit for bit: one transform, one rounding), the
// copy unchanged, rows of -1 zeros.
TEST(FwhtTest, ChunkedCopyRowsFwhtGivesChunksOfTheRows) {
  torch::manual_seed(10);
  const torch::Tensor z = torch::randn({6, 16});
  const torch::Tensor z_rows = torch::tensor({3, -1, 0, 5, 2, 2, -1, -1}, torch::kInt32);
  const torch::Tensor c = ChunkRows(z, z_rows);
  ASSERT_EQ(c.sizes(), (std::vector<int64_t>{2, 16, 4}));
  for (int64_t p = 0; p < 8; ++p) {
    const int row = z_rows[p].item<int>();
    const torch::Tensor want = row >= 0 ? z[row] : torch::zeros({16});
    EXPECT_TRUE(c.select(0, p / 4).select(1, p % 4).equal(want)) << "position " << p;
  }
  EXPECT_THROW(ChunkRows(z, torch::tensor({0, 1, 2}, torch::kInt32)), c10::Error);
  EXPECT_THROW(ChunkRows(z, torch::tensor({0, 1, 2, 3}, torch::kInt64)), c10::Error);
  for (torch::Device dev : Devices()) {
    for (int kernel : ChunkKernels(dev)) {
      UseChunkKernel(dev, kernel);
      for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
        for (int64_t n : {int64_t{4096}, int64_t{2048}}) {
          const std::string where = dev.str() + " " + c10::toString(dtype) +
                                    " n=" + std::to_string(n) + " kernel " + std::to_string(kernel);
          const int64_t m = 7;
          const torch::Tensor x = RandomInput(m, n, dtype, dev);
          const torch::Tensor rows =
              torch::tensor({6, 0, -1, 3, 2, -1, -1, -1, 5, 1, 4, -1}, torch::kInt32).to(dev);
          torch::Tensor out = torch::zeros({m + 2, n}, x.options());
          torch::Tensor out_rows = torch::zeros({m + 2, n}, x.options());
          const torch::Tensor zc = CopyRowsFwht(x, torch::Tensor(), out, 0.5, true, rows);
          const torch::Tensor zr = CopyRowsFwht(x, torch::Tensor(), out_rows, 0.5, true);
          ASSERT_EQ(zc.sizes(), (std::vector<int64_t>{3, n, 4})) << where;
          EXPECT_TRUE(out.narrow(0, 0, m).equal(x)) << where;
          EXPECT_EQ(out.narrow(0, m, 2).abs().max().item<double>(), 0.0) << where;
          EXPECT_TRUE(zc.equal(ChunkRows(zr, rows))) << where;
          const torch::Tensor ref = RefTransform(x.cpu().to(torch::kFloat64), 1, n, 0.5, true);
          EXPECT_LT(RelErr(zc.cpu().select(0, 0).select(1, 0), ref[6]), Tolerance(dtype, n))
              << where;
        }
      }
    }
  }
  const torch::Tensor x = torch::randn({2, 8});
  torch::Tensor out = torch::zeros({4, 8});
  EXPECT_THROW(CopyRowsFwht(x, torch::tensor({0, 1}, torch::kInt64), out, 1.0, false,
                            torch::tensor({0, 1, -1, -1}, torch::kInt32)),
               c10::Error);
  EXPECT_THROW(
      CopyRowsFwht(x, torch::Tensor(), out, 1.0, false, torch::tensor({0, 1}, torch::kInt32)),
      c10::Error);
}

// FwhtChunks: ChunkRows of Fwht's rows, bit for bit (the CUDA chunk kernel
// for K · 2^m sizes, a chunk's 4 rows per block, every fold; elsewhere
// Fwht then ChunkRows), both transpose modes, -1 positions zeros, a strided
// x, against the float64 transform; bad z_rows are errors.
TEST(FwhtTest, FwhtChunksGivesChunksOfTheRows) {
  torch::manual_seed(11);
  const torch::Tensor positions =
      torch::tensor({6, 0, -1, 3, 2, -1, -1, -1, 5, 1, 4, -1, -1, -1, -1, -1}, torch::kInt32);
  for (torch::Device dev : Devices()) {
    for (torch::ScalarType dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
      // 11008 = 172 · 64 (LLaMA-7B's intermediate size), 12 · 16, 40 · 128,
      // 28 · 512 (folds into 112 · 128), and 4096 (no K: Fwht, then ChunkRows).
      for (int64_t n :
           {int64_t{11008}, int64_t{192}, int64_t{5120}, int64_t{14336}, int64_t{4096}}) {
        for (bool transpose : {false, true}) {
          const std::string where = dev.str() + " " + c10::toString(dtype) +
                                    " n=" + std::to_string(n) + (transpose ? " T" : "") +
                                    (FusedFwhtChunks(n, dtype, dev) ? " fused" : "");
          const int64_t m = 7;
          // Rows m + 1 apart: a strided x.
          const torch::Tensor x = RandomInput(m, n + 8, dtype, dev).narrow(1, 0, n);
          const torch::Tensor rows = positions.to(dev);
          const torch::Tensor zc = FwhtChunks(x, rows, 0.5, transpose);
          ASSERT_EQ(zc.sizes(), (std::vector<int64_t>{4, n, 4})) << where;
          EXPECT_TRUE(zc.equal(ChunkRows(Fwht(x, 0.5, transpose), rows))) << where;
          const HadamardFactors f = *FactorHadamardSize(n);
          const torch::Tensor ref =
              RefTransform(x.cpu().to(torch::kFloat64), f.k, f.pow2, 0.5, transpose);
          EXPECT_LT(RelErr(zc.cpu().select(0, 0).select(1, 0), ref[6]), Tolerance(dtype, n))
              << where;
        }
      }
    }
  }
#ifdef QWHA_WITH_CUDA
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(FusedFwhtChunks(11008, torch::kBFloat16, torch::kCUDA));
    EXPECT_FALSE(FusedFwhtChunks(11008, torch::kFloat32, torch::kCUDA));
    EXPECT_FALSE(FusedFwhtChunks(4096, torch::kBFloat16, torch::kCUDA));
  }
#endif
  EXPECT_FALSE(FusedFwhtChunks(11008, torch::kBFloat16, torch::kCPU));
  const torch::Tensor x = torch::randn({2, 192});
  EXPECT_THROW(FwhtChunks(x, torch::tensor({0, 1, 1}, torch::kInt32)), c10::Error);
  EXPECT_THROW(FwhtChunks(x, torch::tensor({0, 1, 1, 0}, torch::kInt64)), c10::Error);
  EXPECT_THROW(FwhtChunks(x.view({2, 2, 96}), torch::tensor({0, 1, 1, 0}, torch::kInt32)),
               c10::Error);
  EXPECT_THROW(FwhtChunks(torch::randn({2, 100}), torch::tensor({0, 1, 1, 0}, torch::kInt32)),
               c10::Error);
}

TEST(FwhtTest, BadInputsGiveInvalidArgument) {
  struct Bad {
    torch::Tensor x;
    std::string word;  // expected in the message
  };
  std::vector<Bad> bad = {
      {torch::Tensor(), "undefined"},
      {torch::tensor(1.0f), "0-D"},
      {torch::randn({4, 3}), "dimension"},
      {torch::randn({4, 65536}), "dimension"},
      {torch::ones({4, 8}, torch::kInt32), "dtype"},
  };
  if (torch::cuda::is_available()) {
    bad.push_back({torch::randn({2, 8}, torch::kFloat64).cuda(), "dtype"});
  }
  for (const Bad& b : bad) {
    const absl::Status s = ValidateFwhtInput(b.x);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(s.message()).find(b.word), std::string::npos) << s.message();
    auto r = FwhtChecked(b.x);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THROW(Fwht(b.x), c10::Error);
  }
  auto ok = FwhtChecked(torch::randn({2, 8}));
  EXPECT_TRUE(ok.ok());
}

}  // namespace
}  // namespace qwha::kernels
