#include "worker/adapters/qwha.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/fwht.h"
#include "kernels/spectrum.h"

namespace qwha::adapters {
namespace {

using torch::indexing::Slice;

std::string ShapeString(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) absl::StrAppend(&s, d ? ", " : "", t.size(d));
  return s + "]";
}

// G + damp * mean(diag G) * I in float64 (damp * I if the diagonal is zero);
// symmetrized so that FWHT round-off cannot make Ĝ asymmetric.
torch::Tensor DampedGram(const torch::Tensor& gram, double damp, const torch::Device& device) {
  torch::Tensor g = gram.to(device, torch::kFloat64);
  g = 0.5 * (g + g.t());
  const double mean_diag = g.diagonal().mean().item<double>();
  const double lambda = damp * (mean_diag > 0 ? mean_diag : 1.0);
  return g + lambda * torch::eye(g.size(0), g.options());
}

}  // namespace

absl::StatusOr<torch::Tensor> ErrorSpectrum(const torch::Tensor& error) {
  return kernels::FwhtChecked(error, 1.0, /*transpose=*/true);
}

absl::StatusOr<torch::Tensor> SpectralGram(const torch::Tensor& gram) {
  if (!gram.defined() || gram.dim() != 2 || gram.size(0) != gram.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SpectralGram: gram must be square, got ", ShapeString(gram)));
  }
  const double inv_n = 1.0 / static_cast<double>(gram.size(0));
  // A = G Hᵀ / n; Aᵀ = H G / n (G symmetric); Ĝ = Aᵀ Hᵀ / n = H G Hᵀ / n².
  absl::StatusOr<torch::Tensor> a = kernels::FwhtChecked(gram, inv_n, /*transpose=*/true);
  if (!a.ok()) return a.status();
  absl::StatusOr<torch::Tensor> b =
      kernels::FwhtChecked(a->t().contiguous(), inv_n, /*transpose=*/true);
  if (!b.ok()) return b.status();
  return 0.5 * (*b + b->t());
}

absl::StatusOr<torch::Tensor> AdaAlloc(const torch::Tensor& row_norms, int64_t budget, int64_t cap,
                                       double alpha) {
  if (!row_norms.defined() || row_norms.dim() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("AdaAlloc: row_norms must be 1-D, got ", ShapeString(row_norms)));
  }
  const int64_t out = row_norms.size(0);
  if (!(alpha >= 0) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError(absl::StrCat("AdaAlloc: alpha must be >= 0, got ", alpha));
  }
  if (cap < 0 || budget < 0 || budget > out * cap) {
    return absl::InvalidArgumentError(
        absl::StrCat("AdaAlloc: budget ", budget, " outside [0, out * cap = ", out * cap, "]"));
  }
  torch::Tensor norms = row_norms.to(torch::kCPU, torch::kFloat64).contiguous();
  const double* p = norms.data_ptr<double>();
  std::vector<double> weight(out);
  for (int64_t o = 0; o < out; ++o) {
    if (!(p[o] >= 0) || !std::isfinite(p[o])) {
      return absl::InvalidArgumentError(
          absl::StrCat("AdaAlloc: row_norms[", o, "] = ", p[o], " is negative or not finite"));
    }
    weight[o] = alpha == 0 ? 1.0 : std::pow(p[o], alpha);
  }

  // Water-filling: pin channels whose proportional share reaches the cap,
  // re-spread the rest over the free channels, until no share exceeds the cap.
  std::vector<int64_t> k(out, 0);
  std::vector<char> pinned(out, 0);
  std::vector<double> share(out, 0.0);
  int64_t remaining = budget;
  for (bool pinned_any = true; pinned_any;) {
    pinned_any = false;
    double total = 0;
    int64_t num_free = 0;
    for (int64_t o = 0; o < out; ++o) {
      if (!pinned[o]) total += weight[o], ++num_free;
    }
    if (num_free == 0) break;
    if (total <= 0) {  // only zero-weight channels left: spread uniformly
      for (int64_t o = 0; o < out; ++o) weight[o] = pinned[o] ? weight[o] : 1.0;
      total = static_cast<double>(num_free);
    }
    const int64_t budget_free = remaining;
    for (int64_t o = 0; o < out; ++o) {
      if (pinned[o]) continue;
      share[o] = static_cast<double>(budget_free) * weight[o] / total;
      if (share[o] >= static_cast<double>(cap)) {
        pinned[o] = 1, k[o] = cap, remaining -= cap, pinned_any = true;
      }
    }
  }

  // Largest-remainder rounding of the free shares (each share < cap, so
  // floor + 1 <= cap); ties go to the lower channel (stable sort).
  std::vector<int64_t> free_channels;
  int64_t assigned = 0;
  for (int64_t o = 0; o < out; ++o) {
    if (pinned[o]) continue;
    k[o] = std::min<int64_t>(cap, static_cast<int64_t>(std::floor(share[o])));
    assigned += k[o];
    free_channels.push_back(o);
  }
  auto frac = [&](int64_t o) { return share[o] - static_cast<double>(k[o]); };
  std::stable_sort(free_channels.begin(), free_channels.end(),
                   [&](int64_t a, int64_t b) { return frac(a) > frac(b); });
  int64_t leftover = remaining - assigned;
  for (int64_t i = 0; leftover > 0 && i < static_cast<int64_t>(free_channels.size()); ++i) {
    const int64_t o = free_channels[i];
    if (k[o] < cap) ++k[o], --leftover;
  }
  // Round-off can only leave a tiny surplus; take it from the smallest fractions.
  for (int64_t i = static_cast<int64_t>(free_channels.size()) - 1; leftover < 0 && i >= 0; --i) {
    const int64_t o = free_channels[i];
    if (k[o] > 0) --k[o], ++leftover;
  }
  if (leftover != 0) {
    return absl::InternalError(absl::StrCat("AdaAlloc: could not place ", leftover, " params"));
  }
  return torch::tensor(k, torch::kLong);
}

