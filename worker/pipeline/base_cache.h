// The quantized-base cache (DESIGN.md §2): "quantize once, fine-tune many".
//
// A cache entry holds what calibration and quantization produce for one base
// model — the packed quantized weight of every target projection and the
// calibration Gram matrices — so a later job with the same inputs skips both
// steps. Entries are keyed by the model digest and by everything else the
// result depends on (BaseCacheKey), and live at
//
//   <cache_dir>/<model digest>/<QuantConfigKey(key)>/
//       manifest.json                  key, slots, file names and sizes (written last)
//       <slot>.quant.safetensors       quant::SaveQuantizedWeight of that slot
//       <slot>.gram.safetensors        {"gram": float64 [in, in]}; slots fed the same
//                                      input (q/k/v, gate/up) share one file
//
// This file is mechanism only; the recipe decides when to read and write.
//
// Durability and concurrency: an entry is built in a temporary sibling
// directory (every file fsynced) and renamed into place, so readers see a
// complete entry or none. Two writers of one key race harmlessly: the first
// rename wins and the other's copy is discarded. Functions are safe to call
// concurrently.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/llama.h"
#include "worker/pipeline/stages.h"
#include "worker/quant/quantizer.h"

namespace qwha::pipeline {

// SHA-256 of a model directory's content: io::Sha256OfFileSet over
// config.json, model.safetensors.index.json (if present) and every
// *.safetensors file directly in `model_dir` (tokenizer and generation files do
// not change the quantized base and are left out). Reads every weight byte.
// NotFound naming the path when config.json or all weight files are missing.
absl::StatusOr<std::string> ModelDigest(const std::string& model_dir);

// SHA-256 over the calibration batches (shape and int64 ids of each, in
// order): two runs calibrate identically iff their digests match.
std::string CalibrationDigest(const std::vector<torch::Tensor>& batches);

// Everything the cached result depends on.
struct BaseCacheKey {
  std::string model_digest;                 // ModelDigest(model_dir)
  quant::QuantConfig quant;                 // bits, group size, method, damping, param dtype
  std::vector<std::string> target_modules;  // order does not matter
  std::string calibration_digest;           // CalibrationDigest(calibration batches)
  torch::ScalarType compute_dtype = torch::kFloat32;  // the model's dtype during calibration
  torch::DeviceType device_type = torch::kCPU;        // where calibration and quantization ran
};

// The key as canonical JSON (the manifest stores it; a loaded entry must
// match it exactly).
std::string BaseCacheKeyJson(const BaseCacheKey& key);

// "<method>-b<bits>-g<group>-<16 hex digits of sha256(BaseCacheKeyJson)>",
// e.g. "rtn-b4-g64-0123456789abcdef": readable, and distinct for distinct keys.
std::string QuantConfigKey(const BaseCacheKey& key);

// <cache_dir>/<key.model_digest>/<QuantConfigKey(key)>.
std::string BaseCacheEntryDir(const std::string& cache_dir, const BaseCacheKey& key);

// The cached state of a model's target projections.
struct QuantizedBase {
  std::map<std::string, quant::QuantizedWeight> weights;  // slot name → Q
  GramMap grams;  // slot name → Σ XᵀX; shared tensors stay shared
};

// Reads the entry at `entry_dir` for `model`'s target slots (those named by
// key.target_modules). Weights come back on the CPU; Gram matrices on
// `gram_device` (where a cold run's Grams live), each stored file read once.
// NotFound if there is no entry. DataLoss, naming the file, for an entry that
// cannot be used: manifest missing or unparsable, a key other than `key`, a
// file missing or of another size than recorded, a safetensors parse error,
// or a slot missing or mis-shaped for `model` or `key.quant`. The caller
// should then remove the entry (io::RemoveTree) and rebuild it.
absl::StatusOr<QuantizedBase> LoadQuantizedBase(const std::string& entry_dir,
                                                const BaseCacheKey& key,
                                                const model::LlamaModel& model,
                                                const torch::Device& gram_device);

// Writes `base` as the entry at `entry_dir` for `key` (see the top of this
// file for atomicity). OK, writing nothing, if a complete entry already exists
// there. Every slot of base.weights needs a Gram in base.grams
// (InvalidArgument otherwise). I/O errors name the path; on error nothing is
// left at `entry_dir`.
absl::Status StoreQuantizedBase(const std::string& entry_dir, const BaseCacheKey& key,
                                const QuantizedBase& base);

}  // namespace qwha::pipeline
