// Packed spectra: packing against the dense definition (fillers for long
// steps, padding, empty and full rows), the byte bound, input errors, and the
// batched product against a float64 reference on fresh random inputs, on the
// CPU and (when available) on CUDA, where it is also checked against the CPU.
#include "kernels/spectrum_apply.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>
#include <vector>

#include "kernels/fwht.h"
#include "kernels/test_devices.h"

#ifdef QWHA_WITH_CUDA
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

// Sorted unique flat indices with rows of very different fill: row 0 empty,
// row 1 full, row 2 only column n - 1 (a long step), the rest random with
// `density`.
torch::Tensor MixedIndex(int64_t rows, int64_t n, double density) {
  std::vector<int64_t> idx;
  for (int64_t r = 0; r < rows; ++r) {
    if (r == 0) continue;
    if (r == 1) {
      for (int64_t c = 0; c < n; ++c) idx.push_back(r * n + c);
      continue;
    }
    if (r == 2) {
      idx.push_back(r * n + n - 1);
      continue;
    }
    const torch::Tensor keep = torch::rand({n}).lt(density).contiguous();
    const bool* kept = keep.data_ptr<bool>();  // (item() per column took minutes per test)
    for (int64_t c = 0; c < n; ++c) {
      if (kept[c]) idx.push_back(r * n + c);
    }
  }
  return torch::tensor(idx, torch::kInt64);
}

torch::Tensor Dense64(const torch::Tensor& idx, const torch::Tensor& values, int64_t rows,
                      int64_t n, double scale) {
  torch::Tensor d = torch::zeros({rows * n}, torch::kFloat64);
  d.index_put_({idx}, values.to(torch::kFloat64) * scale);
  return d.view({rows, n});
}

TEST(SpectrumApplyTest, PackingKeepsEveryEntryAndRespectsTheBound) {
  torch::manual_seed(3);
  for (torch::Device dev : Devices()) {
    for (int64_t n : {int64_t{96}, int64_t{1024}, int64_t{5120}}) {
      for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
        const int64_t rows = 9;
        torch::Tensor idx = MixedIndex(rows, n, 0.03);
        torch::Tensor values = torch::randn({idx.size(0)}, torch::kFloat64);
        auto f = PackSpectrum(idx, values, rows, n, 0.25, dtype, dev);
        ASSERT_TRUE(f.ok()) << f.status();
        EXPECT_EQ(f->rows, rows);
        EXPECT_EQ(f->n, n);
        EXPECT_EQ(f->device(), dev);
        EXPECT_EQ(f->entries.numel(), (f->count + kUnitEntries - 1) / kUnitEntries *
                                          UnitBytes(c10::elementSize(dtype)));
        EXPECT_EQ(f->dtype(), dtype);
        torch::Tensor rp = f->row_ptr.cpu();
        for (int64_t r = 0; r <= rows; ++r) EXPECT_EQ(rp[r].item<int>() % kRowAlign, 0) << r;
        EXPECT_EQ(rp[0].item<int>(), 0);
        EXPECT_EQ(rp[rows].item<int64_t>(), f->count);
        // Row 2 (one entry at column n - 1) needs fillers once n - 1 > 255.
        EXPECT_GE(rp[3].item<int>() - rp[2].item<int>(), 1 + (n - 2) / 255);
        // Values are rounded once to the dtype: the dense form equals the
        // rounded float64 definition exactly.
        torch::Tensor expected = Dense64(idx, values, rows, n, 0.25).to(dtype).to(torch::kFloat32);
        EXPECT_TRUE(torch::equal(UnpackSpectrum(*f).cpu(), expected)) << n << " " << dtype;
        EXPECT_LE(f->bytes(), PackedSpectrumBytesBound(idx.size(0), rows, n, dtype));
        EXPECT_EQ(f->bytes(), 4 * (rows + 1) + f->entries.numel());
        // The units' gap bytes: row 0 is empty, row 1 holds every column, so
        // entry 0 steps 0 and entries 1 .. n - 1 step 1 (32 gaps, then 32 values).
        const torch::Tensor u = f->entries.cpu();
        const int64_t unit = UnitBytes(c10::elementSize(dtype));
        ASSERT_EQ(kUnitEntries, 32);
        EXPECT_EQ(u[0].item<int>(), 0);
        for (int64_t e : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{31}, int64_t{32}, n - 1}) {
          EXPECT_EQ(u[(e / 32) * unit + e % 32].item<int>(), 1) << n << " " << dtype << " " << e;
        }
      }
    }
  }
}