absl::StatusOr<SpectrumSelection> SelectSpectrum(const torch::Tensor& spectrum,
                                                 const torch::Tensor& energy,
                                                 const torch::Tensor& counts) {
  if (!spectrum.defined() || spectrum.dim() != 2 || !energy.defined() || energy.dim() != 1 ||
      energy.size(0) != spectrum.size(1) || !counts.defined() || counts.dim() != 1 ||
      counts.size(0) != spectrum.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SelectSpectrum: expected spectrum [out, n], energy [n], counts [out]; got ",
                     ShapeString(spectrum), ", ", ShapeString(energy), ", ", ShapeString(counts)));
  }
  const int64_t n = spectrum.size(1);
  SpectrumSelection sel;
  sel.counts = counts.to(torch::kCPU, torch::kLong);
  sel.k_max = sel.counts.numel() ? sel.counts.max().item<int64_t>() : 0;
  if (sel.counts.numel() && (sel.counts.min().item<int64_t>() < 0 || sel.k_max > n)) {
    return absl::InvalidArgumentError(absl::StrCat("SelectSpectrum: counts outside [0, ", n, "]"));
  }
  // Step 3: score_oj = d_j S_oj², top k_max per row, then mask rank >= k_o.
  const torch::Tensor score = spectrum.square() * energy.to(spectrum.dtype()).unsqueeze(0);
  torch::Tensor columns = std::get<1>(torch::topk(score, sel.k_max, /*dim=*/1));
  const torch::Tensor rank = torch::arange(sel.k_max, columns.options()).unsqueeze(0);
  const torch::Tensor valid = rank < sel.counts.to(columns.device()).unsqueeze(1);
  sel.columns = columns.masked_fill(valid.logical_not(), 0);
  return sel;
}

