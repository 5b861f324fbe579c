// RMSNorm: argument checks, the ATen path, the CUDA dispatch and the autograd
// function (the backward is RmsNormBackward; weight gets no gradient).
#include "kernels/rms_norm.h"

#include "kernels/fwht.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_dtype.h"
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

torch::ScalarType Accumulation(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

void CheckArgs(const torch::Tensor& x, const torch::Tensor& weight, const char* op) {
  TORCH_CHECK(x.defined() && x.dim() >= 1 && x.is_floating_point(), "qwha::kernels::", op,
              ": x must be a float tensor [..., H]");
  TORCH_CHECK(weight.defined() && weight.dim() == 1 && weight.size(0) == x.size(-1) &&
                  weight.scalar_type() == x.scalar_type() && weight.device() == x.device(),
              "qwha::kernels::", op, ": weight must be [", x.size(-1), "] of x's dtype and device");
}

#ifdef QWHA_WITH_CUDA
bool UseCuda(const torch::Tensor& x) {
  const torch::ScalarType t = x.scalar_type();
  return x.is_cuda() && (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16);
}

void CheckCuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "qwha::kernels::", op,
              ": CUDA launch failed: ", cudaGetErrorString(err));
}
#endif

torch::Tensor ForwardImpl(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  CheckArgs(x, weight, "RmsNorm");
#ifdef QWHA_WITH_CUDA
  if (UseCuda(x)) {
    const torch::Tensor xc = x.contiguous(), wc = weight.contiguous();
    torch::Tensor y = torch::empty_like(xc);
    const int64_t hidden = x.size(-1);
    CheckCuda(
        cuda::LaunchRmsNormForward(xc.data_ptr(), wc.data_ptr(), y.data_ptr(), xc.numel() / hidden,
                                   hidden, static_cast<float>(eps), ToCudaDType(x.scalar_type()),
                                   at::cuda::getCurrentCUDAStream(x.device().index()).stream()),
        "RmsNorm");
    return y;
  }
#endif
  const torch::Tensor h = x.to(Accumulation(x.scalar_type()));
  const torch::Tensor r = torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * (h * r).to(x.scalar_type());
}

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps) {
    ctx->save_for_backward({x, weight});
    ctx->saved_data["eps"] = eps;
    return ForwardImpl(x, weight, eps);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {RmsNormBackward(grads[0], saved[0], saved[1], ctx->saved_data["eps"].toDouble()),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return RmsNormFunction::apply(x, weight, eps);
}

torch::Tensor RmsNormBackward(const torch::Tensor& dy, const torch::Tensor& x,
                              const torch::Tensor& weight, double eps) {
  CheckArgs(x, weight, "RmsNormBackward");
  TORCH_CHECK(dy.defined() && dy.sizes() == x.sizes() && dy.device() == x.device(),
              "qwha::kernels::RmsNormBackward: dy must have x's shape and device");
  torch::NoGradGuard no_grad;
  const torch::Tensor g = dy.to(x.scalar_type());
#ifdef QWHA_WITH_CUDA
  if (UseCuda(x)) {
    const torch::Tensor xc = x.contiguous(), wc = weight.contiguous(), gc = g.contiguous();
    torch::Tensor dx = torch::empty_like(xc);
    const int64_t hidden = x.size(-1);
    CheckCuda(cuda::LaunchRmsNormBackward(
                  gc.data_ptr(), xc.data_ptr(), wc.data_ptr(), dx.data_ptr(), xc.numel() / hidden,
                  hidden, static_cast<float>(eps), ToCudaDType(x.scalar_type()),
                  at::cuda::getCurrentCUDAStream(x.device().index()).stream()),
              "RmsNormBackward");
    return dx;
  }
#endif
  const torch::ScalarType acc = Accumulation(x.scalar_type());
  const torch::Tensor h = x.to(acc);
  const torch::Tensor gw = (g * weight).to(acc);  // rounded to x's dtype first, as autograd does
  const torch::Tensor r = torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  const torch::Tensor c = r * r * (gw * h).mean(-1, /*keepdim=*/true);
  return (r * (gw - h * c)).to(x.scalar_type());
}

bool FusedNormFwht(int64_t hidden, torch::ScalarType dtype, const torch::Device& device) {
#ifdef QWHA_WITH_CUDA
  return device.is_cuda() &&
         cuda::RmsNormFwhtFused(hidden, ToCudaDType(dtype), nullptr, nullptr, nullptr, nullptr);
#else
  (void)hidden, (void)dtype, (void)device;
  return false;
#endif
}

std::pair<torch::Tensor, torch::Tensor> RmsNormFwht(const torch::Tensor& x,
                                                    const torch::Tensor& weight, double eps,
                                                    double scale, bool transpose,
                                                    const torch::Tensor& z_rows) {
  CheckArgs(x, weight, "RmsNormFwht");
  TORCH_CHECK(
      !z_rows.defined() || (x.dim() == 2 && z_rows.dim() == 1 && z_rows.size(0) % 4 == 0 &&
                            z_rows.scalar_type() == torch::kInt32 && z_rows.device() == x.device()),
      "qwha::kernels::RmsNormFwht: z_rows must be int32 [4 * chunks] on ", x.device(),
      ", with x 2-D");
  torch::NoGradGuard no_grad;
#ifdef QWHA_WITH_CUDA
  if (UseCuda(x)) {
    const torch::Tensor xc = x.contiguous(), wc = weight.contiguous();
    const int64_t hidden = x.size(-1);
    const cuda::DType dtype = ToCudaDType(x.scalar_type());
    // (Fresh outputs are aligned: the launch checks them too.)
    if (cuda::RmsNormFwhtFused(hidden, dtype, xc.data_ptr(), wc.data_ptr(), nullptr, nullptr)) {
      const cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index()).stream();
      torch::Tensor y = torch::empty_like(xc), z;
      if (z_rows.defined()) {
        const int64_t chunks = z_rows.size(0) / 4;
        z = torch::empty({chunks, hidden, 4}, xc.options());
        CheckCuda(cuda::LaunchNormFwhtChunks(xc.data_ptr(), wc.data_ptr(), y.data_ptr(),
                                             z.data_ptr(), z_rows.contiguous().data_ptr<int32_t>(),
                                             chunks, xc.size(0), hidden, static_cast<float>(eps),
                                             static_cast<float>(scale), dtype, stream),
                  "RmsNormFwht");
      } else {
        z = torch::empty_like(xc);
        CheckCuda(cuda::LaunchRmsNormFwht(xc.data_ptr(), wc.data_ptr(), y.data_ptr(), z.data_ptr(),
                                          xc.numel() / hidden, hidden, static_cast<float>(eps),
                                          static_cast<float>(scale), dtype, stream),
                  "RmsNormFwht");
      }
      return {y, z};
    }
  }
#endif
  torch::Tensor y = ForwardImpl(x, weight, eps);
  torch::Tensor z = Fwht(y, scale, transpose);
  if (z_rows.defined()) z = ChunkRows(z, z_rows);
  return {std::move(y), std::move(z)};
}

}  // namespace qwha::kernels