TEST(SpectrumApplyTest, PackingRefusesBadInput) {
  const torch::Tensor v = torch::ones({3});
  auto bad = [&](const torch::Tensor& idx, const torch::Tensor& values,
                 torch::ScalarType dtype = torch::kFloat32) {
    return PackSpectrum(idx, values, 4, 8, 1.0, dtype, torch::kCPU).status();
  };
  EXPECT_NE(bad(torch::tensor({0, 5, 32}, torch::kInt64), v).message().find("outside"),
            std::string::npos);
  EXPECT_NE(bad(torch::tensor({0, 5, 5}, torch::kInt64), v).message().find("increasing"),
            std::string::npos);
  EXPECT_NE(bad(torch::tensor({-1, 5, 6}, torch::kInt64), v).message().find("outside"),
            std::string::npos);
  EXPECT_FALSE(bad(torch::tensor({0, 5}, torch::kInt64), v).ok());
  EXPECT_FALSE(bad(torch::tensor({0, 5, 6}, torch::kInt32), v).ok());
  EXPECT_NE(
      bad(torch::tensor({0, 5, 6}, torch::kInt64), v, torch::kFloat64).message().find("dtype"),
      std::string::npos);
}

struct TaskSpec {
  int64_t rows, count;
};

// Several spectra over one input, tokens of each task interleaved across y's
// rows (as requests of different adapters are in a decode batch), token
// counts that hit every bucket and the > 32 loop, output columns at offsets.
// With chunks (tasks of at most 4 tokens): task i's tokens are positions
// [4i, 4i + count) of y_rows (the rest -1) and z comes in chunks of 4
// tokens (ChunkRows); y must then equal, bit for bit, the product with z in
// rows.
void CheckApply(torch::Device dev, torch::ScalarType dtype, int64_t n,
                const std::vector<TaskSpec>& specs, double tol, double density = 0.05,
                bool chunks = false) {
  SCOPED_TRACE(c10::str(dev, " ", dtype, " n=", n, " density=", density, chunks ? " chunks" : ""));
  std::vector<PackedSpectrum> spectra;
  std::vector<torch::Tensor> dense;
  int64_t tokens = 0, cols = 0;
  std::vector<int64_t> begin, col;
  for (const TaskSpec& s : specs) {
    torch::Tensor idx = MixedIndex(s.rows, n, density);
    torch::Tensor values = torch::randn({idx.size(0)}, torch::kFloat64);
    auto f = PackSpectrum(idx, values, s.rows, n, 0.5, dtype, dev);
    ASSERT_TRUE(f.ok()) << f.status();
    dense.push_back(Dense64(idx, values, s.rows, n, 0.5).to(dtype).to(torch::kFloat64));
    spectra.push_back(*std::move(f));
    begin.push_back(chunks ? 4 * static_cast<int64_t>(begin.size()) : tokens);
    tokens += s.count;
    col.push_back(cols);
    cols += s.rows + 3;
  }
  // Each task's tokens are rows of z and y taken from a random permutation.
  const int64_t real = tokens;
  torch::Tensor y_rows = torch::randperm(real, torch::kInt64).to(torch::kInt32);
  if (chunks) {
    torch::Tensor spread = torch::full({4 * static_cast<int64_t>(specs.size())}, -1, torch::kInt32);
    for (size_t i = 0, at = 0; i < specs.size(); at += specs[i].count, ++i) {
      ASSERT_LE(specs[i].count, 4);
      spread.narrow(0, begin[i], specs[i].count).copy_(y_rows.narrow(0, at, specs[i].count));
    }
    y_rows = spread;
  }
  torch::Tensor z = torch::randn({real, n}, torch::kFloat64).to(dtype);
  torch::Tensor y0 = torch::randn({real, cols}, torch::kFloat64).to(dtype);

  torch::Tensor expected = y0.to(torch::kFloat64).clone();
  std::vector<SpectrumTask> tasks;
  for (size_t i = 0; i < specs.size(); ++i) {
    tasks.push_back({&spectra[i], col[i], begin[i], specs[i].count});
    torch::Tensor rows = y_rows.narrow(0, begin[i], specs[i].count).to(torch::kInt64);
    torch::Tensor zi = z.index_select(0, rows).to(torch::kFloat64);  // [count, n]
    torch::Tensor delta = torch::matmul(zi, dense[i].t());           // [count, rows]
    expected.narrow(1, col[i], specs[i].rows).index_add_(0, rows, delta);
  }
  torch::Tensor y = y0.to(dev);
  SpectrumApply(chunks ? ChunkRows(z, y_rows).to(dev) : z.to(dev), tasks, y_rows.to(dev), y);
  const torch::Tensor got = y.cpu().to(torch::kFloat64);
  if (chunks) {  // the same product with z in rows
    torch::Tensor y_rows_z = y0.to(dev);
    SpectrumApply(z.to(dev), tasks, y_rows.to(dev), y_rows_z);
    EXPECT_TRUE(y_rows_z.cpu().equal(y.cpu()));
  }
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE((got - expected).abs().max().item<double>(), tol * scale);
  // Columns no task writes keep their value.
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_TRUE(torch::equal(y.cpu().narrow(1, col[i] + specs[i].rows, 3),
                             y0.narrow(1, col[i] + specs[i].rows, 3)));
  }
  if (dev.is_cuda()) {  // the CUDA kernel against the CPU loops
    torch::Tensor y_cpu = y0.clone();
    std::vector<PackedSpectrum> cpu_spectra;
    for (const PackedSpectrum& f : spectra) {
      PackedSpectrum c = f;
      c.row_ptr = f.row_ptr.cpu(), c.entries = f.entries.cpu();
      cpu_spectra.push_back(c);
    }
    std::vector<SpectrumTask> cpu_tasks = tasks;
    for (size_t i = 0; i < tasks.size(); ++i) cpu_tasks[i].spectrum = &cpu_spectra[i];
    SpectrumApply(z, cpu_tasks, y_rows, y_cpu);
    EXPECT_LE((got - y_cpu.to(torch::kFloat64)).abs().max().item<double>(), tol * scale);
  }
}