absl::StatusOr<torch::Tensor> RefineValues(const torch::Tensor& spectral_gram,
                                           const torch::Tensor& rhs,
                                           const SpectrumSelection& selection,
                                           torch::ScalarType dtype, int64_t chunk_bytes) {
  if (!rhs.defined() || rhs.dim() != 2 || !spectral_gram.defined() || spectral_gram.dim() != 2 ||
      spectral_gram.size(0) != rhs.size(1) || spectral_gram.size(1) != rhs.size(1) ||
      !selection.columns.defined() || selection.columns.size(0) != rhs.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RefineValues: expected spectral_gram [n, n], rhs [out, n], selection [out, k]; got ",
        ShapeString(spectral_gram), ", ", ShapeString(rhs), ", ", ShapeString(selection.columns)));
  }
  const int64_t out = rhs.size(0);
  const torch::Device device = rhs.device();
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  const torch::Tensor ghat = spectral_gram.to(device, dtype);
  const torch::Tensor p = rhs.to(dtype);
  torch::Tensor result = torch::zeros({out, selection.k_max}, opts);

  // Channels by decreasing k_o; a chunk holds channels with k_o >= 3/4 of its
  // first, so identity padding costs at most ~2.4x in Cholesky flops.
  const int64_t* counts = selection.counts.data_ptr<int64_t>();
  std::vector<int64_t> order(out);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  for (int64_t begin = 0; begin < out && counts[order[begin]] > 0;) {
    const int64_t k = counts[order[begin]];
    const int64_t max_chunk = std::max<int64_t>(1, chunk_bytes / (k * k * elem));
    int64_t end = begin;
    while (end < out && end - begin < max_chunk && 4 * counts[order[end]] >= 3 * k &&
           counts[order[end]] > 0) {
      ++end;
    }
    const torch::Tensor channels =
        torch::tensor(std::vector<int64_t>(order.begin() + begin, order.begin() + end),
                      torch::kLong)
            .to(device);
    const torch::Tensor cols = selection.columns.index_select(0, channels).slice(1, 0, k);
    const torch::Tensor valid =
        torch::arange(k, cols.options()).unsqueeze(0) <
        selection.counts.index_select(0, channels.cpu()).to(device).unsqueeze(1);
    const torch::Tensor invalid = valid.logical_not();
    // Ĝ[S_o, S_o], identity on padded rows/columns; RHS P[o, S_o], zero padded.
    torch::Tensor sub = ghat.index({cols.unsqueeze(2), cols.unsqueeze(1)});
    sub.masked_fill_((valid.unsqueeze(2) & valid.unsqueeze(1)).logical_not(), 0);
    sub.diagonal(0, 1, 2).add_(invalid.to(dtype));
    const torch::Tensor b =
        p.index_select(0, channels).gather(1, cols).masked_fill(invalid, 0).unsqueeze(2);

    auto [chol, info] = at::linalg_cholesky_ex(sub);
    const torch::Tensor eye = torch::eye(k, opts);
    for (int attempt = 0; info.ne(0).any().item<bool>(); ++attempt) {
      if (attempt == 6) {
        return absl::InternalError(
            absl::StrCat("RefineValues: Ĝ[S, S] not positive definite for a chunk with k = ", k,
                         " even with jitter; increase the damping"));
      }
      // Jitter relative to the sub-matrix's mean diagonal: 1e-10, 1e-8, ...
      const torch::Tensor bad = info.ne(0).nonzero().squeeze(1);
      const torch::Tensor bad_sub = sub.index_select(0, bad);
      const double rel = 1e-10 * std::pow(100.0, attempt);
      const torch::Tensor jitter = bad_sub.diagonal(0, 1, 2).mean(1) * rel;
      auto [bad_chol, bad_info] = at::linalg_cholesky_ex(bad_sub + jitter.view({-1, 1, 1}) * eye);
      chol.index_copy_(0, bad, bad_chol);
      info.index_copy_(0, bad, bad_info);
    }
    const torch::Tensor c = at::cholesky_solve(b, chol).squeeze(2);
    result.index_copy_(0, channels, torch::constant_pad_nd(c, {0, selection.k_max - k}, 0));
    begin = end;
  }
  return result;
}

SparseSpectrum FlattenSelection(const SpectrumSelection& selection, const torch::Tensor& values,
                                int64_t n) {
  const torch::Tensor& cols = selection.columns;
  const int64_t out = cols.size(0);
  const torch::Tensor valid = torch::arange(selection.k_max, cols.options()).unsqueeze(0) <
                              selection.counts.to(cols.device()).unsqueeze(1);
  const torch::Tensor flat =
      (torch::arange(out, cols.options()).unsqueeze(1) * n + cols).masked_select(valid);
  const torch::Tensor vals = values.masked_select(valid.to(values.device()));
  auto [index, order] = torch::sort(flat);
  return {index, vals.index_select(0, order.to(vals.device()))};
}

