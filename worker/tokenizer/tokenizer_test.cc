#include "worker/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "worker/tokenizer/byte_level.h"

namespace qwha::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------
// A LLaMA-3 style byte-level tokenizer small enough to check by hand: every
// byte b is token id b (spelled by its byte-level character), plus
//   256 "he"   257 "Ġt"   258 "Ġthe"   259 "ll"   260 "hell"   261 "hello"
//   262 "Ġhello" (in the vocab, but no merge builds it)
// with merges in rank order: h e, Ġ t, Ġt he, l l, he ll, hell o.
// Added: 263 <|begin_of_text|>, 264 <|end_of_text|> (special); the template
// puts <|begin_of_text|> first.
// ---------------------------------------------------------------------------
Json ByteLevelConfig(bool ignore_merges) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[BytesToByteLevel(std::string(1, static_cast<char>(b)))] = b;
  const std::vector<std::string> extra = {"he", "Ġt", "Ġthe", "ll", "hell", "hello", "Ġhello"};
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + static_cast<int>(i);
  Json config = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 263}, {"content", "<|begin_of_text|>"}, {"special", true}, {"normalized", false}},
        {{"id", 264}, {"content", "<|end_of_text|>"}, {"special", true}, {"normalized", false}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens",
         {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {263}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"ignore_merges", ignore_merges},
        {"vocab", vocab},
        {"merges", Json::array()}}}};
  // [a, b] pairs (an initializer list of string pairs would read as an object).
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"h", "e"}, {"Ġ", "t"}, {"Ġt", "he"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}}) {
    config["model"]["merges"].push_back(Json::array({a, b}));
  }
  return config;
}

