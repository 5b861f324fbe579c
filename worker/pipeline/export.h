// Deployment exports of a fine-tuned model, besides qwha's own adapter file:
//
// - Merged model: a transformers model directory whose projections are
//   deq(Q) + ΔW (DESIGN.md §1 "Merging for deployment"), loadable by
//   model::LoadModel and by transformers' from_pretrained.
// - PEFT adapter (LoRA, LoftQ and CLoQ adapters only): the files that
//   peft.PeftModel.from_pretrained reads,
//     adapter_model.safetensors   "base_model.model.<slot>.lora_A.weight" [r, in]
//                                 "base_model.model.<slot>.lora_B.weight" [out, r]  (float32)
//     adapter_config.json         peft_type "LORA", r, lora_alpha, target_modules, ...
//   PEFT computes ΔW = (lora_alpha / r) · B A; lora_alpha is chosen so that
//   lora_alpha / r equals our LoraAdapter::scale() exactly in double
//   arithmetic (PeftLoraAlpha), as it always can for the adapters
//   InitializeAdapter makes (LoRA: lora_alpha = scaling; LoftQ, CLoQ: r).
//   Layers whose rank or alpha differ from the most common ones are listed in
//   rank_pattern / alpha_pattern under their name without the leading "model."
//   ("layers.3.mlp.down_proj", which every PEFT version matches). The base the
//   adapter was fitted to is deq(Q); PEFT applies it to whatever base it is
//   given (base_model_name_or_path names the original model).
//
// Every file is written durably (temp file, fsync, rename). Thread safety: the
// functions read the model only; run them apart from anything that mutates it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/llama.h"

namespace qwha::pipeline {

// Writes `dir` (created if needed) as a transformers model directory:
// config.json and model.safetensors with model.ExportStateDict(dtype)
// (float32, bfloat16 or float16), tokenizer.json copied from
// `tokenizer_path`, and tokenizer_config.json, special_tokens_map.json and
// generation_config.json copied from `model_dir` where they exist. Errors name
// the file.
absl::Status ExportMergedModel(const model::LlamaModel& model, const std::string& model_dir,
                               const std::string& tokenizer_path, const std::string& dir,
                               torch::ScalarType dtype);

// The lora_alpha near scale · rank whose lora_alpha / rank is closest to
// `scale` in double arithmetic: equal to it whenever a double alpha with that
// property exists (e.g. scale = s / rank computed in double, as LoRA's is),
// else within one ulp of it (the quotient skips values for some rank/scale).
double PeftLoraAlpha(double scale, int64_t rank);

// Writes the PEFT adapter files into `dir` (created if needed) for every
// slot of `model` that has an adapter. base_model_name_or_path goes into
// adapter_config.json as given. InvalidArgument if no slot has an adapter or
// one is not a LoRA-family adapter (QWHA's spectrum has no PEFT form).
absl::Status ExportPeftAdapter(const model::LlamaModel& model,
                               const std::string& base_model_name_or_path, const std::string& dir);

// One layer of a PEFT LoRA adapter: ΔW = scale · B A.
struct PeftLayer {
  torch::Tensor a;   // lora_A [r, in], float32 CPU
  torch::Tensor b;   // lora_B [out, r], float32 CPU
  double scale = 0;  // lora_alpha / r (rsLoRA: lora_alpha / sqrt(r)) for this layer
};

struct PeftAdapter {
  int64_t r = 0;
  double lora_alpha = 0;
  std::vector<std::string> target_modules;
  std::string base_model_name_or_path;
  std::map<std::string, PeftLayer> layers;  // by slot name ("model.layers.0.self_attn.q_proj")
};

// Reads a PEFT LoRA adapter directory (ours or PEFT's own for a
// LLaMA-family model). rank_pattern / alpha_pattern entries apply to a slot
// whose name equals the key or ends in "." + key (regular expressions are not
// interpreted). InvalidArgument naming the file and the key for another
// peft_type, lora_B without lora_A (or the reverse), inconsistent shapes, or a
// key outside "base_model.model.<slot>.lora_{A,B}.weight"; I/O errors name the
// path.
absl::StatusOr<PeftAdapter> ReadPeftAdapter(const std::string& dir);

// Attaches every layer of `adapter` to the model's slot of that name as a
// LoRA adapter (on a dense or quantized base), moved to the slot's device and
// dtype for the unmerged path. InvalidArgument naming the slot if it does not
// exist or its shape differs; slots attached before the error keep their
// adapter.
absl::Status AttachPeftAdapter(model::LlamaModel& model, const PeftAdapter& adapter);

}  // namespace qwha::pipeline
