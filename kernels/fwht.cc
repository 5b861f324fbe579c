// FWHT: validation, the CPU implementation, a torch-ops fallback for other
// devices, autograd, and dispatch to the CUDA launchers (cuda_launchers.h).
//
// Transform (fwht.h): y = scale * x · H with H = H_K ⊗ H_M, M = 2^m. Viewing a
// row as [K, M] (i = a*M + b):
//   y[c, d] = scale * Σ_a H_K[a, c] Σ_b x[a, b] H_M[b, d]
// i.e. a Sylvester FWHT of every length-M segment, then the K x K mix across
// segments (H_K[c, a] in transpose mode; H_M is symmetric).
//
// CPU: Sylvester butterflies in place (vectorizable fixed-width blocks), rows
// or segments in parallel; the K-mix as adds/subtracts over 16-column blocks.
// Without QWHA_WITH_CUDA a CUDA tensor (or any non-CPU tensor) goes through
// FwhtTorchOps: the same factorization written as torch ops (O(n log n) work,
// log2(M) + 1 passes over memory) so results stay correct, only slower.
#include "kernels/fwht.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/hadamard_k.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_dtype.h"
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

bool IsPowerOfTwo(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// In-place unnormalized Sylvester FWHT of x[0, m), m = 2^k: for every bit h,
// (x[j], x[j+h]) <- (x[j] + x[j+h], x[j] - x[j+h]). Bits 1, 2, 4 run inside
// 8-element chunks; the others two at a time (radix 4) over 8-wide blocks,
// fixed-size loops that the compiler vectorizes at -O2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QWHA_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QWHA_CPU_CLONES
#endif

// (QWHA_CPU_CLONES: an AVX2 clone picked at run time on x86-64 with GCC.)
template <typename T>
QWHA_CPU_CLONES void SylvesterInPlace(T* x, int64_t m) {
  if (m < 8) {
    for (int64_t h = 1; h < m; h <<= 1)
      for (int64_t i = 0; i < m; i += 2 * h)
        for (int64_t j = i; j < i + h; ++j) {
          const T a = x[j], b = x[j + h];
          x[j] = a + b, x[j + h] = a - b;
        }
    return;
  }
  for (int64_t j = 0; j < m; j += 8) {
    T* v = x + j;
    const T a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3];
    const T a4 = v[4] + v[5], a5 = v[4] - v[5], a6 = v[6] + v[7], a7 = v[6] - v[7];
    const T b0 = a0 + a2, b1 = a1 + a3, b2 = a0 - a2, b3 = a1 - a3;
    const T b4 = a4 + a6, b5 = a5 + a7, b6 = a4 - a6, b7 = a5 - a7;
    v[0] = b0 + b4, v[1] = b1 + b5, v[2] = b2 + b6, v[3] = b3 + b7;
    v[4] = b0 - b4, v[5] = b1 - b5, v[6] = b2 - b6, v[7] = b3 - b7;
  }
  int64_t h = 8;
  for (; 4 * h <= m; h *= 4) {  // bits h and 2h together
    for (int64_t i = 0; i < m; i += 4 * h) {
      for (int64_t j = 0; j < h; j += 8) {
        T* __restrict__ p0 = x + i + j;
        T* __restrict__ p1 = p0 + h;
        T* __restrict__ p2 = p0 + 2 * h;
        T* __restrict__ p3 = p0 + 3 * h;
        for (int e = 0; e < 8; ++e) {
          const T a0 = p0[e] + p1[e], a1 = p0[e] - p1[e];
          const T a2 = p2[e] + p3[e], a3 = p2[e] - p3[e];
          p0[e] = a0 + a2, p1[e] = a1 + a3, p2[e] = a0 - a2, p3[e] = a1 - a3;
        }
      }
    }
  }
  if (h < m) {  // one bit left
    for (int64_t j = 0; j < h; j += 8) {
      T* __restrict__ lo = x + j;
      T* __restrict__ hi = lo + h;
      for (int e = 0; e < 8; ++e) {
        const T a = lo[e], b = hi[e];
        lo[e] = a + b, hi[e] = a - b;
      }
    }
  }
}