absl::StatusOr<SparseSpectrum> ComputeQwhaInit(const AdapterConfig& cfg, const LayerData& layer,
                                               bool data_free, torch::ScalarType solve_dtype) {
  const torch::Tensor& w = layer.weight;
  if (!w.defined() || w.dim() != 2 || !layer.dequantized.defined() ||
      !layer.dequantized.sizes().equals(w.sizes())) {
    return absl::InvalidArgumentError(
        absl::StrCat("QWHA init: weight and dequantized must be [out, in]; got ", ShapeString(w),
                     " and ", ShapeString(layer.dequantized)));
  }
  const int64_t out = w.size(0), n = w.size(1);
  if (!data_free) {
    if (!layer.gram.defined()) {
      return absl::FailedPreconditionError("QWHA init needs layer.gram (calibration Gram)");
    }
    if (layer.gram.dim() != 2 || layer.gram.size(0) != n || layer.gram.size(1) != n) {
      return absl::InvalidArgumentError(absl::StrCat("QWHA init: gram must be [", n, ", ", n,
                                                     "], got ", ShapeString(layer.gram)));
    }
  }
  const torch::Device device = w.device();
  // The FWHT runs in float64 on the CPU only; float32 is its widest CUDA type.
  const torch::ScalarType work = device.is_cuda() ? torch::kFloat32 : torch::kFloat64;
  try {
    const torch::Tensor error =
        w.to(torch::kFloat64) - layer.dequantized.to(device, torch::kFloat64);
    // Step 2: AdaAlloc over the channel error norms.
    absl::StatusOr<torch::Tensor> counts =
        AdaAlloc(error.norm(2, {1}), BudgetParams(cfg, out, n), n, cfg.alloc_alpha);
    if (!counts.ok()) return counts.status();
    // Step 1: S = E Hᵀ.
    absl::StatusOr<torch::Tensor> spectrum = ErrorSpectrum(error.to(work));
    if (!spectrum.ok()) return spectrum.status();

    torch::Tensor coeffs;
    absl::StatusOr<SpectrumSelection> sel;
    if (data_free) {
      // G = I: Ĝ = I / n, P = S / n, so the selection ranks |S_oj| and c = S[o, S_o].
      sel = SelectSpectrum(*spectrum, torch::ones({n}, spectrum->options()), *counts);
      if (!sel.ok()) return sel.status();
      coeffs = spectrum->gather(1, sel->columns);
    } else {
      const torch::Tensor gram = DampedGram(layer.gram, cfg.damp, device);
      absl::StatusOr<torch::Tensor> ghat = SpectralGram(gram.to(work));
      if (!ghat.ok()) return ghat.status();
      // Step 3 with d = diag(Ĝ).
      sel = SelectSpectrum(*spectrum, ghat->diagonal(), *counts);
      if (!sel.ok()) return sel.status();
      // Step 4: P = E G Hᵀ / n, then the batched normal-equation solves.
      absl::StatusOr<torch::Tensor> rhs = kernels::FwhtChecked(
          error.matmul(gram).to(work), 1.0 / static_cast<double>(n), /*transpose=*/true);
      if (!rhs.ok()) return rhs.status();
      absl::StatusOr<torch::Tensor> refined = RefineValues(*ghat, *rhs, *sel, solve_dtype);
      if (!refined.ok()) return refined.status();
      coeffs = *refined;
    }
    // Step 5: F = c / s, so ΔW = (s / n) F H reproduces (1/n) c H.
    return FlattenSelection(*sel, coeffs.to(torch::kFloat64) / cfg.scaling, n);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("QWHA init: ", e.what_without_backtrace()));
  }
}

