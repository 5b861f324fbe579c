#include "worker/data/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/data/test_util.h"

namespace qwha::data {
namespace {

using ::testing::ElementsAreArray;
using testing::FixtureTokenizer;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::WriteTempFile;
using tokenizer::Tokenizer;

std::vector<int32_t> Concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const std::vector<int32_t>& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The maximal runs of supervised ids, each decoded skipping special tokens.
std::vector<std::string> SupervisedTexts(const Example& e, const Tokenizer& tok) {
  std::vector<std::string> texts;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= e.ids.size(); ++i) {
    if (i < e.ids.size() && e.mask[i]) {
      run.push_back(e.ids[i]);
    } else if (!run.empty()) {
      texts.push_back(tok.Decode(run, /*skip_special_tokens=*/true));
      run.clear();
    }
  }
  return texts;
}

std::vector<uint8_t> Mask(std::initializer_list<std::pair<size_t, uint8_t>> runs) {
  std::vector<uint8_t> mask;
  for (const auto& [count, value] : runs) mask.insert(mask.end(), count, value);
  return mask;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = FixtureTokenizer("llama3_style");
    ASSERT_NE(tok_, nullptr);
    ASSERT_TRUE(tok_->bos_id().has_value());
    ASSERT_TRUE(tok_->eos_id().has_value());
    bos_ = *tok_->bos_id();
    eos_ = *tok_->eos_id();
  }
  std::vector<int32_t> Enc(const std::string& text) const { return tok_->Encode(text, false); }

  std::unique_ptr<Tokenizer> tok_;
  int32_t bos_ = 0;
  int32_t eos_ = 0;
};

TEST_F(DatasetTest, TextFormSupervisesEveryTokenButBos) {
  const std::string path =
      WriteTempFile("text.jsonl", "{\"text\": \"Hello world, the quick fox.\"}\n");
  absl::StatusOr<Dataset> ds = LoadDataset(path, *tok_);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->format, ExampleFormat::kText);
  ASSERT_EQ(ds->examples.size(), 1u);
  const Example& e = ds->examples[0];
  const std::vector<int32_t> body = Enc("Hello world, the quick fox.");
  EXPECT_THAT(e.ids, ElementsAreArray(Concat({{bos_}, body, {eos_}})));
  EXPECT_THAT(e.mask, ElementsAreArray(Mask({{1, 0}, {body.size() + 1, 1}})));
  EXPECT_THAT(SupervisedTexts(e, *tok_), ElementsAreArray({"Hello world, the quick fox."}));
  EXPECT_EQ(e.line, 1);
  EXPECT_EQ(e.prompt_length, 0);
  EXPECT_TRUE(ds->EvalPairs().empty());
}

TEST_F(DatasetTest, PromptCompletionSupervisesTheCompletionOnly) {
  const std::string path = WriteTempFile(
      "pair.jsonl",
      "{\"prompt\": \"Q: what is the capital of France?\\nA:\", \"completion\": \" Paris\"}\n"
      "\n"
      "{\"prompt\": \"Translate: hello\", \"completion\": \" bonjour tout le monde\"}\n");
  absl::StatusOr<Dataset> ds = LoadDataset(path, *tok_);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->examples.size(), 2u);
  const Example& e = ds->examples[0];
  const std::vector<int32_t> prompt = Enc("Q: what is the capital of France?\nA:");
  const std::vector<int32_t> completion = Enc(" Paris");
  EXPECT_THAT(e.ids, ElementsAreArray(Concat({{bos_}, prompt, completion, {eos_}})));
  EXPECT_THAT(e.mask, ElementsAreArray(Mask({{1 + prompt.size(), 0}, {completion.size() + 1, 1}})));
  EXPECT_THAT(SupervisedTexts(e, *tok_), ElementsAreArray({" Paris"}));
  EXPECT_THAT(SupervisedTexts(ds->examples[1], *tok_),
              ElementsAreArray({" bonjour tout le monde"}));
  EXPECT_EQ(ds->examples[1].line, 3);

  const std::vector<EvalPair> pairs = ds->EvalPairs();
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_THAT(pairs[0].prompt_ids, ElementsAreArray(Concat({{bos_}, prompt})));
  EXPECT_EQ(pairs[0].reference, " Paris");
  EXPECT_EQ(pairs[1].reference, " bonjour tout le monde");
  EXPECT_EQ(pairs[1].line, 3);
  EXPECT_EQ(tok_->Decode(pairs[1].prompt_ids, true), "Translate: hello");
}

