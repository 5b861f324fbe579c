// The engine against the merged reference (LlamaModel::Generate with the
// adapter merged into the weights) and against itself one request at a time.
#include "worker/serve/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>

#include "worker/serve/adapter_cache.h"
#include "worker/serve/adapter_loader.h"
#include "worker/serve/test_util.h"

namespace qwha::serve {
namespace {

using adapters::AdapterType;
using testing::Collector;

std::vector<int64_t> Prompt(int64_t length, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < length; ++i) out.push_back(static_cast<int64_t>(rng() % vocab));
  return out;
}

EngineOptions NoEos(int64_t max_batch) {
  EngineOptions options;
  options.max_batch = max_batch;
  options.max_seq_len = 64;
  options.eos_token_ids = {-1};  // never matches: run to max_new_tokens as Generate does
  return options;
}

struct Fixture {
  explicit Fixture(const std::string& which) {
    model = testing::QuantizedModel(which);
    serving = *ServingModel::FromModel(*model, testing::TestQuant(), {}, 64);
  }
  // Writes and loads a random adapter; keeps both forms.
  const ServingAdapter* AddAdapter(AdapterType type, uint64_t seed) {
    sets.push_back(testing::RandomAdapters(*model, type, seed));
    const std::string dir = testing::TempDir("engine_" + std::to_string(seed));
    EXPECT_TRUE(testing::WriteAdapterDir(sets.back(), type, dir).ok());
    loaders.push_back(
        std::make_unique<AdapterLoader>(serving.get(), dir, "v" + std::to_string(seed)));
    EXPECT_TRUE(loaders.back()->Load().ok());
    return loaders.back()->adapter();
  }
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<ServingModel> serving;
  std::vector<testing::AdapterSet> sets;
  std::vector<std::unique_ptr<AdapterLoader>> loaders;
};

// Non-owning shared_ptr for adapters the test keeps alive.
std::shared_ptr<const ServingAdapter> Borrow(const ServingAdapter* a) {
  return std::shared_ptr<const ServingAdapter>(std::shared_ptr<const ServingAdapter>(), a);
}

std::vector<int64_t> Generate(Engine& engine, const std::vector<int64_t>& prompt,
                              const ServingAdapter* adapter, int64_t n,
                              SamplingParams sampling = {}) {
  Collector c;
  GenerationRequest r;
  r.prompt = prompt;
  r.adapter = Borrow(adapter);
  r.max_new_tokens = n;
  r.sampling = sampling;
  r.on_event = c.Callback();
  auto id = engine.Submit(std::move(r));
  EXPECT_TRUE(id.ok()) << id.status();
  std::vector<int64_t> tokens = c.Wait();
  EXPECT_TRUE(c.final_event().status.ok()) << c.final_event().status;
  return tokens;
}

struct Case {
  const char* model;
  AdapterType type;
};

class MergedEquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(MergedEquivalenceTest, LoadedAdapterGeneratesWhatTheMergedWeightsGenerate) {
  Fixture f(GetParam().model);
  const ServingAdapter* adapter = f.AddAdapter(GetParam().type, 21);
  auto engine = Engine::Create(f.serving.get(), nullptr, NoEos(4));
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int64_t vocab = f.model->config().vocab_size;
  int differs = 0;
  for (uint64_t seed : {1, 2, 3}) {
    const std::vector<int64_t> prompt = Prompt(5 + static_cast<int64_t>(seed) * 3, vocab, seed);
    const std::vector<int64_t> merged = testing::MergedGreedy(*f.model, &f.sets[0], prompt, 12);
    const std::vector<int64_t> base = testing::MergedGreedy(*f.model, nullptr, prompt, 12);
    EXPECT_EQ(Generate(**engine, prompt, adapter, 12), merged) << "prompt seed " << seed;
    EXPECT_EQ(Generate(**engine, prompt, nullptr, 12), base) << "prompt seed " << seed;
    differs += merged != base;
  }
  EXPECT_GT(differs, 0) << "the adapter never changed the output: the test proves nothing";
}

INSTANTIATE_TEST_SUITE_P(Models, MergedEquivalenceTest,
                         ::testing::Values(Case{"llama2", AdapterType::kQwha},
                                           Case{"llama2", AdapterType::kLora},
                                           Case{"window", AdapterType::kQwha},
                                           Case{"window", AdapterType::kLora}),
                         [](const auto& info) {
                           return std::string(info.param.model) +
                                  (info.param.type == AdapterType::kLora ? "Lora" : "Qwha");
                         });

TEST(EngineTest, BatchedMultiAdapterOutputsEqualOneAtATime) {
  Fixture f("window");
  std::vector<const ServingAdapter*> adapters = {nullptr, f.AddAdapter(AdapterType::kQwha, 31),
                                                 f.AddAdapter(AdapterType::kQwha, 32),
                                                 f.AddAdapter(AdapterType::kLora, 33)};
  const int64_t vocab = f.model->config().vocab_size;
  struct Job {
    std::vector<int64_t> prompt;
    const ServingAdapter* adapter;
    SamplingParams sampling;
    int64_t n;
  };
  std::vector<Job> jobs;
  for (int i = 0; i < 10; ++i) {
    SamplingParams s;
    if (i % 3 == 1) s = {0.8, 0.9, 0, static_cast<uint64_t>(100 + i)};
    if (i % 3 == 2) s = {1.2, 1.0, 5, static_cast<uint64_t>(200 + i)};
    jobs.push_back({Prompt(3 + i * 2, vocab, 50 + i), adapters[i % 4], s, 6 + i % 5});
  }
  auto serial = Engine::Create(f.serving.get(), nullptr, NoEos(1));
  ASSERT_TRUE(serial.ok());
  std::vector<std::vector<int64_t>> expected;
  for (const Job& j : jobs)
    expected.push_back(Generate(**serial, j.prompt, j.adapter, j.n, j.sampling));

  // All at once (prompt chunks small enough that prefills span steps), and a
  // late half that joins while the first half decodes.
  EngineOptions options = NoEos(6);
  options.max_prefill_tokens = 7;
  std::atomic<int64_t> widest{0};
  EngineObserver observer;
  observer.on_step = [&](int64_t batch, double) { widest = std::max<int64_t>(widest, batch); };
  auto batched = Engine::Create(f.serving.get(), nullptr, options, observer);
  ASSERT_TRUE(batched.ok());
  std::vector<std::unique_ptr<Collector>> collectors;
  for (size_t i = 0; i < jobs.size(); ++i) collectors.push_back(std::make_unique<Collector>());
  auto submit = [&](size_t i) {
    GenerationRequest r;
    r.prompt = jobs[i].prompt;
    r.adapter = Borrow(jobs[i].adapter);
    r.max_new_tokens = jobs[i].n;
    r.sampling = jobs[i].sampling;
    r.on_event = collectors[i]->Callback();
    ASSERT_TRUE((*batched)->Submit(std::move(r)).ok());
  };
  for (size_t i = 0; i < jobs.size() / 2; ++i) submit(i);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (size_t i = jobs.size() / 2; i < jobs.size(); ++i) submit(i);
  for (size_t i = 0; i < jobs.size(); ++i) {
    EXPECT_EQ(collectors[i]->Wait(), expected[i]) << "request " << i;
    EXPECT_EQ(collectors[i]->final_event().reason, FinishReason::kLength);
    EXPECT_EQ(collectors[i]->final_event().usage.completion_tokens, jobs[i].n);
  }
  EXPECT_GT(widest, 1) << "requests never shared a step";
}

TEST(EngineTest, RequestsArrivingDuringDecodingJoinTheNextStep) {
  Fixture f("llama2");
  const ServingAdapter* a = f.AddAdapter(AdapterType::kQwha, 41);
  const ServingAdapter* b = f.AddAdapter(AdapterType::kLora, 42);
  const std::vector<int64_t> p1 = Prompt(6, 256, 1), p2 = Prompt(9, 256, 2);
  const auto ref1 = testing::MergedGreedy(*f.model, &f.sets[0], p1, 20);
  const auto ref2 = testing::MergedGreedy(*f.model, &f.sets[1], p2, 8);
  std::vector<int64_t> batch_sizes;
  EngineObserver observer;
  observer.on_step = [&](int64_t batch, double) { batch_sizes.push_back(batch); };
  auto engine = Engine::Create(f.serving.get(), nullptr, NoEos(4), observer);
  ASSERT_TRUE(engine.ok());
  Collector first, second;
  int tokens_seen = 0;
  GenerationRequest r1;
  r1.prompt = p1;
  r1.adapter = Borrow(a);
  r1.max_new_tokens = 20;
  auto forward = first.Callback();
  // Submitted from the engine thread after the third token: it must run next step.
  r1.on_event = [&](const GenerationEvent& e) {
    forward(e);
    if (!e.finished && ++tokens_seen == 3) {
      GenerationRequest r2;
      r2.prompt = p2;
      r2.adapter = Borrow(b);
      r2.max_new_tokens = 8;
      r2.on_event = second.Callback();
      EXPECT_TRUE((*engine)->Submit(std::move(r2)).ok());
    }
  };
  ASSERT_TRUE((*engine)->Submit(std::move(r1)).ok());
  EXPECT_EQ(first.Wait(), ref1);
  EXPECT_EQ(second.Wait(), ref2);
  // Steps 1-3 ran the first request alone; step 4 ran both (its decode, the
  // other's prompt).
  ASSERT_GE(batch_sizes.size(), 4u);
  EXPECT_EQ(batch_sizes[2], 1);
  EXPECT_EQ(batch_sizes[3], 2);
}

TEST(EngineTest, SamplingDependsOnlyOnTheRequestsSeed) {
  Fixture f("llama2");
  auto engine = Engine::Create(f.serving.get(), nullptr, NoEos(4));
  const std::vector<int64_t> p = Prompt(4, 256, 9);
  const SamplingParams s1{1.0, 0.95, 40, 7}, s2{1.0, 0.95, 40, 8};
  const auto x = Generate(**engine, p, nullptr, 16, s1);
  EXPECT_EQ(Generate(**engine, p, nullptr, 16, s1), x);
  EXPECT_NE(Generate(**engine, p, nullptr, 16, s2), x);
}

TEST(EngineTest, BadRequestsAreRefusedAndCancelEndsARequest) {
  Fixture f("llama2");
  auto engine = Engine::Create(f.serving.get(), nullptr, NoEos(2));
  auto submit = [&](std::vector<int64_t> prompt, int64_t n, SamplingParams s = {},
                    std::vector<std::string> stop = {}) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_new_tokens = n;
    r.sampling = s;
    r.stop = std::move(stop);
    r.on_event = [](const GenerationEvent&) {};
    return (*engine)->Submit(std::move(r)).status();
  };
  EXPECT_EQ(submit({}, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit({300}, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit(std::vector<int64_t>(64, 1), 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit({1}, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit({1}, 4, {-1, 1, 0, 0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(submit({1}, 4, {}, {"x"}).code(), absl::StatusCode::kInvalidArgument);  // no tokenizer

  Collector c;
  GenerationRequest r;
  r.prompt = {1, 2, 3};
  r.max_new_tokens = 60;
  std::promise<uint64_t> id;
  std::shared_future<uint64_t> known = id.get_future().share();
  auto forward = c.Callback();
  int n = 0;
  // Cancels itself from its own callback after two tokens.
  r.on_event = [&, known](const GenerationEvent& e) {
    forward(e);
    if (!e.finished && ++n == 2) (*engine)->Cancel(known.get());
  };
  auto submitted = (*engine)->Submit(std::move(r));
  ASSERT_TRUE(submitted.ok());
  id.set_value(*submitted);
  const auto tokens = c.Wait();
  EXPECT_EQ(c.final_event().reason, FinishReason::kCancelled);
  EXPECT_EQ(c.final_event().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(tokens.size(), 2u);
}

}  // namespace
}  // namespace qwha::serve