// One row of a power-of-two transform: out = scale * in · H_n, through a
// float32 (float64) buffer of n elements.
template <typename scalar_t, typename acc_t>
void FwhtRow(const scalar_t* in, scalar_t* out, int64_t n, acc_t scale, acc_t* buf) {
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(in[i]);
  SylvesterInPlace(buf, n);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(buf[i] * scale);
}

// The K x K mixing matrix A[c][a] = H_K[a][c] (H_K[c][a] when transposed).
torch::Tensor MixingMatrix(int64_t k, bool transpose, torch::ScalarType dtype) {
  torch::Tensor hk = torch::from_blob(const_cast<int8_t*>(FindHadamardK(static_cast<int>(k))),
                                      {k, k}, torch::kInt8)
                         .to(dtype);
  return transpose ? hk : hk.t().contiguous();
}

// y[c, j] = Σ_a A[c][a] x[a, j] for one row (x, y: [k, m], m % 16 == 0):
// 16 columns at a time in registers, A as index lists of its +1 and -1
// entries per c (adds and subtracts, no multiplies). AVX2 clone at run time.
template <typename acc_t>
QWHA_CPU_CLONES void MixRow(const acc_t* x, acc_t* y, int64_t k, int64_t m, const int32_t* plus,
                            const int32_t* plus_end, const int32_t* minus,
                            const int32_t* minus_end) {
  constexpr int kB = 16;
  for (int64_t j = 0; j < m; j += kB) {
    for (int64_t c = 0; c < k; ++c) {
      acc_t acc[kB] = {};
      for (int64_t t = plus_end[c] - (c ? plus_end[c - 1] : 0), q = c ? plus_end[c - 1] : 0; t > 0;
           --t, ++q) {
        const acc_t* src = x + plus[q] * m + j;
        for (int e = 0; e < kB; ++e) acc[e] += src[e];
      }
      for (int64_t t = minus_end[c] - (c ? minus_end[c - 1] : 0), q = c ? minus_end[c - 1] : 0;
           t > 0; --t, ++q) {
        const acc_t* src = x + minus[q] * m + j;
        for (int e = 0; e < kB; ++e) acc[e] -= src[e];
      }
      for (int e = 0; e < kB; ++e) y[c * m + j + e] = acc[e];
    }
  }
}

// CPU path. K = 1: rows in parallel, each through a float32 (float64) buffer.
// K > 1: the length-M Sylvester transform of every segment in parallel, then
// the K-mix per row (MixRow; no BLAS: Debian's LibTorch may link the
// reference BLAS).
torch::Tensor FwhtCpu(const torch::Tensor& x, double scale, bool transpose,
                      const HadamardFactors& f) {
  const int64_t n = x.size(-1);
  const int64_t rows = x.numel() / n;
  const auto acc = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  if (f.k > 1) {
    torch::Tensor segs = x.to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
    AT_DISPATCH_FLOATING_TYPES(acc, "FwhtCpuSegments", [&] {
      scalar_t* p = segs.data_ptr<scalar_t>();
      const int64_t m = f.pow2;
      at::parallel_for(0, rows * f.k, std::max<int64_t>(1, (int64_t{1} << 16) / m),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t s = begin; s < end; ++s) SylvesterInPlace(p + s * m, m);
                       });
    });
    if (f.pow2 % 16 != 0) {  // small M: the product through torch ops
      torch::Tensor xs = segs.view({rows, f.k, f.pow2});
      torch::Tensor y = torch::matmul(MixingMatrix(f.k, transpose, acc), xs).mul(scale);
      return y.to(x.scalar_type()).view(x.sizes());
    }
    // Index lists of A's +1 / -1 entries per output segment c.
    const int8_t* hk = FindHadamardK(static_cast<int>(f.k));
    std::vector<int32_t> plus, minus, plus_end(f.k), minus_end(f.k);
    for (int64_t c = 0; c < f.k; ++c) {
      for (int64_t a = 0; a < f.k; ++a) {
        const int8_t h = transpose ? hk[c * f.k + a] : hk[a * f.k + c];
        (h > 0 ? plus : minus).push_back(static_cast<int32_t>(a));
      }
      plus_end[c] = static_cast<int32_t>(plus.size());
      minus_end[c] = static_cast<int32_t>(minus.size());
    }
    torch::Tensor mixed = torch::empty_like(segs);
    AT_DISPATCH_FLOATING_TYPES(acc, "FwhtCpuMix", [&] {
      const scalar_t* src = segs.data_ptr<scalar_t>();
      scalar_t* dst = mixed.data_ptr<scalar_t>();
      at::parallel_for(0, rows, std::max<int64_t>(1, (int64_t{1} << 14) / n),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r) {
                           MixRow<scalar_t>(src + r * n, dst + r * n, f.k, f.pow2, plus.data(),
                                            plus_end.data(), minus.data(), minus_end.data());
                         }
                       });
    });
    return mixed.mul_(scale).to(x.scalar_type()).view(x.sizes());
  }
  torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty_like(in);
  if (rows == 0) return out;
  // ~64K elements per task keeps the scheduling overhead small.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / n);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "FwhtCpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(n);
      for (int64_t r = begin; r < end; ++r) {
        FwhtRow<scalar_t, acc_t>(src + r * n, dst + r * n, n, static_cast<acc_t>(scale),
                                 buf.data());
      }
    });
  });
  return out;
}

