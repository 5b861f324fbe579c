#include "worker/serve/text_stream.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "worker/serve/sampler.h"

namespace qwha::serve {
namespace {

std::unique_ptr<tokenizer::Tokenizer> DemoTokenizer() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const std::string root = srcdir ? std::string(srcdir) + "/qwha" : ".";
  auto tok = tokenizer::Tokenizer::FromFile(root + "/tests/fixtures/demo/model/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

// Feeds the ids of `text` one by one; returns what was streamed, Finish included.
std::string Stream(const tokenizer::Tokenizer& tok, const std::string& text,
                   std::vector<std::string> stop, bool* stopped = nullptr) {
  CompletionText completion(&tok, std::move(stop));
  std::string out;
  for (int32_t id : tok.Encode(text, false)) {
    out += completion.Append(id);
    if (completion.stopped()) break;
  }
  out += completion.Finish();
  if (stopped) *stopped = completion.stopped();
  return out;
}

TEST(CompletionTextTest, StreamedPiecesConcatenateToTheDecodedText) {
  auto tok = DemoTokenizer();
  for (const std::string text : {"And God said, Let there be light: and there was light.",
                                 "Psalms 29:3 — naïve café ✓ 日本語 🙂 done"}) {
    EXPECT_EQ(Stream(*tok, text, {}), tok->Decode(tok->Encode(text, false), true));
  }
}

TEST(CompletionTextTest, NeverSendsHalfACharacter) {
  auto tok = DemoTokenizer();
  CompletionText completion(tok.get(), {});
  for (int32_t id : tok->Encode("日本語 🙂", false)) {
    const std::string piece = completion.Append(id);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD streamed";
  }
}

TEST(CompletionTextTest, StopsBeforeTheStopStringAndHoldsBackItsPrefix) {
  auto tok = DemoTokenizer();
  bool stopped = false;
  EXPECT_EQ(Stream(*tok, "In the beginning God created the heaven", {"God"}, &stopped),
            "In the beginning ");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(Stream(*tok, "and the earth.\nAnd the", {"\n"}, &stopped), "and the earth.");
  EXPECT_TRUE(stopped);
  // A prefix of the stop string at the end is held while it might complete,
  // and sent by Finish when it did not.
  CompletionText completion(tok.get(), {"light."});
  std::string sent;
  for (int32_t id : tok->Encode("Let there be lig", false)) sent += completion.Append(id);
  EXPECT_EQ(sent.find("lig"), std::string::npos) << sent;
  sent += completion.Finish();
  EXPECT_EQ(sent, "Let there be lig");
  EXPECT_FALSE(completion.stopped());
}

TEST(SamplerTest, GreedyIsArgmaxAndSamplingRespectsTopKAndTopP) {
  torch::Tensor logits = torch::tensor({0.0f, 3.0f, 1.0f, 3.0f, 2.0f});
  Sampler greedy(SamplingParams{});
  EXPECT_EQ(greedy.Next(logits), 1);  // ties to the lowest id
  SamplingParams top2{1.0, 1.0, 2, 1};
  Sampler s(top2);
  for (int i = 0; i < 200; ++i) {
    const int64_t t = s.Next(logits);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  // top_p: tokens 1 and 3 hold about 0.6 of the mass; 0.5 keeps only them.
  Sampler p(SamplingParams{1.0, 0.5, 0, 2});
  for (int i = 0; i < 200; ++i) {
    const int64_t t = p.Next(logits);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  // Same seed, same draws.
  Sampler a(SamplingParams{1.5, 1.0, 0, 9}), b(SamplingParams{1.5, 1.0, 0, 9});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.Next(logits), b.Next(logits));
  EXPECT_FALSE(ValidateSamplingParams({-1, 1, 0, 0}).ok());
  EXPECT_FALSE(ValidateSamplingParams({1, 1.5, 0, 0}).ok());
  EXPECT_FALSE(ValidateSamplingParams({1, 1, -2, 0}).ok());
}

}  // namespace
}  // namespace qwha::serve