torch::Tensor RandomSpectrumIndex(int64_t out_features, int64_t n, int64_t count, uint64_t seed) {
  const int64_t total = out_features * n;
  std::mt19937_64 rng(seed);
  // Uniform in [0, bound] by rejection (portable, unlike std distributions).
  auto uniform = [&](uint64_t bound) {
    const uint64_t range = bound + 1;
    if (range == 0) return rng();
    const uint64_t limit =
        std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % range;
    uint64_t v;
    do v = rng();
    while (v >= limit);
    return v % range;
  };
  // Floyd: every count-subset of [0, total) is equally likely.
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(count) * 2);
  for (int64_t j = total - count; j < total; ++j) {
    const int64_t t = static_cast<int64_t>(uniform(static_cast<uint64_t>(j)));
    chosen.insert(chosen.count(t) ? j : t);
  }
  std::vector<int64_t> index(chosen.begin(), chosen.end());
  std::sort(index.begin(), index.end());
  return torch::tensor(index, torch::kLong);
}

QwhaAdapter::QwhaAdapter(AdapterType type, int64_t out_features, int64_t in_features,
                         double scaling, int64_t num_params, torch::Tensor index,
                         torch::Tensor values)
    : type_(type),
      out_features_(out_features),
      in_features_(in_features),
      scaling_(scaling),
      num_params_(num_params),
      index_(index.contiguous()),
      values_(values.detach().contiguous().requires_grad_(true)) {}

torch::Tensor QwhaAdapter::DenseSpectrum() const {
  return kernels::SpectrumScatter(values_, index_, out_features_, in_features_);
}

torch::Tensor QwhaAdapter::DeltaWeight() const {
  // ΔW = (s / n) F H.
  return kernels::Fwht(DenseSpectrum(), scaling_ / static_cast<double>(in_features_));
}

torch::Tensor QwhaAdapter::Forward(const torch::Tensor& x) const {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == in_features_, "QwhaAdapter::Forward: x ", x.sizes(),
              " does not end in in_features = ", in_features_);
  // x ΔWᵀ = (s / n) (x Hᵀ) F_denseᵀ.
  const torch::Tensor xh =
      kernels::Fwht(x, scaling_ / static_cast<double>(in_features_), /*transpose=*/true);
  return torch::matmul(xh, DenseSpectrum().t());
}

std::map<std::string, torch::Tensor> QwhaAdapter::StateDict() const {
  return {{"spectrum_index", index_}, {"spectrum_values", values_.detach()}};
}

absl::Status QwhaAdapter::LoadStateDict(const std::map<std::string, torch::Tensor>& state) {
  auto index_it = state.find("spectrum_index");
  auto values_it = state.find("spectrum_values");
  if (index_it == state.end()) return absl::InvalidArgumentError("missing entry spectrum_index");
  if (values_it == state.end()) return absl::InvalidArgumentError("missing entry spectrum_values");
  const torch::Tensor& index = index_it->second;
  const torch::Tensor& values = values_it->second;
  if (!index.defined() || index.dim() != 1 || index.scalar_type() != torch::kLong ||
      index.size(0) != num_params_) {
    return absl::InvalidArgumentError(absl::StrCat("spectrum_index: expected int64 [", num_params_,
                                                   "], got ", ShapeString(index)));
  }
  if (!values.defined() || values.dim() != 1 || !values.is_floating_point() ||
      values.size(0) != num_params_) {
    return absl::InvalidArgumentError(absl::StrCat("spectrum_values: expected float [", num_params_,
                                                   "], got ", ShapeString(values)));
  }
  const torch::Tensor idx = index.to(torch::kCPU);
  if (num_params_ > 0 &&
      (idx.min().item<int64_t>() < 0 || idx.max().item<int64_t>() >= out_features_ * in_features_ ||
       (num_params_ > 1 && (idx.slice(0, 1) <= idx.slice(0, 0, -1)).any().item<bool>()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("spectrum_index: entries must be strictly increasing in [0, ",
                     out_features_ * in_features_, ")"));
  }
  index_ = index.to(index_.device()).clone(torch::MemoryFormat::Contiguous);
  values_ = values.detach()
                .to(values_.device(), values_.scalar_type())
                .clone(torch::MemoryFormat::Contiguous)
                .requires_grad_(true);
  return absl::OkStatus();
}

void QwhaAdapter::To(const torch::Device& device, torch::ScalarType dtype) {
  if (values_.device() == device && values_.scalar_type() == dtype) return;
  index_ = index_.to(device);
  values_ = values_.detach().to(device, dtype).requires_grad_(true);
}

}  // namespace qwha::adapters
