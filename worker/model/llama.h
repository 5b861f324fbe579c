// The LLaMA-family decoder (llama, mistral, qwen2) in LibTorch, numerically
// the transformers implementation with eager attention:
//
//   h = embed_tokens[ids]
//   per layer:  h += o(Attention(RoPE(q(n)), RoPE(k(n)), v(n))),  n = RMSNorm(h)
//               h += down(silu(gate(n)) · up(n)),                 n = RMSNorm(h)
//   logits = lm_head(RMSNorm(h))        (lm_head = embed_tokens when tied)
//
// Attention: grouped-query (query head j reads kv head j / (heads / kv_heads)),
// scores (q kᵀ) · head_dim^-1/2, causal mask (plus the sliding window where
// the config has one), softmax in float32. RMSNorm and softmax compute in
// float32 (float64 for a float64 model); everything else in the model dtype
// (float32, bfloat16, float16, or float64 for reference checks). On CUDA,
// RMSNorm is the fused kernel of kernels/rms_norm.h (the same roundings).
// Two implementations of the same function (AttentionImpl): the eager one
// above, which materializes the [T, S] scores (and keeps them for backward),
// and a fused one through scaled_dot_product_attention (LibTorch >= 2.0:
// flash / memory-efficient kernels on CUDA, which keep only the output and
// the row log-sum-exp). The fused one is the default where it exists.
//
// Each of the 7 projections of a layer is a LinearSlot (linear_slot.h): the
// pipeline quantizes a model by replacing slot weights with QuantizedWeights,
// attaches adapters to slots, and collects calibration inputs with a
// LinearInputHook.
//
// Thread safety: const methods (Forward, Generate, accessors) may run
// concurrently, each with its own KvCache; anything that changes the model
// (slot mutators, SetAdapterMode, SetAttentionImpl, SetLinearInputHook) needs external
// synchronization with them. The hook is called from the thread that runs
// Forward.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config.h"
#include "worker/model/linear_slot.h"

namespace qwha::model {

// Keys and values of every layer for the tokens seen so far (RoPE applied),
// for incremental decoding. One cache per sequence batch; not shareable
// between concurrent Forward calls.
class KvCache {
 public:
  KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Tokens cached (the position of the next token).
  int64_t length() const { return length_; }
  void Clear();

 private:
  friend class LlamaModel;
  std::vector<torch::Tensor> keys_;    // per layer [B, kv_heads, length, head_dim]
  std::vector<torch::Tensor> values_;  // per layer [B, kv_heads, length, head_dim]
  int64_t length_ = 0;
};

// Called with every projection's input x [B, T, in] (before the cast to the
// model dtype) just before the projection runs. q/k/v receive the same tensor,
// as do gate/up: a Gram accumulator can key on the tensor's data_ptr to
// compute each Gram once.
using LinearInputHook = std::function<void(const LinearSlot& slot, const torch::Tensor& input)>;

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  // Generation of a sequence stops after it emits one of these; once every
  // sequence has stopped, Generate returns. Finished sequences are padded
  // with pad_token_id (else the first eos id) while others continue.
  std::vector<int64_t> eos_token_ids;
  // Greedy (argmax, ties to the lowest id) if true; else sampling from
  // softmax(logits / temperature) with a CPU generator seeded by `seed`.
  bool greedy = true;
  double temperature = 1.0;
  uint64_t seed = 0;
};

enum class AttentionImpl {
  kEager,  // matmul + masked softmax (float32) + matmul; every LibTorch
  kFused,  // scaled_dot_product_attention; LibTorch >= 2.0 only
};

// True iff this build's LibTorch has scaled_dot_product_attention (>= 2.0).
bool FusedAttentionAvailable();