// ---------------------------------------------------------------------------
// A LLaMA-2 style (sentencepiece BPE) tokenizer:
//   0 <unk>  1 <s>  2 </s>  3..258 <0x00>..<0xFF>
//   259 ▁  260 h  261 e  262 l  263 o  264 w  265 r  266 d
//   267 ▁h  268 ll  269 ell  270 ▁hell  271 ▁hello
// merges in rank order: "▁ h", "l l", "e ll", "▁h ell", "▁hell o".
// legacy: normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer;
// otherwise: Metaspace pre-tokenizer with prepend_scheme "first".
// ---------------------------------------------------------------------------
Json MetaspaceConfig(bool legacy, bool byte_fallback = true, bool fuse_unk = true,
                     bool has_unk = true) {
  Json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {"▁", "h",  "e",  "l",   "o",     "w",     "r",
                                           "d", "▁h", "ll", "ell", "▁hell", "▁hello"};
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = 259 + static_cast<int>(i);
  Json config = {
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}},
        {{"id", 272}, {"content", "<|im_start|>"}, {"special", true}, {"normalized", false}}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", "<s> $A"},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}}}}}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", has_unk ? Json("<unk>") : Json()},
        {"fuse_unk", fuse_unk},
        {"byte_fallback", byte_fallback},
        {"vocab", vocab},
        {"merges", {"▁ h", "l l", "e ll", "▁h ell", "▁hell o"}}}}};
  if (legacy) {
    config["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
    config["pre_tokenizer"] = nullptr;
    config["decoder"] = {{"type", "Sequence"},
                         {"decoders",
                          {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                           {{"type", "ByteFallback"}},
                           {{"type", "Fuse"}},
                           {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  } else {
    config["normalizer"] = nullptr;
    config["pre_tokenizer"] = {
        {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
    config["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         {{{"type", "ByteFallback"}},
          {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}},
          {{"type", "Fuse"}}}}};
  }
  return config;
}

std::unique_ptr<Tokenizer> Load(const Json& config) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(config.dump(), "test.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// The error of loading `config`, as text.
std::string LoadError(const Json& config) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(config.dump(), "bad.json");
  EXPECT_FALSE(tok.ok());
  if (tok.ok()) return "";
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("bad.json"));
  return std::string(tok.status().message());
}

const std::string kFffd = "\uFFFD";

// ---------------------------------------------------------------------------
// Byte-level BPE.
// ---------------------------------------------------------------------------

TEST(ByteLevelTokenizerTest, MergesInRankOrder) {
  std::unique_ptr<Tokenizer> tok = Load(ByteLevelConfig(false));
  ASSERT_NE(tok, nullptr);
  // "hello": h e -> he (rank 0), l l -> ll (3), he ll -> hell (4), hell o (5).
  // " the": h e first (rank 0), then Ġ t (1), then Ġt he (2).
  EXPECT_THAT(tok->Encode("hello the", false), ElementsAre(261, 258));
  // Equal ranks: the leftmost pair merges first.
  EXPECT_THAT(tok->Encode("lll", false), ElementsAre(259, 'l'));
  // No merge builds "Ġhello": Ġ stays alone.
  EXPECT_THAT(tok->Encode(" hello", false), ElementsAre(' ', 261));
  EXPECT_THAT(tok->Encode("", false), ElementsAre());
  EXPECT_THAT(tok->Encode("", true), ElementsAre(263));
}

TEST(ByteLevelTokenizerTest, IgnoreMergesTakesWholeWordsFromTheVocab) {
  std::unique_ptr<Tokenizer> tok = Load(ByteLevelConfig(true));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode(" hello", false), ElementsAre(262));
  EXPECT_THAT(tok->Encode("hello the", false), ElementsAre(261, 258));
}

TEST(ByteLevelTokenizerTest, SpecialTokensAndTemplate) {
  std::unique_ptr<Tokenizer> tok = Load(ByteLevelConfig(false));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("hello the", true), ElementsAre(263, 261, 258));
  EXPECT_THAT(tok->Encode("hello<|end_of_text|>", false), ElementsAre(261, 264));
  // Added tokens split the text before the regex: " the" keeps its space.
  EXPECT_THAT(tok->Encode("<|begin_of_text|> the<|end_of_text|>", true),
              ElementsAre(263, 263, 258, 264));
  // Longest match first; a partial special token is plain text.
  EXPECT_THAT(tok->Encode("<|end_of_text|", false),
              ElementsAre('<', '|', 'e', 'n', 'd', '_', 'o', 'f', '_', 't', 'e', 'x', 't', '|'));
  EXPECT_EQ(tok->Decode({263, 261, 258, 264}, false), "<|begin_of_text|>hello the<|end_of_text|>");
  EXPECT_EQ(tok->Decode({263, 261, 258, 264}, true), "hello the");
  EXPECT_TRUE(tok->IsSpecial(263));
  EXPECT_FALSE(tok->IsSpecial(261));
  EXPECT_EQ(tok->bos_id(), 263);  // from the template
  EXPECT_EQ(tok->eos_id(), 264);  // by name
  EXPECT_EQ(tok->vocab_size(), 265);
  EXPECT_EQ(tok->TokenToId("Ġthe"), 258);
  EXPECT_EQ(tok->TokenToId("<|end_of_text|>"), 264);
  EXPECT_EQ(tok->TokenToId("nope"), std::nullopt);
  EXPECT_EQ(tok->IdToToken(258), "Ġthe");
  EXPECT_EQ(tok->IdToToken(264), "<|end_of_text|>");
  EXPECT_EQ(tok->IdToToken(265), std::nullopt);
  EXPECT_EQ(tok->IdToToken(-1), std::nullopt);
}

