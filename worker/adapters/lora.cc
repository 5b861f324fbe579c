#include "worker/adapters/lora.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qwha::adapters {
namespace {

std::string ShapeString(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) absl::StrAppend(&s, d ? ", " : "", t.size(d));
  return s + "]";
}

absl::Status CheckRank(const torch::Tensor& error, int64_t rank) {
  if (!error.defined() || error.dim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("error must be [out, in], got ", ShapeString(error)));
  }
  if (rank < 1 || rank > std::min(error.size(0), error.size(1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " outside [1, min(out, in)] for ", ShapeString(error)));
  }
  return absl::OkStatus();
}

// Truncated SVD of m split symmetrically: m_r = (U_r √Σ_r)(√Σ_r V_rᵀ).
LoraFactors SplitTruncatedSvd(const torch::Tensor& m, int64_t rank) {
  auto [u, s, vh] = at::linalg_svd(m, /*full_matrices=*/false);
  const torch::Tensor root = s.slice(0, 0, rank).sqrt();
  return {root.unsqueeze(1) * vh.slice(0, 0, rank), u.slice(1, 0, rank) * root.unsqueeze(0)};
}

}  // namespace

int64_t LoraRank(const AdapterConfig& cfg, int64_t out_features, int64_t in_features) {
  return std::max<int64_t>(
      1, BudgetParams(cfg, out_features, in_features) / (in_features + out_features));
}

absl::StatusOr<LoraFactors> LoftqFactors(const torch::Tensor& error, int64_t rank) {
  if (absl::Status s = CheckRank(error, rank); !s.ok()) return s;
  try {
    return SplitTruncatedSvd(error, rank);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LoftQ SVD: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<LoraFactors> CloqFactors(const torch::Tensor& error, const torch::Tensor& gram,
                                        int64_t rank) {
  if (absl::Status s = CheckRank(error, rank); !s.ok()) return s;
  const int64_t in = error.size(1);
  if (!gram.defined() || gram.dim() != 2 || gram.size(0) != in || gram.size(1) != in) {
    return absl::InvalidArgumentError(
        absl::StrCat("gram must be [", in, ", ", in, "], got ", ShapeString(gram)));
  }
  try {
    // Cholesky and E L in float64 (a float32 factor of an ill-conditioned G is
    // unreliable); the SVD and the result in error's dtype.
    const torch::Tensor g = gram.to(error.device(), torch::kFloat64);
    auto [l, info] = at::linalg_cholesky_ex(0.5 * (g + g.t()));  // G = L Lᵀ, R = Lᵀ
    if (info.item<int64_t>() != 0) {
      return absl::FailedPreconditionError("CLoQ: gram is not positive definite (increase damp)");
    }
    const torch::Tensor weighted = error.to(torch::kFloat64).matmul(l);  // E Rᵀ = E L
    LoraFactors f = SplitTruncatedSvd(weighted.to(error.scalar_type()), rank);
    // A = √Σ_r V_rᵀ R⁻ᵀ = √Σ_r V_rᵀ L⁻¹: solve A L = √Σ_r V_rᵀ (triangular).
    f.a = at::linalg_solve_triangular(l, f.a.to(torch::kFloat64), /*upper=*/false,
                                      /*left=*/false)
              .to(error.scalar_type());
    return f;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("CLoQ: ", e.what_without_backtrace()));
  }
}

LoraAdapter::LoraAdapter(AdapterType type, int64_t out_features, int64_t in_features, int64_t rank,
                         double scale, torch::Tensor a, torch::Tensor b)
    : type_(type),
      out_features_(out_features),
      in_features_(in_features),
      rank_(rank),
      scale_(scale),
      a_(a.detach().contiguous().requires_grad_(true)),
      b_(b.detach().contiguous().requires_grad_(true)) {}

torch::Tensor LoraAdapter::Forward(const torch::Tensor& x) const {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == in_features_, "LoraAdapter::Forward: x ", x.sizes(),
              " does not end in in_features = ", in_features_);
  return scale_ * torch::matmul(torch::matmul(x, a_.t()), b_.t());
}

torch::Tensor LoraAdapter::DeltaWeight() const { return scale_ * b_.matmul(a_); }

std::map<std::string, torch::Tensor> LoraAdapter::StateDict() const {
  return {{"lora_A", a_.detach()}, {"lora_B", b_.detach()}};
}

absl::Status LoraAdapter::LoadStateDict(const std::map<std::string, torch::Tensor>& state) {
  const std::pair<const char*, std::vector<int64_t>> expected[] = {
      {"lora_A", {rank_, in_features_}}, {"lora_B", {out_features_, rank_}}};
  for (const auto& [name, shape] : expected) {
    auto it = state.find(name);
    if (it == state.end()) return absl::InvalidArgumentError(absl::StrCat("missing entry ", name));
    const torch::Tensor& t = it->second;
    if (!t.defined() || !t.is_floating_point() || t.sizes() != torch::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": expected float [", shape[0], ", ",
                                                     shape[1], "], got ", ShapeString(t)));
    }
  }
  auto load = [&](const torch::Tensor& t, const torch::Tensor& like) {
    return t.detach()
        .to(like.device(), like.scalar_type())
        .clone(torch::MemoryFormat::Contiguous)
        .requires_grad_(true);
  };
  a_ = load(state.at("lora_A"), a_);
  b_ = load(state.at("lora_B"), b_);
  return absl::OkStatus();
}

void LoraAdapter::To(const torch::Device& device, torch::ScalarType dtype) {
  if (a_.device() == device && a_.scalar_type() == dtype) return;
  a_ = a_.detach().to(device, dtype).requires_grad_(true);
  b_ = b_.detach().to(device, dtype).requires_grad_(true);
}

}  // namespace qwha::adapters
