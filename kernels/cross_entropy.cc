// Softmax cross-entropy: argument checks, the ATen path, the CUDA dispatch.
#include "kernels/cross_entropy.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_dtype.h"
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

// The same function from ATen ops (any device, any float dtype).
torch::Tensor SoftmaxCrossEntropyAten(const torch::Tensor& logits, const torch::Tensor& y,
                                      std::optional<double> grad_scale) {
  const torch::ScalarType acc =
      logits.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor x = logits.to(acc);  // aliases logits when it already has the dtype
  const torch::Tensor lse = x.logsumexp(1, /*keepdim=*/true);
  torch::Tensor loss = (lse - x.gather(1, y)).squeeze(1);
  if (grad_scale.has_value()) {
    x.sub_(lse).exp_().mul_(*grad_scale);
    x.scatter_add_(1, y, torch::full({x.size(0), 1}, -*grad_scale, x.options()));
    if (!x.is_same(logits)) logits.copy_(x);
  }
  return loss;
}

}  // namespace

torch::Tensor SoftmaxCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                  std::optional<double> grad_scale) {
  TORCH_CHECK(
      logits.defined() && logits.dim() == 2 && logits.is_floating_point() && logits.is_contiguous(),
      "qwha::kernels::SoftmaxCrossEntropy: logits must be contiguous float [n, V]");
  TORCH_CHECK(targets.defined() && targets.dim() == 1 && targets.scalar_type() == torch::kInt64 &&
                  targets.size(0) == logits.size(0) && targets.device() == logits.device(),
              "qwha::kernels::SoftmaxCrossEntropy: targets must be int64 [", logits.size(0),
              "] on the logits' device");
  TORCH_CHECK(logits.size(1) > 0, "qwha::kernels::SoftmaxCrossEntropy: V must be positive");
  const torch::Tensor y = targets.contiguous().unsqueeze(1);
#ifdef QWHA_WITH_CUDA
  const torch::ScalarType t = logits.scalar_type();
  if (logits.is_cuda() && (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16)) {
    torch::Tensor loss = torch::empty({logits.size(0)}, logits.options().dtype(torch::kFloat32));
    const cudaError_t err = cuda::LaunchSoftmaxCrossEntropy(
        logits.data_ptr(), y.data_ptr<int64_t>(), logits.size(0), logits.size(1), ToCudaDType(t),
        loss.data_ptr<float>(), static_cast<float>(grad_scale.value_or(0.0)),
        grad_scale.has_value(), at::cuda::getCurrentCUDAStream(logits.device().index()).stream());
    TORCH_CHECK(err == cudaSuccess, "qwha::kernels::SoftmaxCrossEntropy: CUDA launch failed: ",
                cudaGetErrorString(err));
    return loss;
  }
#endif
  return SoftmaxCrossEntropyAten(logits, y, grad_scale);
}

}  // namespace qwha::kernels