TEST_F(DatasetTest, MessagesSuperviseAssistantTurnsOnly) {
  const std::string path = WriteTempFile(
      "chat.jsonl",
      R"({"messages": [{"role": "system", "content": "You are terse."},)"
      R"( {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello."},)"
      R"( {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4, of course"}]})"
      "\n");
  absl::StatusOr<Dataset> ds = LoadDataset(path, *tok_);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->examples.size(), 1u);
  const Example& e = ds->examples[0];
  const std::vector<int32_t> ctx1 =
      Enc("<|system|>\nYou are terse.\n<|user|>\nHi there\n<|assistant|>\n");
  const std::vector<int32_t> reply1 = Enc("Hello.");
  const std::vector<int32_t> ctx2 = Enc("<|user|>\nWhat is 2+2?\n<|assistant|>\n");
  const std::vector<int32_t> reply2 = Enc("4, of course");
  EXPECT_THAT(e.ids,
              ElementsAreArray(Concat({{bos_}, ctx1, reply1, {eos_}, ctx2, reply2, {eos_}})));
  EXPECT_THAT(e.mask, ElementsAreArray(Mask({{1 + ctx1.size(), 0},
                                             {reply1.size() + 1, 1},
                                             {ctx2.size(), 0},
                                             {reply2.size() + 1, 1}})));
  EXPECT_THAT(SupervisedTexts(e, *tok_), ElementsAreArray({"Hello.", "4, of course"}));
  // Decoding keeps the documented template text.
  EXPECT_EQ(tok_->Decode(e.ids, /*skip_special_tokens=*/false),
            "<|begin_of_text|><|system|>\nYou are terse.\n<|user|>\nHi there\n<|assistant|>\n"
            "Hello.<|end_of_text|><|user|>\nWhat is 2+2?\n<|assistant|>\n4, of "
            "course<|end_of_text|>");

  // The exact-match prompt is what inference renders for the history.
  const std::vector<EvalPair> pairs = ds->EvalPairs();
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].reference, "4, of course");
  const std::vector<ChatMessage> history = {{Role::kSystem, "You are terse."},
                                            {Role::kUser, "Hi there"},
                                            {Role::kAssistant, "Hello."},
                                            {Role::kUser, "What is 2+2?"}};
  absl::StatusOr<Example> prompt =
      EncodePieces(RenderChat(history, /*add_generation_prompt=*/true), *tok_);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(pairs[0].prompt_ids, prompt->ids);
}

TEST_F(DatasetTest, MaskBoundariesHoldForOtherTokenizerStyles) {
  // Sentencepiece-style (metaspace, byte fallback) and GPT-2 style (no BOS).
  for (const char* name :
       {"llama2_metaspace_style", "llama2_legacy_style", "gpt2_style", "bytelevel", "metaspace"}) {
    SCOPED_TRACE(name);
    std::unique_ptr<Tokenizer> tok = FixtureTokenizer(name);
    ASSERT_NE(tok, nullptr);
    const std::string path = WriteTempFile(
        std::string(name) + ".jsonl",
        R"({"messages": [{"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "blue"},)"
        R"( {"role": "user", "content": "another"}, {"role": "assistant", "content": "green and red"}]})"
        "\n");
    absl::StatusOr<Dataset> ds = LoadDataset(path, *tok);
    ASSERT_TRUE(ds.ok()) << ds.status();
    const Example& e = ds->examples[0];
    if (tok->bos_id()) {
      EXPECT_EQ(e.ids.front(), *tok->bos_id());
    }
    EXPECT_EQ(e.ids.back(), *tok->eos_id());
    EXPECT_EQ(e.mask.back(), 1);
    EXPECT_EQ(e.mask.front(), 0);  // BOS, or the first token of "<|user|>"
    // Supervised ids are exactly the replies' own encodings, each with EOS.
    std::vector<int32_t> supervised;
    for (size_t i = 0; i < e.ids.size(); ++i) {
      if (e.mask[i]) supervised.push_back(e.ids[i]);
    }
    EXPECT_THAT(supervised, ElementsAreArray(Concat({tok->Encode("blue", false),
                                                     {*tok->eos_id()},
                                                     tok->Encode("green and red", false),
                                                     {*tok->eos_id()}})));
    // A sentencepiece-style decoder strips the "▁" its normalizer prepended.
    EXPECT_THAT(SupervisedTexts(e, *tok), ElementsAreArray({"blue", "green and red"}));
  }
}