TEST(ByteLevelTokenizerTest, DecodeInvertsEncodeForAnyUtf8) {
  std::unique_ptr<Tokenizer> tok = Load(ByteLevelConfig(false));
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> texts = {
      "hello the world",
      "I'm DON'T we'll 12345678 $100",
      "  leading, trailing  \n\n\ttabs\r\n",
      "Привет, мир! Straße café naïve",
      "你好世界，中文。こんにちは 안녕하세요",
      "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷 heart ❤️",
      "combining e\u0301 and zero\u200bwidth",
      std::string("nul \0 byte and \x7f del", 20),
      "def f(x):\n    return x**2  # comment\n",
  };
  for (const std::string& text : texts) {
    EXPECT_EQ(tok->Decode(tok->Encode(text, false), false), text) << text;
    EXPECT_EQ(tok->Decode(tok->Encode(text, true), true), text) << text;
  }
}

TEST(ByteLevelTokenizerTest, InvalidUtf8) {
  std::unique_ptr<Tokenizer> tok = Load(ByteLevelConfig(false));
  ASSERT_NE(tok, nullptr);
  // Input: each maximal ill-formed subsequence is read as U+FFFD.
  EXPECT_EQ(tok->Encode("a\xFF"
                        "b",
                        false),
            tok->Encode("a" + kFffd + "b", false));
  EXPECT_EQ(tok->Encode("\xF0\x9F\x98", false), tok->Encode(kFffd, false));
  EXPECT_EQ(tok->Decode(tok->Encode("a\xFF"
                                    "b",
                                    false),
                        false),
            "a" + kFffd + "b");
  // Output: byte tokens that do not form UTF-8 decode to U+FFFD.
  EXPECT_EQ(tok->Decode({0xE4}, false), kFffd);
  EXPECT_EQ(tok->Decode({0xE4, 0xB8}, false), kFffd);  // one maximal subpart
  EXPECT_EQ(tok->Decode({0xE4, 0xB8, 0xAD}, false), "中");
  EXPECT_EQ(tok->Decode({0xE4, 0xB8, 'a'}, false), kFffd + "a");
  EXPECT_EQ(tok->Decode({0x80, 0x80}, false), kFffd + kFffd);
  // Ids no token has are skipped.
  EXPECT_EQ(tok->Decode({'a', 99999, -5, 'b'}, false), "ab");
}