// Device-agnostic path from torch ops (see the file comment).
torch::Tensor FwhtTorchOps(const torch::Tensor& x, double scale, bool transpose,
                           const HadamardFactors& f) {
  const auto acc = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor y = x.to(acc).reshape({-1, f.k, f.pow2});
  const int64_t rows = y.size(0);
  for (int64_t h = 1; h < f.pow2; h <<= 1) {
    torch::Tensor v = y.reshape({rows, f.k, f.pow2 / (2 * h), 2, h});
    torch::Tensor lo = v.select(3, 0), hi = v.select(3, 1);
    y = torch::stack({lo + hi, lo - hi}, 3).reshape({rows, f.k, f.pow2});
  }
  if (f.k > 1) {
    // y[c, :] = Σ_a A[c][a] y[a, :].
    y = torch::matmul(MixingMatrix(f.k, transpose, acc).to(x.device()), y);
  }
  return (y * scale).reshape(x.sizes()).to(x.scalar_type());
}

#ifdef QWHA_WITH_CUDA
int Log2(int64_t n) {
  int log = 0;
  while ((int64_t{1} << log) < n) ++log;
  return log;
}

// x [m, n] as the FWHT kernels read it: rows with a stride, with vector
// accesses of min(16, lowbit(row bytes)) bytes; anything else is copied first
// (a fresh contiguous tensor always qualifies).
torch::Tensor KernelRows(const torch::Tensor& x) {
  const int64_t row_bytes = x.size(1) * x.element_size();
  const int64_t align = std::min<int64_t>(16, row_bytes & -row_bytes);
  const bool aligned = reinterpret_cast<uintptr_t>(x.data_ptr()) % align == 0 &&
                       (x.size(0) <= 1 || (x.stride(0) * x.element_size()) % align == 0);
  return x.stride(-1) != 1 || !aligned ? x.clone(at::MemoryFormat::Contiguous) : x;
}

torch::Tensor FwhtCuda(const torch::Tensor& x, double scale, bool transpose,
                       const HadamardFactors& f) {
  const int64_t n = x.size(-1);
  const torch::Tensor in = KernelRows(x.reshape({-1, n}));
  torch::Tensor out = torch::empty({in.size(0), n}, x.options());
  if (in.size(0) > 0) {
    const int64_t row_stride = in.size(0) > 1 ? in.stride(0) : n;
    const cudaError_t err = cuda::LaunchFwht(
        in.data_ptr(), row_stride, out.data_ptr(), in.size(0), static_cast<int>(f.k), Log2(f.pow2),
        ToCudaDType(x.scalar_type()), static_cast<float>(scale), transpose,
        at::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == cudaSuccess,
                "qwha::kernels::Fwht: CUDA launch failed: ", cudaGetErrorString(err));
  }
  return out.reshape(x.sizes());
}
#endif  // QWHA_WITH_CUDA

