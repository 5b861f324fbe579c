// Packing of spectra (CPU), the CPU product and the CUDA dispatch of
// spectrum_apply.h. The CPU loops follow the CUDA kernel's arithmetic: float32
// sums per token, added to y and rounded once (the kernel's atomic add of a
// half-precision y first rounds the sum to y's dtype).
#include "kernels/spectrum_apply.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_dtype.h"
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

constexpr int64_t kMaxStep = 255;

bool SupportedValueDtype(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16;
}

// Entry e's gap and value in units of kUnitEntries interleaved entries
// (spectrum_layout.h).
uint8_t* UnitGap(uint8_t* base, int64_t e, int64_t value_size) {
  return base + (e / kUnitEntries) * UnitBytes(value_size) + e % kUnitEntries;
}
const uint8_t* UnitGap(const uint8_t* base, int64_t e, int64_t value_size) {
  return base + (e / kUnitEntries) * UnitBytes(value_size) + e % kUnitEntries;
}
template <typename V>
V* UnitValue(uint8_t* base, int64_t e) {
  return reinterpret_cast<V*>(base + (e / kUnitEntries) * UnitBytes(sizeof(V)) + kUnitEntries) +
         e % kUnitEntries;
}
template <typename V>
const V* UnitValue(const uint8_t* base, int64_t e) {
  return reinterpret_cast<const V*>(base + (e / kUnitEntries) * UnitBytes(sizeof(V)) +
                                    kUnitEntries) +
         e % kUnitEntries;
}

int64_t Storage(const torch::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.numel() * t.element_size()) : 0;
}

// Entries a row takes: its k entries, one filler per step beyond 255, then
// padding to a multiple of kRowAlign. idx [k]: the row's flat indices, increasing,
// from row_start = row · n.
int64_t RowEntries(const int64_t* idx, int64_t k, int64_t row_start) {
  int64_t entries = k;
  int64_t prev = row_start;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t step = idx[i] - prev;
    if (step > kMaxStep) entries += (step - 1) / kMaxStep;
    prev = idx[i];
  }
  return (entries + kRowAlign - 1) / kRowAlign * kRowAlign;
}

}  // namespace

int64_t PackedSpectrum::bytes() const { return Storage(row_ptr) + Storage(entries); }

int64_t PackedSpectrumBytesBound(int64_t count, int64_t rows, int64_t n,
                                 torch::ScalarType value_dtype) {
  const int64_t per_row = kRowAlign - 1 + (n + kMaxStep - 1) / kMaxStep;
  const int64_t entries = count + rows * per_row + kUnitEntries - 1;  // the last unit, whole
  return 4 * (rows + 1) + entries * (1 + static_cast<int64_t>(c10::elementSize(value_dtype)));
}

absl::StatusOr<PackedSpectrum> PackSpectrum(const torch::Tensor& flat_index,
                                            const torch::Tensor& values, int64_t rows, int64_t n,
                                            double scale, torch::ScalarType value_dtype,
                                            const torch::Device& device) {
  if (!SupportedValueDtype(value_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackSpectrum: value dtype must be float32, bfloat16 or float16, got ",
                     c10::toString(value_dtype)));
  }
  if (rows < 0 || n < 1 || rows * n >= (int64_t{1} << 62)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackSpectrum: bad shape [", rows, ", ", n, "]"));
  }
  if (!flat_index.defined() || !values.defined() || flat_index.dim() != 1 || values.dim() != 1 ||
      flat_index.size(0) != values.size(0) || flat_index.scalar_type() != torch::kInt64 ||
      !values.is_floating_point()) {
    return absl::InvalidArgumentError(
        "PackSpectrum: flat_index (int64) and values (float) must be 1-D of equal length");
  }
  const torch::Tensor index = flat_index.to(torch::kCPU).contiguous();
  const torch::Tensor source = values.to(torch::kCPU).contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t t = 0; t < count; ++t) {
    if (idx[t] < 0 || idx[t] >= rows * n) {
      return absl::InvalidArgumentError(absl::StrCat("PackSpectrum: index ", idx[t], " at ", t,
                                                     " is outside [0, ", rows * n, ")"));
    }
    if (t > 0 && idx[t] <= idx[t - 1]) {
      return absl::InvalidArgumentError(
          absl::StrCat("PackSpectrum: indices must be strictly increasing; ", idx[t], " at ", t,
                       " follows ", idx[t - 1]));
    }
  }
  // Input entries of row r: [first[r], first[r + 1]); packed: [offsets[r], offsets[r + 1]).
  std::vector<int64_t> first(static_cast<size_t>(rows) + 1, count);
  std::vector<int64_t> offsets(static_cast<size_t>(rows) + 1, 0);
  at::parallel_for(0, rows, 1024, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      first[static_cast<size_t>(r)] = std::lower_bound(idx, idx + count, r * n) - idx;
    }
  });
  at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = first[static_cast<size_t>(r)], e = first[static_cast<size_t>(r) + 1];
      offsets[static_cast<size_t>(r) + 1] = RowEntries(idx + b, e - b, r * n);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    offsets[static_cast<size_t>(r) + 1] += offsets[static_cast<size_t>(r)];
  }
  const int64_t entries = offsets.back();
  if (entries >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError("PackSpectrum: more than 2^31 packed entries");
  }
  torch::Tensor row_ptr = torch::empty({rows + 1}, torch::kInt32);
  int32_t* rp = row_ptr.data_ptr<int32_t>();
  for (int64_t r = 0; r <= rows; ++r) rp[r] = static_cast<int32_t>(offsets[static_cast<size_t>(r)]);

  // Steps and values, row by row, into units; fillers and padding are
  // (step, 0).
  const int64_t value_size = static_cast<int64_t>(c10::elementSize(value_dtype));
  torch::Tensor units = torch::zeros(
      {(entries + kUnitEntries - 1) / kUnitEntries * UnitBytes(value_size)}, torch::kUInt8);
  uint8_t* base = units.data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, source.scalar_type(), "PackIn", [&] {
    using In = scalar_t;
    const In* src = source.data_ptr<In>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value_dtype, "PackOut", [&] {
      at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          int64_t e = offsets[static_cast<size_t>(r)];
          int64_t prev = 0;
          for (int64_t t = first[static_cast<size_t>(r)]; t < first[static_cast<size_t>(r) + 1];
               ++t) {
            const int64_t col = idx[t] - r * n;
            int64_t step = col - prev;
            for (; step > kMaxStep; step -= kMaxStep) *UnitGap(base, e++, value_size) = kMaxStep;
            *UnitGap(base, e, value_size) = static_cast<uint8_t>(step);
            // float64 product, then the tensor library's rounding (via float32).
            *UnitValue<scalar_t>(base, e++) =
                static_cast<scalar_t>(static_cast<float>(static_cast<double>(src[t]) * scale));
            prev = col;
          }
        }
      });
    });
  });

  PackedSpectrum out;
  out.rows = rows;
  out.n = n;
  out.count = entries;
  out.value_dtype = value_dtype;
  out.row_ptr = row_ptr.to(device);
  out.entries = units.to(device);
  return out;
}