TEST(ByteLevelTokenizerTest, ConcurrentUseFromManyThreads) {
  std::unique_ptr<Tokenizer> tok = Load(ByteLevelConfig(true));
  ASSERT_NE(tok, nullptr);
  const std::string text = "hello the world, Привет 😀 12345 <|end_of_text|>";
  const std::vector<int32_t> expected = tok->Encode(text, true);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (tok->Encode(text, true) != expected) ++mismatches[t];
        if (tok->Decode(expected, true) != text.substr(0, text.size() - 15)) ++mismatches[t];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

// ---------------------------------------------------------------------------
// Sentencepiece-style BPE.
// ---------------------------------------------------------------------------

TEST(MetaspaceTokenizerTest, LegacyNormalizerAndDecoder) {
  std::unique_ptr<Tokenizer> tok = Load(MetaspaceConfig(/*legacy=*/true));
  ASSERT_NE(tok, nullptr);
  // "▁hello▁world": ▁ h (0), l l (1), e ll (2), ▁h ell (3), ▁hell o (4); no
  // merge touches "▁world".
  EXPECT_THAT(tok->Encode("hello world", false), ElementsAre(271, 259, 264, 263, 265, 262, 266));
  EXPECT_THAT(tok->Encode("hello world", true), ElementsAre(1, 271, 259, 264, 263, 265, 262, 266));
  // Each stretch between added tokens is normalized on its own: "▁hello".
  EXPECT_THAT(tok->Encode("<s>hello", false), ElementsAre(1, 271));
  EXPECT_THAT(tok->Encode("<|im_start|>hello", false), ElementsAre(272, 271));
  EXPECT_EQ(tok->Decode({1, 271, 259, 264, 263, 265, 262, 266}, true), "hello world");
  EXPECT_EQ(tok->Decode({1, 271}, false), "<s> hello");  // Strip only cuts a leading ' '
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST(MetaspaceTokenizerTest, ByteFallback) {
  std::unique_ptr<Tokenizer> tok = Load(MetaspaceConfig(/*legacy=*/true));
  ASSERT_NE(tok, nullptr);
  // é is not in the vocab: its bytes C3 A9 become <0xC3> <0xA9>.
  EXPECT_THAT(tok->Encode("hé", false), ElementsAre(267, 3 + 0xC3, 3 + 0xA9));
  EXPECT_EQ(tok->Decode({267, 3 + 0xC3, 3 + 0xA9}, false), "hé");
  // A lone byte that is not UTF-8 decodes to U+FFFD, one per byte.
  EXPECT_EQ(tok->Decode({3 + 0xC3}, false), kFffd);
  EXPECT_EQ(tok->Decode({3 + 0xE4, 3 + 0xB8, 267}, false), kFffd + kFffd + " h");
  const std::string text = "hello 😀 wörld 中文";
  EXPECT_EQ(tok->Decode(tok->Encode(text, true), true), text);
}

TEST(MetaspaceTokenizerTest, UnknownCharacters) {
  // Without byte fallback, unknown characters become <unk>: one per run with
  // fuse_unk, one per character without; dropped when there is no unk_token.
  std::unique_ptr<Tokenizer> fused = Load(MetaspaceConfig(true, false, true));
  ASSERT_NE(fused, nullptr);
  EXPECT_THAT(fused->Encode("héé", false), ElementsAre(267, 0));
  std::unique_ptr<Tokenizer> unfused = Load(MetaspaceConfig(true, false, false));
  ASSERT_NE(unfused, nullptr);
  EXPECT_THAT(unfused->Encode("héé", false), ElementsAre(267, 0, 0));
  std::unique_ptr<Tokenizer> no_unk = Load(MetaspaceConfig(true, false, false, false));
  ASSERT_NE(no_unk, nullptr);
  EXPECT_THAT(no_unk->Encode("héé", false), ElementsAre(267));
}

TEST(MetaspaceTokenizerTest, PreTokenizerPrependsOnlyAtTheStart) {
  std::unique_ptr<Tokenizer> tok = Load(MetaspaceConfig(/*legacy=*/false));
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("hello", false), ElementsAre(271));
  // After <s> the text does not start the input: no ▁, so h + ell + o.
  EXPECT_THAT(tok->Encode("<s>hello", false), ElementsAre(1, 260, 269, 263));
  EXPECT_EQ(tok->Decode({271, 259, 264}, false), "hello w");
  EXPECT_EQ(tok->Decode({1, 271}, true), "hello");
}

TEST(AddedTokensTest, NormalizedTokensMatchTheirNormalizedForm) {
  Json config = MetaspaceConfig(/*legacy=*/true);
  // Non-special and normalized: matched as "▁hello▁world" after normalizing.
  config["added_tokens"].push_back({{"id", 273}, {"content", "hello world"}, {"normalized", true}});
  std::unique_ptr<Tokenizer> tok = Load(config);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("hello world", false), ElementsAre(273));
  EXPECT_THAT(tok->Encode("hello", false), ElementsAre(271));
  // Decoding sees the normalized form, as in Hugging Face.
  EXPECT_EQ(tok->IdToToken(273), "▁hello▁world");
  EXPECT_EQ(tok->TokenToId("hello world"), 273);
  EXPECT_EQ(tok->Decode({1, 273}, false), "<s> hello world");
}

