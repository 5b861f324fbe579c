#include "worker/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/rms_norm.h"
#include "worker/model/rope.h"

// scaled_dot_product_attention arrived in LibTorch 2.0 (Debian's 1.13 lacks it).
#if TORCH_VERSION_MAJOR >= 2
#define QWHA_HAS_SDPA 1
#else
#define QWHA_HAS_SDPA 0
#endif

namespace qwha::model {

struct LlamaModel::Layer {
  torch::Tensor input_norm;  // [hidden]
  torch::Tensor post_norm;   // [hidden]
  std::unique_ptr<LinearSlot> q, k, v, o, gate, up, down;

  std::vector<LinearSlot*> Slots() const {
    return {q.get(), k.get(), v.get(), o.get(), gate.get(), up.get(), down.get()};
  }
};

namespace {

bool SupportedDtype(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16 ||
         t == torch::kFloat64;
}

// The dtype of norms, softmax and rope tables: float32, or float64 for a
// float64 model.
torch::ScalarType AccumulationDtype(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// int64 ids on `device`, checked against the vocabulary.
torch::Tensor CheckedIds(const torch::Tensor& ids, int64_t vocab, const torch::Device& device) {
  TORCH_CHECK(ids.defined() && ids.dim() == 2, "input_ids must be [batch, tokens], got ",
              ids.defined() ? c10::str(ids.sizes()) : "undefined");
  TORCH_CHECK(ids.scalar_type() == torch::kInt64 || ids.scalar_type() == torch::kInt32,
              "input_ids must be int64 or int32");
  TORCH_CHECK(ids.size(0) > 0 && ids.size(1) > 0, "input_ids is empty: ", ids.sizes());
  torch::Tensor out = ids.to(device, torch::kInt64);
  const int64_t lo = out.min().item<int64_t>();
  const int64_t hi = out.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < vocab, "input_ids hold ids in [", lo, ", ", hi,
              "], outside [0, vocab_size = ", vocab, ")");
  return out;
}

// Random tensors of RandomInit, by role (see llama.h).
torch::Tensor RandomTensor(const std::string& name, const std::vector<int64_t>& shape,
                           at::Generator& gen) {
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("norm.weight")) {
    t.normal_(0.0, 0.1, gen).add_(1.0);
  } else if (ends_with(".bias")) {
    t.normal_(0.0, 0.1, gen);
  } else if (name == "model.embed_tokens.weight") {
    t.normal_(0.0, 1.0, gen);
  } else {
    t.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(shape[1])), gen);
  }
  return t;
}

// Attention through scaled_dot_product_attention: q [B, H, T, D], k and v
// [B, KV, S, D]. The kv heads are repeated to H (repeat_kv: the fused kernels
// need equal head counts in every LibTorch 2.x). `causal` asks for the kernel's
// own causal mask (T == S, no window); otherwise `allowed` [T, S] is the mask.
torch::Tensor FusedAttention(const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                             const torch::Tensor& allowed, bool causal) {
#if QWHA_HAS_SDPA
  const int64_t b = k.size(0), kv_heads = k.size(1), s = k.size(2), d = k.size(3);
  const int64_t groups = q.size(1) / kv_heads;
  if (groups > 1) {
    k = k.unsqueeze(2).expand({b, kv_heads, groups, s, d}).reshape({b, kv_heads * groups, s, d});
    v = v.unsqueeze(2).expand({b, kv_heads, groups, s, d}).reshape({b, kv_heads * groups, s, d});
  }
  // Default scale 1/sqrt(D), as in the eager path.
  if (causal) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, /*is_causal=*/false);
#else
  (void)q, (void)k, (void)v, (void)allowed, (void)causal;
  TORCH_CHECK(false, "fused attention needs LibTorch >= 2.0");
#endif
}

}  // namespace

bool FusedAttentionAvailable() { return QWHA_HAS_SDPA != 0; }

void KvCache::Clear() {
  keys_.clear();
  values_.clear();
  length_ = 0;
}

