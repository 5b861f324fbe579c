// qwha-serve-bench: the serving engine without gRPC (docs/serving.md,
// "Benchmark"). Prints, side by side in one run on one device:
//   decode tokens/s, ms per decode step and time to first token at batch 1
//   and batch 32, for the base alone and with 1 and 8 different QWHA adapters
//   in the batch (requests assigned round robin), each relative to the base;
//   the adapter load time (file → device) and the memory an unload frees.
// The target is batch 32 with 8 adapters at ≤ 1.3× the base's decode time.
//
//   qwha-serve-bench [--preset 7b|1b|tiny] [--model DIR] [--device cuda]
//                    [--dtype bfloat16] [--bits 4] [--group-size 64]
//                    [--rank 64] [--prompt-len 128] [--new-tokens 128]
//                    [--batches 1,32] [--repeats 3] [--work-dir DIR]
//                    [--kernel-only 1]  (stop after the kernel measurements)
//                    [--alt-tuning "L,B,E,M,S,D,R,P[,W][;...]"]  (CUDA: also 8
//                    adapters with those SpectrumApplyTuning fields)
//                    [--trace DIR]  (CUDA builds with the Kineto profiler: a
//                    timeline of batch-32 graph steps, base and 8 adapters,
//                    saved as Chrome traces DIR/trace-base.json and
//                    DIR/trace-8qwha.json; scripts/trace-summary.py reads them)
// Each configuration of a batch size runs `repeats` times in turn (in
// reverse order on odd repeats, so that a drift of the device within a
// repeat favours no configuration) and keeps its best step time and TTFT.
// The target is judged on the median over the repeats of the 8-adapter step
// over the base step of the same repeat (paired, so that a slow or fast
// spell of the device lands on both).
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/fwht.h"
#include "kernels/rms_norm.h"
#include "kernels/spectrum_apply.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"
#include "worker/model/checkpoint.h"
#include "worker/serve/adapter_loader.h"
#include "worker/serve/engine.h"
#include "worker/serve/serving_model.h"
#ifdef QWHA_SERVE_BENCH_CUDA_STATS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda_launchers.h"
#endif
#ifdef QWHA_SERVE_BENCH_TRACE
#include <torch/csrc/autograd/profiler_kineto.h>
#endif

namespace {

using namespace qwha;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string preset, model_dir, device, dtype, work_dir = "/tmp/qwha-serve-bench";
  int bits = 4, group_size = 64;
  int64_t rank = 64, prompt_len = 128, new_tokens = 128;
  std::vector<int64_t> batches = {1, 32};
  int repeats = 3;
  bool kernel_only = false;  // --kernel-only 1: stop after the kernel measurements
  std::string trace_dir;     // --trace DIR: Chrome traces of batch-32 graph steps
  // --alt-tuning "L,B,E,M,S,D,R,P[,W][;...]": 8-adapter rows with those
  // SpectrumApplyTuning fields (lanes, blocks/SM, entries, min blocks,
  // staging, diagnostic, rows, pipeline, warps per block; CUDA builds), e.g.
  // diagnostic 2 (no staging of z) for what the staging costs in the step.
  std::vector<std::vector<int>> alt_tunings;
};

model::ModelConfig Preset(const std::string& name) {
  model::ModelConfig c;
  c.model_type = "llama";
  c.rms_norm_eps = 1e-5;
  if (name == "7b") {  // LLaMA-2-7B
    c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32, c.head_dim = 128, c.vocab_size = 32000;
  } else if (name == "1b") {  // LLaMA-3.2-1B
    c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 64, c.vocab_size = 128256;
    c.rope_theta = 500000, c.tie_word_embeddings = true;
  } else {  // tiny: CPU smoke runs
    c.hidden_size = 256, c.intermediate_size = 768, c.num_hidden_layers = 4;
    c.num_attention_heads = 8, c.num_key_value_heads = 4, c.head_dim = 32, c.vocab_size = 4096;
  }
  return c;
}

int64_t DeviceAllocated(const torch::Device& device) {
#ifdef QWHA_SERVE_BENCH_CUDA_STATS
  if (device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index())
        .allocated_bytes[0]
        .current;
  }
#endif
  (void)device;
  return -1;
}

// A random base (weights drawn on the device, RandomInit's scales) or a
// checkpoint, with every projection RTN-quantized.
std::unique_ptr<serve::ServingModel> MakeBase(const Flags& f, const torch::Device& device,
                                              torch::ScalarType dtype) {
  const torch::NoGradGuard no_grad;
  quant::QuantConfig q;
  q.bits = f.bits;
  q.group_size = f.group_size;
  const int64_t max_len = f.prompt_len + f.new_tokens;
  if (!f.model_dir.empty()) {
    serve::ServingModelOptions o;
    o.model_dir = f.model_dir;
    o.device = device;
    o.dtype = dtype;
    o.quant = q;
    o.max_seq_len = max_len;
    auto m = serve::ServingModel::Load(o);
    TORCH_CHECK(m.ok(), m.status().ToString());
    return *std::move(m);
  }
  const model::ModelConfig config = Preset(f.preset);
  torch::manual_seed(0);
  std::map<std::string, torch::Tensor> tensors;
  for (const model::TensorSpec& spec : model::ExpectedTensors(config)) {
    torch::Tensor t = torch::randn(spec.shape, torch::TensorOptions().device(device).dtype(dtype));
    if (spec.name.find("norm") != std::string::npos) {
      t = t * 0.1 + 1;
    } else if (spec.name != "model.embed_tokens.weight") {
      t = t / std::sqrt(static_cast<double>(spec.shape.back()));
    }
    tensors[spec.name] = t;
  }
  auto model = model::LlamaModel::FromTensors(config, tensors, device, dtype);
  TORCH_CHECK(model.ok(), model.status().ToString());
  tensors.clear();
  for (model::LinearSlot* slot : (*model)->LinearSlots()) {
    auto qw = quant::QuantizeRtn(slot->weight().to(torch::kFloat32), q);
    TORCH_CHECK(qw.ok() && slot->SetQuantizedWeight(*std::move(qw)).ok());
  }
  auto base = serve::ServingModel::FromModel(**model, q, {}, max_len);
  TORCH_CHECK(base.ok(), base.status().ToString());
  return *std::move(base);
}

