// Hugging Face model directories: weights in safetensors, one file
// ("model.safetensors") or sharded ("model.safetensors.index.json", whose
// "weight_map" names the shard of every tensor), next to config.json.
// Tensor names are the transformers ones ("model.layers.3.self_attn.q_proj.weight").
//
// Thread safety: all functions are safe to call concurrently on distinct
// directories.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/config.h"

namespace qwha::model {

inline constexpr char kConfigFile[] = "config.json";
inline constexpr char kSingleWeightsFile[] = "model.safetensors";
inline constexpr char kShardIndexFile[] = "model.safetensors.index.json";

// One tensor a config requires: its name and shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a model of `config` needs, in model order (embeddings, layers,
// final norm, lm_head unless tied).
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

// Reads the weights in `dir` (model.safetensors if present, else the sharded
// index) and returns every expected tensor converted to `dtype` (a floating
// type) on `device`. Stored dtypes F32, BF16, F16 and F64 are accepted.
// Extra tensors are ignored (as transformers does), including lm_head.weight
// of a tied model. Errors name the file and the tensor: NotFound when neither
// weights file exists or a shard is missing; InvalidArgument for a tensor
// missing from the files or the weight map, a wrong shape, a non-float
// dtype, a malformed index, or a shard name that leaves the directory.
// Peak host memory is about one shard plus the converted tensors.
absl::StatusOr<std::map<std::string, torch::Tensor>> LoadCheckpointTensors(
    const std::string& dir, const ModelConfig& config, torch::ScalarType dtype,
    const torch::Device& device = torch::kCPU);

struct SaveOptions {
  // Tensors are written in this dtype (float32, bfloat16 or float16), and
  // config.json's torch_dtype says so.
  torch::ScalarType dtype = torch::kFloat32;
  // 0: one model.safetensors. Otherwise shards "model-0000i-of-0000n.safetensors"
  // of at most this many bytes (a larger tensor gets a shard of its own) and
  // model.safetensors.index.json.
  int64_t max_shard_bytes = 0;
};

// Writes a model directory readable by transformers' from_pretrained:
// config.json (ModelConfigToJson) and the weights. `tensors` must hold every
// ExpectedTensors(config) entry with its shape (any device/float dtype);
// others are not written. Creates `dir` if needed. Every file is written
// durably (temp file, fsync, rename); the config is written last.
// InvalidArgument naming the tensor for a missing or mis-shaped one; I/O
// errors name the path.
absl::Status SaveModelDirectory(const std::string& dir, const ModelConfig& config,
                                const std::map<std::string, torch::Tensor>& tensors,
                                const SaveOptions& options = {});

}  // namespace qwha::model