LlamaModel::LlamaModel(const ModelConfig& config, const torch::Device& device,
                       torch::ScalarType dtype)
    : config_(config),
      device_(device),
      dtype_(dtype),
      attention_impl_(FusedAttentionAvailable() ? AttentionImpl::kFused : AttentionImpl::kEager) {}

absl::Status LlamaModel::SetAttentionImpl(AttentionImpl impl) {
  if (impl == AttentionImpl::kFused && !FusedAttentionAvailable()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused attention needs LibTorch >= 2.0; this build has ", TORCH_VERSION));
  }
  attention_impl_ = impl;
  return absl::OkStatus();
}

LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::FromTensors(
    const ModelConfig& config, const std::map<std::string, torch::Tensor>& tensors,
    const torch::Device& device, torch::ScalarType dtype) {
  if (absl::Status st = ValidateModelConfig(config); !st.ok()) return st;
  if (!SupportedDtype(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model dtype must be float32, bfloat16, float16 or float64, got ", c10::toString(dtype)));
  }
  for (const TensorSpec& spec : ExpectedTensors(config)) {
    auto it = tensors.find(spec.name);
    if (it == tensors.end() || !it->second.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' is missing"));
    }
    if (it->second.sizes().vec() != spec.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name, "' has shape ", c10::str(it->second.sizes()),
                       ", the config needs ", c10::str(c10::IntArrayRef(spec.shape))));
    }
  }
  auto get = [&](const std::string& name) {
    return tensors.at(name).detach().to(device, dtype).contiguous();
  };

  std::unique_ptr<LlamaModel> m(new LlamaModel(config, device, dtype));
  m->embed_tokens_ = get("model.embed_tokens.weight");
  m->final_norm_ = get("model.norm.weight");
  m->lm_head_ = config.tie_word_embeddings ? m->embed_tokens_ : get("lm_head.weight");
  m->inv_freq_ = RopeInverseFrequencies(config, AccumulationDtype(dtype)).to(device);

  const int64_t h = config.hidden_size;
  const int64_t q_out = config.num_attention_heads * config.head_dim;
  const int64_t kv_out = config.num_key_value_heads * config.head_dim;
  const int64_t inter = config.intermediate_size;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    auto layer = std::make_unique<Layer>();
    const std::string p = absl::StrCat("model.layers.", l, ".");
    layer->input_norm = get(p + "input_layernorm.weight");
    layer->post_norm = get(p + "post_attention_layernorm.weight");
    struct SlotSpec {
      std::unique_ptr<LinearSlot>* slot;
      std::string name;
      int64_t in, out;
      bool bias;
    };
    const SlotSpec specs[] = {
        {&layer->q, p + "self_attn.q_proj", h, q_out, config.qkv_bias},
        {&layer->k, p + "self_attn.k_proj", h, kv_out, config.qkv_bias},
        {&layer->v, p + "self_attn.v_proj", h, kv_out, config.qkv_bias},
        {&layer->o, p + "self_attn.o_proj", q_out, h, config.o_bias},
        {&layer->gate, p + "mlp.gate_proj", h, inter, config.mlp_bias},
        {&layer->up, p + "mlp.up_proj", h, inter, config.mlp_bias},
        {&layer->down, p + "mlp.down_proj", inter, h, config.mlp_bias},
    };
    for (const SlotSpec& s : specs) {
      *s.slot = std::make_unique<LinearSlot>(s.name, s.in, s.out, device, dtype);
      if (absl::Status st = (*s.slot)->SetDenseWeight(tensors.at(s.name + ".weight")); !st.ok()) {
        return st;
      }
      if (s.bias) {
        if (absl::Status st = (*s.slot)->SetBias(tensors.at(s.name + ".bias")); !st.ok()) {
          return st;
        }
      }
    }
    m->layers_.push_back(std::move(layer));
  }
  return m;
}

