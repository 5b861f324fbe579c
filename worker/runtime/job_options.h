// The one conversion from a user's JobSpec (proto/qwha/v1/job.proto) to the
// recipe's options (worker/pipeline/recipe.h). Every default a job may leave
// out is applied here: a proto zero means the documented default of the
// JobSpec field, which is the RecipeOptions default except where job.proto
// says otherwise (max_steps 100, checkpoint_every 50; learning rate 1e-2 for
// spectrum adapters and 2e-4 for LoRA types, as qwha-train; dtype bfloat16 on
// CUDA and float32 on the CPU).
//
// Thread safety: pure functions.
#pragma once

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"
#include "qwha/v1/job.pb.h"
#include "worker/pipeline/recipe.h"

namespace qwha::runtime {

// Where the worker put the job's inputs and where the outputs go; all paths
// are local to the worker.
struct JobPaths {
  std::string model_dir;   // materialised base model (config.json, safetensors, tokenizer.json)
  std::string train_data;  // JSONL
  std::string eval_data;   // JSONL; empty: hold out training.eval_fraction of train_data
  std::string output_dir;  // the recipe's output_dir (checkpoints under it)
  std::string cache_dir;   // quantized-base cache; empty: none
  bool resume = false;     // continue from output_dir/checkpoints
};

// The recipe options for `spec` on `device`. InvalidArgument naming the proto
// field (e.g. "training.learning_rate: must be finite and >= 0, got -1") for
// any value out of its documented range, and naming the path field for a
// missing required path. The result passes pipeline::ValidateRecipeOptions.
absl::StatusOr<pipeline::RecipeOptions> JobSpecToRecipeOptions(const qwha::v1::JobSpec& spec,
                                                               const JobPaths& paths,
                                                               const torch::Device& device);

}  // namespace qwha::runtime