// Forward without autograd: picks the device path.
// Precondition: ValidateFwhtInput(x).ok().
torch::Tensor FwhtForward(const torch::Tensor& x, double scale, bool transpose) {
  const HadamardFactors f = *FactorHadamardSize(x.size(-1));
  if (x.is_cpu()) return FwhtCpu(x, scale, transpose, f);
#ifdef QWHA_WITH_CUDA
  if (x.is_cuda()) return FwhtCuda(x, scale, transpose, f);
#endif
  return FwhtTorchOps(x, scale, transpose, f);
}

// d(scale * x·H)/dx applied to g is scale * g·Hᵀ: the same op with the
// transpose flag flipped (calling Fwht keeps double backward available).
class FwhtFunction : public torch::autograd::Function<FwhtFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               double scale, bool transpose) {
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["transpose"] = transpose;
    return FwhtForward(x, scale, transpose);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool transpose = ctx->saved_data["transpose"].toBool();
    return {Fwht(grads[0], scale, !transpose), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

absl::StatusOr<HadamardFactors> FactorHadamardSize(int64_t n) {
  if (n <= 0 || n > kMaxFwhtSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("FWHT size n = ", n, " is outside [1, ", kMaxFwhtSize, "]"));
  }
  if (IsPowerOfTwo(n)) return HadamardFactors{1, n};
  // Largest K first: n = 40·2^m is also 20·2^(m+1); like QuaRot's get_hadK we
  // prefer K = 40 there. Every other n has at most one factorization.
  for (int i = static_cast<int>(std::size(kSupportedHadamardK)) - 1; i >= 0; --i) {
    const int64_t k = kSupportedHadamardK[i];
    if (n % k == 0 && IsPowerOfTwo(n / k)) return HadamardFactors{k, n / k};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("FWHT size n = ", n,
                   " is neither a power of two nor K * 2^m with K in "
                   "{12, 20, 28, 36, 40, 52, 60, 108, 140, 156, 172}"));
}

absl::Status ValidateFwhtInput(const torch::Tensor& x) {
  if (!x.defined()) return absl::InvalidArgumentError("FWHT input x is undefined");
  if (x.dim() < 1) return absl::InvalidArgumentError("FWHT input x must be at least 1-D, got 0-D");
  const absl::StatusOr<HadamardFactors> f = FactorHadamardSize(x.size(-1));
  if (!f.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("FWHT input x has an unsupported last dimension: ", f.status().message()));
  }
  if (!x.is_cpu() && !x.is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat("FWHT input x is on unsupported device ", x.device().str()));
  }
  const torch::ScalarType t = x.scalar_type();
  const bool ok_dtype = t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16 ||
                        (t == torch::kFloat64 && x.is_cpu());
  if (!ok_dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("FWHT input x has unsupported dtype ", c10::toString(t), " on ",
                     x.device().str(), " (float32, bfloat16, float16; float64 on CPU)"));
  }
  return absl::OkStatus();
}

torch::Tensor Fwht(const torch::Tensor& x, double scale, bool transpose) {
  const absl::Status valid = ValidateFwhtInput(x);
  TORCH_CHECK(valid.ok(), "qwha::kernels::Fwht: ", std::string(valid.message()));
  // Without a graph to record, skip the autograd node (serving calls this
  // per projection group and step).
  if (!torch::GradMode::is_enabled() || !x.requires_grad()) {
    return FwhtForward(x, scale, transpose);
  }
  return FwhtFunction::apply(x, scale, transpose);
}

