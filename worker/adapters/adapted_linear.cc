#include "worker/adapters/adapted_linear.h"

#include "kernels/dequant.h"

namespace qwha::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd function for the merged path. Forward forms W_eff = deq(Q) + ΔW in
// one dequantization pass (in `dtype`) and keeps it for backward when x needs
// a gradient: W_eff is no larger than ΔW (half of it for a float32 ΔW) and
// saves backward a second dequantization pass. ΔW itself is not kept: dΔW =
// dyᵀ x does not need it.
struct MergedLinearFunction : public torch::autograd::Function<MergedLinearFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& delta, const torch::Tensor& packed,
                               const torch::Tensor& scales, const torch::Tensor& zeros,
                               int64_t bits, int64_t group_size, int64_t cols, int64_t dtype) {
    const auto st = static_cast<torch::ScalarType>(dtype);
    torch::Tensor w = kernels::Dequantize(packed, scales, zeros, static_cast<int>(bits),
                                          static_cast<int>(group_size), cols, st, delta.detach());
    torch::Tensor xc = x.to(st);
    ctx->save_for_backward({xc, x.requires_grad() ? w : torch::Tensor()});
    ctx->saved_data["dtype"] = dtype;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["delta_dtype"] = static_cast<int64_t>(delta.scalar_type());
    return torch::matmul(xc, w.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& xc = saved[0];
    const torch::Tensor& w = saved[1];
    const auto st = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    torch::Tensor gy = grad_outputs[0].to(st);
    torch::Tensor grad_x, grad_delta;
    if (ctx->needs_input_grad(0)) {
      grad_x = torch::matmul(gy, w).to(
          static_cast<torch::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    }
    if (ctx->needs_input_grad(1)) {
      const int64_t out = gy.size(-1);
      const int64_t in = xc.size(-1);
      // dΔW = dyᵀ x in the compute dtype (float32 accumulation in the GEMM).
      grad_delta = torch::matmul(gy.reshape({-1, out}).t(), xc.reshape({-1, in}))
                       .to(static_cast<torch::ScalarType>(ctx->saved_data["delta_dtype"].toInt()));
    }
    return {grad_x,          grad_delta,      torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor MergedLinear(const torch::Tensor& x, const quant::QuantizedWeight& base,
                           const torch::Tensor& delta, torch::ScalarType dtype) {
  TORCH_CHECK(x.size(-1) == base.cols, "MergedLinear: x has ", x.size(-1),
              " features, the base expects ", base.cols);
  if (!delta.defined()) {
    // Frozen base: plain autograd (the dequantized weight is a constant).
    torch::Tensor w = kernels::Dequantize(base.packed, base.scales, base.zeros, base.bits,
                                          base.group_size, base.cols, dtype);
    return torch::matmul(x.to(dtype), w.t());
  }
  TORCH_CHECK(delta.dim() == 2 && delta.size(0) == base.rows && delta.size(1) == base.cols,
              "MergedLinear: delta must be [", base.rows, ", ", base.cols, "], got ",
              delta.sizes());
  return MergedLinearFunction::apply(x, delta, base.packed, base.scales, base.zeros, base.bits,
                                     base.group_size, base.cols, static_cast<int64_t>(dtype));
}

torch::Tensor UnmergedLinear(const torch::Tensor& x, const quant::QuantizedWeight& base,
                             const Adapter* adapter, torch::ScalarType dtype) {
  torch::Tensor y = MergedLinear(x, base, torch::Tensor(), dtype);
  if (adapter != nullptr) y = y + adapter->Forward(x.to(dtype)).to(dtype);
  return y;
}

}  // namespace qwha::adapters
