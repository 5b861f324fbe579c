// The model-level stages of the QWHA pipeline (DESIGN.md §1–2), each a plain
// function with explicit inputs and outputs, composed by the recipe:
//
//   calibrate → quantize → initialize adapters        (then train, evaluate, export)
//
// Calibration runs on the dense model, so every layer sees full-precision
// activations (GPTQ's non-sequential mode); quantization keeps the original
// weights for the adapter initialization, which needs E = W − deq(Q).
//
// Thread safety: the stages mutate the model; run one at a time per model.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/adapters/adapter.h"
#include "worker/model/llama.h"
#include "worker/quant/quantizer.h"

namespace qwha::pipeline {

// The projections LLaMA-family layers have; a job's "target modules" name a
// subset (default: all of them).
inline const std::vector<std::string>& AllTargetModules() {
  static const std::vector<std::string> kAll = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};
  return kAll;
}

// OK iff every entry of `modules` is one of AllTargetModules() and the list is
// non-empty; the message names the offending entry.
absl::Status ValidateTargetModules(const std::vector<std::string>& modules);

// True iff the slot name ("model.layers.3.self_attn.q_proj") ends in one of
// the target module names.
bool IsTarget(const std::string& slot_name, const std::vector<std::string>& modules);

// Slot name → Σ XᵀX of that slot's inputs (float64 [in, in], on the model's
// device). Slots fed the same tensor (q/k/v; gate/up) share one tensor.
using GramMap = std::map<std::string, torch::Tensor>;

// Slot name → original dense weight (float32 [out, in]).
using WeightMap = std::map<std::string, torch::Tensor>;

// Runs the model without gradients over `batches` (input_ids [B, T] each)
// and accumulates the Gram of every target slot's input. InvalidArgument if
// `batches` is empty; errors of the forward pass come back as Internal.
absl::StatusOr<GramMap> CollectCalibration(model::LlamaModel& model,
                                           const std::vector<torch::Tensor>& batches,
                                           const std::vector<std::string>& modules);

// Replaces every target slot's dense weight by its quantized form (RTN, or
// GPTQ with grams[slot]) and returns the original weights. On error the
// model may be partly quantized; the error names the slot.
absl::StatusOr<WeightMap> QuantizeModel(model::LlamaModel& model, const quant::QuantConfig& cfg,
                                        const GramMap& grams,
                                        const std::vector<std::string>& modules);

// Replaces every target slot's dense weight by weights[slot name] (e.g. read
// from the quantized-base cache) and returns the original weights, as
// QuantizeModel does. FailedPrecondition naming the slot if a target slot is
// already quantized or has no entry in `weights`; checked for all slots
// before any is changed. InvalidArgument from the slot for a mis-shaped one.
absl::StatusOr<WeightMap> SetQuantizedWeights(model::LlamaModel& model,
                                              std::map<std::string, quant::QuantizedWeight> weights,
                                              const std::vector<std::string>& modules);

// Per-slot result of adapter initialization.
struct SlotInitReport {
  std::string slot;
  int64_t trainable_params = 0;
  double error_quantized = 0;  // relative layer-output error of deq(Q) alone
  double error_adapted = 0;    // ... of deq(Q) + ΔW after initialization
};

// Initializes an adapter of cfg for every quantized target slot (from the
// original weight, the dequantized base and the slot's Gram; the Gram may be
// absent for data-free types) and attaches it. Returns one report per slot.
absl::StatusOr<std::vector<SlotInitReport>> AttachAdapters(model::LlamaModel& model,
                                                           const adapters::AdapterConfig& cfg,
                                                           const WeightMap& originals,
                                                           const GramMap& grams);

}  // namespace qwha::pipeline
