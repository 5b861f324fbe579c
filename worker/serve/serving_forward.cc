// ServingModel::Forward: one batched step over requests with different
// adapters and KV slots. Numerically the transformers LLaMA (as
// worker/model/llama.cc computes it: RMSNorm and softmax in float32, the rest
// in the model dtype), with every projection's adapter applied unmerged.
#include <cmath>
#include <limits>
#include <map>

#include "kernels/rms_norm.h"
#include "kernels/spectrum_apply.h"
#include "worker/serve/kv_pool.h"
#include "worker/serve/serving_adapter.h"
#include "worker/serve/serving_forward_internal.h"

namespace qwha::serve {
namespace {

torch::Tensor LongTensor(const std::vector<int64_t>& v, const torch::Device& device) {
  return torch::tensor(v, torch::kInt64).to(device);
}

// x · cos + rotate_half(x) · sin with per-row tables (rope.h's ApplyRope).
torch::Tensor Rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor c = cos.to(x.scalar_type()).unsqueeze(1);
  const torch::Tensor s = sin.to(x.scalar_type()).unsqueeze(1);
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

}  // namespace

torch::Tensor ServingModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  // As LlamaModel::RmsNorm: the fused kernel on CUDA (same roundings), else ATen.
  if (x.is_cuda()) return kernels::RmsNorm(x, weight, config_.rms_norm_eps);
  torch::Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_norm_eps);
  return weight * h.to(x.scalar_type());
}

void ServingModel::AddDeltas(const Rows& rows, int64_t layer, int first_kind, int kinds,
                             const torch::Tensor& x, torch::Tensor& y) const {
  const int64_t base = layer * kSlotsPerLayer;
  // Spectrum adapters: one FWHT of the input rows they correct (shared by
  // q/k/v, gate/up) and one SpectrumApply for every slot of every adapter.
  std::vector<kernels::SpectrumTask> tasks;
  for (const Rows::Group& g : rows.groups) {
    if (g.tok_begin < 0) continue;
    int64_t offset = 0;
    for (int k = first_kind; k < first_kind + kinds; ++k) {
      const SlotDelta& d = g.adapter->slot(base + k);
      if (d.kind == SlotDelta::Kind::kSpectrum) {
        tasks.push_back({&d.spectrum, offset, g.tok_begin, g.rows.size(0)});
      }
      offset += slots_[static_cast<size_t>(base + k)].out_features;
    }
  }
  if (!tasks.empty()) kernels::SpectrumApply(SpectrumInput(x), tasks, rows.spectrum_rows, y);
  // LoRA adapters, group by group.
  for (const Rows::Group& g : rows.groups) {
    if (g.tok_begin >= 0) continue;
    int64_t offset = 0;
    torch::Tensor xg;
    for (int k = first_kind; k < first_kind + kinds; ++k) {
      const int64_t out = slots_[static_cast<size_t>(base + k)].out_features;
      if (g.adapter->slot(base + k).kind == SlotDelta::Kind::kLora) {
        if (!xg.defined()) xg = g.all ? x : x.index_select(0, g.rows);
        torch::Tensor delta = g.adapter->ApplyDelta(base + k, xg, torch::Tensor());
        torch::Tensor target = y.narrow(1, offset, out);
        if (g.all) {
          target.add_(delta);
        } else {
          target.index_add_(0, g.rows, delta);
        }
      }
      offset += out;
    }
  }
}

