// Synthetic linear layers with the structure of real LLM layers, for tests and
// benchmarks (no model download needed): heavy-tailed weights with a few
// outlier output channels, and correlated calibration inputs with a few
// outlier features (large-magnitude activation channels).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace qwha::testing {

struct SyntheticLayerOptions {
  int64_t out_features = 256;
  int64_t in_features = 256;
  int64_t tokens = 2048;                   // calibration tokens in X
  double weight_dof = 4.0;                 // Student-t degrees of freedom of W entries
  double outlier_channel_fraction = 0.01;  // output rows scaled up
  double outlier_channel_scale = 4.0;
  double input_rank_fraction = 0.25;       // X = Z·M: correlated features
  double outlier_feature_fraction = 0.01;  // input features scaled up
  double outlier_feature_scale = 20.0;
  uint64_t seed = 0;
};

struct SyntheticLayer {
  torch::Tensor weight;  // W [out, in], float32
  torch::Tensor inputs;  // X [tokens, in], float32
};

// Deterministic for a given options.seed. Tensors on `device`.
SyntheticLayer MakeSyntheticLayer(const SyntheticLayerOptions& options,
                                  const torch::Device& device = torch::kCPU);

}  // namespace qwha::testing