TEST(AddedTokensTest, StripAndSingleWordFlags) {
  Json config = ByteLevelConfig(false);
  config["added_tokens"].push_back({{"id", 265},
                                    {"content", "<mask>"},
                                    {"special", true},
                                    {"lstrip", true},
                                    {"normalized", false}});
  config["added_tokens"].push_back(
      {{"id", 266}, {"content", "<r>"}, {"rstrip", true}, {"normalized", false}});
  config["added_tokens"].push_back(
      {{"id", 267}, {"content", "ab"}, {"single_word", true}, {"normalized", false}});
  std::unique_ptr<Tokenizer> tok = Load(config);
  ASSERT_NE(tok, nullptr);
  // lstrip swallows the spaces before <mask>; rstrip those after <r>.
  EXPECT_THAT(tok->Encode("a   <mask>", false), ElementsAre('a', 265));
  EXPECT_THAT(tok->Encode("<r>   a", false), ElementsAre(266, 'a'));
  // single_word: "ab" alone matches; inside a word it does not.
  EXPECT_THAT(tok->Encode("ab", false), ElementsAre(267));
  EXPECT_THAT(tok->Encode("ab!", false), ElementsAre(267, '!'));
  EXPECT_THAT(tok->Encode("xab abc", false), ElementsAre('x', 'a', 'b', ' ', 'a', 'b', 'c'));
  // An added token whose content the model already has keeps the model id.
  config["added_tokens"].push_back({{"id", 999}, {"content", "hello"}, {"normalized", false}});
  std::unique_ptr<Tokenizer> with_hello = Load(config);
  ASSERT_NE(with_hello, nullptr);
  EXPECT_EQ(with_hello->TokenToId("hello"), 261);
  EXPECT_THAT(with_hello->Encode("shello", false), ElementsAre('s', 261));
  EXPECT_EQ(with_hello->vocab_size(), 268);
}

// ---------------------------------------------------------------------------
// Loading errors: InvalidArgument naming the source and the field.
// ---------------------------------------------------------------------------

TEST(TokenizerErrorsTest, MalformedJson) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson("{\"model\": ", "bad.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("bad.json"));
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("invalid JSON"));
  EXPECT_THAT(LoadError(Json::array({1, 2})), HasSubstr("expected a JSON object"));
}

TEST(TokenizerErrorsTest, Model) {
  Json config = ByteLevelConfig(false);
  config.erase("model");
  EXPECT_THAT(LoadError(config), HasSubstr("field 'model'"));

  config = ByteLevelConfig(false);
  config["model"]["type"] = "WordPiece";
  EXPECT_THAT(LoadError(config), HasSubstr("field 'model.type': model type 'WordPiece'"));

  config = ByteLevelConfig(false);
  config["model"].erase("vocab");
  EXPECT_THAT(LoadError(config), HasSubstr("field 'model.vocab'"));

  config = ByteLevelConfig(false);
  config["model"]["vocab"] = Json::array();
  EXPECT_THAT(LoadError(config), HasSubstr("field 'model.vocab': expected an object"));

  config = ByteLevelConfig(false);
  config["model"]["vocab"]["x"] = 1.5;
  EXPECT_THAT(LoadError(config), HasSubstr("field 'model.vocab[\"x\"]': token id must be"));

  config = ByteLevelConfig(false);
  config["model"]["vocab"]["x"] = "7";
  EXPECT_THAT(LoadError(config), HasSubstr("model.vocab[\"x\"]"));

  config = ByteLevelConfig(false);
  config["model"]["vocab"]["x"] = -1;
  EXPECT_THAT(LoadError(config), HasSubstr("model.vocab[\"x\"]"));

  config = ByteLevelConfig(false);
  config["model"]["merges"].push_back(Json::array({"q", "zz"}));
  EXPECT_THAT(LoadError(config),
              HasSubstr("field 'model.merges[6]': merge 'q zz': token 'zz' is not in model.vocab"));

  config = ByteLevelConfig(false);
  config["model"]["merges"].push_back(Json::array({"x", "y"}));  // both known, "xy" is not
  EXPECT_THAT(LoadError(config), HasSubstr("token 'xy' is not in model.vocab"));

  config = MetaspaceConfig(true);
  config["model"]["merges"].push_back("a b c");
  EXPECT_THAT(LoadError(config), HasSubstr("model.merges[5]"));

  config = ByteLevelConfig(false);
  config["model"]["merges"].push_back(7);
  EXPECT_THAT(LoadError(config), HasSubstr("model.merges[6]"));

  config = ByteLevelConfig(false);
  config["model"]["merges"] = "h e";
  EXPECT_THAT(LoadError(config), HasSubstr("field 'model.merges'"));

  config = MetaspaceConfig(true);
  config["model"]["unk_token"] = "<nope>";
  EXPECT_THAT(LoadError(config), HasSubstr("model.unk_token"));

  config = ByteLevelConfig(false);
  config["model"]["continuing_subword_prefix"] = "##";
  EXPECT_THAT(LoadError(config), HasSubstr("model.continuing_subword_prefix"));

  config = ByteLevelConfig(false);
  config["model"]["end_of_word_suffix"] = "</w>";
  EXPECT_THAT(LoadError(config), HasSubstr("model.end_of_word_suffix"));

  config = ByteLevelConfig(false);
  config["model"]["dropout"] = 0.1;
  EXPECT_THAT(LoadError(config), HasSubstr("model.dropout"));

  config = ByteLevelConfig(false);
  config["model"]["byte_fallback"] = "yes";
  EXPECT_THAT(LoadError(config), HasSubstr("model.byte_fallback"));
}