TEST(SpectrumApplyTest, BatchedProductMatchesFloat64Reference) {
  torch::manual_seed(7);
  const std::vector<TaskSpec> specs = {{33, 1}, {64, 3},  {17, 4},  {40, 5},  {8, 8},
                                       {50, 9}, {29, 16}, {31, 17}, {12, 32}, {70, 45}};
  for (torch::Device dev : Devices()) {
    CheckApply(dev, torch::kFloat32, 96, specs, 1e-5);
    CheckApply(dev, torch::kFloat32, 1024, specs, 1e-5);
    // Half-precision y: one rounding of y + Δ to the dtype.
    CheckApply(dev, torch::kBFloat16, 640, specs, 1e-2);
    CheckApply(dev, torch::kFloat16, 640, specs, 2e-3);
    // Mean rows of ~32, ~100 and ~200 entries: the CUDA kernel's 8-, 16- and
    // 32-lane segments per row.
    CheckApply(dev, torch::kBFloat16, 1024, specs, 1e-2, 0.1);
    CheckApply(dev, torch::kFloat32, 4096, specs, 1e-5, 0.05);
    // float32 chunks of 8 tokens of 8192 columns exceed shared memory: the
    // kernel reads z from global memory.
    CheckApply(dev, torch::kFloat32, 8192, specs, 1e-5, 0.02);
  }
}