class LlamaModel {
 public:
  // A model of `config` from HF-named tensors (ExpectedTensors(config), any
  // device and float dtype) moved to `device` and cast to `dtype`.
  // InvalidArgument naming the tensor for a missing or mis-shaped one, or for
  // an invalid config or dtype (float32, bfloat16, float16, float64).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> FromTensors(
      const ModelConfig& config, const std::map<std::string, torch::Tensor>& tensors,
      const torch::Device& device, torch::ScalarType dtype);

  // Random weights for tests and benchmarks, deterministic in `seed` (drawn on
  // the CPU in float32, then moved): embeddings N(0, 1), projection and
  // lm_head weights N(0, 1/in_features), biases N(0, 0.1²), norm weights
  // 1 + N(0, 0.1²). Throws c10::Error on an invalid config or dtype.
  static std::unique_ptr<LlamaModel> RandomInit(const ModelConfig& config, uint64_t seed,
                                                const torch::Device& device,
                                                torch::ScalarType dtype);

  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;
  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  const torch::Device& device() const { return device_; }
  torch::ScalarType dtype() const { return dtype_; }

  // Logits [B, T, vocab] in float32 for input_ids [B, T] (int64 or int32, any
  // device). With a cache the tokens continue the cached ones (positions
  // start at cache->length()) and their keys/values are appended.
  // Differentiable w.r.t. adapter parameters when grad mode is on. Throws
  // c10::Error for ids that are not 2-D, out of [0, vocab), or a batch size
  // that differs from the cache's.
  torch::Tensor Forward(const torch::Tensor& input_ids, KvCache* cache = nullptr) const;

  // The final hidden states [B, T, hidden] (after the final norm) in the model
  // dtype; Forward = lm_head(ForwardHidden). Same contract as Forward.
  torch::Tensor ForwardHidden(const torch::Tensor& input_ids, KvCache* cache = nullptr) const;

  // prompt_ids [B, T] (T >= 1) followed by up to max_new_tokens generated
  // ids: [B, T + n] int64 on the CPU, using a KV cache, without gradients.
  // InvalidArgument for a malformed prompt, an id out of range or
  // max_new_tokens < 0.
  absl::StatusOr<torch::Tensor> Generate(const torch::Tensor& prompt_ids,
                                         const GenerateOptions& options) const;

  // The 7 projections of every layer in model order (q, k, v, o, gate, up,
  // down per layer), each named as in transformers. Pointers stay valid for
  // the model's lifetime.
  std::vector<LinearSlot*> LinearSlots();
  std::vector<const LinearSlot*> LinearSlots() const;
  // The slot named `name` ("model.layers.0.mlp.down_proj"), or nullptr.
  LinearSlot* FindLinear(const std::string& name);

  // How quantized slots with adapters compute (default kMerged).
  void SetAdapterMode(AdapterMode mode) { adapter_mode_ = mode; }
  AdapterMode adapter_mode() const { return adapter_mode_; }

  // The attention implementation (default kFused where FusedAttentionAvailable(),
  // else kEager). InvalidArgument for kFused where it is not available.
  absl::Status SetAttentionImpl(AttentionImpl impl);
  AttentionImpl attention_impl() const { return attention_impl_; }

  // Activation checkpointing (default off): with it on, a Forward without a
  // cache in grad mode keeps only each decoder layer's input for backward and
  // recomputes the layer's activations there (one more forward pass of the
  // layers, in exchange for their activation memory). Gradients are the same.
  // The model must outlive the graph (as it must anyway).
  void SetActivationCheckpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  // The output projection [vocab, hidden] in the model dtype (the embedding
  // matrix when the config ties them): Forward = ForwardHidden · lm_head()ᵀ.
  // Frozen (never requires grad); valid for the model's lifetime.
  const torch::Tensor& lm_head() const { return lm_head_; }

  // Installs (or, with an empty function, removes) the input hook.
  void SetLinearInputHook(LinearInputHook hook) { hook_ = std::move(hook); }

  // Every ExpectedTensors(config) entry as the model computes it, in `dtype`
  // on the model's device: projections as EffectiveWeight (W, or
  // deq(Q) + ΔW — the merged export), norms, embeddings, biases.
  std::map<std::string, torch::Tensor> ExportStateDict(torch::ScalarType dtype) const;

 private:
  struct Layer;

  LlamaModel(const ModelConfig& config, const torch::Device& device, torch::ScalarType dtype);

  torch::Tensor Project(const LinearSlot& slot, const torch::Tensor& x) const;
  torch::Tensor Attention(const Layer& layer, int64_t index, const torch::Tensor& x,
                          const torch::Tensor& cos, const torch::Tensor& sin,
                          const torch::Tensor& allowed, bool causal, KvCache* cache) const;
  torch::Tensor Mlp(const Layer& layer, const torch::Tensor& x) const;
  // h + attention + MLP of layer `index` (the residual stream in and out).
  torch::Tensor DecoderLayer(int64_t index, const torch::Tensor& h, const torch::Tensor& cos,
                             const torch::Tensor& sin, const torch::Tensor& allowed,
                             bool plain_causal, KvCache* cache) const;
  // DecoderLayer through the checkpointing autograd function.
  torch::Tensor CheckpointedLayer(int64_t index, const torch::Tensor& h, const torch::Tensor& cos,
                                  const torch::Tensor& sin, const torch::Tensor& allowed,
                                  bool plain_causal) const;
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;

  ModelConfig config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  torch::Tensor embed_tokens_;  // [vocab, hidden]
  torch::Tensor final_norm_;    // [hidden]
  torch::Tensor lm_head_;       // [vocab, hidden]; aliases embed_tokens_ when tied
  torch::Tensor inv_freq_;      // [head_dim / 2], float32 (float64 for a float64 model)
  std::vector<std::unique_ptr<Layer>> layers_;
  AdapterMode adapter_mode_ = AdapterMode::kMerged;
  AttentionImpl attention_impl_;
  bool activation_checkpointing_ = false;
  LinearInputHook hook_;
};

// LoadModelConfig(dir/config.json) + LoadCheckpointTensors + FromTensors.
// Errors name the file and the field or tensor.
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const std::string& dir,
                                                      const torch::Device& device,
                                                      torch::ScalarType dtype);

// Writes the model as a transformers model directory: its config and
// ExportStateDict(options.dtype) (quantized slots merged with their adapters).
absl::Status SaveModel(const LlamaModel& model, const std::string& dir,
                       const SaveOptions& options = {});

}  // namespace qwha::model