std::unique_ptr<LlamaModel> LlamaModel::RandomInit(const ModelConfig& config, uint64_t seed,
                                                   const torch::Device& device,
                                                   torch::ScalarType dtype) {
  absl::Status valid = ValidateModelConfig(config);
  TORCH_CHECK(valid.ok(), "RandomInit: ", valid.ToString());
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::map<std::string, torch::Tensor> tensors;
  for (const TensorSpec& spec : ExpectedTensors(config)) {
    tensors[spec.name] = RandomTensor(spec.name, spec.shape, gen);
  }
  auto model = FromTensors(config, tensors, device, dtype);
  TORCH_CHECK(model.ok(), "RandomInit: ", model.status().ToString());
  return std::move(*model);
}

torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  // On CUDA the fused kernel (same roundings, one pass per direction instead of
  // a chain of float32 temporaries); elsewhere the ATen composition below.
  if (x.is_cuda() && x.scalar_type() != torch::kFloat64) {
    return kernels::RmsNorm(x, weight, config_.rms_norm_eps);
  }
  torch::Tensor h = x.to(AccumulationDtype(x.scalar_type()));
  torch::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(variance + config_.rms_norm_eps);
  return weight * h.to(x.scalar_type());
}

torch::Tensor LlamaModel::Project(const LinearSlot& slot, const torch::Tensor& x) const {
  if (hook_) hook_(slot, x);
  return slot.Forward(x, adapter_mode_);
}

torch::Tensor LlamaModel::Attention(const Layer& layer, int64_t index, const torch::Tensor& x,
                                    const torch::Tensor& cos, const torch::Tensor& sin,
                                    const torch::Tensor& allowed, bool causal,
                                    KvCache* cache) const {
  const int64_t b = x.size(0);
  const int64_t t = x.size(1);
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t groups = heads / kv_heads;

  torch::Tensor q = Project(*layer.q, x).view({b, t, heads, d}).transpose(1, 2);
  torch::Tensor k = Project(*layer.k, x).view({b, t, kv_heads, d}).transpose(1, 2);
  torch::Tensor v = Project(*layer.v, x).view({b, t, kv_heads, d}).transpose(1, 2);
  q = ApplyRope(q, cos, sin);
  k = ApplyRope(k, cos, sin);
  if (cache != nullptr) {
    auto& ck = cache->keys_[static_cast<size_t>(index)];
    auto& cv = cache->values_[static_cast<size_t>(index)];
    if (ck.defined()) {
      k = torch::cat({ck, k}, 2);
      v = torch::cat({cv, v}, 2);
    }
    ck = k;
    cv = v;
  }
  const int64_t s = k.size(2);

  if (attention_impl_ == AttentionImpl::kFused) {
    torch::Tensor out = FusedAttention(q, k, v, allowed, causal && s == t);
    return Project(*layer.o, out.transpose(1, 2).reshape({b, t, heads * d}));
  }

  // Query heads j·groups .. j·groups + groups - 1 share kv head j (repeat_kv):
  // fold the group into the query rows instead of repeating keys and values.
  torch::Tensor qg = q.reshape({b, kv_heads, groups * t, d});
  torch::Tensor scores =
      torch::matmul(qg, k.transpose(-2, -1)) * std::pow(static_cast<double>(d), -0.5);
  scores = scores.view({b, kv_heads, groups, t, s});
  // Masked scores get -inf (transformers adds the dtype's minimum; both give
  // probability 0, and every row keeps at least its own position).
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  torch::Tensor probs = torch::softmax(scores, -1, AccumulationDtype(dtype_)).to(q.scalar_type());
  torch::Tensor out = torch::matmul(probs.view({b, kv_heads, groups * t, s}), v);
  out = out.view({b, heads, t, d}).transpose(1, 2).reshape({b, t, heads * d});
  return Project(*layer.o, out);
}

torch::Tensor LlamaModel::Mlp(const Layer& layer, const torch::Tensor& x) const {
  torch::Tensor gate = Project(*layer.gate, x);
  torch::Tensor up = Project(*layer.up, x);
  return Project(*layer.down, torch::silu(gate) * up);
}

