// Decode steps replayed from CUDA graphs (serving_forward.cc) against the same
// steps run eagerly, on the same model, adapters and tokens: logits step by
// step as the batch changes shape, a reloaded adapter version never replayed
// with the old one's graph, the engine's greedy tokens with graphs on and
// off, and those tokens against the merged weights' on the GPU. CUDA only
// (CPU models never capture); skipped without a GPU.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/fwht.h"
#include "worker/model/llama.h"
#include "worker/serve/adapter_loader.h"
#include "worker/serve/engine.h"
#include "worker/serve/kv_pool.h"
#include "worker/serve/serving_model.h"
#include "worker/serve/test_util.h"

#ifdef QWHA_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace qwha::serve {
namespace {

using adapters::AdapterType;

#ifdef QWHA_WITH_CUDA
bool HaveCuda() { return torch::cuda::is_available(); }
#else
bool HaveCuda() { return false; }
#endif

struct GpuBase {
  explicit GpuBase(torch::ScalarType dtype, int64_t hidden = 256, int64_t intermediate = 512,
                   int64_t layers = 2) {
    model::ModelConfig c;
    c.model_type = "llama";
    c.hidden_size = hidden;
    c.intermediate_size = intermediate;
    c.num_hidden_layers = layers;
    c.num_attention_heads = hidden / 64;
    c.num_key_value_heads = hidden / 128;
    c.head_dim = 64;
    c.vocab_size = 512;
    model = model::LlamaModel::RandomInit(c, 11, torch::kCUDA, dtype);
    testing::QuantizeAll(*model);
    serving = *ServingModel::FromModel(*model, testing::TestQuant(), {}, 256);
  }
  // Writes a random adapter and loads it (a new ServingAdapter each call).
  std::unique_ptr<AdapterLoader> Load(AdapterType type, uint64_t seed) {
    const std::string dir = testing::TempDir("graph_" + std::to_string(seed));
    EXPECT_TRUE(
        testing::WriteAdapterDir(testing::RandomAdapters(*model, type, seed), type, dir).ok());
    auto loader = std::make_unique<AdapterLoader>(serving.get(), dir, "v" + std::to_string(seed));
    EXPECT_TRUE(loader->Load().ok());
    return loader;
  }
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<ServingModel> serving;
};

std::vector<int64_t> Tokens(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(static_cast<int64_t>(rng() % 512));
  return out;
}

double RelDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

#ifdef QWHA_WITH_CUDA
// Runs `steps` decode steps of `adapters` (one request each, prompts of
// different lengths) on an eager pool and a graph pool, feeding both the eager
// pool's greedy tokens; request `drop` leaves after `drop_at` steps (the
// slots stop being the leading ones). Returns the largest relative logits
// difference; `pool_out` gets the graph pool.
double CompareDecode(const ServingModel& serving,
                     const std::vector<const ServingAdapter*>& adapters, int64_t steps, size_t drop,
                     int64_t drop_at, std::unique_ptr<KvPool>* pool_out) {
  const int64_t n = static_cast<int64_t>(adapters.size());
  auto eager = std::make_unique<KvPool>(serving, n, 160);
  auto graph = std::make_unique<KvPool>(serving, n, 160);
  graph->set_cuda_graphs(true);
  std::vector<StepSegment> segments;
  for (int64_t i = 0; i < n; ++i) {
    segments.push_back({i, 0, Tokens(3 + 4 * i, 100 + static_cast<uint64_t>(i)),
                        adapters[static_cast<size_t>(i)]});
  }
  double worst = 0;
  std::vector<bool> live(static_cast<size_t>(n), true);
  for (int64_t step = 0; step <= steps; ++step) {
    const torch::Tensor want = serving.Forward(segments, eager.get());
    const torch::Tensor got = serving.Forward(segments, graph.get());
    worst = std::max(worst, RelDiff(got, want));
    const torch::Tensor next = want.argmax(-1).cpu();
    if (step == drop_at) live[drop] = false;
    std::vector<StepSegment> following;
    for (size_t s = 0; s < segments.size(); ++s) {
      const StepSegment& seg = segments[s];
      if (!live[static_cast<size_t>(seg.slot)]) continue;
      following.push_back({seg.slot,
                           seg.start + static_cast<int64_t>(seg.tokens.size()),
                           {next[static_cast<int64_t>(s)].item<int64_t>()},
                           seg.adapter});
    }
    segments = std::move(following);
  }
  *pool_out = std::move(graph);
  return worst;
}
#endif

TEST(ServingGraphTest, CapturedDecodeStepsMatchEagerSteps) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
#ifdef QWHA_WITH_CUDA
  const c10::cuda::CUDAStreamGuard stream(c10::cuda::getStreamFromPool());
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    GpuBase s(dtype);
    auto a = s.Load(AdapterType::kQwha, 1);
    auto b = s.Load(AdapterType::kQwha, 2);
    auto lora = s.Load(AdapterType::kLora, 3);
    const std::vector<const ServingAdapter*> adapters = {
        nullptr, a->adapter(), b->adapter(), lora->adapter(), a->adapter(), b->adapter()};
    std::unique_ptr<KvPool> pool;
    // 90 steps: lengths cross two 64-position buckets; request 2 leaves at 40.
    const double worst = CompareDecode(*s.serving, adapters, 90, 2, 40, &pool);
    EXPECT_LE(worst, dtype == torch::kFloat32 ? 1e-4 : 5e-2);
    // The first decode step warms up eagerly; every later shape is captured once.
    EXPECT_GE(pool->graph_stats().captured, 3);
    EXPECT_GE(pool->graph_stats().replayed, 80);
  }
