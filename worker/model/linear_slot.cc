#include "worker/model/linear_slot.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/adapters/adapted_linear.h"

namespace qwha::model {

LinearSlot::LinearSlot(std::string name, int64_t in_features, int64_t out_features,
                       torch::Device device, torch::ScalarType dtype)
    : name_(std::move(name)),
      in_features_(in_features),
      out_features_(out_features),
      device_(device),
      dtype_(dtype) {}

absl::Status LinearSlot::SetDenseWeight(const torch::Tensor& weight) {
  if (!weight.defined() || weight.dim() != 2 || weight.size(0) != out_features_ ||
      weight.size(1) != in_features_) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": dense weight must be [", out_features_, ", ", in_features_,
                     "], got ", weight.defined() ? c10::str(weight.sizes()) : "undefined"));
  }
  weight_ = weight.detach().to(device_, dtype_).contiguous();
  quantized_.reset();
  return absl::OkStatus();
}

absl::Status LinearSlot::SetBias(const torch::Tensor& bias) {
  if (!bias.defined()) {
    bias_ = torch::Tensor();
    return absl::OkStatus();
  }
  if (bias.dim() != 1 || bias.size(0) != out_features_) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": bias must be [", out_features_, "], got ", c10::str(bias.sizes())));
  }
  bias_ = bias.detach().to(device_, dtype_).contiguous();
  return absl::OkStatus();
}

absl::Status LinearSlot::SetQuantizedWeight(quant::QuantizedWeight q) {
  if (q.rows != out_features_ || q.cols != in_features_) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": quantized weight must be [",
                                                   out_features_, ", ", in_features_, "], got [",
                                                   q.rows, ", ", q.cols, "]"));
  }
  if (dtype_ == torch::kFloat64) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, ": quantized weights need a float32/bfloat16/float16 model"));
  }
  quantized_ = quant::ToDevice(q, device_);
  weight_ = torch::Tensor();
  return absl::OkStatus();
}

absl::Status LinearSlot::AttachAdapter(std::unique_ptr<adapters::Adapter> adapter) {
  if (absl::Status st = AttachBorrowedAdapter(adapter.get()); !st.ok()) return st;
  owned_adapter_ = std::move(adapter);
  return absl::OkStatus();
}

absl::Status LinearSlot::AttachBorrowedAdapter(adapters::Adapter* adapter) {
  if (adapter == nullptr) return absl::InvalidArgumentError(name_ + ": null adapter");
  if (adapter->out_features() != out_features_ || adapter->in_features() != in_features_) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": adapter is [", adapter->out_features(), ", ", adapter->in_features(),
                     "], the layer is [", out_features_, ", ", in_features_, "]"));
  }
  owned_adapter_.reset();
  adapter_ = adapter;
  return absl::OkStatus();
}

std::unique_ptr<adapters::Adapter> LinearSlot::DetachAdapter() {
  adapter_ = nullptr;
  return std::move(owned_adapter_);
}

torch::Tensor LinearSlot::Forward(const torch::Tensor& x, AdapterMode mode) const {
  TORCH_CHECK(x.size(-1) == in_features_, name_, ": input has ", x.size(-1), " features, expected ",
              in_features_);
  torch::Tensor y;
  if (quantized_.has_value()) {
    if (mode == AdapterMode::kMerged) {
      torch::Tensor delta = adapter_ != nullptr ? adapter_->DeltaWeight() : torch::Tensor();
      y = adapters::MergedLinear(x, *quantized_, delta, dtype_);
    } else {
      y = adapters::UnmergedLinear(x, *quantized_, adapter_, dtype_);
    }
  } else {
    TORCH_CHECK(weight_.defined(), name_, ": no weight");
    torch::Tensor xc = x.to(dtype_);
    if (adapter_ != nullptr && mode == AdapterMode::kMerged) {
      y = torch::matmul(xc, (weight_ + adapter_->DeltaWeight().to(dtype_)).t());
    } else {
      y = torch::matmul(xc, weight_.t());
      if (adapter_ != nullptr) y = y + adapter_->Forward(xc).to(dtype_);
    }
  }
  if (bias_.defined()) y = y + bias_;
  return y;
}

torch::Tensor LinearSlot::EffectiveWeight(torch::ScalarType dtype) const {
  torch::NoGradGuard no_grad;
  const torch::ScalarType acc =
      dtype == torch::kFloat64 || dtype_ == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor w;
  if (quantized_.has_value()) {
    w = quant::Dequantize(*quantized_, torch::kFloat32).to(acc);
  } else {
    TORCH_CHECK(weight_.defined(), name_, ": no weight");
    w = weight_.to(acc);
  }
  if (adapter_ != nullptr) w = w + adapter_->DeltaWeight().detach().to(w.device(), acc);
  return w.to(dtype);
}

}  // namespace qwha::model
