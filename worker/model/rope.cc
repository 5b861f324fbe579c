#include "worker/model/rope.h"

#include <cmath>

namespace qwha::model {

torch::Tensor RopeInverseFrequencies(const ModelConfig& config, torch::ScalarType dtype) {
  const int64_t dim = config.head_dim;
  // The same sequence of tensor ops as transformers' _compute_default_rope_parameters
  // and _compute_llama3_parameters (Python's `s / t` is `t.reciprocal() * s`).
  torch::Tensor exponent = torch::arange(0, dim, 2, torch::kInt64).to(dtype) / dim;
  torch::Tensor inv_freq = torch::reciprocal(torch::pow(config.rope_theta, exponent));
  const RopeScaling& r = config.rope_scaling;
  if (r.type == RopeType::kLinear) {
    inv_freq = inv_freq / r.factor;
  } else if (r.type == RopeType::kLlama3) {
    const double old_context = static_cast<double>(r.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / r.low_freq_factor;
    const double high_freq_wavelen = old_context / r.high_freq_factor;
    torch::Tensor wavelen = torch::reciprocal(inv_freq) * (2 * M_PI);
    // Wavelengths above the low-frequency bound: divide by factor.
    torch::Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / r.factor, inv_freq);
    // Between the bounds: interpolate.
    torch::Tensor smooth = (torch::reciprocal(wavelen) * old_context - r.low_freq_factor) /
                           (r.high_freq_factor - r.low_freq_factor);
    torch::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
    torch::Tensor medium = torch::logical_not(wavelen < high_freq_wavelen)
                               .logical_and(torch::logical_not(wavelen > low_freq_wavelen));
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  return inv_freq;
}

std::pair<torch::Tensor, torch::Tensor> RopeTables(const torch::Tensor& inv_freq, int64_t start,
                                                   int64_t length) {
  torch::Tensor positions = torch::arange(start, start + length, torch::kInt64)
                                .to(inv_freq.device(), inv_freq.scalar_type());
  torch::Tensor freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);  // [T, d/2]
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor c = cos.to(x.device(), x.scalar_type());
  torch::Tensor s = sin.to(x.device(), x.scalar_type());
  torch::Tensor x1 = x.narrow(-1, 0, half);
  torch::Tensor x2 = x.narrow(-1, half, half);
  torch::Tensor rotated = torch::cat({-x2, x1}, -1);
  return x * c + rotated * s;
}

}  // namespace qwha::model