torch::Tensor LlamaModel::DecoderLayer(int64_t index, const torch::Tensor& h,
                                       const torch::Tensor& cos, const torch::Tensor& sin,
                                       const torch::Tensor& allowed, bool plain_causal,
                                       KvCache* cache) const {
  const Layer& layer = *layers_[static_cast<size_t>(index)];
  torch::Tensor out = h + Attention(layer, index, RmsNorm(h, layer.input_norm), cos, sin, allowed,
                                    plain_causal, cache);
  return out + Mlp(layer, RmsNorm(out, layer.post_norm));
}

namespace {

// A decoder layer whose forward runs without recording a graph and whose
// backward runs it again, with grad on, from the saved input (activation
// checkpointing): the layer's activations live only during its own backward.
// Inputs: the layer input h, the trainable adapter parameters of the layer
// (so their gradients flow out of this node like any other), and the layer's
// context. The layer is deterministic (no dropout, no sampling), so the
// recomputed activations equal the first ones and the gradients equal those
// of the plain path.
class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  using LayerFn = std::function<torch::Tensor(const torch::Tensor&)>;

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h,
                               at::TensorList params, const std::shared_ptr<LayerFn>& layer) {
    std::vector<torch::Tensor> saved = {h};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    // The closure travels in saved_data as an opaque pointer owned by the
    // node: kept alive until the node is released with the graph.
    ctx->saved_data["layer"] = c10::IValue::make_capsule(c10::make_intrusive<LayerHolder>(layer));
    return (*layer)(h);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const c10::intrusive_ptr<torch::CustomClassHolder> holder =
        ctx->saved_data["layer"].toCapsule();
    const LayerFn& layer = *static_cast<const LayerHolder*>(holder.get())->fn;
    torch::autograd::variable_list inputs;
    inputs.push_back(saved[0].detach().requires_grad_(saved[0].requires_grad()));
    inputs.insert(inputs.end(), saved.begin() + 1, saved.end());
    torch::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      out = layer(inputs[0]);
    }
    // Only the inputs that need a gradient are asked for; the others get none.
    torch::autograd::variable_list wanted;
    std::vector<size_t> where;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].requires_grad()) {
        wanted.push_back(inputs[i]);
        where.push_back(i);
      }
    }
    torch::autograd::variable_list grads(inputs.size() + 1);  // + the closure's slot
    if (!wanted.empty() && out.requires_grad()) {
      torch::autograd::variable_list got =
          torch::autograd::grad({out}, wanted, {grad_out[0]}, /*retain_graph=*/false,
                                /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t j = 0; j < where.size(); ++j) grads[where[j]] = got[j];
    }
    return grads;
  }

 private:
  struct LayerHolder : torch::CustomClassHolder {
    explicit LayerHolder(std::shared_ptr<LayerFn> f) : fn(std::move(f)) {}
    std::shared_ptr<LayerFn> fn;
  };
};

}  // namespace

torch::Tensor LlamaModel::CheckpointedLayer(int64_t index, const torch::Tensor& h,
                                            const torch::Tensor& cos, const torch::Tensor& sin,
                                            const torch::Tensor& allowed, bool plain_causal) const {
  std::vector<torch::Tensor> params;
  for (const LinearSlot* slot : layers_[static_cast<size_t>(index)]->Slots()) {
    if (slot->adapter() == nullptr) continue;
    for (const torch::Tensor& p : slot->adapter()->TrainableParameters()) {
      if (p.requires_grad()) params.push_back(p);
    }
  }
  // The rope tables and the mask are shared by all layers and kept by the
  // closure; they carry no gradient.
  auto layer = std::make_shared<CheckpointFunction::LayerFn>(
      [this, index, cos, sin, allowed, plain_causal](const torch::Tensor& x) {
        return DecoderLayer(index, x, cos, sin, allowed, plain_causal, nullptr);
      });
  return CheckpointFunction::apply(h, at::TensorList(params), layer);
}

