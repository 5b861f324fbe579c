#include "worker/quant/calibration.h"

#include "absl/strings/str_cat.h"

namespace qwha::quant {

GramAccumulator::GramAccumulator(int64_t features) : features_(features) {}

absl::Status GramAccumulator::Add(const torch::Tensor& x) {
  if (features_ <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GramAccumulator: features = ", features_, " must be positive"));
  }
  if (!x.defined() || x.dim() < 1 || x.size(-1) != features_) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration input: last dimension must be ", features_, ", got shape ",
                     x.defined() ? c10::str(x.sizes()) : std::string("(undefined)")));
  }
  if (!x.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibration input: dtype ", c10::toString(x.scalar_type()), " is not floating point"));
  }
  try {
    if (x.numel() == 0) return absl::OkStatus();
    if (torch::isnan(x).any().item<bool>())
      return absl::InvalidArgumentError("calibration input contains NaN");
    if (torch::isinf(x).any().item<bool>())
      return absl::InvalidArgumentError("calibration input contains Inf");
    if (!gram_.defined()) {
      gram_ = torch::zeros({features_, features_}, x.options().dtype(torch::kFloat64));
    }
    torch::Tensor x2 = x.detach().reshape({-1, features_}).to(gram_.device(), torch::kFloat64);
    gram_.addmm_(x2.t(), x2);
    tokens_ += x2.size(0);
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("GramAccumulator::Add: ", e.what_without_backtrace()));
  }
}

torch::Tensor GramAccumulator::Gram() const {
  if (!gram_.defined())
    return torch::zeros({std::max<int64_t>(features_, 0), std::max<int64_t>(features_, 0)},
                        torch::kFloat64);
  return gram_;
}

torch::Tensor DampGram(const torch::Tensor& gram, double lambda) {
  torch::Tensor out = gram.clone();
  torch::Tensor mean = out.diagonal().mean();
  mean = torch::where(mean == 0, torch::ones_like(mean), mean);
  out.diagonal().add_(lambda * mean);
  return out;
}

}  // namespace qwha::quant