// A QWHA adapter with the rank-r budget N = r·(in + out) on every projection
// (N / out random columns per row; random values), written as a job writes it.
void WriteAdapter(const serve::ServingModel& base, const Flags& f, const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::map<std::string, torch::Tensor> tensors;
  torch::manual_seed(1);
  for (const serve::SlotInfo& s : base.slots()) {
    const int64_t n = s.in_features, out = s.out_features;
    const int64_t k = std::min(n, f.rank * (n + out) / out);
    torch::Tensor cols =
        std::get<1>(torch::rand({out, n}, torch::TensorOptions().device(base.device())).topk(k, 1));
    cols = std::get<0>(cols.sort(1));
    torch::Tensor index = (torch::arange(out, cols.options()).unsqueeze(1) * n + cols).reshape(-1);
    tensors[s.name + "/spectrum_index"] = index.to(torch::kCPU, torch::kInt64);
    tensors[s.name + "/spectrum_values"] = torch::randn({index.numel()}) * 0.01;
  }
  TORCH_CHECK(io::WriteSafetensors(dir + "/adapter.safetensors", tensors).ok());
  nlohmann::json config = {
      {"adapter_type", "qwha"},
      {"rank_equivalent", f.rank},
      {"num_params", 0},
      {"alloc_alpha", 1.0},
      {"scaling", 1.0},
      {"target_modules", base.target_modules()},
      {"quantization", {{"bits", f.bits}, {"group_size", f.group_size}, {"method", "rtn"}}}};
  TORCH_CHECK(io::WriteFileAtomically(dir + "/adapter_config.json", config.dump()).ok());
}

// The product's launch tuning for what follows (kernels::cuda::
// SpectrumApplyTuning's fields in order, 8 or 9; empty: the defaults). CUDA
// benchmark builds only.
void SetTuning(const std::vector<int>& t) {
#ifdef QWHA_SERVE_BENCH_CUDA_STATS
  kernels::cuda::SpectrumApplyTuning tuning;
  if (t.size() >= 8) {
    tuning = {t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t.size() > 8 ? t[8] : 0};
  }
  kernels::cuda::SetSpectrumApplyTuning(tuning);
#else
  (void)t;
#endif
}

struct RunResult {
  double decode_tokens_per_s = 0, step_ms = 0, ttft_ms = 0;
};

// " 1.234 1.301 ...": step ratios as the summary lines print them.
std::string FormatRatios(const std::vector<double>& ratios) {
  std::string out;
  for (double r : ratios) {
    char buf[16];
    std::snprintf(buf, sizeof buf, " %.3f", r);
    out += buf;
  }
  return out;
}

RunResult RunBatch(const serve::ServingModel& base, const Flags& f, int64_t batch,
                   const std::vector<std::shared_ptr<const serve::ServingAdapter>>& adapters,
                   bool graphs) {
  std::vector<double> steps;
  serve::EngineObserver observer;
  observer.on_step = [&](int64_t, double s) { steps.push_back(s); };
  serve::EngineOptions options;
  options.max_batch = batch;
  options.max_seq_len = f.prompt_len + f.new_tokens;
  options.max_prefill_tokens = batch * f.prompt_len;  // every prompt in the first step
  options.cuda_graphs = graphs;
  auto engine = serve::Engine::Create(&base, nullptr, options, observer);
  TORCH_CHECK(engine.ok(), engine.status().ToString());
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;
  double ttft = 0;
  for (int64_t i = 0; i < batch; ++i) {
    serve::GenerationRequest r;
    r.prompt = std::vector<int64_t>(f.prompt_len);
    for (int64_t j = 0; j < f.prompt_len; ++j)
      r.prompt[j] = (i * 7919 + j * 104729) % base.config().vocab_size;
    if (!adapters.empty()) r.adapter = adapters[static_cast<size_t>(i) % adapters.size()];
    r.max_new_tokens = f.new_tokens;
    r.ignore_eos = true;
    r.on_event = [&](const serve::GenerationEvent& e) {
      if (!e.finished) return;
      std::lock_guard<std::mutex> lock(mu);
      TORCH_CHECK(e.status.ok(), e.status.ToString());
      ttft += e.usage.time_to_first_token_seconds;
      ++done;
      cv.notify_all();
    };
    TORCH_CHECK((*engine)->Submit(std::move(r)).ok());
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done == batch; });
  engine->reset();
  // Step 1 ran every prompt (and sampled each first token); the rest decode.
  double decode = 0;
  for (size_t i = 1; i < steps.size(); ++i) decode += steps[i];
  RunResult out;
  out.step_ms = 1e3 * decode / static_cast<double>(steps.size() - 1);
  out.decode_tokens_per_s = static_cast<double>(batch * (f.new_tokens - 1)) / decode;
  out.ttft_ms = 1e3 * ttft / static_cast<double>(batch);
  return out;
}