torch::Tensor UnpackSpectrum(const PackedSpectrum& f) {
  const torch::Tensor rp = f.row_ptr.to(torch::kCPU);
  const torch::Tensor units = f.entries.to(torch::kCPU);
  torch::Tensor dense = torch::zeros({f.rows, f.n}, torch::kFloat32);
  const int32_t* r = rp.data_ptr<int32_t>();
  const uint8_t* base = units.data_ptr<uint8_t>();
  float* d = dense.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.value_dtype, "Unpack", [&] {
    for (int64_t row = 0; row < f.rows; ++row) {
      int64_t col = 0;
      for (int32_t e = r[row]; e < r[row + 1]; ++e) {
        col += *UnitGap(base, e, sizeof(scalar_t));
        // fillers and padding add 0
        d[row * f.n + col] += static_cast<float>(*UnitValue<scalar_t>(base, e));
      }
    }
  });
  return dense.to(f.device());
}

namespace {

template <typename E>
void ApplyCpu(const torch::Tensor& z, const std::vector<SpectrumTask>& tasks,
              const torch::Tensor& y_rows, torch::Tensor& y) {
  const E* zp = z.data_ptr<E>();
  const int64_t ldz = z.stride(0);
  const bool chunks = z.dim() == 3;  // [C, n, 4]: token p at z[p / 4, :, p % 4]
  const int32_t* yr = y_rows.data_ptr<int32_t>();
  E* out = y.data_ptr<E>();
  const int64_t ldy = y.stride(0);
  for (const SpectrumTask& task : tasks) {
    const PackedSpectrum& f = *task.spectrum;
    const int32_t* rp = f.row_ptr.data_ptr<int32_t>();
    const uint8_t* base = f.entries.data_ptr<uint8_t>();
    const int32_t* rows = yr + task.tok_begin;
    // Token t's z: zp[offset[t] + col · col_stride].
    std::vector<int64_t> offset(static_cast<size_t>(task.count));
    for (int64_t t = 0; t < task.count; ++t) {
      const int64_t p = task.tok_begin + t;
      offset[static_cast<size_t>(t)] = chunks ? (p / 4) * ldz + p % 4 : rows[t] * ldz;
    }
    const int64_t col_stride = chunks ? 4 : 1;
    at::parallel_for(0, f.rows, 16, [&](int64_t r0, int64_t r1) {
      std::vector<float> acc(static_cast<size_t>(task.count));
      for (int64_t r = r0; r < r1; ++r) {
        std::fill(acc.begin(), acc.end(), 0.f);
        int64_t col = 0;
        for (int32_t e = rp[r]; e < rp[r + 1]; ++e) {
          col += *UnitGap(base, e, sizeof(E));
          const float v = static_cast<float>(*UnitValue<E>(base, e));
          for (int64_t t = 0; t < task.count; ++t) {
            acc[static_cast<size_t>(t)] +=
                v * static_cast<float>(zp[offset[static_cast<size_t>(t)] + col * col_stride]);
          }
        }
        for (int64_t t = 0; t < task.count; ++t) {
          E& dst = out[static_cast<int64_t>(rows[t]) * ldy + task.y_col + r];
          dst = static_cast<E>(static_cast<float>(dst) + acc[static_cast<size_t>(t)]);
        }
      }
    });
  }
}

}  // namespace

