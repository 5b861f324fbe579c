// ServingModel: one quantized base model prepared for batched, multi-adapter
// decoding (docs/serving.md).
//
// The base is quantized once at load (RTN, the configured bits / group size /
// target modules, exactly as a job's recipe quantizes it), and deq(Q) of every
// projection is computed once and kept in the serving dtype; q/k/v and
// gate/up are fused into one GEMM each. Adapters are never merged into these
// weights: Forward adds each row's own adapter correction on top (unmerged
// path), so requests for different adapters share one batch:
//
//   y_rows = x_rows · deq(Q)ᵀ  +  Δ_a(x_rows) for every adapter a in the step
//   QWHA:  Δ(x) = (s/n) · FWHT(x) · Fᵀ      (F sparse, serving_adapter.h)
//   LoRA:  Δ(x) = scale · (x Aᵀ) Bᵀ
//
// Attention reads keys and values from a KvPool (kv_pool.h): each request owns
// one slot of it for its whole life.
//
// Thread safety: a ServingModel is immutable after Load; Forward may run
// concurrently with itself only on distinct KvPools (the engine runs it from
// one thread).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/model/llama.h"
#include "worker/quant/quantizer.h"

namespace qwha::serve {

class KvPool;
class ServingAdapter;

struct ServingModelOptions {
  std::string model_dir;  // a transformers model directory
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;  // float32, bfloat16 or float16
  quant::QuantConfig quant;                   // RTN only (see serving.md on GPTQ)
  std::vector<std::string> target_modules;    // quantized projections; empty: all seven
  int64_t max_seq_len = 1024;                 // positions the RoPE tables cover
};

// One projection of the model, as adapters address it.
struct SlotInfo {
  std::string name;  // "model.layers.3.self_attn.q_proj"
  int64_t layer = 0;
  int kind = 0;  // index into kSlotKinds
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool quantized = false;
};

// The 7 projections of a layer, in slot order (slot index = layer * 7 + kind).
inline constexpr const char* kSlotKinds[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
inline constexpr int kSlotsPerLayer = 7;

// One request's tokens in a step: `tokens` continue the `start` tokens the
// request's KV slot already holds.
struct StepSegment {
  int64_t slot = 0;
  int64_t start = 0;
  std::vector<int64_t> tokens;              // at least one
  const ServingAdapter* adapter = nullptr;  // nullptr: the base alone
};

class ServingModel {
 public:
  // Loads options.model_dir, quantizes the target projections with RTN and
  // keeps deq(Q). InvalidArgument naming the field for a bad option (GPTQ,
  // dtype, unknown target module); errors of loading name the file.
  static absl::StatusOr<std::unique_ptr<ServingModel>> Load(const ServingModelOptions& options);

  // From a model whose target projections are already quantized (and whose
  // adapters, if any, are ignored): tests and benchmarks build the base and
  // the merged reference from one LlamaModel. `quant` and `target_modules`
  // are recorded as given.
  static absl::StatusOr<std::unique_ptr<ServingModel>> FromModel(
      const model::LlamaModel& model, const quant::QuantConfig& quant,
      const std::vector<std::string>& target_modules, int64_t max_seq_len);

  ServingModel(const ServingModel&) = delete;
  ServingModel& operator=(const ServingModel&) = delete;
  ~ServingModel();

  const model::ModelConfig& config() const { return config_; }
  const torch::Device& device() const { return device_; }
  torch::ScalarType dtype() const { return dtype_; }
  const quant::QuantConfig& quant() const { return quant_; }
  const std::vector<std::string>& target_modules() const { return target_modules_; }
  int64_t max_seq_len() const { return max_seq_len_; }

  const std::vector<SlotInfo>& slots() const { return slots_; }
  // The slot index of a projection name, or nullopt.
  std::optional<int64_t> SlotIndex(const std::string& name) const;

  // Bytes of the serving weights (deq(Q), norms, embeddings, RoPE tables).
  int64_t memory_bytes() const;

  // Runs one step. Segments must use distinct KV slots, start + tokens must
  // fit in the pool's length, and every adapter must have been built for
  // this model. Writes the segments' keys/values into `pool` and returns the
  // logits of each segment's last token: [segments, vocab] float32 on the
  // model's device. Throws c10::Error on a violated precondition (the engine
  // checks them before calling).
  torch::Tensor Forward(const std::vector<StepSegment>& segments, KvPool* pool) const;

  // Whether, on CUDA, the FWHT of the QWHA adapters' input comes from the
  // kernel before it (the default: the RMSNorm before q/k/v and gate/up, the
  // copy of the attention's output before o) or from a kernel of its own
  // (for benchmarks to compare). Not while steps run.
  void set_fused_fwht(bool fused) { fused_fwht_ = fused; }
  // With fused FWHTs, decode steps whose QWHA groups have at most 4 tokens
  // get the adapters' inputs in chunks of 4 tokens from those kernels
  // (kernels::ChunkRows' layout: the product copies a chunk to shared memory
  // as it is), and the down projection's from kernels::FwhtChunks where it
  // is one kernel (kernels::FusedFwhtChunks) — the default; false: in rows
  // (for benchmarks to compare). Not while steps run.
  void set_chunked_z(bool chunked) { chunked_z_ = chunked; }

 private:
  struct Layer;
  struct Rows;
  struct StepPlan;
  ServingModel() = default;
  // Takes the HF-named tensors (projections already deq(Q) where quantized).
  absl::Status Build(std::map<std::string, torch::Tensor> tensors,
                     const std::set<std::string>& quantized);
  // Forward's parts: the host layout of a step (checks the preconditions),
  // its index lists on the device (views of `inputs`, which holds
  // plan.buffer_size() int64 elements already filled), the layers, and the
  // CUDA-graph path of decode steps (serving_forward.cc).
  StepPlan Plan(const std::vector<StepSegment>& segments, const KvPool& pool) const;
  Rows Upload(const StepPlan& plan, const torch::Tensor& inputs) const;
  torch::Tensor Run(const Rows& rows, KvPool* pool) const;
  // Upload + Run, the batch reading `len` keys per slot (>= the longest).
  torch::Tensor RunEager(const StepPlan& plan, KvPool* pool, int64_t len) const;
  torch::Tensor ForwardCaptured(const StepPlan& plan, KvPool* pool) const;
  // Whether a group of the step has a spectrum (QWHA) adapter on one of the
  // layer's slots [first_kind, first_kind + kinds).
  bool HasSpectrum(const Rows& rows, int64_t layer, int first_kind, int kinds) const;
  // RmsNorm(h, weight) and, where HasSpectrum on CUDA, SpectrumInput of it
  // from the same kernel (kernels::RmsNormFwht); else an undefined second.
  std::pair<torch::Tensor, torch::Tensor> NormInput(const Rows& rows, int64_t layer, int first_kind,
                                                    int kinds, const torch::Tensor& h,
                                                    const torch::Tensor& weight) const;
  // Adds the adapters' corrections of those slots to y (the base projection
  // of x). z: SpectrumInput(x) if already computed, else undefined.
  void AddDeltas(const Rows& rows, int64_t layer, int first_kind, int kinds, const torch::Tensor& x,
                 torch::Tensor z, torch::Tensor& y) const;
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;
  // The attention's output [rows, heads · head_dim]. With z, where every
  // row of the step is a single token, also sets *z to SpectrumInput of it
  // from the kernel that copies it into place (kernels::CopyRowsFwht); *z
  // stays undefined otherwise.
  torch::Tensor Attention(const Rows& rows, int64_t layer, const torch::Tensor& q,
                          const torch::Tensor& k, const torch::Tensor& v, KvPool* pool,
                          torch::Tensor* z = nullptr) const;

  model::ModelConfig config_;
  torch::Device device_ = torch::kCPU;
  torch::ScalarType dtype_ = torch::kFloat32;
  quant::QuantConfig quant_;
  std::vector<std::string> target_modules_;
  int64_t max_seq_len_ = 0;
  std::vector<SlotInfo> slots_;
  bool fused_fwht_ = true;
  bool chunked_z_ = true;
  bool down_chunks_ = false;  // kernels::FusedFwhtChunks of the down projection's input
  std::map<std::string, int64_t> slot_index_;
  torch::Tensor embed_tokens_;  // [vocab, hidden]
  torch::Tensor final_norm_;    // [hidden]
  torch::Tensor lm_head_;       // [vocab, hidden]; aliases embed_tokens_ when tied
  torch::Tensor rope_cos_;      // [max_seq_len, head_dim], float32
  torch::Tensor rope_sin_;
  std::vector<std::unique_ptr<Layer>> layers_;
};

}  // namespace qwha::serve
