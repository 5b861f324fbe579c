#include "worker/pipeline/evaluate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "worker/train/test_util.h"

namespace qwha::pipeline {
namespace {

// Reference greedy decoding: re-runs the whole sequence without a KV cache
// for every new token and takes the first maximal logit.
std::vector<int32_t> ReferenceGreedy(const model::LlamaModel& model, std::vector<int32_t> ids,
                                     int64_t n) {
  torch::NoGradGuard no_grad;
  std::vector<int32_t> out;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    torch::Tensor logits = model.Forward(torch::tensor(ids64, torch::kInt64).unsqueeze(0));
    torch::Tensor last = logits[0][logits.size(1) - 1];
    const auto* p = last.data_ptr<float>();
    int32_t best = 0;
    for (int32_t v = 1; v < last.size(0); ++v) {
      if (p[v] > p[best]) best = v;
    }
    out.push_back(best);
    ids.push_back(best);
  }
  return out;
}

data::Example MakeExample(std::vector<int32_t> prompt, const std::vector<int32_t>& completion,
                          int64_t line) {
  data::Example e;
  e.prompt_length = static_cast<int64_t>(prompt.size());
  e.ids = std::move(prompt);
  e.ids.insert(e.ids.end(), completion.begin(), completion.end());
  e.mask.assign(e.ids.size(), 0);
  for (size_t i = e.prompt_length; i < e.ids.size(); ++i) e.mask[i] = 1;
  e.line = line;
  return e;
}

// Half of the references are the model's own greedy continuations (exact
// matches), the other half differ in one token; a text record (no prompt) is
// skipped. ExactMatch (KV-cache generation) agrees with the reference loop.
TEST(EvaluateTest, ExactMatchEqualsReferenceLoop) {
  auto model = train::testing::MakeTinyAdaptedModel(adapters::AdapterType::kLoftq, 3);
  const int64_t vocab = model->config().vocab_size;
  std::mt19937 rng(17);
  data::Dataset eval;
  eval.source = "eval.jsonl";
  data::Example text;
  text.ids = {1, 2, 3, 4};
  text.mask = {0, 1, 1, 1};
  eval.examples.push_back(text);
  int64_t expected_exact = 0, expected_tokens = 0, expected_matched = 0;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> prompt(3 + i % 4);
    for (int32_t& id : prompt) id = static_cast<int32_t>(rng() % vocab);
    const int64_t n = 1 + i % 5;
    std::vector<int32_t> reference = ReferenceGreedy(*model, prompt, n);
    if (i % 2 == 1) {
      const size_t at = static_cast<size_t>(i) % reference.size();
      reference[at] = (reference[at] + 1) % vocab;
    }
    const std::vector<int32_t> greedy = ReferenceGreedy(*model, prompt, n);
    int64_t matched = 0;
    for (int64_t t = 0; t < n; ++t) matched += greedy[t] == reference[t] ? 1 : 0;
    expected_exact += matched == n ? 1 : 0;
    expected_matched += matched;
    expected_tokens += n;
    eval.examples.push_back(MakeExample(prompt, reference, i + 2));
  }
  ASSERT_EQ(expected_exact, 4);

  auto result = ExactMatch(*model, eval, 100);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->samples, 8);
  EXPECT_EQ(result->exact, expected_exact);
  EXPECT_EQ(result->tokens, expected_tokens);
  EXPECT_EQ(result->tokens_matched, expected_matched);
  EXPECT_DOUBLE_EQ(result->ExactMatch(), 0.5);
  EXPECT_DOUBLE_EQ(result->TokenAccuracy(),
                   static_cast<double>(expected_matched) / static_cast<double>(expected_tokens));

  // The first samples only: examples 0 (exact) and 1 (one token off).
  auto first = ExactMatch(*model, eval, 2);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->samples, 2);
  EXPECT_EQ(first->exact, 1);
}

TEST(EvaluateTest, ExactMatchWithoutPromptsOrSamples) {
  auto model = train::testing::MakeTinyAdaptedModel(adapters::AdapterType::kLora, 1);
  data::Dataset eval;
  data::Example text;
  text.ids = {1, 2, 3};
  text.mask = {0, 1, 1};
  eval.examples.push_back(text);
  auto r = ExactMatch(*model, eval, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->samples, 0);
  EXPECT_TRUE(std::isnan(r->ExactMatch()));
  EXPECT_EQ(ExactMatch(*model, eval, 0).status().code(), absl::StatusCode::kInvalidArgument);

  // An id outside the vocabulary is an error naming the line.
  data::Example bad = MakeExample({1, 999}, {2}, 7);
  eval.source = "e.jsonl";
  eval.examples = {bad};
  auto err = ExactMatch(*model, eval, 1);
  EXPECT_EQ(err.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(err.status().message().find("e.jsonl:7"), std::string::npos) << err.status();
}

}  // namespace
}  // namespace qwha::pipeline