TEST_F(DatasetTest, AddBosCanBeTurnedOff) {
  const std::string path = WriteTempFile("nobos.jsonl", "{\"text\": \"abc\"}\n");
  LoadOptions options;
  options.encode.add_bos = false;
  absl::StatusOr<Dataset> ds = LoadDataset(path, *tok_, options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_THAT(ds->examples[0].ids, ElementsAreArray(Concat({Enc("abc"), {eos_}})));
}

TEST_F(DatasetTest, TokenizerWithoutEosIsRejected) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}})", "tiny.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_FALSE((*tok)->eos_id().has_value());
  const std::string path = WriteTempFile("noeos.jsonl", "{\"text\": \"ab\"}\n");
  absl::StatusOr<Dataset> ds = LoadDataset(path, **tok);
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr("no EOS"));
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr(path));
}

TEST_F(DatasetTest, EncodeRecordRejectsAnUntrainableConversation) {
  Record record;
  record.format = ExampleFormat::kMessages;
  record.messages = {{Role::kAssistant, "hi"}, {Role::kUser, "bye"}};
  absl::StatusOr<Example> e = EncodeRecord(record, *tok_);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  record.messages.pop_back();
  EXPECT_TRUE(EncodeRecord(record, *tok_).ok());
}

TEST_F(DatasetTest, StatsCountExamplesTokensAndSupervisedTokens) {
  const std::string path = WriteTempFile("stats.jsonl",
                                         "{\"prompt\": \"one two\", \"completion\": \" three\"}\n"
                                         "{\"prompt\": \"four\", \"completion\": \" five six\"}\n");
  absl::StatusOr<Dataset> ds = LoadDataset(path, *tok_);
  ASSERT_TRUE(ds.ok()) << ds.status();
  const DatasetStats stats = ds->Stats();
  EXPECT_EQ(stats.examples, 2);
  const int64_t tokens = static_cast<int64_t>(2 * 2 + Enc("one two").size() + Enc(" three").size() +
                                              Enc("four").size() + Enc(" five six").size());
  EXPECT_EQ(stats.tokens, tokens);
  EXPECT_EQ(stats.supervised_tokens,
            static_cast<int64_t>(Enc(" three").size() + Enc(" five six").size() + 2));
}

std::string NumberedTextFile(int n) {
  std::string content;
  for (int i = 0; i < n; ++i) absl::StrAppend(&content, "{\"text\": \"example ", i, "\"}\n");
  return content;
}

TEST_F(DatasetTest, EvalSplitIsDeterministicDisjointAndSized) {
  const std::string path = WriteTempFile("split.jsonl", NumberedTextFile(200));
  DatasetOptions options;
  options.train_path = path;
  options.eval_fraction = 0.05;
  options.seed = 7;
  absl::StatusOr<DatasetSplit> a = LoadDatasets(options, *tok_);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<DatasetSplit> b = LoadDatasets(options, *tok_);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->eval.examples.size(), 10u);
  ASSERT_EQ(a->train.examples.size(), 190u);

  std::set<int64_t> train_lines, eval_lines;
  for (const Example& e : a->train.examples) train_lines.insert(e.line);
  for (const Example& e : a->eval.examples) eval_lines.insert(e.line);
  EXPECT_EQ(train_lines.size(), 190u);
  EXPECT_EQ(eval_lines.size(), 10u);
  for (int64_t line : eval_lines) EXPECT_EQ(train_lines.count(line), 0u) << line;
  // Same seed, same split; both kept in file order.
  for (size_t i = 0; i < a->eval.examples.size(); ++i) {
    EXPECT_EQ(a->eval.examples[i].line, b->eval.examples[i].line);
    EXPECT_EQ(a->eval.examples[i].ids, b->eval.examples[i].ids);
  }
  EXPECT_TRUE(std::is_sorted(a->train.examples.begin(), a->train.examples.end(),
                             [](const Example& x, const Example& y) { return x.line < y.line; }));

  // Another seed, another split; the split does not depend on the tokenizer.
  EXPECT_NE(EvalSplitIndices(200, 0.05, 7), EvalSplitIndices(200, 0.05, 8));
  std::vector<int64_t> lines_from_indices;
  for (int64_t i : EvalSplitIndices(200, 0.05, 7)) lines_from_indices.push_back(i + 1);
  EXPECT_THAT(std::vector<int64_t>(eval_lines.begin(), eval_lines.end()),
              ElementsAreArray(lines_from_indices));
}

TEST(EvalSplitTest, SizeRules) {
  EXPECT_TRUE(EvalSplitIndices(1, 0.5, 0).empty());    // one example: all train
  EXPECT_EQ(EvalSplitIndices(2, 0.01, 0).size(), 1u);  // at least one
  EXPECT_EQ(EvalSplitIndices(3, 0.9, 0).size(), 2u);   // at most n - 1
  EXPECT_EQ(EvalSplitIndices(1000, 0.05, 0).size(), 50u);
  EXPECT_TRUE(EvalSplitIndices(1000, 0.0, 0).empty());
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<int64_t> idx = EvalSplitIndices(50, 0.2, seed);
    ASSERT_EQ(idx.size(), 10u);
    EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
    EXPECT_EQ(std::set<int64_t>(idx.begin(), idx.end()).size(), 10u);
    EXPECT_GE(idx.front(), 0);
    EXPECT_LT(idx.back(), 50);
  }
}