void SpectrumApply(const torch::Tensor& z, const std::vector<SpectrumTask>& tasks,
                   const torch::Tensor& y_rows, torch::Tensor& y) {
  const bool chunks = z.dim() == 3;
  TORCH_CHECK(z.scalar_type() == y.scalar_type() &&
                  (chunks ? z.size(2) == 4 && z.stride(2) == 1 && z.stride(1) == 4
                          : z.dim() == 2 && z.stride(1) == 1 && z.size(0) == y.size(0)),
              "SpectrumApply: z must be [y rows, n] with unit column stride, or [chunks, n, 4] "
              "with contiguous chunks, in y's dtype; got ",
              z.sizes(), " ", c10::toString(z.scalar_type()));
  TORCH_CHECK(y.dim() == 2 && y.stride(1) == 1,
              "SpectrumApply: y must be 2-D with unit column stride");
  TORCH_CHECK(y_rows.dim() == 1 && y_rows.scalar_type() == torch::kInt32 &&
                  y_rows.device() == y.device() && y_rows.is_contiguous(),
              "SpectrumApply: y_rows must be contiguous int32 on y's device");
  TORCH_CHECK(z.device() == y.device(), "SpectrumApply: z and y must share a device");
  if (tasks.empty()) return;
  for (const SpectrumTask& t : tasks) {
    TORCH_CHECK(t.spectrum != nullptr, "SpectrumApply: task without a spectrum");
    const PackedSpectrum& f = *t.spectrum;
    TORCH_CHECK(f.n == z.size(1), "SpectrumApply: spectrum width ", f.n, " != z's ", z.size(1));
    TORCH_CHECK(!chunks || t.count == 0 ||
                    (t.tok_begin % 4 == 0 && t.count <= 4 && t.tok_begin / 4 < z.size(0)),
                "SpectrumApply: with z in chunks of 4 tokens a task must start a chunk of z (",
                z.size(0), " chunks) and have at most 4 tokens; got tokens [", t.tok_begin, ", ",
                t.tok_begin + t.count, ")");
    TORCH_CHECK(f.dtype() == y.scalar_type(), "SpectrumApply: spectrum values are ",
                c10::toString(f.dtype()), ", y is ", c10::toString(y.scalar_type()));
    TORCH_CHECK(f.device() == y.device(), "SpectrumApply: spectrum on ", f.device(), ", y on ",
                y.device());
    TORCH_CHECK(t.y_col >= 0 && t.y_col + f.rows <= y.size(1), "SpectrumApply: columns [", t.y_col,
                ", ", t.y_col + f.rows, ") exceed y's ", y.size(1));
    TORCH_CHECK(t.count >= 0 && t.tok_begin >= 0 && t.tok_begin + t.count <= y_rows.size(0),
                "SpectrumApply: tokens [", t.tok_begin, ", ", t.tok_begin + t.count,
                ") exceed y_rows (", y_rows.size(0), ")");
  }
  if (y.is_cpu()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "SpectrumApplyCpu",
                                    [&] { ApplyCpu<scalar_t>(z, tasks, y_rows, y); });
    return;
  }
#ifdef QWHA_WITH_CUDA
  TORCH_CHECK(y.is_cuda(), "SpectrumApply: unsupported device ", y.device());
  TORCH_CHECK(y.scalar_type() != torch::kFloat64, "SpectrumApply: float64 is CPU only");
  std::vector<cuda::SpectrumApplyTask> device_tasks;
  device_tasks.reserve(tasks.size());
  for (const SpectrumTask& t : tasks) {
    const PackedSpectrum& f = *t.spectrum;
    if (t.count == 0 || f.rows == 0) continue;
    device_tasks.push_back({f.row_ptr.data_ptr<int32_t>(), f.entries.data_ptr<uint8_t>(),
                            static_cast<int32_t>(f.rows), static_cast<int32_t>(f.n),
                            static_cast<int32_t>(t.y_col), static_cast<int32_t>(t.tok_begin),
                            static_cast<int32_t>(t.count), static_cast<int32_t>(f.count)});
  }
  const cudaError_t err = cuda::LaunchSpectrumApply(
      device_tasks.data(), static_cast<int>(device_tasks.size()), z.data_ptr(), z.stride(0),
      y.data_ptr(), y.stride(0), y_rows.data_ptr<int32_t>(), ToCudaDType(y.scalar_type()),
      at::cuda::getCurrentCUDAStream(y.device().index()).stream(), chunks);
  TORCH_CHECK(err == cudaSuccess,
              "qwha::kernels::SpectrumApply: CUDA launch failed: ", cudaGetErrorString(err));
#else
  TORCH_CHECK(false, "SpectrumApply: this build has no CUDA kernels (device ", y.device(), ")");
#endif
}

}  // namespace qwha::kernels