#endif
}

TEST(ServingGraphTest, AReloadedAdapterVersionIsNeverReplayedWithTheOldGraph) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
#ifdef QWHA_WITH_CUDA
  const c10::cuda::CUDAStreamGuard stream(c10::cuda::getStreamFromPool());
  GpuBase s(torch::kFloat32);
  KvPool graph(*s.serving, 2, 160), eager(*s.serving, 2, 160);
  graph.set_cuda_graphs(true);
  auto run = [&](const ServingAdapter* adapter, KvPool* pool) {
    std::vector<StepSegment> prefill = {{0, 0, Tokens(8, 5), adapter},
                                        {1, 0, Tokens(5, 6), adapter}};
    (void)s.serving->Forward(prefill, pool);
    torch::Tensor last;
    for (int64_t step = 0; step < 4; ++step) {
      std::vector<StepSegment> decode = {{0, 8 + step, {7 + step}, adapter},
                                         {1, 5 + step, {9 + step}, adapter}};
      last = s.serving->Forward(decode, pool);
    }
    return last;
  };
  auto v1 = s.Load(AdapterType::kQwha, 21);
  const torch::Tensor with_v1 = run(v1->adapter(), &graph);
  EXPECT_LE(RelDiff(with_v1, run(v1->adapter(), &eager)), 1e-4);
  v1->Unload();
  // The same name, another version: new storage, perhaps at the same addresses.
  auto v2 = s.Load(AdapterType::kQwha, 22);
  const int64_t captured = graph.graph_stats().captured;
  const torch::Tensor with_v2 = run(v2->adapter(), &graph);
  EXPECT_GT(graph.graph_stats().captured, captured) << "v2 replayed a graph captured with v1";
  EXPECT_LE(RelDiff(with_v2, run(v2->adapter(), &eager)), 1e-4);
  EXPECT_GT(RelDiff(with_v2, with_v1), 1e-3) << "the two versions give the same logits";
#endif
}

// LLaMA-7B's widths (hidden 4096, intermediate 11008), where the adapters'
// inputs of decode steps come in chunks of 4 tokens (the fused RMSNorm and
// copy FWHTs, and the down projection's FWHT in one kernel): 8 requests of 4
// QWHA adapters (groups of 2 tokens), eager and graph steps, give the logits
// of the same steps with the inputs in rows, bit for bit; the adapters change
// them.
TEST(ServingGraphTest, ChunkedAdapterInputsGiveTheLogitsOfRows) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
#ifdef QWHA_WITH_CUDA
  const c10::cuda::CUDAStreamGuard stream(c10::cuda::getStreamFromPool());
  GpuBase s(torch::kBFloat16, 4096, 11008, 1);
  ASSERT_TRUE(kernels::FusedFwhtChunks(11008, torch::kBFloat16, torch::kCUDA));
  std::vector<std::unique_ptr<AdapterLoader>> loaders;
  for (uint64_t i = 0; i < 4; ++i) loaders.push_back(s.Load(AdapterType::kQwha, 71 + i));
  std::vector<const ServingAdapter*> adapters;
  for (size_t i = 0; i < 8; ++i) adapters.push_back(loaders[i % 4]->adapter());
  auto run = [&](bool chunked, bool graphs, const std::vector<const ServingAdapter*>& used) {
    s.serving->set_chunked_z(chunked);
    KvPool pool(*s.serving, 8, 64);
    pool.set_cuda_graphs(graphs);
    std::vector<StepSegment> prefill;
    for (int64_t i = 0; i < 8; ++i) {
      prefill.push_back(
          {i, 0, Tokens(3 + i, 80 + static_cast<uint64_t>(i)), used[static_cast<size_t>(i)]});
    }
    (void)s.serving->Forward(prefill, &pool);
    std::vector<torch::Tensor> logits;
    for (int64_t step = 0; step < 3; ++step) {
      std::vector<StepSegment> decode;
      for (int64_t i = 0; i < 8; ++i) {
        decode.push_back({i, 3 + i + step, {7 + 5 * i + step}, used[static_cast<size_t>(i)]});
      }
      logits.push_back(s.serving->Forward(decode, &pool));
    }
    s.serving->set_chunked_z(true);
    return torch::stack(logits);
  };
  const torch::Tensor rows = run(false, false, adapters);
  const torch::Tensor chunks = run(true, false, adapters);
  EXPECT_TRUE(chunks.equal(rows)) << "relative difference " << RelDiff(chunks, rows);
  const torch::Tensor graphs = run(true, true, adapters);
  EXPECT_TRUE(graphs.equal(rows)) << "relative difference " << RelDiff(graphs, rows);
  const std::vector<const ServingAdapter*> none(8, nullptr);
  EXPECT_GT(RelDiff(run(true, false, none), rows), 1e-3) << "the adapters change nothing";
