// ServingModel: loading the base and preparing its serving weights. The
// forward pass is in serving_forward.cc.
#include "worker/serve/serving_model.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/fwht.h"
#include "worker/model/checkpoint.h"
#include "worker/model/rope.h"
#include "worker/serve/serving_forward_internal.h"

namespace qwha::serve {
namespace {

const std::vector<std::string>& AllModules() {
  static const auto* all =
      new std::vector<std::string>(std::begin(kSlotKinds), std::end(kSlotKinds));
  return *all;
}

bool IsTarget(const std::string& slot, const std::vector<std::string>& modules) {
  for (const std::string& m : modules) {
    if (absl::EndsWith(slot, "." + m)) return true;
  }
  return false;
}

absl::Status CheckOptions(const ServingModelOptions& o, std::vector<std::string>* modules) {
  if (o.model_dir.empty()) return absl::InvalidArgumentError("model_dir: required");
  if (o.dtype != torch::kFloat32 && o.dtype != torch::kBFloat16 && o.dtype != torch::kFloat16) {
    return absl::InvalidArgumentError("dtype: must be float32, bfloat16 or float16");
  }
  if (o.quant.method != quant::QuantMethod::kRtn) {
    return absl::InvalidArgumentError(
        "method: only rtn can be served (a GPTQ base depends on each job's calibration data, "
        "so adapters of different jobs do not share one)");
  }
  if (o.max_seq_len < 2) return absl::InvalidArgumentError("max_seq_len: must be at least 2");
  *modules = o.target_modules.empty() ? AllModules() : o.target_modules;
  for (const std::string& m : *modules) {
    if (std::find(AllModules().begin(), AllModules().end(), m) == AllModules().end()) {
      return absl::InvalidArgumentError(absl::StrCat("target_modules: unknown module '", m, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

ServingModel::~ServingModel() = default;

absl::StatusOr<std::unique_ptr<ServingModel>> ServingModel::Load(
    const ServingModelOptions& options) {
  std::vector<std::string> modules;
  if (absl::Status st = CheckOptions(options, &modules); !st.ok()) return st;
  auto config = model::LoadModelConfig(options.model_dir + "/" + model::kConfigFile);
  if (!config.ok()) return config.status();
  auto tensors =
      model::LoadCheckpointTensors(options.model_dir, *config, options.dtype, options.device);
  if (!tensors.ok()) return tensors.status();

  std::unique_ptr<ServingModel> m(new ServingModel());
  m->config_ = *config;
  m->device_ = options.device;
  m->dtype_ = options.dtype;
  m->quant_ = options.quant;
  m->target_modules_ = modules;
  m->max_seq_len_ = options.max_seq_len;
  // Quantize exactly as the recipe does (the slot weight in the compute dtype,
  // then float32 RTN), and keep deq(Q) in the serving dtype.
  std::set<std::string> quantized;
  const torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : *tensors) {
    const std::string slot = name.substr(0, name.size() - std::string(".weight").size());
    if (!absl::EndsWith(name, ".weight") || !IsTarget(slot, modules)) continue;
    auto q = quant::QuantizeRtn(tensor.to(torch::kFloat32), options.quant);
    if (!q.ok()) {
      return absl::Status(q.status().code(),
                          absl::StrCat("quantize ", slot, ": ", q.status().message()));
    }
    tensor = quant::Dequantize(*q, options.dtype);
    quantized.insert(slot);
  }
  if (absl::Status st = m->Build(std::move(*tensors), quantized); !st.ok()) return st;
  return m;
}

absl::StatusOr<std::unique_ptr<ServingModel>> ServingModel::FromModel(
    const model::LlamaModel& model, const quant::QuantConfig& quant,
    const std::vector<std::string>& target_modules, int64_t max_seq_len) {
  std::unique_ptr<ServingModel> m(new ServingModel());
  m->config_ = model.config();
  m->device_ = model.device();
  m->dtype_ = model.dtype();
  m->quant_ = quant;
  m->target_modules_ = target_modules.empty() ? AllModules() : target_modules;
  m->max_seq_len_ = max_seq_len;
  const torch::NoGradGuard no_grad;
  // Norms and embeddings as exported; projections as deq(Q) (or W), never
  // with the adapter merged.
  std::map<std::string, torch::Tensor> tensors = model.ExportStateDict(model.dtype());
  std::set<std::string> quantized;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    if (slot->is_quantized()) {
      tensors[slot->name() + ".weight"] = quant::Dequantize(*slot->quantized(), model.dtype());
      quantized.insert(slot->name());
    } else {
      tensors[slot->name() + ".weight"] = slot->weight();
    }
  }
  if (absl::Status st = m->Build(std::move(tensors), quantized); !st.ok()) return st;
  return m;
}

absl::Status ServingModel::Build(std::map<std::string, torch::Tensor> tensors,
                                 const std::set<std::string>& quantized) {
  const model::ModelConfig& c = config_;
  down_chunks_ = kernels::FusedFwhtChunks(c.intermediate_size, dtype_, device_);
  auto take = [&](const std::string& name) -> torch::Tensor {
    auto it = tensors.find(name);
    if (it == tensors.end()) return torch::Tensor();
    torch::Tensor t = it->second.to(device_, dtype_).contiguous();
    tensors.erase(it);
    return t;
  };
  embed_tokens_ = take("model.embed_tokens.weight");
  final_norm_ = take("model.norm.weight");
  lm_head_ = c.tie_word_embeddings ? embed_tokens_ : take("lm_head.weight");
  if (!embed_tokens_.defined() || !final_norm_.defined() || !lm_head_.defined()) {
    return absl::InvalidArgumentError("model: embeddings, final norm or lm_head missing");
  }
  const torch::Tensor inv_freq = model::RopeInverseFrequencies(c, torch::kFloat32);
  auto [cos, sin] = model::RopeTables(inv_freq, 0, max_seq_len_);
  rope_cos_ = cos.to(device_);
  rope_sin_ = sin.to(device_);

  const int64_t q_out = c.num_attention_heads * c.head_dim;
  const int64_t kv_out = c.num_key_value_heads * c.head_dim;
  const int64_t ins[] = {c.hidden_size, c.hidden_size, c.hidden_size,      q_out,
                         c.hidden_size, c.hidden_size, c.intermediate_size};
  const int64_t outs[] = {
      q_out,        kv_out, kv_out, c.hidden_size, c.intermediate_size, c.intermediate_size,
      c.hidden_size};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    auto layer = std::make_unique<Layer>();
    layer->input_norm = take(p + "input_layernorm.weight");
    layer->post_norm = take(p + "post_attention_layernorm.weight");
    torch::Tensor w[kSlotsPerLayer], b[kSlotsPerLayer];
    for (int k = 0; k < kSlotsPerLayer; ++k) {
      SlotInfo info;
      info.layer = l;
      info.kind = k;
      info.name = p + (k < 4 ? "self_attn." : "mlp.") + kSlotKinds[k];
      info.in_features = ins[k];
      info.out_features = outs[k];
      info.quantized = quantized.count(info.name) > 0;
      w[k] = take(info.name + ".weight");
      b[k] = take(info.name + ".bias");
      if (!w[k].defined() || w[k].size(0) != outs[k] || w[k].size(1) != ins[k]) {
        return absl::InvalidArgumentError(
            absl::StrCat("model: ", info.name, ".weight missing or mis-shaped"));
      }
      slot_index_[info.name] = static_cast<int64_t>(slots_.size());
      slots_.push_back(std::move(info));
    }
    // One GEMM for q/k/v and one for gate/up; a fused bias where any part has one.
    auto fuse = [&](std::initializer_list<int> kinds, torch::Tensor* weight, torch::Tensor* bias) {
      std::vector<torch::Tensor> ws, bs;
      bool any_bias = false;
      for (int k : kinds) {
        ws.push_back(w[k]);
        any_bias = any_bias || b[k].defined();
        bs.push_back(b[k].defined() ? b[k] : torch::zeros({outs[k]}, w[k].options()));
        w[k] = torch::Tensor();
      }
      *weight = ws.size() == 1 ? ws[0] : torch::cat(ws, 0);
      if (any_bias) *bias = bs.size() == 1 ? bs[0] : torch::cat(bs, 0);
    };
    fuse({0, 1, 2}, &layer->w_qkv, &layer->b_qkv);
    fuse({3}, &layer->w_o, &layer->b_o);
    fuse({4, 5}, &layer->w_gate_up, &layer->b_gate_up);
    fuse({6}, &layer->w_down, &layer->b_down);
    layers_.push_back(std::move(layer));
  }
  return absl::OkStatus();
}

std::optional<int64_t> ServingModel::SlotIndex(const std::string& name) const {
  auto it = slot_index_.find(name);
  if (it == slot_index_.end()) return std::nullopt;
  return it->second;
}

int64_t ServingModel::memory_bytes() const {
  auto bytes = [](const torch::Tensor& t) {
    return t.defined() ? static_cast<int64_t>(t.numel() * t.element_size()) : int64_t{0};
  };
  int64_t total = bytes(embed_tokens_) + bytes(final_norm_) + bytes(rope_cos_) + bytes(rope_sin_);
  if (!config_.tie_word_embeddings) total += bytes(lm_head_);
  for (const auto& l : layers_) {
    for (const torch::Tensor* t : {&l->input_norm, &l->post_norm, &l->w_qkv, &l->b_qkv, &l->w_o,
                                   &l->b_o, &l->w_gate_up, &l->b_gate_up, &l->w_down, &l->b_down}) {
      total += bytes(*t);
    }
  }
  return total;
}

}  // namespace qwha::serve