torch::Tensor LlamaModel::ForwardHidden(const torch::Tensor& input_ids, KvCache* cache) const {
  torch::Tensor ids = CheckedIds(input_ids, config_.vocab_size, device_);
  const int64_t t = ids.size(1);
  int64_t start = 0;
  if (cache != nullptr) {
    if (cache->keys_.empty()) {
      cache->keys_.resize(layers_.size());
      cache->values_.resize(layers_.size());
      cache->length_ = 0;
    }
    TORCH_CHECK(cache->keys_.size() == layers_.size(), "KvCache belongs to another model");
    TORCH_CHECK(!cache->keys_[0].defined() || cache->keys_[0].size(0) == ids.size(0), "batch size ",
                ids.size(0), " differs from the cache's ", cache->keys_[0].size(0));
    start = cache->length_;
  }
  auto [cos, sin] = RopeTables(inv_freq_, start, t);

  // allowed[i, j]: query i (position start + i) may attend to key position j.
  const int64_t s = start + t;
  torch::Tensor qpos =
      torch::arange(start, s, torch::dtype(torch::kInt64).device(device_)).unsqueeze(1);
  torch::Tensor kpos =
      torch::arange(0, s, torch::dtype(torch::kInt64).device(device_)).unsqueeze(0);
  const torch::Tensor causal = kpos <= qpos;
  torch::Tensor windowed;
  if (config_.sliding_window > 0) {
    windowed = causal.logical_and(qpos - kpos < config_.sliding_window);
  }

  // Checkpointing pays off only where backward will run through the layers.
  const bool checkpoint =
      activation_checkpointing_ && cache == nullptr && torch::GradMode::is_enabled();
  torch::Tensor h = torch::embedding(embed_tokens_, ids);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const int64_t index = static_cast<int64_t>(l);
    const bool sliding = config_.UsesSlidingWindow(index);
    const torch::Tensor& allowed = sliding ? windowed : causal;
    // A plain causal mask over a fresh sequence: the fused kernel's own.
    const bool plain_causal = start == 0 && (!sliding || config_.sliding_window >= t);
    if (checkpoint) {
      h = CheckpointedLayer(index, h, cos, sin, allowed, plain_causal);
    } else {
      h = DecoderLayer(index, h, cos, sin, allowed, plain_causal, cache);
    }
  }
  if (cache != nullptr) cache->length_ = start + t;
  return RmsNorm(h, final_norm_);
}

torch::Tensor LlamaModel::Forward(const torch::Tensor& input_ids, KvCache* cache) const {
  torch::Tensor h = ForwardHidden(input_ids, cache);
  return torch::matmul(h, lm_head_.t()).to(torch::kFloat32);
}