torch::Tensor ChunkRows(const torch::Tensor& z, const torch::Tensor& z_rows) {
  TORCH_CHECK(z.dim() == 2, "qwha::kernels::ChunkRows: z must be [m, n], got ", z.sizes());
  TORCH_CHECK(z_rows.defined() && z_rows.dim() == 1 && z_rows.size(0) % 4 == 0 &&
                  z_rows.scalar_type() == torch::kInt32 && z_rows.device() == z.device(),
              "qwha::kernels::ChunkRows: z_rows must be int32 [4 * chunks] on ", z.device());
  const int64_t chunks = z_rows.size(0) / 4;
  const torch::Tensor rows = z_rows.to(torch::kInt64);
  const torch::Tensor valid = rows.ge(0);
  torch::Tensor picked = z.index_select(0, rows.clamp_min(0));  // [4C, n]
  picked = picked.masked_fill(valid.logical_not().unsqueeze(1), 0);
  return picked.view({chunks, 4, z.size(1)}).transpose(1, 2).contiguous();
}

torch::Tensor CopyRowsFwht(const torch::Tensor& x, const torch::Tensor& rows, torch::Tensor& out,
                           double scale, bool transpose, const torch::Tensor& z_rows) {
  TORCH_CHECK(x.dim() == 2 && out.dim() == 2 && x.size(1) == out.size(1) &&
                  x.scalar_type() == out.scalar_type() && x.device() == out.device(),
              "qwha::kernels::CopyRowsFwht: x [m, n] and out [rows, n] of one dtype and device, "
              "got ",
              x.sizes(), " and ", out.sizes());
  TORCH_CHECK(rows.defined()
                  ? rows.dim() == 1 && rows.size(0) == x.size(0) &&
                        rows.scalar_type() == torch::kInt64 && rows.device() == x.device()
                  : x.size(0) <= out.size(0),
              "qwha::kernels::CopyRowsFwht: rows must be int64 [", x.size(0), "] on ", x.device(),
              " (or undefined, with at most ", out.size(0), " rows in x)");
  TORCH_CHECK(
      !z_rows.defined() || (!rows.defined() && z_rows.dim() == 1 && z_rows.size(0) % 4 == 0 &&
                            z_rows.scalar_type() == torch::kInt32 && z_rows.device() == x.device()),
      "qwha::kernels::CopyRowsFwht: z_rows must be int32 [4 * chunks] on ", x.device(),
      ", with rows undefined");
  torch::NoGradGuard no_grad;
#ifdef QWHA_WITH_CUDA
  if (x.is_cuda() && out.is_contiguous()) {
    const torch::Tensor xc = x.contiguous();
    const int64_t n = x.size(1);
    const cuda::DType dtype = ToCudaDType(x.scalar_type());
    if (cuda::RmsNormFwhtFused(n, dtype, xc.data_ptr(), nullptr, out.data_ptr(), nullptr)) {
      // A power of two: H is symmetric, transpose changes nothing.
      const cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index()).stream();
      cudaError_t err;
      torch::Tensor z;
      if (z_rows.defined()) {
        const int64_t chunks = z_rows.size(0) / 4;
        z = torch::empty({chunks, n, 4}, out.options());
        err =
            cuda::LaunchNormFwhtChunks(xc.data_ptr(), nullptr, out.data_ptr(), z.data_ptr(),
                                       z_rows.contiguous().data_ptr<int32_t>(), chunks, xc.size(0),
                                       n, 0.f, static_cast<float>(scale), dtype, stream);
      } else {
        z = torch::empty_like(out);
        const torch::Tensor r = rows.defined() ? rows.contiguous() : rows;
        err = cuda::LaunchCopyFwht(xc.data_ptr(), r.defined() ? r.data_ptr<int64_t>() : nullptr,
                                   out.data_ptr(), z.data_ptr(), xc.size(0), n,
                                   static_cast<float>(scale), dtype, stream);
      }
      TORCH_CHECK(err == cudaSuccess,
                  "qwha::kernels::CopyRowsFwht: CUDA launch failed: ", cudaGetErrorString(err));
      return z;
    }
  }
#endif
  if (rows.defined()) {
    out.index_copy_(0, rows, x);
  } else {
    out.narrow(0, 0, x.size(0)).copy_(x);
  }
  torch::Tensor z = Fwht(out, scale, transpose);
  return z_rows.defined() ? ChunkRows(z, z_rows) : z;
}

