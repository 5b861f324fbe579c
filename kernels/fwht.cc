// FWHT: validation, the CPU implementation, a torch-ops fallback for other
// devices, autograd, and dispatch to the CUDA launchers (cuda_launchers.h).
//
// Transform (fwht.h): y = scale * x · H with H = H_K ⊗ H_M, M = 2^m. Viewing a
// row as [K, M] (i = a*M + b):
//   y[c, d] = scale * Σ_a H_K[a, c] Σ_b x[a, b] H_M[b, d]
// i.e. a Sylvester FWHT of every length-M segment, then the K x K mix across
// segments (H_K[c, a] in transpose mode; H_M is symmetric).
//
// Without QWHA_WITH_CUDA a CUDA tensor (or any non-CPU tensor) goes through
// FwhtTorchOps: the same factorization written as torch ops (O(n log n) work,
// log2(M) + 1 passes over memory) so results stay correct, only slower.
#include "kernels/fwht.h"

#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "kernels/hadamard_k.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

bool IsPowerOfTwo(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// In-place unnormalized Sylvester FWHT of x[0, m), m = 2^k: for every bit h,
// (x[j], x[j+h]) <- (x[j] + x[j+h], x[j] - x[j+h]). The first two stages are
// fused (radix 4) and the rest run over contiguous spans so they vectorize.
template <typename T>
void SylvesterInPlace(T* x, int64_t m) {
  int64_t h = 1;
  if (m >= 4) {
    for (int64_t j = 0; j < m; j += 4) {
      const T a = x[j], b = x[j + 1], c = x[j + 2], d = x[j + 3];
      const T s0 = a + b, s1 = a - b, s2 = c + d, s3 = c - d;
      x[j] = s0 + s2;
      x[j + 1] = s1 + s3;
      x[j + 2] = s0 - s2;
      x[j + 3] = s1 - s3;
    }
    h = 4;
  }
  for (; h < m; h <<= 1) {
    for (int64_t i = 0; i < m; i += 2 * h) {
      T* lo = x + i;
      T* hi = x + i + h;
      for (int64_t j = 0; j < h; ++j) {
        const T a = lo[j], b = hi[j];
        lo[j] = a + b;
        hi[j] = a - b;
      }
    }
  }
}

// One row: out = scale * in · (H_K ⊗ H_M), accumulating in acc_t. `buf` and
// `mix` are caller-provided scratch of n (resp. n when k > 1) elements.
template <typename scalar_t, typename acc_t>
void FwhtRow(const scalar_t* in, scalar_t* out, int64_t k, int64_t m, const int8_t* hk,
             bool transpose, acc_t scale, acc_t* buf, acc_t* mix) {
  const int64_t n = k * m;
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(in[i]);
  for (int64_t a = 0; a < k; ++a) SylvesterInPlace(buf + a * m, m);
  if (k == 1) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(buf[i] * scale);
    return;
  }
  // mix[c, :] = Σ_a H_K[a, c] buf[a, :]   (H_K[c, a] when transposed).
  std::fill(mix, mix + n, acc_t(0));
  for (int64_t c = 0; c < k; ++c) {
    acc_t* dst = mix + c * m;
    for (int64_t a = 0; a < k; ++a) {
      const int8_t h = transpose ? hk[c * k + a] : hk[a * k + c];
      const acc_t* src = buf + a * m;
      if (h > 0) {
        for (int64_t j = 0; j < m; ++j) dst[j] += src[j];
      } else {
        for (int64_t j = 0; j < m; ++j) dst[j] -= src[j];
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(mix[i] * scale);
}

// CPU path: rows of x (contiguous [rows, n]) in parallel.
torch::Tensor FwhtCpu(const torch::Tensor& x, double scale, bool transpose,
                      const HadamardFactors& f) {
  const int64_t n = x.size(-1);
  torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty_like(in);
  const int64_t rows = n == 0 ? 0 : in.numel() / n;
  if (rows == 0) return out;
  const int8_t* hk = f.k > 1 ? FindHadamardK(static_cast<int>(f.k)) : nullptr;
  // ~64K elements per task keeps the scheduling overhead small.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / n);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "FwhtCpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(n), mix(f.k > 1 ? n : 0);
      for (int64_t r = begin; r < end; ++r) {
        FwhtRow<scalar_t, acc_t>(src + r * n, dst + r * n, f.k, f.pow2, hk, transpose,
                                 static_cast<acc_t>(scale), buf.data(), mix.data());
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
    torch::Tensor hk = torch::from_blob(const_cast<int8_t*>(FindHadamardK(static_cast<int>(f.k))),
                                        {f.k, f.k}, torch::kInt8)
                           .to(x.device(), acc);
    // y[c, :] = Σ_a H_K[a, c] y[a, :]  ->  y = H_Kᵀ y  (H_K y when transposed).
    y = torch::matmul(transpose ? hk : hk.t(), y);
  }
  return (y * scale).reshape(x.sizes()).to(x.scalar_type());
}

#ifdef QWHA_WITH_CUDA
int Log2(int64_t n) {
  int log = 0;
  while ((int64_t{1} << log) < n) ++log;
  return log;
}

cuda::DType ToCudaDType(torch::ScalarType t) {
  switch (t) {
    case torch::kBFloat16:
      return cuda::DType::kBFloat16;
    case torch::kFloat16:
      return cuda::DType::kFloat16;
    default:
      return cuda::DType::kFloat32;
  }
}

torch::Tensor FwhtCuda(const torch::Tensor& x, double scale, bool transpose,
                       const HadamardFactors& f) {
  const int64_t n = x.size(-1);
  torch::Tensor in = x.reshape({-1, n});
  // The kernel reads rows with a stride but needs unit element stride and
  // 16-byte aligned rows; anything else is copied first.
  const int64_t elem = in.element_size();
  const bool aligned = reinterpret_cast<uintptr_t>(in.data_ptr()) % 16 == 0 &&
                       (in.size(0) <= 1 || (in.stride(0) * elem) % 16 == 0);
  if (in.stride(-1) != 1 || !aligned) in = in.clone(at::MemoryFormat::Contiguous);
  if (reinterpret_cast<uintptr_t>(in.data_ptr()) % 16 != 0) {
    in = torch::empty_like(in).copy_(in);
  }
  torch::Tensor out = torch::empty({in.size(0), n}, x.options());
  if (in.size(0) > 0) {
    const int64_t row_stride = in.size(0) > 1 ? in.stride(0) : n;
    const cudaError_t err = cuda::LaunchFwht(
        in.data_ptr(), row_stride, out.data_ptr(), in.size(0), static_cast<int>(f.k), Log2(f.pow2),
        ToCudaDType(x.scalar_type()), static_cast<float>(scale), transpose,
        at::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == cudaSuccess, "qwha::kernels::Fwht: CUDA launch failed: ",
                cudaGetErrorString(err));
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
  return FwhtFunction::apply(x, scale, transpose);
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