absl::StatusOr<torch::Tensor> LlamaModel::Generate(const torch::Tensor& prompt_ids,
                                                   const GenerateOptions& options) const {
  if (!prompt_ids.defined() || prompt_ids.dim() != 2 || prompt_ids.size(0) < 1 ||
      prompt_ids.size(1) < 1 ||
      (prompt_ids.scalar_type() != torch::kInt64 && prompt_ids.scalar_type() != torch::kInt32)) {
    return absl::InvalidArgumentError(
        "Generate: prompt_ids must be a non-empty int64 [batch, "
        "tokens] tensor");
  }
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError("Generate: max_new_tokens must be >= 0");
  }
  if (!options.greedy && !(options.temperature > 0)) {
    return absl::InvalidArgumentError("Generate: temperature must be positive");
  }
  torch::Tensor prompt = prompt_ids.to(torch::kCPU, torch::kInt64);
  const int64_t lo = prompt.min().item<int64_t>();
  const int64_t hi = prompt.max().item<int64_t>();
  if (lo < 0 || hi >= config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("Generate: prompt ids span [", lo, ", ", hi,
                                                   "], outside [0, ", config_.vocab_size, ")"));
  }
  for (int64_t id : options.eos_token_ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("Generate: eos id ", id, " out of range"));
    }
  }
  if (options.max_new_tokens == 0) return prompt;

  torch::NoGradGuard no_grad;
  const int64_t batch = prompt.size(0);
  const int64_t pad = config_.pad_token_id.has_value() ? *config_.pad_token_id
                      : !options.eos_token_ids.empty() ? options.eos_token_ids[0]
                                                       : 0;
  torch::Tensor eos = torch::tensor(options.eos_token_ids, torch::kInt64);
  at::Generator gen = at::detail::createCPUGenerator(options.seed);

  KvCache cache;
  std::vector<torch::Tensor> pieces = {prompt};
  torch::Tensor finished = torch::zeros({batch}, torch::kBool);
  torch::Tensor logits = Forward(prompt, &cache);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    torch::Tensor last = logits.select(1, logits.size(1) - 1).to(torch::kCPU);  // [B, V] float32
    torch::Tensor next;
    if (options.greedy) {
      next = last.argmax(-1);
    } else {
      torch::Tensor probs = torch::softmax(last / options.temperature, -1);
      next = torch::multinomial(probs, 1, /*replacement=*/false, gen).squeeze(1);
    }
    next = torch::where(finished, torch::full_like(next, pad), next);
    pieces.push_back(next.unsqueeze(1));
    if (eos.numel() > 0) {
      finished = finished.logical_or(next.unsqueeze(1).eq(eos.unsqueeze(0)).any(/*dim=*/1));
      if (finished.all().item<bool>()) break;
    }
    if (step + 1 == options.max_new_tokens) break;
    logits = Forward(next.unsqueeze(1), &cache);
  }
  return torch::cat(pieces, 1);
}

std::vector<LinearSlot*> LlamaModel::LinearSlots() {
  std::vector<LinearSlot*> out;
  for (const auto& layer : layers_) {
    for (LinearSlot* s : layer->Slots()) out.push_back(s);
  }
  return out;
}

std::vector<const LinearSlot*> LlamaModel::LinearSlots() const {
  std::vector<const LinearSlot*> out;
  for (const auto& layer : layers_) {
    for (LinearSlot* s : layer->Slots()) out.push_back(s);
  }
  return out;
}

LinearSlot* LlamaModel::FindLinear(const std::string& name) {
  for (LinearSlot* s : LinearSlots()) {
    if (s->name() == name) return s;
  }
  return nullptr;
}

std::map<std::string, torch::Tensor> LlamaModel::ExportStateDict(torch::ScalarType dtype) const {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> out;
  out["model.embed_tokens.weight"] = embed_tokens_.to(dtype);
  out["model.norm.weight"] = final_norm_.to(dtype);
  if (!config_.tie_word_embeddings) out["lm_head.weight"] = lm_head_.to(dtype);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    out[p + "input_layernorm.weight"] = layer.input_norm.to(dtype);
    out[p + "post_attention_layernorm.weight"] = layer.post_norm.to(dtype);
    for (const LinearSlot* s : layer.Slots()) {
      out[s->name() + ".weight"] = s->EffectiveWeight(dtype);
      if (s->bias().defined()) out[s->name() + ".bias"] = s->bias().to(dtype);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const std::string& dir,
                                                      const torch::Device& device,
                                                      torch::ScalarType dtype) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir + "/" + kConfigFile);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::map<std::string, torch::Tensor>> tensors =
      LoadCheckpointTensors(dir, *config, dtype, device);
  if (!tensors.ok()) return tensors.status();
  return LlamaModel::FromTensors(*config, *tensors, device, dtype);
}

absl::Status SaveModel(const LlamaModel& model, const std::string& dir,
                       const SaveOptions& options) {
  return SaveModelDirectory(dir, model.config(), model.ExportStateDict(options.dtype), options);
}

}  // namespace qwha::model