// z in chunks of 4 tokens (the serving step's q/k/v, o and gate/up inputs):
// every dtype, widths that fit shared memory and one (float32, 16384) that
// does not, chunks copied by one bulk copy and by the block's threads.
TEST(SpectrumApplyTest, ChunkedInputGivesTheSameProduct) {
  torch::manual_seed(9);
  const std::vector<TaskSpec> specs = {{33, 1}, {64, 3}, {17, 4}, {40, 4}, {50, 2}, {8, 4}};
  for (torch::Device dev : Devices()) {
    for (int staging : {0, 3}) {
#ifdef QWHA_WITH_CUDA
      cuda::SpectrumApplyTuning tuning;
      tuning.staging = staging;
      cuda::SetSpectrumApplyTuning(tuning);
#else
      if (staging != 0) continue;
#endif
      CheckApply(dev, torch::kBFloat16, 640, specs, 1e-2, 0.05, true);
      CheckApply(dev, torch::kFloat16, 4096, specs, 1e-2, 0.1, true);
      CheckApply(dev, torch::kBFloat16, 4096, specs, 1e-2, 0.02, true);
      CheckApply(dev, torch::kFloat32, 1024, specs, 1e-5, 0.05, true);
      CheckApply(dev, torch::kFloat32, 16384, specs, 1e-5, 0.01, true);
    }
#ifdef QWHA_WITH_CUDA
    cuda::SetSpectrumApplyTuning({});
#endif
  }
  // The window stream's blocks of 16, 24 and 32 warps with a chunked z.
#ifdef QWHA_WITH_CUDA
  if (torch::cuda::is_available()) {
    const std::vector<TaskSpec> many(24, TaskSpec{1100, 4});
    for (int warps : {16, 24, 32}) {
      SCOPED_TRACE(c10::str("warps ", warps));
      cuda::SetSpectrumApplyTuning({0, 0, 0, 0, 0, 0, 0, 0, warps});
      CheckApply(torch::kCUDA, torch::kBFloat16, 4096, many, 1e-2, 0.03, true);
    }
    cuda::SetSpectrumApplyTuning({});
  }
#endif
}

#ifdef QWHA_WITH_CUDA
// Every launch shape the CUDA kernel has (lanes per row × entries per lane),
// not only the ones picked for these row lengths.
TEST(SpectrumApplyTest, EveryCudaLaunchShapeMatchesTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(8);
  const std::vector<TaskSpec> specs = {{33, 1}, {64, 3}, {40, 5}, {50, 9}, {31, 17}};
  for (int lanes : {4, 8, 16, 32}) {
    for (int entries : {8, 16}) {
      for (int rows : {1, 2}) {  // contiguous, strided rows per warp
        SCOPED_TRACE(c10::str("lanes ", lanes, " entries ", entries, " rows ", rows));
        cuda::SpectrumApplyTuning tuning;
        tuning.lanes_per_row = lanes, tuning.entries_per_lane = entries, tuning.rows = rows;
        cuda::SetSpectrumApplyTuning(tuning);
        CheckApply(torch::kCUDA, torch::kBFloat16, 1024, specs, 1e-2, 0.1);
        CheckApply(torch::kCUDA, torch::kFloat32, 8192, specs, 1e-5, 0.02);
      }
    }
  }
  // Registers capped for 3 blocks per SM (the window stream or a shorter
  // step pipeline for chunks of 4 tokens of 2-byte types) and
  // both stagings of z (two columns per thread for 2-byte types; float32
  // always takes one). 9 tasks × 8 chunks of tokens at one block per SM get
  // 2 blocks (32 warps) each: a warp takes 35 contiguous rows of 1100 (or,
  // strided, rows w, w + 32, ...), so it needs two groups of 32.
  const std::vector<TaskSpec> many(9, TaskSpec{1100, 64});
  for (int lanes : {4, 8}) {
    for (int min_blocks : {1, 3}) {
      for (int staging : {1, 2}) {
        SCOPED_TRACE(c10::str("lanes ", lanes, " min blocks ", min_blocks, " staging ", staging));
        cuda::SetSpectrumApplyTuning({lanes, min_blocks, 8, min_blocks, staging});
        CheckApply(torch::kCUDA, torch::kBFloat16, 1024, specs, 1e-2, 0.1);
        CheckApply(torch::kCUDA, torch::kFloat16, 4096, specs, 1e-2, 0.1);
        CheckApply(torch::kCUDA, torch::kFloat32, 8192, specs, 1e-5, 0.02);
        for (int rows : {1, 2}) {
          for (int pipeline : {1, 2}) {  // step pipeline, window stream
            // The window stream in blocks of 16, 24 and 32 warps.
            for (int warps : {16, 24, 32}) {
              cuda::SetSpectrumApplyTuning(
                  {lanes, 1, 8, min_blocks, staging, 0, rows, pipeline, warps});
              CheckApply(torch::kCUDA, torch::kBFloat16, 1024, many, 1e-2, 0.1);
              CheckApply(torch::kCUDA, torch::kFloat16, 1024, specs, 1e-2, 0.1);
            }
          }
        }
      }
    }
  }
  cuda::SetSpectrumApplyTuning({});
}
#endif

