// Rotary position embeddings as transformers computes them (LlamaRotaryEmbedding,
// rotate_half convention): for head dimension d and i < d/2,
//   inv_freq_i = 1 / theta^(2i/d)               (then scaled: linear, llama3)
//   angle(p, i) = p · inv_freq_i,  cos/sin tables [T, d] = [angle, angle]
//   rope(x) = x · cos + rotate_half(x) · sin,  rotate_half(x) = [-x2, x1]
// so dimension i is rotated together with dimension i + d/2.
//
// Thread safety: pure functions.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "worker/model/config.h"

namespace qwha::model {

// inv_freq [head_dim / 2] on the CPU. float32 reproduces transformers bit for
// bit (it computes in float32); float64 is the exact formula.
torch::Tensor RopeInverseFrequencies(const ModelConfig& config,
                                     torch::ScalarType dtype = torch::kFloat32);

// (cos, sin), each [length, head_dim] in inv_freq's dtype and device, for the
// positions start, ..., start + length - 1.
std::pair<torch::Tensor, torch::Tensor> RopeTables(const torch::Tensor& inv_freq, int64_t start,
                                                   int64_t length);

// x [..., T, head_dim] rotated by the tables ([T, head_dim], cast to x's
// dtype and device first, as transformers does).
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace qwha::model