torch::Tensor ServingModel::Attention(const Rows& rows, int64_t layer, const torch::Tensor& q,
                                      const torch::Tensor& k, const torch::Tensor& v,
                                      KvPool* pool) const {
  using torch::indexing::Slice;
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t groups = heads / kv_heads;
  const double scale = std::pow(static_cast<double>(d), -0.5);
  const bool sliding = config_.UsesSlidingWindow(layer);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  torch::Tensor& keys = pool->keys(layer);
  torch::Tensor& values = pool->values(layer);
  keys.index_put_({rows.slot, Slice(), rows.position}, k);
  values.index_put_({rows.slot, Slice(), rows.position}, v);

  torch::Tensor out = torch::empty({rows.count, heads * d}, q.options());
  if (rows.single_count > 0) {
    const int64_t n = rows.single_count;
    const int64_t len = rows.single_max_length;
    // [D, kv_heads, len, d] views of the requests' own slots.
    torch::Tensor kd = keys.narrow(2, 0, len);
    torch::Tensor vd = values.narrow(2, 0, len);
    torch::Tensor qd;
    if (rows.single_leading) {
      kd = kd.narrow(0, 0, n);
      vd = vd.narrow(0, 0, n);
      qd = q.narrow(0, 0, n);
    } else {
      kd = kd.index_select(0, rows.single_slots);
      vd = vd.index_select(0, rows.single_slots);
      qd = q.index_select(0, rows.single_rows);
    }
    qd = qd.reshape({n, kv_heads, groups, d});
    torch::Tensor scores = torch::matmul(qd, kd.transpose(-2, -1)) * scale;  // [D, kvh, G, len]
    const torch::Tensor kpos = torch::arange(len, rows.slot.options()).unsqueeze(0);  // [1, len]
    const torch::Tensor qpos = (rows.single_length - 1).unsqueeze(1);                 // [D, 1]
    torch::Tensor allowed = kpos <= qpos;
    if (sliding) allowed = allowed.logical_and(qpos - kpos < config_.sliding_window);
    scores = scores.masked_fill(allowed.logical_not().view({n, 1, 1, len}), neg_inf);
    torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
    torch::Tensor o = torch::matmul(probs, vd).reshape({n, heads * d});
    if (rows.single_leading) {
      out.narrow(0, 0, n).copy_(o);
    } else {
      out.index_copy_(0, rows.single_rows, o);
    }
  }
  for (const Rows::Span& span : rows.spans) {
    const int64_t t = span.count;
    const int64_t s = span.start + t;
    // [kv_heads, groups * t, d]: query head j·groups + g reads kv head j.
    torch::Tensor qs =
        q.narrow(0, span.first_row, t).permute({1, 0, 2}).reshape({kv_heads, groups * t, d});
    torch::Tensor ks = keys.select(0, span.slot).narrow(1, 0, s);
    torch::Tensor vs = values.select(0, span.slot).narrow(1, 0, s);
    torch::Tensor scores =
        (torch::matmul(qs, ks.transpose(-2, -1)) * scale).view({kv_heads, groups, t, s});
    const torch::Tensor qpos = torch::arange(span.start, s, rows.slot.options()).unsqueeze(1);
    const torch::Tensor kpos = torch::arange(s, rows.slot.options()).unsqueeze(0);
    torch::Tensor allowed = kpos <= qpos;
    if (sliding) allowed = allowed.logical_and(qpos - kpos < config_.sliding_window);
    scores = scores.masked_fill(allowed.logical_not(), neg_inf);
    torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
    torch::Tensor o = torch::matmul(probs.view({kv_heads, groups * t, s}), vs);  // [kvh, G·t, d]
    out.narrow(0, span.first_row, t)
        .copy_(o.view({kv_heads, groups, t, d}).permute({2, 0, 1, 3}).reshape({t, heads * d}));
  }
  return out;
}