TEST(TokenizerErrorsTest, Components) {
  Json config = MetaspaceConfig(true);
  config["normalizer"] = {{"type", "NFC"}};
  EXPECT_THAT(LoadError(config), HasSubstr("field 'normalizer.type': normalizer type 'NFC'"));

  config = MetaspaceConfig(true);
  config["normalizer"]["normalizers"][1]["pattern"] = {{"Glob", "*"}};
  EXPECT_THAT(LoadError(config), HasSubstr("normalizer.normalizers[1].pattern"));

  config = ByteLevelConfig(false);
  config["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{Han}+";
  const std::string error = LoadError(config);
  EXPECT_THAT(error, HasSubstr("pre_tokenizer.pretokenizers[0].pattern.Regex"));
  EXPECT_THAT(error, HasSubstr("\\p{Han}+"));

  config = ByteLevelConfig(false);
  config["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(LoadError(config), HasSubstr("field 'decoder.type': decoder type 'WordPiece'"));

  config = ByteLevelConfig(false);
  config["post_processor"]["special_tokens"].erase("<|begin_of_text|>");
  EXPECT_THAT(LoadError(config), HasSubstr("post_processor.special_tokens"));

  config = ByteLevelConfig(false);
  config["post_processor"] = {{"type", "ClsProcessing"}};
  EXPECT_THAT(LoadError(config), HasSubstr("post_processor.type"));

  config = ByteLevelConfig(false);
  config["added_tokens"][1].erase("content");
  EXPECT_THAT(LoadError(config), HasSubstr("field 'added_tokens[1].content'"));

  config = ByteLevelConfig(false);
  config["added_tokens"][0]["id"] = "263";
  EXPECT_THAT(LoadError(config), HasSubstr("field 'added_tokens[0].id'"));

  config = ByteLevelConfig(false);
  config["added_tokens"][0]["special"] = 1;
  EXPECT_THAT(LoadError(config), HasSubstr("field 'added_tokens[0].special'"));
}

TEST(TokenizerErrorsTest, Files) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> missing =
      Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("/nonexistent/dir/tokenizer.json"));

  const char* tmpdir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmpdir ? tmpdir : "/tmp") + "/qwha_tokenizer_bad.json";
  {
    std::ofstream out(path);
    out << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]}})";
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> bad = Tokenizer::FromFile(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("model.merges[0]"));

  {
    std::ofstream out(path);
    out << ByteLevelConfig(false).dump(2);
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> good = Tokenizer::FromFile(path);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_THAT((*good)->Encode("hello", false), ElementsAre(261));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace qwha::tokenizer