bool FusedFwhtChunks(int64_t n, torch::ScalarType dtype, const torch::Device& device) {
#ifdef QWHA_WITH_CUDA
  const absl::StatusOr<HadamardFactors> f = FactorHadamardSize(n);
  return device.is_cuda() && f.ok() && (dtype == torch::kBFloat16 || dtype == torch::kFloat16) &&
         cuda::FwhtChunksSupported(static_cast<int>(f->k), Log2(f->pow2), ToCudaDType(dtype));
#else
  (void)n, (void)dtype, (void)device;
  return false;
#endif
}

torch::Tensor FwhtChunks(const torch::Tensor& x, const torch::Tensor& z_rows, double scale,
                         bool transpose) {
  TORCH_CHECK(x.dim() == 2, "qwha::kernels::FwhtChunks: x must be [m, n], got ", x.sizes());
  TORCH_CHECK(z_rows.defined() && z_rows.dim() == 1 && z_rows.size(0) % 4 == 0 &&
                  z_rows.scalar_type() == torch::kInt32 && z_rows.device() == x.device(),
              "qwha::kernels::FwhtChunks: z_rows must be int32 [4 * chunks] on ", x.device());
  const absl::Status valid = ValidateFwhtInput(x);
  TORCH_CHECK(valid.ok(), "qwha::kernels::FwhtChunks: ", valid.message());
  torch::NoGradGuard no_grad;
#ifdef QWHA_WITH_CUDA
  if (FusedFwhtChunks(x.size(1), x.scalar_type(), x.device())) {
    const HadamardFactors f = *FactorHadamardSize(x.size(1));
    const int64_t n = x.size(1);
    // (Fused sizes have rows of a multiple of 32 bytes: 16-byte accesses.)
    const torch::Tensor in = KernelRows(x);
    const torch::Tensor rows = z_rows.contiguous();
    const int64_t chunks = rows.size(0) / 4;
    torch::Tensor z = torch::empty({chunks, n, 4}, x.options());
    const cudaError_t err = cuda::LaunchFwhtChunks(
        in.data_ptr(), in.size(0) > 1 ? in.stride(0) : n, z.data_ptr(), rows.data_ptr<int32_t>(),
        chunks, static_cast<int>(f.k), Log2(f.pow2), ToCudaDType(x.scalar_type()),
        static_cast<float>(scale), transpose,
        at::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == cudaSuccess,
                "qwha::kernels::FwhtChunks: CUDA launch failed: ", cudaGetErrorString(err));
    return z;
  }
#endif
  return ChunkRows(Fwht(x, scale, transpose), z_rows);
}

absl::StatusOr<torch::Tensor> FwhtChecked(const torch::Tensor& x, double scale, bool transpose) {
  if (absl::Status s = ValidateFwhtInput(x); !s.ok()) return s;
  try {
    return Fwht(x, scale, transpose);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("FWHT failed: ", e.what()));
  }
}

torch::Tensor HadamardMatrix(int64_t n, torch::ScalarType dtype) {
  const absl::StatusOr<HadamardFactors> f = FactorHadamardSize(n);
  TORCH_CHECK(f.ok(), "qwha::kernels::HadamardMatrix: ", std::string(f.status().message()));
  // Sylvester: H_M[i, j] = (-1)^popcount(i & j).
  const int64_t m = f->pow2;
  torch::Tensor hm = torch::empty({m, m}, torch::kFloat64);
  double* p = hm.data_ptr<double>();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < m; ++j) p[i * m + j] = (__builtin_popcountll(i & j) & 1) ? -1.0 : 1.0;
  }
  if (f->k == 1) return hm.to(dtype);
  torch::Tensor hk = torch::from_blob(const_cast<int8_t*>(FindHadamardK(static_cast<int>(f->k))),
                                      {f->k, f->k}, torch::kInt8)
                         .to(torch::kFloat64);
  return torch::kron(hk, hm).to(dtype);
}

}  // namespace qwha::kernels