torch::Tensor ServingModel::Forward(const std::vector<StepSegment>& segments, KvPool* pool) const {
  TORCH_CHECK(!segments.empty(), "Forward: no segments");
  const torch::NoGradGuard no_grad;
  Rows rows;
  std::vector<int64_t> ids, slot, position, last, single_rows, single_slots, single_length;
  std::map<const ServingAdapter*, std::vector<int64_t>> by_adapter;
  bool leading = true;
  for (const StepSegment& seg : segments) {
    const int64_t t = static_cast<int64_t>(seg.tokens.size());
    TORCH_CHECK(t > 0, "Forward: empty segment");
    TORCH_CHECK(seg.slot >= 0 && seg.slot < pool->slots(), "Forward: slot ", seg.slot,
                " out of range");
    TORCH_CHECK(seg.start >= 0 && seg.start + t <= std::min(pool->max_len(), max_seq_len_),
                "Forward: positions up to ", seg.start + t, " exceed the context length");
    const int64_t first = static_cast<int64_t>(ids.size());
    for (int64_t i = 0; i < t; ++i) {
      ids.push_back(seg.tokens[static_cast<size_t>(i)]);
      slot.push_back(seg.slot);
      position.push_back(seg.start + i);
      if (seg.adapter != nullptr) by_adapter[seg.adapter].push_back(first + i);
    }
    last.push_back(first + t - 1);
    if (t == 1) {
      leading = leading && first == static_cast<int64_t>(single_rows.size()) &&
                seg.slot == static_cast<int64_t>(single_rows.size());
      single_rows.push_back(first);
      single_slots.push_back(seg.slot);
      single_length.push_back(seg.start + 1);
      rows.single_max_length = std::max(rows.single_max_length, seg.start + 1);
    } else {
      rows.spans.push_back({first, t, seg.slot, seg.start});
    }
  }
  rows.count = static_cast<int64_t>(ids.size());
  rows.slot = LongTensor(slot, device_);
  rows.position = LongTensor(position, device_);
  rows.last = LongTensor(last, device_);
  rows.single_count = static_cast<int64_t>(single_rows.size());
  if (rows.single_count > 0) {
    rows.single_rows = LongTensor(single_rows, device_);
    rows.single_slots = LongTensor(single_slots, device_);
    rows.single_length = LongTensor(single_length, device_);
    rows.single_leading = leading;
  }
  std::vector<int32_t> spectrum_rows;
  for (auto& [adapter, list] : by_adapter) {
    const bool all = static_cast<int64_t>(list.size()) == rows.count;
    rows.groups.push_back({adapter, LongTensor(list, device_), all});
    if (adapters::IsSpectrumType(adapter->type())) {
      rows.groups.back().tok_begin = static_cast<int64_t>(spectrum_rows.size());
      spectrum_rows.insert(spectrum_rows.end(), list.begin(), list.end());
    }
  }
  if (!spectrum_rows.empty()) {
    rows.spectrum_rows = torch::tensor(spectrum_rows, torch::kInt32).to(device_);
  }

  for (int64_t id : ids) {
    TORCH_CHECK(id >= 0 && id < config_.vocab_size, "Forward: token id ", id, " out of range");
  }
  const torch::Tensor token_ids = LongTensor(ids, device_);
  const torch::Tensor cos = rope_cos_.index_select(0, rows.position);
  const torch::Tensor sin = rope_sin_.index_select(0, rows.position);
  const int64_t n = rows.count;
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const int64_t inter = config_.intermediate_size;

  torch::Tensor h = torch::embedding(embed_tokens_, token_ids);  // [N, hidden]
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    const int64_t li = static_cast<int64_t>(l);
    torch::Tensor x = RmsNorm(h, layer.input_norm);
    torch::Tensor qkv = torch::matmul(x, layer.w_qkv.t());
    if (layer.b_qkv.defined()) qkv.add_(layer.b_qkv);
    AddDeltas(rows, li, 0, 3, x, qkv);
    torch::Tensor q = qkv.narrow(1, 0, heads * d).view({n, heads, d});
    torch::Tensor k = qkv.narrow(1, heads * d, kv_heads * d).view({n, kv_heads, d});
    torch::Tensor v = qkv.narrow(1, (heads + kv_heads) * d, kv_heads * d).view({n, kv_heads, d});
    q = Rope(q, cos, sin);
    k = Rope(k, cos, sin);
    torch::Tensor attn = Attention(rows, li, q, k, v, pool);
    torch::Tensor o = torch::matmul(attn, layer.w_o.t());
    if (layer.b_o.defined()) o.add_(layer.b_o);
    AddDeltas(rows, li, 3, 1, attn, o);
    h = h + o;

    x = RmsNorm(h, layer.post_norm);
    torch::Tensor gate_up = torch::matmul(x, layer.w_gate_up.t());
    if (layer.b_gate_up.defined()) gate_up.add_(layer.b_gate_up);
    AddDeltas(rows, li, 4, 2, x, gate_up);
    torch::Tensor a = torch::silu(gate_up.narrow(1, 0, inter)) * gate_up.narrow(1, inter, inter);
    torch::Tensor down = torch::matmul(a, layer.w_down.t());
    if (layer.b_down.defined()) down.add_(layer.b_down);
    AddDeltas(rows, li, 6, 1, a, down);
    h = h + down;
  }
  torch::Tensor hl = RmsNorm(h.index_select(0, rows.last), final_norm_);
  return torch::matmul(hl, lm_head_.t()).to(torch::kFloat32);
}

}  // namespace qwha::serve