// --trace DIR: batch-32 graph steps of the base and of 8 adapters (16 new
// tokens each) under the Kineto profiler, saved as Chrome traces. Every
// kernel of a replayed graph is recorded with its start and duration, so the
// trace shows what a serving step spends where, gaps between kernels
// included (scripts/trace-summary.py).
bool TraceSteps(const serve::ServingModel& base, const Flags& f,
                const std::vector<std::shared_ptr<const serve::ServingAdapter>>& adapters) {
#ifdef QWHA_SERVE_BENCH_TRACE
  namespace profiler = torch::autograd::profiler;
  namespace impl = torch::profiler::impl;
  std::filesystem::create_directories(f.trace_dir);
  Flags short_run = f;
  short_run.new_tokens = std::min<int64_t>(f.new_tokens, 16);
  for (size_t count : {size_t{0}, size_t{8}}) {
    const std::vector<std::shared_ptr<const serve::ServingAdapter>> used(
        adapters.begin(), adapters.begin() + static_cast<std::ptrdiff_t>(count));
    (void)RunBatch(base, short_run, 32, used, /*graphs=*/true);  // graphs captured, warm
    const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
    const std::set<impl::ActivityType> activities = {impl::ActivityType::CPU,
                                                     impl::ActivityType::CUDA};
    profiler::prepareProfiler(config, activities);
    profiler::enableProfiler(config, activities);
    (void)RunBatch(base, short_run, 32, used, /*graphs=*/true);
    torch::cuda::synchronize();
    const std::string path = f.trace_dir + (count == 0 ? "/trace-base.json" : "/trace-8qwha.json");
    profiler::disableProfiler()->save(path);
    std::printf("trace: batch 32, %s, %lld new tokens: %s\n", count == 0 ? "base" : "8 QWHA",
                static_cast<long long>(short_run.new_tokens), path.c_str());
  }
  return true;
#else
  (void)base, (void)f, (void)adapters;
  std::fprintf(stderr, "--trace: this build has no Kineto profiler (QWHA_SERVE_BENCH_TRACE)\n");
  return false;
#endif
}

#ifdef QWHA_SERVE_BENCH_CUDA_STATS
// GPU time of fn: `reps` calls captured in one CUDA graph, replayed (no host
// time between the kernels).
double GraphSeconds(const std::function<void()>& fn, int reps) {
  const c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool());
  fn();  // lazy initialization outside the capture
  torch::cuda::synchronize();
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  for (int i = 0; i < reps; ++i) fn();
  graph.capture_end();
  graph.replay();
  torch::cuda::synchronize();
  constexpr int kReplays = 5;
  const auto t0 = Clock::now();
  for (int i = 0; i < kReplays; ++i) graph.replay();
  torch::cuda::synchronize();
  return std::chrono::duration<double>(Clock::now() - t0).count() / (kReplays * reps);
}
#endif

double Seconds(const std::function<void()>& fn, const torch::Device& device, int reps) {
  fn();  // warm-up
  if (device.is_cuda()) torch::cuda::synchronize();
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) fn();
  if (device.is_cuda()) torch::cuda::synchronize();
  return std::chrono::duration<double>(Clock::now() - t0).count() / reps;
}