#endif
}

TEST(ServingGraphTest, EngineTokensAreTheSameWithAndWithoutGraphs) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  GpuBase s(torch::kFloat32);
  auto a = s.Load(AdapterType::kQwha, 31);
  auto lora = s.Load(AdapterType::kLora, 32);
  auto generate = [&](bool graphs) {
    EngineOptions options;
    options.max_batch = 4;
    options.max_seq_len = 128;
    options.eos_token_ids = {-1};
    options.cuda_graphs = graphs;
    auto engine = Engine::Create(s.serving.get(), nullptr, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::vector<std::unique_ptr<testing::Collector>> out;
    const std::vector<const ServingAdapter*> adapters = {nullptr, a->adapter(), lora->adapter(),
                                                         a->adapter(), nullptr};
    for (size_t i = 0; i < adapters.size(); ++i) {
      out.push_back(std::make_unique<testing::Collector>());
      GenerationRequest r;
      r.prompt = Tokens(4 + 3 * static_cast<int64_t>(i), 40 + i);
      r.adapter = std::shared_ptr<const ServingAdapter>(std::shared_ptr<const ServingAdapter>(),
                                                        adapters[i]);
      r.max_new_tokens = 70 + 5 * static_cast<int64_t>(i);
      r.on_event = out.back()->Callback();
      EXPECT_TRUE((*engine)->Submit(std::move(r)).ok());
    }
    std::vector<std::vector<int64_t>> tokens;
    for (auto& c : out) tokens.push_back(c->Wait());
    return tokens;
  };
  EXPECT_EQ(generate(true), generate(false));
}

// The CUDA serving path end to end (the FWHT and SpectrumApply kernels, LoRA,
// graph steps, several adapters in one batch): every request's greedy tokens
// are those of LlamaModel::Generate on the GPU with its adapter merged into
// the weights (float32).
TEST(ServingGraphTest, BatchedAdaptersGenerateWhatTheMergedWeightsGenerate) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  GpuBase s(torch::kFloat32);
  const std::vector<AdapterType> types = {AdapterType::kQwha, AdapterType::kQwha,
                                          AdapterType::kLora};
  std::vector<testing::AdapterSet> sets;
  std::vector<std::unique_ptr<AdapterLoader>> loaders;
  for (size_t i = 0; i < types.size(); ++i) {
    sets.push_back(testing::RandomAdapters(*s.model, types[i], 51 + i));
    const std::string dir = testing::TempDir("merged_gpu_" + std::to_string(i));
    ASSERT_TRUE(testing::WriteAdapterDir(sets.back(), types[i], dir).ok());
    loaders.push_back(
        std::make_unique<AdapterLoader>(s.serving.get(), dir, "m" + std::to_string(i)));
    ASSERT_TRUE(loaders.back()->Load().ok());
    for (auto& [name, adapter] : sets.back()) adapter->To(torch::kCUDA, torch::kFloat32);
  }
  EngineOptions options;
  options.max_batch = 8;
  options.max_seq_len = 128;
  options.eos_token_ids = {-1};  // never matches: run to max_new_tokens as Generate does
  auto engine = Engine::Create(s.serving.get(), nullptr, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Request i uses adapter which[i] (-1: none).
  const std::vector<int> which = {-1, 0, 1, 2, 0, 1, -1, 2};
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::unique_ptr<testing::Collector>> out;
  for (size_t i = 0; i < which.size(); ++i) {
    prompts.push_back(Tokens(3 + 2 * static_cast<int64_t>(i), 60 + i));
    out.push_back(std::make_unique<testing::Collector>());
    GenerationRequest r;
    r.prompt = prompts.back();
    const ServingAdapter* adapter = which[i] < 0 ? nullptr : loaders[which[i]]->adapter();
    r.adapter =
        std::shared_ptr<const ServingAdapter>(std::shared_ptr<const ServingAdapter>(), adapter);
    r.max_new_tokens = 16;
    r.on_event = out.back()->Callback();
    ASSERT_TRUE((*engine)->Submit(std::move(r)).ok());
  }
  int differs = 0;
  for (size_t i = 0; i < which.size(); ++i) {
    const std::vector<int64_t> got = out[i]->Wait();
    const testing::AdapterSet* set = which[i] < 0 ? nullptr : &sets[which[i]];
    const std::vector<int64_t> merged = testing::MergedGreedy(*s.model, set, prompts[i], 16);
    EXPECT_EQ(got, merged) << "request " << i << " (adapter " << which[i] << ")";
    if (set != nullptr)
      differs += merged != testing::MergedGreedy(*s.model, nullptr, prompts[i], 16);
  }
  EXPECT_GT(differs, 0) << "no adapter changed the output: the test proves nothing";
}

}  // namespace
}  // namespace qwha::serve