TEST_F(DatasetTest, SeparateEvalFileAndOptionErrors) {
  DatasetOptions options;
  options.train_path = WriteTempFile("train_sep.jsonl", NumberedTextFile(5));
  options.eval_path = WriteTempFile(
      "eval_sep.jsonl", "{\"prompt\": \"p\", \"completion\": \" c\"}\n{\"prompt\": 1}\n");
  absl::StatusOr<DatasetSplit> split = LoadDatasets(options, *tok_);
  ASSERT_FALSE(split.ok());
  EXPECT_THAT(std::string(split.status().message()),
              StartsWith(options.eval_path + ":2: field \"prompt\" must be a string"));

  options.eval_path =
      WriteTempFile("eval_sep.jsonl", "{\"prompt\": \"p\", \"completion\": \" c\"}\n");
  split = LoadDatasets(options, *tok_);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->train.examples.size(), 5u);
  EXPECT_EQ(split->eval.examples.size(), 1u);
  EXPECT_EQ(split->eval.format, ExampleFormat::kPromptCompletion);

  options.eval_fraction = 0.1;
  EXPECT_EQ(LoadDatasets(options, *tok_).status().code(), absl::StatusCode::kInvalidArgument);
  options.eval_path.clear();
  options.eval_fraction = 1.0;
  EXPECT_EQ(LoadDatasets(options, *tok_).status().code(), absl::StatusCode::kInvalidArgument);
  options.eval_fraction = -0.1;
  EXPECT_EQ(LoadDatasets(options, *tok_).status().code(), absl::StatusCode::kInvalidArgument);
  options.eval_fraction = 0.0;
  options.train_path.clear();
  EXPECT_EQ(LoadDatasets(options, *tok_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, MalformedTrainFileLoadsNothingAndNamesFileLine) {
  const std::string path = WriteTempFile(
      "bad_train.jsonl",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", "
      "\"content\": \"b\"}]}\n"
      "{\"messages\": [{\"role\": \"narrator\", \"content\": \"a\"}]}\n");
  DatasetOptions options;
  options.train_path = path;
  absl::StatusOr<DatasetSplit> split = LoadDatasets(options, *tok_);
  ASSERT_FALSE(split.ok());
  EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(split.status().message()),
            path +
                ":2: messages[0]: unknown role \"narrator\" (expected \"system\", \"user\" or "
                "\"assistant\")");
}

// 20k chat lines: a sanity run of the whole load path (the time is printed,
// not asserted), and the encoding does not depend on the thread count.
TEST_F(DatasetTest, LargeFileLoads) {
  std::string content;
  for (int i = 0; i < 20000; ++i) {
    absl::StrAppend(&content, R"({"messages": [{"role": "system", "content": "Answer briefly."},)",
                    R"( {"role": "user", "content": "What is )", i, " plus ", i % 97,
                    R"(?"}, {"role": "assistant", "content": "It is )", i + i % 97, R"(."}]})",
                    "\n");
  }
  const std::string path = WriteTempFile("large.jsonl", content);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Dataset> ds = LoadDataset(path, *tok_);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ds.ok()) << ds.status();
  const DatasetStats stats = ds->Stats();
  std::printf("20000 chat lines: %lld tokens (%lld supervised) in %.3f s\n",
              static_cast<long long>(stats.tokens), static_cast<long long>(stats.supervised_tokens),
              seconds);
  EXPECT_EQ(stats.examples, 20000);

  LoadOptions serial_options;
  serial_options.num_threads = 1;
  absl::StatusOr<Dataset> serial = LoadDataset(path, *tok_, serial_options);
  ASSERT_TRUE(serial.ok()) << serial.status();
  ASSERT_EQ(serial->examples.size(), ds->examples.size());
  for (size_t i = 0; i < ds->examples.size(); i += 997) {
    EXPECT_EQ(serial->examples[i].ids, ds->examples[i].ids);
    EXPECT_EQ(serial->examples[i].mask, ds->examples[i].mask);
  }
  EXPECT_EQ(serial->Stats().tokens, stats.tokens);
  EXPECT_THAT(SupervisedTexts(ds->examples[12345], *tok_),
              ElementsAreArray({absl::StrCat("It is ", 12345 + 12345 % 97, ".")}));
}

}  // namespace
}  // namespace qwha::data
