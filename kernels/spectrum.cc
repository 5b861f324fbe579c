// Spectrum scatter/gather: CPU loops, CUDA launchers, and the autograd pair.
// Scatter and Gather are adjoint linear maps (spectrum.h), so each one's
// backward is the other applied to the incoming gradient.
//
// Without QWHA_WITH_CUDA, tensors on other devices use index_put_/index
// (torch ops; correct on any device).
#include "kernels/spectrum.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_dtype.h"
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

#ifdef QWHA_WITH_CUDA

void CheckCuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "qwha::kernels::", op,
              ": CUDA launch failed: ", cudaGetErrorString(err));
}
#endif  // QWHA_WITH_CUDA

// dense (flat, zero) [idx[t]] = values[t].
torch::Tensor ScatterImpl(const torch::Tensor& values, const torch::Tensor& flat_index,
                          int64_t rows, int64_t n) {
  TORCH_CHECK(values.dim() == 1 && flat_index.dim() == 1 && values.size(0) == flat_index.size(0) &&
                  flat_index.scalar_type() == torch::kInt64 &&
                  values.device() == flat_index.device(),
              "qwha::kernels::SpectrumScatter: values and flat_index must be 1-D of equal length "
              "on one device, flat_index int64");
  torch::Tensor v = values.contiguous();
  torch::Tensor idx = flat_index.contiguous();
  torch::Tensor dense = torch::zeros({rows * n}, v.options());
  const int64_t count = v.size(0);
  if (v.is_cpu()) {
    const int64_t* ip = idx.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "ScatterCpu", [&] {
      const scalar_t* src = v.data_ptr<scalar_t>();
      scalar_t* dst = dense.data_ptr<scalar_t>();
      at::parallel_for(0, count, 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) dst[ip[t]] = src[t];
      });
    });
#ifdef QWHA_WITH_CUDA
  } else if (v.is_cuda()) {
    if (count > 0) {
      CheckCuda(
          cuda::LaunchSpectrumScatter(v.data_ptr(), idx.data_ptr<int64_t>(), count,
                                      dense.data_ptr(), ToCudaDType(v.scalar_type()),
                                      at::cuda::getCurrentCUDAStream(v.device().index()).stream()),
          "SpectrumScatter");
    }
#endif
  } else {
    dense.index_put_({idx}, v);
  }
  return dense.view({rows, n});
}

// values[t] = dense.flat[idx[t]].
torch::Tensor GatherImpl(const torch::Tensor& dense, const torch::Tensor& flat_index) {
  TORCH_CHECK(flat_index.dim() == 1 && flat_index.scalar_type() == torch::kInt64 &&
                  dense.device() == flat_index.device(),
              "qwha::kernels::SpectrumGather: flat_index must be 1-D int64 on dense's device");
  torch::Tensor d = dense.contiguous();
  torch::Tensor idx = flat_index.contiguous();
  const int64_t count = idx.size(0);
  torch::Tensor values = torch::empty({count}, d.options());
  if (d.is_cpu()) {
    const int64_t* ip = idx.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "GatherCpu", [&] {
      const scalar_t* src = d.data_ptr<scalar_t>();
      scalar_t* dst = values.data_ptr<scalar_t>();
      at::parallel_for(0, count, 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) dst[t] = src[ip[t]];
      });
    });
#ifdef QWHA_WITH_CUDA
  } else if (d.is_cuda()) {
    if (count > 0) {
      CheckCuda(
          cuda::LaunchSpectrumGather(d.data_ptr(), idx.data_ptr<int64_t>(), count,
                                     values.data_ptr(), ToCudaDType(d.scalar_type()),
                                     at::cuda::getCurrentCUDAStream(d.device().index()).stream()),
          "SpectrumGather");
    }
#endif
  } else {
    values = d.reshape({-1}).index({idx});
  }
  return values;
}

class ScatterFunction : public torch::autograd::Function<ScatterFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& values,
                               const torch::Tensor& flat_index, int64_t rows, int64_t n) {
    ctx->save_for_backward({flat_index});
    return ScatterImpl(values, flat_index, rows, n);
  }

  // d<Scatter(v), G>/dv = Gather(G).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor idx = ctx->get_saved_variables()[0];
    return {SpectrumGather(grads[0], idx), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class GatherFunction : public torch::autograd::Function<GatherFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& dense,
                               const torch::Tensor& flat_index) {
    ctx->save_for_backward({flat_index});
    ctx->saved_data["sizes"] = dense.sizes().vec();
    return GatherImpl(dense, flat_index);
  }

  // d<Gather(D), g>/dD = Scatter(g) in D's shape.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor idx = ctx->get_saved_variables()[0];
    const std::vector<int64_t> sizes = ctx->saved_data["sizes"].toIntVector();
    int64_t numel = 1;
    for (int64_t s : sizes) numel *= s;
    torch::Tensor g = SpectrumScatter(grads[0], idx, 1, numel).view(sizes);
    return {g, torch::Tensor()};
  }
};

}  // namespace

absl::Status ValidateSpectrumIndex(const torch::Tensor& values, const torch::Tensor& flat_index,
                                   int64_t rows, int64_t n) {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  if (rows < 0 || n < 0) {
    return InvalidArgumentError(StrCat("rows = ", rows, " and n = ", n, " must be non-negative"));
  }
  if (!values.defined()) return InvalidArgumentError("values is undefined");
  if (!flat_index.defined()) return InvalidArgumentError("flat_index is undefined");
  if (values.dim() != 1 || !c10::isFloatingType(values.scalar_type())) {
    return InvalidArgumentError(StrCat("values must be a 1-D float tensor, got ",
                                       c10::toString(values.scalar_type()), " with ", values.dim(),
                                       " dims"));
  }
  if (flat_index.dim() != 1 || flat_index.scalar_type() != torch::kInt64) {
    return InvalidArgumentError(StrCat("flat_index must be a 1-D int64 tensor, got ",
                                       c10::toString(flat_index.scalar_type()), " with ",
                                       flat_index.dim(), " dims"));
  }
  if (values.size(0) != flat_index.size(0)) {
    return InvalidArgumentError(
        StrCat("values has ", values.size(0), " entries but flat_index has ", flat_index.size(0)));
  }
  if (values.device() != flat_index.device()) {
    return InvalidArgumentError(StrCat("values is on device ", values.device().str(),
                                       " but flat_index is on device ", flat_index.device().str()));
  }
  if (flat_index.numel() > 0) {
    const int64_t lo = flat_index.min().item<int64_t>();
    const int64_t hi = flat_index.max().item<int64_t>();
    if (lo < 0 || hi >= rows * n) {
      return InvalidArgumentError(StrCat("flat_index values span [", lo, ", ", hi,
                                         "], outside [0, rows * n = ", rows * n, ")"));
    }
  }
  return absl::OkStatus();
}

torch::Tensor SpectrumScatter(const torch::Tensor& values, const torch::Tensor& flat_index,
                              int64_t rows, int64_t n) {
  return ScatterFunction::apply(values, flat_index, rows, n);
}

torch::Tensor SpectrumGather(const torch::Tensor& dense, const torch::Tensor& flat_index) {
  return GatherFunction::apply(dense, flat_index);
}

}  // namespace qwha::kernels
