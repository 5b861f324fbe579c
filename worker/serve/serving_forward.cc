// ServingModel::Forward: one batched step over requests with different
// adapters and KV slots. Numerically the transformers LLaMA (as
// worker/model/llama.cc computes it: RMSNorm and softmax in float32, the rest
// in the model dtype), with every projection's adapter applied unmerged.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>
#endif

#include "kernels/fwht.h"
#include "kernels/rms_norm.h"
#include "kernels/spectrum_apply.h"
#include "worker/adapters/adapter.h"
#include "worker/serve/kv_pool.h"
#include "worker/serve/serving_adapter.h"
#include "worker/serve/serving_forward_internal.h"

namespace qwha::serve {
namespace {

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

bool ServingModel::HasSpectrum(const Rows& rows, int64_t layer, int first_kind, int kinds) const {
  const int64_t base = layer * kSlotsPerLayer;
  for (const Rows::Group& g : rows.groups) {
    if (g.tok_begin < 0) continue;
    for (int k = first_kind; k < first_kind + kinds; ++k) {
      if (g.adapter->slot(base + k).kind == SlotDelta::Kind::kSpectrum) return true;
    }
  }
  return false;
}

std::pair<torch::Tensor, torch::Tensor> ServingModel::NormInput(const Rows& rows, int64_t layer,
                                                                int first_kind, int kinds,
                                                                const torch::Tensor& h,
                                                                const torch::Tensor& weight) const {
  if (h.is_cuda() && fused_fwht_ && HasSpectrum(rows, layer, first_kind, kinds)) {
    // One kernel instead of two in a row (the FWHT is short and waits on
    // the RMSNorm): SpectrumInput's transform, the RMSNorm bit for bit; in
    // chunks of 4 tokens where the step's plan says so.
    return kernels::RmsNormFwht(h, weight, config_.rms_norm_eps, 1.0, /*transpose=*/true,
                                rows.chunked ? rows.spectrum_rows : torch::Tensor());
  }
  return {RmsNorm(h, weight), torch::Tensor()};
}

void ServingModel::AddDeltas(const Rows& rows, int64_t layer, int first_kind, int kinds,
                             const torch::Tensor& x, torch::Tensor z, torch::Tensor& y) const {
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
  if (!tasks.empty()) {
    if (!z.defined()) z = SpectrumInput(x);
    kernels::SpectrumApply(z, tasks, rows.spectrum_rows, y);
  }
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
                                      const torch::Tensor& k, const torch::Tensor& v, KvPool* pool,
                                      torch::Tensor* z) const {
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
    if (z != nullptr && rows.spans.empty()) {
      // Every row is a single: the copy into place also gives the FWHT of the
      // o projection's QWHA adapters (one kernel on CUDA instead of two).
      // (In chunks of 4 tokens where the plan says so and the rows need no map.)
      const bool chunks = rows.chunked && rows.single_leading;
      *z = kernels::CopyRowsFwht(o, rows.single_leading ? torch::Tensor() : rows.single_rows, out,
                                 1.0, /*transpose=*/true,
                                 chunks ? rows.spectrum_rows : torch::Tensor());
    } else if (rows.single_leading) {
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

int64_t ServingModel::StepPlan::buffer_size() const {
  int64_t size = 3 * count() + static_cast<int64_t>(last.size()) +
                 3 * static_cast<int64_t>(single_rows.size()) +
                 (static_cast<int64_t>(spectrum_rows.size()) + 1) / 2;
  for (const Group& g : groups) size += static_cast<int64_t>(g.rows.size());
  return size;
}

void ServingModel::StepPlan::Fill(int64_t* out) const {
  for (const std::vector<int64_t>* list :
       {&ids, &slot, &position, &last, &single_rows, &single_slots, &single_length}) {
    out = std::copy(list->begin(), list->end(), out);
  }
  for (const Group& g : groups) out = std::copy(g.rows.begin(), g.rows.end(), out);
  if (!spectrum_rows.empty()) {
    out[(spectrum_rows.size() - 1) / 2] = 0;  // the odd count's padding
    std::memcpy(out, spectrum_rows.data(), spectrum_rows.size() * sizeof(int32_t));
  }
}

ServingModel::StepPlan ServingModel::Plan(const std::vector<StepSegment>& segments,
                                          const KvPool& pool) const {
  TORCH_CHECK(!segments.empty(), "Forward: no segments");
  StepPlan plan;
  std::map<const ServingAdapter*, std::vector<int64_t>> by_adapter;
  bool leading = true;
  for (const StepSegment& seg : segments) {
    const int64_t t = static_cast<int64_t>(seg.tokens.size());
    TORCH_CHECK(t > 0, "Forward: empty segment");
    TORCH_CHECK(seg.slot >= 0 && seg.slot < pool.slots(), "Forward: slot ", seg.slot,
                " out of range");
    TORCH_CHECK(seg.start >= 0 && seg.start + t <= std::min(pool.max_len(), max_seq_len_),
                "Forward: positions up to ", seg.start + t, " exceed the context length");
    const int64_t first = plan.count();
    for (int64_t i = 0; i < t; ++i) {
      const int64_t id = seg.tokens[static_cast<size_t>(i)];
      TORCH_CHECK(id >= 0 && id < config_.vocab_size, "Forward: token id ", id, " out of range");
      plan.ids.push_back(id);
      plan.slot.push_back(seg.slot);
      plan.position.push_back(seg.start + i);
      if (seg.adapter != nullptr) by_adapter[seg.adapter].push_back(first + i);
    }
    plan.last.push_back(first + t - 1);
    if (t == 1) {
      const auto d = static_cast<int64_t>(plan.single_rows.size());
      leading = leading && first == d && seg.slot == d;
      plan.single_rows.push_back(first);
      plan.single_slots.push_back(seg.slot);
      plan.single_length.push_back(seg.start + 1);
      plan.single_max_length = std::max(plan.single_max_length, seg.start + 1);
    } else {
      plan.spans.push_back({first, t, seg.slot, seg.start});
    }
  }
  plan.single_leading = !plan.single_rows.empty() && leading;
  // Spectrum groups of at most 4 tokens (decode steps), on CUDA with the
  // fused kernels: each group's tokens start a chunk of 4 positions (the rest
  // -1), and the FWHT kernels give z in those chunks (kernels::ChunkRows), so
  // that SpectrumApply copies a chunk as it is. Else positions back to back.
  bool chunked =
      chunked_z_ && fused_fwht_ && kernels::FusedNormFwht(config_.hidden_size, dtype_, device_);
  bool any_spectrum = false;
  for (const auto& [adapter, list] : by_adapter) {
    if (!adapters::IsSpectrumType(adapter->type())) continue;
    any_spectrum = true;
    chunked = chunked && list.size() <= 4;
  }
  plan.chunked = chunked && any_spectrum;
  for (auto& [adapter, list] : by_adapter) {
    StepPlan::Group g{adapter, std::move(list)};
    g.all = static_cast<int64_t>(g.rows.size()) == plan.count();
    if (adapters::IsSpectrumType(adapter->type())) {
      g.tok_begin = static_cast<int64_t>(plan.spectrum_rows.size());
      for (int64_t r : g.rows) plan.spectrum_rows.push_back(static_cast<int32_t>(r));
      while (plan.chunked && plan.spectrum_rows.size() % 4 != 0) plan.spectrum_rows.push_back(-1);
    }
    plan.groups.push_back(std::move(g));
  }
  return plan;
}

ServingModel::Rows ServingModel::Upload(const StepPlan& plan, const torch::Tensor& inputs) const {
  Rows rows;
  int64_t offset = 0;
  auto take = [&](size_t n) {
    const torch::Tensor view = inputs.narrow(0, offset, static_cast<int64_t>(n));
    offset += static_cast<int64_t>(n);
    return view;
  };
  rows.count = plan.count();
  rows.ids = take(plan.ids.size());
  rows.slot = take(plan.slot.size());
  rows.position = take(plan.position.size());
  rows.last = take(plan.last.size());
  const size_t singles = plan.single_rows.size();
  rows.single_count = static_cast<int64_t>(singles);
  rows.single_rows = take(singles);
  rows.single_slots = take(singles);
  rows.single_length = take(singles);
  rows.single_max_length = plan.single_max_length;
  rows.single_leading = plan.single_leading;
  rows.spans = plan.spans;
  rows.chunked = plan.chunked;
  for (const StepPlan::Group& g : plan.groups) {
    rows.groups.push_back({g.adapter, take(g.rows.size()), g.all, g.tok_begin});
  }
  if (!plan.spectrum_rows.empty()) {
    const auto m = static_cast<int64_t>(plan.spectrum_rows.size());
    rows.spectrum_rows = take(static_cast<size_t>((m + 1) / 2)).view(torch::kInt32).narrow(0, 0, m);
  }
  return rows;
}

torch::Tensor ServingModel::Forward(const std::vector<StepSegment>& segments, KvPool* pool) const {
  const torch::NoGradGuard no_grad;
  const StepPlan plan = Plan(segments, *pool);
  if (plan.spans.empty() && pool->cuda_graphs() && device_.is_cuda()) {
    return ForwardCaptured(plan, pool);
  }
  return RunEager(plan, pool, plan.single_max_length);
}

torch::Tensor ServingModel::RunEager(const StepPlan& plan, KvPool* pool, int64_t len) const {
  torch::Tensor host = torch::empty({plan.buffer_size()}, torch::kInt64);
  plan.Fill(host.data_ptr<int64_t>());
  Rows rows = Upload(plan, host.to(device_));
  rows.single_max_length = len;
  return Run(rows, pool);
}

torch::Tensor ServingModel::Run(const Rows& rows, KvPool* pool) const {
  const torch::Tensor& token_ids = rows.ids;
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
    auto [x, z] = NormInput(rows, li, 0, 3, h, layer.input_norm);
    torch::Tensor qkv = torch::matmul(x, layer.w_qkv.t());
    if (layer.b_qkv.defined()) qkv.add_(layer.b_qkv);
    AddDeltas(rows, li, 0, 3, x, z, qkv);
    torch::Tensor q = qkv.narrow(1, 0, heads * d).view({n, heads, d});
    torch::Tensor k = qkv.narrow(1, heads * d, kv_heads * d).view({n, kv_heads, d});
    torch::Tensor v = qkv.narrow(1, (heads + kv_heads) * d, kv_heads * d).view({n, kv_heads, d});
    q = Rope(q, cos, sin);
    k = Rope(k, cos, sin);
    torch::Tensor z_attn;
    const bool o_fwht = h.is_cuda() && fused_fwht_ && HasSpectrum(rows, li, 3, 1);
    torch::Tensor attn = Attention(rows, li, q, k, v, pool, o_fwht ? &z_attn : nullptr);
    torch::Tensor o = torch::matmul(attn, layer.w_o.t());
    if (layer.b_o.defined()) o.add_(layer.b_o);
    AddDeltas(rows, li, 3, 1, attn, z_attn, o);
    h = h + o;

    std::tie(x, z) = NormInput(rows, li, 4, 2, h, layer.post_norm);
    torch::Tensor gate_up = torch::matmul(x, layer.w_gate_up.t());
    if (layer.b_gate_up.defined()) gate_up.add_(layer.b_gate_up);
    AddDeltas(rows, li, 4, 2, x, z, gate_up);
    torch::Tensor a = torch::silu(gate_up.narrow(1, 0, inter)) * gate_up.narrow(1, inter, inter);
    torch::Tensor down = torch::matmul(a, layer.w_down.t());
    if (layer.b_down.defined()) down.add_(layer.b_down);
    // The down projection's input in chunks where one kernel makes them.
    torch::Tensor z_down;
    if (rows.chunked && down_chunks_ && fused_fwht_ && HasSpectrum(rows, li, 6, 1)) {
      z_down = kernels::FwhtChunks(a, rows.spectrum_rows, 1.0, /*transpose=*/true);
    }
    AddDeltas(rows, li, 6, 1, a, z_down, down);
    h = h + down;
  }
  torch::Tensor hl = RmsNorm(h.index_select(0, rows.last), final_norm_);
  return torch::matmul(hl, lm_head_.t()).to(torch::kFloat32);
}

// ---------------------------------------------------------------------------
// Captured decode steps. A decode step (one token per request) of a given
// shape issues the same kernels on the same buffers every time: the batch
// size, the keys read per slot (rounded up to a multiple of kLenBucket), the
// slot layout and which adapter versions correct how many rows. Such a step
// is captured once as a CUDA graph, with every index list read from one
// device buffer, and replayed after copying the step's lists into it: one
// launch instead of ~50 LibTorch ops per layer, so the host no longer sets
// the pace of decoding. Adapters are named by serial, never by address, so a
// graph can never run with an adapter that replaced another at the same
// address; graphs of unloaded adapters are never replayed again and age out
// of the cache (they hold no adapter memory, only their activations).
#ifdef QWHA_WITH_CUDA
namespace {

constexpr int64_t kLenBucket = 64;
constexpr size_t kMaxGraphs = 8;

struct GraphKey {
  int64_t count = 0, len = 0;
  bool leading = false;
  bool chunked = false;
  std::vector<uint64_t> groups;  // per group: adapter serial, rows, all

  bool operator<(const GraphKey& o) const {
    return std::tie(count, len, leading, chunked, groups) <
           std::tie(o.count, o.len, o.leading, o.chunked, o.groups);
  }
};

struct CapturedStep {
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  torch::Tensor inputs;  // the step's index lists (device int64), read by the graph
  torch::Tensor logits;  // the graph's output
  uint64_t last_use = 0;
};

struct GraphState {
  bool warmed = false;  // an eager decode step ran on this stream (lazy inits done)
  bool broken = false;  // a capture failed: eager from then on
  uint64_t clock = 0;
  std::map<GraphKey, CapturedStep> steps;
};

}  // namespace
#endif  // QWHA_WITH_CUDA

torch::Tensor ServingModel::ForwardCaptured(const StepPlan& plan, KvPool* pool) const {
#ifdef QWHA_WITH_CUDA
  // Capture needs a stream other than the default one (the engine has its own).
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device_.index());
  if (stream == c10::cuda::getDefaultCUDAStream(device_.index())) {
    return RunEager(plan, pool, plan.single_max_length);
  }
  if (!pool->forward_state()) pool->forward_state() = std::make_shared<GraphState>();
  GraphState& state = *static_cast<GraphState*>(pool->forward_state().get());
  GraphKey key;
  key.count = plan.count();
  key.len = std::min(pool->max_len(),
                     (plan.single_max_length + kLenBucket - 1) / kLenBucket * kLenBucket);
  key.leading = plan.single_leading;
  key.chunked = plan.chunked;
  for (const StepPlan::Group& g : plan.groups) {
    key.groups.push_back(g.adapter->serial());
    key.groups.push_back(static_cast<uint64_t>(g.rows.size()));
    key.groups.push_back(g.all ? 1 : 0);
  }
  if (state.broken || !state.warmed) {
    // The first decode step runs eagerly: cuBLAS handles and workspaces,
    // kernel attributes and the allocator's blocks of this stream are set up
    // outside any capture.
    state.warmed = true;
    return RunEager(plan, pool, key.len);
  }
  torch::Tensor host = torch::empty({plan.buffer_size()}, torch::kInt64);
  plan.Fill(host.data_ptr<int64_t>());
  auto it = state.steps.find(key);
  if (it != state.steps.end()) {
    CapturedStep& step = it->second;
    step.last_use = ++state.clock;
    step.inputs.copy_(host);
    step.graph->replay();
    ++pool->graph_stats().replayed;
    return step.logits.clone();
  }
  if (state.steps.size() >= kMaxGraphs) {
    auto oldest = std::min_element(
        state.steps.begin(), state.steps.end(),
        [](const auto& a, const auto& b) { return a.second.last_use < b.second.last_use; });
    state.steps.erase(oldest);
  }
  CapturedStep step;
  step.inputs = host.to(device_);
  Rows rows = Upload(plan, step.inputs);
  rows.single_max_length = key.len;
  step.graph = std::make_unique<at::cuda::CUDAGraph>();
  try {
#if TORCH_VERSION_MAJOR >= 2
    // Thread-local: other threads (adapter loads) may allocate meanwhile.
    step.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
#else
    step.graph->capture_begin();
#endif
    try {
      step.logits = Run(rows, pool);
    } catch (...) {
      try {
        step.graph->capture_end();
      } catch (const c10::Error&) {
      }
      throw;
    }
    step.graph->capture_end();
  } catch (const c10::Error& e) {
    (void)cudaGetLastError();
    state.broken = true;
    TORCH_WARN(
        "ServingModel: capturing a decode step as a CUDA graph failed; decoding eagerly "
        "from now on: ",
        e.what_without_backtrace());
    return RunEager(plan, pool, plan.single_max_length);
  }
  step.last_use = ++state.clock;
  step.graph->replay();
  ++pool->graph_stats().captured;
  torch::Tensor logits = step.logits.clone();
  state.steps.emplace(std::move(key), std::move(step));
  return logits;
#else
  return RunEager(plan, pool, plan.single_max_length);
#endif
}

}  // namespace qwha::serve
