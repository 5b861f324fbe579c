// The QWHA fine-tuning recipe, top to bottom (STYLE.md §6):
//
//   load model + tokenizer → load data → calibrate → quantize →
//   initialize adapters → train → evaluate → export
//
// Each step is a named function of worker/ with explicit inputs and outputs;
// RunRecipe composes them. The service worker and `qwha-train` both call it.
//
// Output directory (written atomically, file by file):
//   adapter.safetensors    every adapter's state, keyed "<slot name>/<key>"
//   adapter_config.json    method, budget, quantization, target modules, base
//   metrics.json           init errors per layer, losses, exact match, timings
//   checkpoints/           training checkpoints (resume with options.resume)
//   merged/                with export_merged: the model with deq(Q) + ΔW merged
//                          (transformers layout, tokenizer included; export.h)
//   peft/                  LoRA, LoftQ and CLoQ adapters: the PEFT LoRA layout
//                          (adapter_model.safetensors, adapter_config.json; export.h)
//
// With cache_dir set, calibration and quantization are read from the
// quantized-base cache when an entry for the same model digest, quantization
// config, target modules, calibration batches, dtype and device exists, and
// written to it otherwise (base_cache.h); a hit gives bitwise the same result
// as a cold run. A corrupt entry is rebuilt (and named in `warnings`).
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/adapters/adapter.h"
#include "worker/quant/quantizer.h"
#include "worker/train/progress.h"
#include "worker/train/trainer.h"

namespace qwha::pipeline {

struct RecipeOptions {
  std::string model_dir;       // Hugging Face model directory (config.json, safetensors)
  std::string tokenizer_path;  // default: <model_dir>/tokenizer.json
  std::string train_data;      // JSONL (text, prompt/completion or messages)
  std::string eval_data;       // JSONL; empty: hold out eval_fraction of train_data
  double eval_fraction = 0.05;
  std::string output_dir;

  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;  // compute dtype of the model
  // The eager attention (model::AttentionImpl::kEager) even where the fused one
  // exists (LibTorch >= 2.0); for comparisons.
  bool eager_attention = false;

  quant::QuantConfig quant;                 // bits 4, group 64, RTN by default
  adapters::AdapterConfig adapter;          // QWHA, rank-64 equivalent by default
  std::vector<std::string> target_modules;  // empty: all seven projections

  int64_t seq_len = 256;
  int64_t batch_size = 8;
  int64_t calibration_batches = 8;  // batches of training data for the Gram matrices
  int64_t eval_batches = 0;         // 0: the whole eval split
  uint64_t seed = 0;
  bool resume = false;  // continue from output_dir/checkpoints

  std::string cache_dir;  // quantized-base cache root; empty: no cache
  // Greedy exact match on the first N prompt/completion (or chat) records of
  // the eval split after training (evaluate.h); 0: off.
  int64_t exact_match_samples = 0;
  bool export_merged = false;  // also write output_dir/merged/

  train::TrainOptions train;  // checkpoint_dir defaults to output_dir/checkpoints
};

// OK iff the options can run: paths given, ranges valid; the message names
// the field.
absl::Status ValidateRecipeOptions(const RecipeOptions& options);

struct RecipeResult {
  double eval_loss_base = 0;         // eval loss of the model as loaded (before quantization)
  double eval_loss_quantized = 0;    // eval loss of deq(Q) alone
  double eval_loss_initialized = 0;  // after adapter initialization, before training
  double eval_loss_final = 0;        // after training
  train::TrainSummary train;
  int64_t trainable_params = 0;
  // Exact match of the trained model (NaN unless exact_match_samples > 0 and
  // the eval split has prompts), its per-token accuracy, and the samples used.
  double exact_match = std::nan("");
  double exact_match_token_accuracy = std::nan("");
  int64_t exact_match_samples = 0;
  bool quantized_base_cache_hit = false;  // calibration + quantization came from the cache
  std::string adapter_path;               // output_dir/adapter.safetensors
  std::string merged_path;                // output_dir/merged, if exported
  std::string peft_path;                  // output_dir/peft, if exported
  // Problems that did not stop the run (cache entry rebuilt or not writable,
  // no prompts for exact match), one line each.
  std::vector<std::string> warnings;
};

// Phase names reported through `on_phase`: "loading", "calibrating",
// "quantizing", "initializing", "training", "evaluating", "exporting". The
// detail of "calibrating" and "quantizing" starts with "cache hit" when the
// quantized base came from the cache.
using PhaseCallback = std::function<void(const std::string& phase, const std::string& detail)>;

// Runs the whole recipe. Errors name the step and the input (file, field,
// slot). Nothing is written to output_dir except through atomic writes.
absl::StatusOr<RecipeResult> RunRecipe(const RecipeOptions& options, const PhaseCallback& on_phase,
                                       const train::ProgressCallback& on_progress);

}  // namespace qwha::pipeline