TEST(SpectrumApplyTest, MismatchesAreErrors) {
  torch::Tensor idx = torch::tensor({1, 9, 20}, torch::kInt64);
  auto f = PackSpectrum(idx, torch::ones({3}), 4, 8, 1.0, torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(f.ok());
  torch::Tensor y = torch::zeros({2, 4});
  torch::Tensor rows = torch::tensor({1, 0}, torch::kInt32);
  EXPECT_THROW(SpectrumApply(torch::zeros({2, 16}), {{&*f, 0, 0, 2}}, rows, y), c10::Error);
  EXPECT_THROW(SpectrumApply(torch::zeros({2, 8}), {{&*f, 1, 0, 2}}, rows, y), c10::Error);
  EXPECT_THROW(SpectrumApply(torch::zeros({2, 8}), {{&*f, 0, 1, 2}}, rows, y), c10::Error);
  EXPECT_THROW(SpectrumApply(torch::zeros({3, 8}), {{&*f, 0, 0, 2}}, rows, y), c10::Error);
  torch::Tensor y16 = torch::zeros({2, 4}, torch::kBFloat16);
  EXPECT_THROW(SpectrumApply(torch::zeros({2, 8}), {{&*f, 0, 0, 2}}, rows, y16), c10::Error);
  EXPECT_THROW(SpectrumApply(torch::zeros({2, 8}, torch::kBFloat16), {{&*f, 0, 0, 2}}, rows, y),
               c10::Error);
  // z in chunks: a task must start a chunk and have at most 4 tokens.
  const torch::Tensor z4 = torch::zeros({1, 8, 4});
  EXPECT_THROW(SpectrumApply(z4, {{&*f, 0, 1, 1}}, rows, y), c10::Error);
  EXPECT_THROW(SpectrumApply(z4, {{&*f, 0, 4, 1}}, torch::zeros({8}, torch::kInt32), y),
               c10::Error);
  EXPECT_THROW(SpectrumApply(torch::zeros({1, 8, 3}), {{&*f, 0, 0, 2}}, rows, y), c10::Error);
  // F row 0 holds column 1 only: y[r, 0] = z[r, 1] for both tokens' rows.
  SpectrumApply(torch::tensor({{0., 3., 0., 0., 0., 0., 0., 0.}, {0., 5., 0., 0., 0., 0., 0., 0.}})
                    .to(torch::kFloat32),
                {{&*f, 0, 0, 2}}, rows, y);
  EXPECT_EQ(y[0][0].item<float>(), 3.f);
  EXPECT_EQ(y[1][0].item<float>(), 5.f);
}

}  // namespace
}  // namespace qwha::kernels