// The adapter product of one decoder layer for a decode batch of 8 adapters
// × 4 tokens, side by side on the same spectra and inputs: the packed
// multi-adapter kernel (one SpectrumApply per slot for all 8 adapters) against
// the CSR form served before it (int32 indices, float32 values; one cuSPARSE
// product and one index_add per adapter and slot, as the previous AddDeltas
// did). The FWHT of the inputs is left out of both.
void KernelSideBySide(const serve::ServingModel& base,
                      const std::vector<std::shared_ptr<const serve::ServingAdapter>>& adapters,
                      const torch::Device& device,
                      const std::vector<std::vector<int>>& alt_tunings) {
  const int64_t per = 4, count = static_cast<int64_t>(adapters.size()), tokens = per * count;
  const auto opts = torch::TensorOptions().device(device);
  const torch::Tensor y_rows = torch::arange(tokens, opts.dtype(torch::kInt32));
  double packed_s = 0, csr_s = 0;
  int64_t packed_bytes = 0, csr_bytes = 0;
  double max_diff = 0;
  for (int64_t k = 0; k < serve::kSlotsPerLayer; ++k) {
    const serve::SlotInfo& s = base.slots()[static_cast<size_t>(k)];
    const torch::Tensor z = torch::randn({tokens, s.in_features}, opts).to(base.dtype());
    const torch::Tensor zt32 = z.to(torch::kFloat32).t();
    std::vector<kernels::SpectrumTask> tasks;
    std::vector<torch::Tensor> csr;
    std::vector<torch::Tensor> rows;
    for (int64_t a = 0; a < count; ++a) {
      const kernels::PackedSpectrum& f = adapters[static_cast<size_t>(a)]->slot(k).spectrum;
      tasks.push_back({&f, 0, a * per, per});
      packed_bytes += f.bytes();
      csr.push_back(kernels::UnpackSpectrum(f).to_sparse_csr());
      csr_bytes += serve::TensorBytes(csr.back().crow_indices()) +
                   serve::TensorBytes(csr.back().col_indices()) +
                   serve::TensorBytes(csr.back().values());
      rows.push_back(torch::arange(a * per, (a + 1) * per, opts.dtype(torch::kInt64)));
    }
    torch::Tensor y_packed = torch::zeros({tokens, s.out_features}, opts.dtype(base.dtype()));
    torch::Tensor y_csr = torch::zeros({tokens, s.out_features}, opts.dtype(base.dtype()));
    packed_s += Seconds([&] { kernels::SpectrumApply(z, tasks, y_rows, y_packed); }, device, 20);
    csr_s += Seconds(
        [&] {
          for (int64_t a = 0; a < count; ++a) {
            y_csr.index_add_(0, rows[static_cast<size_t>(a)],
                             torch::mm(csr[static_cast<size_t>(a)], zt32.narrow(1, a * per, per))
                                 .t()
                                 .to(base.dtype()));
          }
        },
        device, 20);
    // One application each from zero: compare.
    y_packed.zero_();
    y_csr.zero_();
    kernels::SpectrumApply(z, tasks, y_rows, y_packed);
    for (int64_t a = 0; a < count; ++a) {
      y_csr.index_add_(0, rows[static_cast<size_t>(a)],
                       torch::mm(csr[static_cast<size_t>(a)], zt32.narrow(1, a * per, per))
                           .t()
                           .to(base.dtype()));
    }
    const double scale = y_csr.abs().max().item<double>() + 1e-30;
    max_diff = std::max(
        max_diff,
        (y_packed.to(torch::kFloat32) - y_csr.to(torch::kFloat32)).abs().max().item<double>() /
            scale);
  }
#ifdef QWHA_SERVE_BENCH_CUDA_STATS
  // GPU time only (graph replays, no host time) of the parts of one layer's
  // adapter work, for the launch shapes and diagnostic modes of the packed
  // product (kernels::cuda::SpectrumApplyTuning; 0: the default): lanes per
  // row, entries per lane, blocks aimed at per SM and resident (register cap),
  // staging of z (2: one column per thread) and diagnostic 1 (staging only),
  // 2 (all but the staging), 3 (an empty launch), 4 (gathers of z without
  // bank conflicts) or 5 (entries loaded, not used); 4 and 5 apply to 8x4;
  // rows of a warp (1: contiguous, 2: strided; 0: the default); entry loads
  // (1: the step pipeline; 0: the default, the window stream for 8x4).
  std::printf(
      "kernel launch shapes (one layer, GPU us; per slot q k v o gate up down; 8 adapters x 4 "
      "tokens, then 1 adapter x 32 tokens):\n");
  const torch::Tensor rows32 = torch::arange(32, opts.dtype(torch::kInt32));
  for (const kernels::cuda::SpectrumApplyTuning& tuning :
       std::vector<kernels::cuda::SpectrumApplyTuning>{{0, 0, 0, 0, 0, 0},
                                                       {0, 0, 0, 0, 0, 3},
                                                       {0, 0, 0, 0, 0, 1},
                                                       {0, 0, 0, 0, 0, 2},
                                                       {0, 0, 0, 0, 0, 4},
                                                       {0, 0, 0, 0, 0, 5},
                                                       {0, 0, 0, 0, 2, 0},
                                                       {0, 0, 0, 3, 0, 0},
                                                       {0, 0, 0, 1, 0, 0},
                                                       {0, 0, 0, 0, 0, 0, 0, 1},
                                                       {8, 0, 0, 0, 0, 0, 1},
                                                       {8, 0, 0, 0, 0, 0, 2},
                                                       {4, 0, 0, 0, 0, 0, 2},
                                                       {16, 0, 8, 0, 0, 0}}) {
    kernels::cuda::SetSpectrumApplyTuning(tuning);
    double total8 = 0, total1 = 0;
    std::string per8, per1;
    for (int64_t k = 0; k < serve::kSlotsPerLayer; ++k) {
      const serve::SlotInfo& s = base.slots()[static_cast<size_t>(k)];
      const torch::Tensor z = torch::randn({32, s.in_features}, opts).to(base.dtype());
      std::vector<kernels::SpectrumTask> tasks;
      for (int64_t a = 0; a < count; ++a) {
        tasks.push_back({&adapters[static_cast<size_t>(a)]->slot(k).spectrum, 0, a * per, per});
      }
      const std::vector<kernels::SpectrumTask> one = {{&adapters[0]->slot(k).spectrum, 0, 0, 32}};
      torch::Tensor y = torch::zeros({32, s.out_features}, opts.dtype(base.dtype()));
      const double t8 = GraphSeconds([&] { kernels::SpectrumApply(z, tasks, y_rows, y); }, 20);
      const double t1 = GraphSeconds([&] { kernels::SpectrumApply(z, one, rows32, y); }, 20);
      total8 += t8;
      total1 += t1;
      per8 += absl::StrCat(" ", static_cast<int>(1e6 * t8 + 0.5));
      per1 += absl::StrCat(" ", static_cast<int>(1e6 * t1 + 0.5));
    }
    std::printf(
        "  lanes %2d entries %2d blocks/SM %d (min %d) staging %d diag %d rows %d pipeline %d: 8x4 "
        "%6.1f (%s ) 1x32 %6.1f (%s )\n",
        tuning.lanes_per_row, tuning.entries_per_lane, tuning.blocks_per_sm,
        tuning.min_blocks_per_sm, tuning.staging, tuning.diagnostic, tuning.rows, tuning.pipeline,
        1e6 * total8, per8.c_str(), 1e6 * total1, per1.c_str());
  }
  kernels::cuda::SetSpectrumApplyTuning({});
  // The same layer as serving launches it: q/k/v in one launch (they share
  // their input), o, gate/up in one, down; 8 adapters × 4 tokens; with the
  // default tuning, then each --alt-tuning.
  std::vector<std::vector<int>> tunings = {{}};
  tunings.insert(tunings.end(), alt_tunings.begin(), alt_tunings.end());
  // Chunks: the inputs in chunks of 4 tokens, as serving's decode steps give
  // them (down's where kernels::FusedFwhtChunks holds for its width).
  const bool down_chunks =
      kernels::FusedFwhtChunks(base.config().intermediate_size, base.dtype(), base.device());
  for (const std::vector<int>& tuning : tunings) {
    for (bool chunks : {true, false}) {
      SetTuning(tuning);
      const std::vector<std::vector<int64_t>> launches = {{0, 1, 2}, {3}, {4, 5}, {6}};
      double total = 0;
      std::string cells;
      for (const std::vector<int64_t>& slots : launches) {
        const int64_t in = base.slots()[static_cast<size_t>(slots[0])].in_features;
        int64_t width = 0;
        for (int64_t k : slots) width += base.slots()[static_cast<size_t>(k)].out_features;
        torch::Tensor z = torch::randn({32, in}, opts).to(base.dtype());
        if (chunks && (slots[0] != 6 || down_chunks)) z = kernels::ChunkRows(z, y_rows);
        std::vector<kernels::SpectrumTask> tasks;
        for (int64_t a = 0; a < count; ++a) {
          int64_t offset = 0;
          for (int64_t k : slots) {
            tasks.push_back(
                {&adapters[static_cast<size_t>(a)]->slot(k).spectrum, offset, a * per, per});
            offset += base.slots()[static_cast<size_t>(k)].out_features;
          }
        }
        torch::Tensor y = torch::zeros({32, width}, opts.dtype(base.dtype()));
        const double t = GraphSeconds([&] { kernels::SpectrumApply(z, tasks, y_rows, y); }, 20);
        total += t;
        cells += absl::StrCat(" ", static_cast<int>(1e6 * t + 0.5));
      }
      std::printf(
          "  as serving launches it (q/k/v, o, gate/up, down), 8x4, tuning %s, z %s: %6.1f (%s )\n",
          tuning.empty() ? "default" : absl::StrJoin(tuning, ",").c_str(),
          chunks ? "in chunks" : "in rows", 1e6 * total, cells.c_str());
    }
  }
  SetTuning({});
  // The FWHT of a step's rows (SpectrumInput) at the layer's two widths.
  for (int64_t n : {base.config().hidden_size, base.config().intermediate_size}) {
    for (int64_t m : {int64_t{4}, int64_t{32}}) {
      const torch::Tensor x = torch::randn({m, n}, opts).to(base.dtype());
      const double t = GraphSeconds([&] { (void)kernels::Fwht(x, 1.0, /*transpose=*/true); }, 20);
      std::printf("  FWHT %lld rows x %lld: %.1f GPU us\n", static_cast<long long>(m),
                  static_cast<long long>(n), 1e6 * t);
    }
  }
  // The down projection's input into chunks of 4 tokens (kernels::FwhtChunks,
  // what serving runs where it is one kernel) against its FWHT into rows.
  if (down_chunks) {
    const int64_t n = base.config().intermediate_size;
    const torch::Tensor a = torch::randn({32, n}, opts).to(base.dtype());
    const torch::Tensor z_rows = torch::arange(32, opts.dtype(torch::kInt32));
    const double rows = GraphSeconds([&] { (void)kernels::Fwht(a, 1.0, /*transpose=*/true); }, 20);
    const double chunked =
        GraphSeconds([&] { (void)kernels::FwhtChunks(a, z_rows, 1.0, /*transpose=*/true); }, 20);
    std::printf("  FWHT 32 rows x %lld into rows: %.1f GPU us; into chunks of 4: %.1f\n",
                static_cast<long long>(n), 1e6 * rows, 1e6 * chunked);
  }
  // The RMSNorm of the projections' input and its FWHT: two kernels, or one
  // (kernels::RmsNormFwht, what serving runs where QWHA adapters need it).
  {
    const int64_t n = base.config().hidden_size;
    const torch::Tensor h = torch::randn({32, n}, opts).to(base.dtype());
    const torch::Tensor w = torch::ones({n}, opts).to(base.dtype());
    const double two = GraphSeconds(
        [&] { (void)kernels::Fwht(kernels::RmsNorm(h, w, 1e-5), 1.0, /*transpose=*/true); }, 20);
    const double one =
        GraphSeconds([&] { (void)kernels::RmsNormFwht(h, w, 1e-5, 1.0, /*transpose=*/true); }, 20);
    const torch::Tensor z_rows = torch::arange(32, opts.dtype(torch::kInt32));
    double chunked[2];
    for (int kernel : {1, 0}) {  // blocks of 4 rows; clusters of 4 blocks (the default)
      kernels::cuda::SetNormFwhtChunksKernel(kernel);
      chunked[kernel] = GraphSeconds(
          [&] { (void)kernels::RmsNormFwht(h, w, 1e-5, 1.0, /*transpose=*/true, z_rows); }, 20);
    }
    std::printf(
        "  RMSNorm then FWHT, 32 rows x %lld: %.1f GPU us; in one kernel: %.1f; in one kernel, z "
        "in chunks of 4: %.1f (blocks of 4 rows instead of clusters: %.1f)\n",
        static_cast<long long>(n), 1e6 * two, 1e6 * one, 1e6 * chunked[0], 1e6 * chunked[1]);
  }
  // The copy of the attention's output into the step's rows and its FWHT (the
  // o projection's adapters): two kernels, or one (kernels::CopyRowsFwht).
  {
    const int64_t n = base.config().hidden_size;
    const torch::Tensor o = torch::randn({32, n}, opts).to(base.dtype());
    torch::Tensor out = torch::empty_like(o);
    const double two = GraphSeconds(
        [&] {
          out.copy_(o);
          (void)kernels::Fwht(out, 1.0, /*transpose=*/true);
        },
        20);
    const double one = GraphSeconds(
        [&] { (void)kernels::CopyRowsFwht(o, torch::Tensor(), out, 1.0, /*transpose=*/true); }, 20);
    const torch::Tensor z_rows = torch::arange(32, opts.dtype(torch::kInt32));
    double chunked[2];
    for (int kernel : {1, 0}) {
      kernels::cuda::SetNormFwhtChunksKernel(kernel);
      chunked[kernel] = GraphSeconds(
          [&] {
            (void)kernels::CopyRowsFwht(o, torch::Tensor(), out, 1.0, /*transpose=*/true, z_rows);
          },
          20);
    }
    std::printf(
        "  copy then FWHT, 32 rows x %lld: %.1f GPU us; in one kernel: %.1f; in one kernel, z in "
        "chunks of 4: %.1f (blocks of 4 rows instead of clusters: %.1f)\n",
        static_cast<long long>(n), 1e6 * two, 1e6 * one, 1e6 * chunked[0], 1e6 * chunked[1]);
  }
#endif
  std::printf(
      "kernel: one layer, %lld adapters x %lld tokens: packed SpectrumApply %.1f us (%.0f GB/s of "
      "%.1f MiB), CSR float32 + cuSPARSE %.1f us (%.1f MiB): %.2fx faster, %.2fx smaller; max rel "
      "diff %.1e\n",
      static_cast<long long>(count), static_cast<long long>(per), 1e6 * packed_s,
      packed_bytes / packed_s / 1e9, packed_bytes / 1048576.0, 1e6 * csr_s, csr_bytes / 1048576.0,
      csr_s / packed_s, static_cast<double>(csr_bytes) / packed_bytes, max_diff);
}

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    int64_t n = 0;
    const bool num = absl::SimpleAtoi(v, &n) && n > 0;
    if (a == "--preset")
      f->preset = v;
    else if (a == "--model")
      f->model_dir = v;
    else if (a == "--device")
      f->device = v;
    else if (a == "--dtype")
      f->dtype = v;
    else if (a == "--work-dir")
      f->work_dir = v;
    else if (a == "--bits" && num)
      f->bits = static_cast<int>(n);
    else if (a == "--group-size" && num)
      f->group_size = static_cast<int>(n);
    else if (a == "--rank" && num)
      f->rank = n;
    else if (a == "--prompt-len" && num)
      f->prompt_len = n;
    else if (a == "--alt-tuning") {
      for (absl::string_view one : absl::StrSplit(v, ';', absl::SkipEmpty())) {
        std::vector<int> fields;
        for (absl::string_view x : absl::StrSplit(one, ',')) {
          int value = 0;
          if (!absl::SimpleAtoi(x, &value)) return false;
          fields.push_back(value);
        }
        if (fields.size() != 8 && fields.size() != 9) return false;
        f->alt_tunings.push_back(std::move(fields));
      }
    } else if (a == "--trace")
      f->trace_dir = v;
    else if (a == "--kernel-only")
      f->kernel_only = v == "1";
    else if (a == "--repeats" && num)
      f->repeats = static_cast<int>(n);
    else if (a == "--new-tokens" && num && n > 1)
      f->new_tokens = n;
    else if (a == "--batches") {
      f->batches.clear();
      for (absl::string_view s : absl::StrSplit(v, ',')) {
        if (!absl::SimpleAtoi(s, &n) || n < 1) return false;
        f->batches.push_back(n);
      }
    } else
      return false;
  }
  return argc % 2 == 1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, &f)) {
    std::fprintf(stderr, "usage: see the top of worker/serve/serve_bench.cc\n");
    return 3;
  }
  const bool cuda = torch::cuda::is_available();
  if (f.device.empty()) f.device = cuda ? "cuda" : "cpu";
  if (f.preset.empty()) f.preset = cuda ? "7b" : "tiny";
  if (f.dtype.empty()) f.dtype = f.device == "cpu" ? "float32" : "bfloat16";
  const torch::Device device(f.device);
  const torch::ScalarType dtype = *model::ParseDtypeName(f.dtype);
  const torch::NoGradGuard no_grad;

  auto base = MakeBase(f, device, dtype);
  std::printf(
      "qwha-serve-bench: %s on %s (%s), %d-bit RTN group %d, base %.2f GiB; prompt %lld, new %lld "
      "tokens\n",
      f.model_dir.empty() ? ("random " + f.preset).c_str() : f.model_dir.c_str(), f.device.c_str(),
      f.dtype.c_str(), f.bits, f.group_size, base->memory_bytes() / 1073741824.0,
      static_cast<long long>(f.prompt_len), static_cast<long long>(f.new_tokens));

  // Adapter load time (file → device) and the memory an unload frees.
  const std::string dir = f.work_dir + "/qwha_r" + std::to_string(f.rank);
  WriteAdapter(*base, f, dir);
  std::vector<std::unique_ptr<serve::AdapterLoader>> loaders;
  std::vector<std::shared_ptr<const serve::ServingAdapter>> adapters;
  double load_s = 0;
  const int64_t before = DeviceAllocated(device);
  for (int i = 0; i < 8; ++i) {
    loaders.push_back(
        std::make_unique<serve::AdapterLoader>(base.get(), dir, "bench-" + std::to_string(i)));
    const auto t0 = Clock::now();
    TORCH_CHECK(loaders.back()->Load().ok());
    if (device.is_cuda()) torch::cuda::synchronize();
    load_s += std::chrono::duration<double>(Clock::now() - t0).count();
    adapters.emplace_back(std::shared_ptr<const serve::ServingAdapter>(),
                          loaders.back()->adapter());
  }
  const int64_t estimate = *loaders[0]->EstimateMemory();
  const int64_t with8 = DeviceAllocated(device);
  const int64_t adapters_bytes = adapters[0]->memory_bytes();
  std::printf(
      "adapter: QWHA rank-%lld budget, %.1f MiB on the device each (estimate %.1f MiB); load %.1f "
      "ms (file → device, mean of 8)\n",
      static_cast<long long>(f.rank), adapters[0]->memory_bytes() / 1048576.0, estimate / 1048576.0,
      1e3 * load_s / 8);

  // The device path of the spectrum product against the dense definition.
  {
    const serve::SlotInfo& s = base->slots()[0];
    const serve::SlotDelta& d = adapters[0]->slot(0);
    torch::Tensor x =
        torch::randn({4, s.in_features}, torch::TensorOptions().device(device)).to(dtype);
    torch::Tensor dense = kernels::Fwht(kernels::UnpackSpectrum(d.spectrum), 1.0);  // (s/n) F H
    torch::Tensor expected = x.to(torch::kFloat32).matmul(dense.t());
    torch::Tensor got = adapters[0]->ApplyDelta(0, x, torch::Tensor()).to(torch::kFloat32);
    std::printf("check: spectrum product vs dense ΔW on %s: max rel error %.2e\n", f.device.c_str(),
                ((got - expected).abs().max() / expected.abs().max()).item<double>());
  }

  KernelSideBySide(*base, adapters, device, f.alt_tunings);
  if (f.kernel_only) return 0;

  std::printf("\n%-6s %-7s %-9s %14s %10s %10s %12s %12s\n", "batch", "steps", "adapters",
              "decode tok/s", "ms/step", "TTFT ms", "× base step", "× base TTFT");
  // Decode steps eagerly (LibTorch ops issued one by one) and, on CUDA, as
  // replayed CUDA graphs (the engine's default there).
  std::vector<bool> modes = {false};
  if (device.is_cuda()) modes.push_back(true);
  for (bool graphs : modes) (void)RunBatch(*base, f, 1, {}, graphs);  // warm-up
  struct Ratio {
    double best = 0;             // best 8-adapter step / best base step
    std::vector<double> paired;  // per repeat, 8 adapters / base of that repeat
    double median = 0;           // of `paired`
  };
  std::map<bool, Ratio> ratio8;
  for (int64_t batch : f.batches) {
    for (bool graphs : modes) {
      // Configurations of this batch size, run in turn `repeats` times; each
      // keeps its best (shortest) step and TTFT, so that a slow moment of the
      // host does not land on one configuration only.
      // With graphs and 8 adapters, also variants of the 8-adapter step, side
      // by side: kOwnFwht, every FWHT of the adapters' input in a kernel of
      // its own (not fused into the RMSNorm of q/k/v and gate/up or into the
      // copy of the attention's output); kRowZ, the adapters' inputs in rows
      // (staged transposed by the product) instead of chunks of 4 tokens;
      // kAltTuning, the product launched with an --alt-tuning (alt[i]).
      enum Variant { kDefault, kOwnFwht, kRowZ, kAltTuning };
      std::vector<size_t> counts = {0};
      std::vector<Variant> variant = {kDefault};
      std::vector<std::vector<int>> alt = {{}};
      for (size_t c : {size_t{1}, size_t{8}}) {
        if (static_cast<int64_t>(c) <= batch) {
          counts.push_back(c), variant.push_back(kDefault), alt.emplace_back();
        }
      }
      if (graphs && batch >= 8) {
        counts.push_back(8), variant.push_back(kOwnFwht), alt.emplace_back();
        counts.push_back(8), variant.push_back(kRowZ), alt.emplace_back();
        for (const std::vector<int>& t : f.alt_tunings) {
          counts.push_back(8), variant.push_back(kAltTuning), alt.push_back(t);
        }
      }
      const size_t default8 =
          static_cast<size_t>(std::find(counts.begin(), counts.end(), size_t{8}) - counts.begin());
      std::vector<RunResult> best(counts.size());
      std::vector<std::vector<double>> steps(counts.size());
      for (int rep = 0; rep < f.repeats; ++rep) {
        // Odd repeats run the configurations in reverse order: a drift of the
        // device over a repeat (seconds of one configuration after another)
        // then favours neither side of a pair.
        for (size_t j = 0; j < counts.size(); ++j) {
          const size_t i = rep % 2 == 0 ? j : counts.size() - 1 - j;
          const std::vector<std::shared_ptr<const serve::ServingAdapter>> used(
              adapters.begin(), adapters.begin() + static_cast<std::ptrdiff_t>(counts[i]));
          base->set_fused_fwht(variant[i] != kOwnFwht);
          base->set_chunked_z(variant[i] != kRowZ);
          SetTuning(alt[i]);
          const RunResult r = RunBatch(*base, f, batch, used, graphs);
          base->set_fused_fwht(true);
          base->set_chunked_z(true);
          SetTuning({});
          steps[i].push_back(r.step_ms);
          if (rep == 0 || r.step_ms < best[i].step_ms) {
            best[i].step_ms = r.step_ms;
            best[i].decode_tokens_per_s = r.decode_tokens_per_s;
          }
          if (rep == 0 || r.ttft_ms < best[i].ttft_ms) best[i].ttft_ms = r.ttft_ms;
        }
      }
      for (size_t i = 0; i < counts.size(); ++i) {
        const double ratio = best[i].step_ms / best[0].step_ms;
        if (counts[i] == 8 && batch >= 32 && variant[i] == kDefault) {
          Ratio& r = ratio8[graphs];
          r.best = ratio;
          r.paired.clear();
          for (size_t k = 0; k < steps[i].size(); ++k)
            r.paired.push_back(steps[i][k] / steps[0][k]);
          std::vector<double> sorted = r.paired;
          std::sort(sorted.begin(), sorted.end());
          const size_t m = sorted.size();
          r.median = m % 2 == 1 ? sorted[m / 2] : (sorted[m / 2 - 1] + sorted[m / 2]) / 2;
        }
        const char* mark = variant[i] == kOwnFwht     ? "*"
                           : variant[i] == kRowZ      ? "~"
                           : variant[i] == kAltTuning ? "^"
                                                      : "";
        std::printf("%-6lld %-7s %-9s %14.1f %10.2f %10.1f %12.2f %12.2f\n",
                    static_cast<long long>(batch), graphs ? "graphs" : "eager",
                    counts[i] == 0 ? "base" : absl::StrCat(counts[i], " QWHA", mark).c_str(),
                    best[i].decode_tokens_per_s, best[i].step_ms, best[i].ttft_ms, ratio,
                    best[i].ttft_ms / best[0].ttft_ms);
      }
      // Each variant against the default 8-adapter step of the same repeat.
      for (size_t i = default8 + 1; i < counts.size(); ++i) {
        std::vector<double> ratios;
        for (size_t k = 0; k < steps[i].size(); ++k) {
          ratios.push_back(steps[default8][k] / steps[i][k]);
        }
        std::printf("%-6lld %-7s %s; default / this, per repeat:%s\n",
                    static_cast<long long>(batch), graphs ? "graphs" : "eager",
                    variant[i] == kOwnFwht
                        ? "8 QWHA*: each FWHT in a kernel of its own instead of fused into the "
                          "RMSNorm or the attention output's copy"
                    : variant[i] == kRowZ
                        ? "8 QWHA~: the adapters' inputs in rows, staged transposed, instead of "
                          "chunks of 4 tokens copied as they are"
                        : absl::StrCat("8 QWHA^: the product launched with tuning ",
                                       absl::StrJoin(alt[i], ","))
                              .c_str(),
                    FormatRatios(ratios).c_str());
      }
    }
  }
  if (!f.trace_dir.empty() && !TraceSteps(*base, f, adapters)) return 1;
  // Right around the unload: the runs above leave buffers of their own (the
  // cuBLAS workspace LibTorch keeps per CUDA stream, one per engine stream).
  const int64_t before_unload = DeviceAllocated(device);
  adapters.clear();
  for (auto& l : loaders) l->Unload();
  const int64_t after = DeviceAllocated(device);
  if (before >= 0) {
    std::printf(
        "\nunload: device allocated %.1f MiB before loading the adapters, %.1f MiB with 8 loaded; "
        "%.1f MiB just before unloading them, %.1f MiB after: %.1f MiB freed (loaded size %.1f "
        "MiB)\n",
        before / 1048576.0, with8 / 1048576.0, before_unload / 1048576.0, after / 1048576.0,
        (before_unload - after) / 1048576.0, 8 * adapters_bytes / 1048576.0);
  }
  // The target is judged on the steps the engine runs by default: graphs on
  // CUDA. Eager steps on CUDA are set by the host's dispatch (the adapters'
  // GPU work hides behind it), so their ratio is printed but judges nothing.
  for (const auto& [graphs, ratio] : ratio8) {
    if (!graphs && ratio8.count(true) > 0) {
      std::printf(
          "eager steps (host-bound, not a measure of the adapters' cost): 8 adapters %.2fx\n",
          ratio.best);
      continue;
    }
    std::printf(
        "target (%s steps): batch >= 32 with 8 adapters at <= 1.30x the base's decode step time: "
        "%.3fx %s (median of the repeats' paired ratios:%s; best against best %.3fx)\n",
        graphs ? "graph" : "eager", ratio.median, ratio.median <= 1.3 ? "MET" : "NOT MET",
        FormatRatios(ratio.paired).c_str(), ratio.best);
  }
  return 0;
}
