#include "worker/testing/synthetic.h"

#include <algorithm>
#include <cmath>

namespace qwha::testing {
namespace {

// Student-t(dof) samples: z / sqrt(chi2(dof) / dof), chi2 as a sum of squares
// of `dof` normals (dof is rounded to an integer ≥ 1).
torch::Tensor StudentT(torch::IntArrayRef shape, double dof, torch::Generator& gen) {
  const int64_t k = std::max<int64_t>(1, std::llround(dof));
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor z = at::normal(0.0, 1.0, shape, gen, opts);
  torch::Tensor chi2 = torch::zeros(shape, opts);
  for (int64_t i = 0; i < k; ++i) {
    chi2 += at::normal(0.0, 1.0, shape, gen, opts).square();
  }
  return z / (chi2 / static_cast<double>(k)).sqrt();
}

// Indices of round(fraction * count) entries (at least 1 if fraction > 0).
torch::Tensor PickOutliers(int64_t count, double fraction, torch::Generator& gen) {
  int64_t n = static_cast<int64_t>(std::llround(fraction * static_cast<double>(count)));
  if (fraction > 0) n = std::max<int64_t>(n, 1);
  n = std::min(n, count);
  return at::randperm(count, gen, torch::kLong).slice(0, 0, n);
}

}  // namespace

SyntheticLayer MakeSyntheticLayer(const SyntheticLayerOptions& o, const torch::Device& device) {
  torch::Generator gen = at::detail::createCPUGenerator(o.seed);
  const double init_std = 1.0 / std::sqrt(static_cast<double>(o.in_features));

  // Weights: heavy-tailed entries, per-row scale variation, outlier rows.
  torch::Tensor w = StudentT({o.out_features, o.in_features}, o.weight_dof, gen);
  w = w / w.std() * init_std;
  torch::Tensor row_scale =
      at::exp(at::normal(0.0, 0.3, {o.out_features, 1}, gen, torch::kFloat64));
  w = w * row_scale;
  torch::Tensor rows = PickOutliers(o.out_features, o.outlier_channel_fraction, gen);
  torch::Tensor row_mult = torch::ones({o.out_features, 1}, torch::kFloat64);
  row_mult.index_fill_(0, rows, o.outlier_channel_scale);
  w = w * row_mult;

  // Inputs: X = Z · M with Z low-rank-ish Gaussian and a random mixing M, so
  // features are correlated; a decaying spectrum plus isotropic noise keeps
  // the Gram matrix full rank; a few features carry outlier magnitudes.
  const int64_t latent = std::max<int64_t>(1, std::llround(o.input_rank_fraction * o.in_features));
  torch::Tensor z = at::normal(0.0, 1.0, {o.tokens, latent}, gen, torch::kFloat64);
  torch::Tensor decay = torch::pow(torch::arange(1, latent + 1, torch::kFloat64), -0.5);
  torch::Tensor mix = at::normal(0.0, 1.0, {latent, o.in_features}, gen, torch::kFloat64) /
                      std::sqrt(static_cast<double>(latent));
  torch::Tensor x = (z * decay).matmul(mix) +
                    0.1 * at::normal(0.0, 1.0, {o.tokens, o.in_features}, gen, torch::kFloat64);
  torch::Tensor feats = PickOutliers(o.in_features, o.outlier_feature_fraction, gen);
  torch::Tensor feat_scale = torch::ones({o.in_features}, torch::kFloat64);
  feat_scale.index_fill_(0, feats, o.outlier_feature_scale);
  x = x * feat_scale;

  return {w.to(device, torch::kFloat32), x.to(device, torch::kFloat32)};
}

}  // namespace qwha::testing
