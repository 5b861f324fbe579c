#include "worker/tokenizer/pre_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qwha::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Ranges = std::vector<std::pair<size_t, size_t>>;

const std::string kSource = "test.json";

// The pieces `config` (a pre_tokenizer JSON object) makes of `text`.
std::vector<std::string> Pieces(const std::string& config, const std::string& text,
                                bool at_origin = true) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre =
      PreTokenizerFromJson(Json::parse(config), JsonPath(&kSource, "pre_tokenizer"));
  EXPECT_TRUE(pre.ok()) << pre.status();
  if (!pre.ok()) return {};
  std::vector<PreToken> pieces = {{text, at_origin}};
  (*pre)->PreTokenize(&pieces);
  std::vector<std::string> out;
  for (const PreToken& p : pieces) out.push_back(p.text);
  return out;
}

absl::Status LoadError(const std::string& config) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre =
      PreTokenizerFromJson(Json::parse(config), JsonPath(&kSource, "pre_tokenizer"));
  return pre.status();
}

// "a,b,,c" with the three commas as matches.
const Ranges kCommas = {{1, 2}, {3, 4}, {4, 5}};

TEST(SplitByMatchesTest, EveryBehavior) {
  EXPECT_EQ(SplitByMatches(6, kCommas, SplitBehavior::kRemoved, false),
            (Ranges{{0, 1}, {2, 3}, {5, 6}}));
  EXPECT_EQ(SplitByMatches(6, kCommas, SplitBehavior::kIsolated, false),
            (Ranges{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}}));
  // A match joins the piece before it, unless that piece is a match itself.
  EXPECT_EQ(SplitByMatches(6, kCommas, SplitBehavior::kMergedWithPrevious, false),
            (Ranges{{0, 2}, {2, 4}, {4, 5}, {5, 6}}));
  EXPECT_EQ(SplitByMatches(6, kCommas, SplitBehavior::kMergedWithNext, false),
            (Ranges{{0, 1}, {1, 3}, {3, 4}, {4, 6}}));
  // Adjacent matches fuse.
  EXPECT_EQ(SplitByMatches(6, kCommas, SplitBehavior::kContiguous, false),
            (Ranges{{0, 1}, {1, 2}, {2, 3}, {3, 5}, {5, 6}}));
  // Inverted: the commas are kept, the letters are the delimiters.
  EXPECT_EQ(SplitByMatches(6, kCommas, SplitBehavior::kRemoved, true),
            (Ranges{{1, 2}, {3, 4}, {4, 5}}));
  EXPECT_EQ(SplitByMatches(0, {}, SplitBehavior::kIsolated, false), Ranges{});
  EXPECT_EQ(SplitByMatches(3, {{0, 3}}, SplitBehavior::kRemoved, false), Ranges{});
}

TEST(PreTokenizerTest, ByteLevel) {
  EXPECT_THAT(Pieces(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})",
                     "Hello world"),
              ElementsAre("\u0120Hello", "\u0120world"));
  EXPECT_THAT(
      Pieces(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})", " already"),
      ElementsAre("\u0120already"));
  EXPECT_THAT(Pieces(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})",
                     "a b\n\u00e9"),
              ElementsAre("a\u0120b\u010a\u00c3\u00a9"));
}

TEST(PreTokenizerTest, Llama3SplitThenByteLevel) {
  const std::string config = R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})";
  EXPECT_THAT(Pieces(config, "I'm 12345!"), ElementsAre("I", "'m", "\u0120", "123", "45", "!"));
  EXPECT_THAT(Pieces(config, "a\n\nb  c"),
              ElementsAre("a", "\u010a\u010a", "b", "\u0120", "\u0120c"));
}

TEST(PreTokenizerTest, Metaspace) {
  const std::string always =
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})";
  EXPECT_THAT(Pieces(always, "Hey   friend!"), ElementsAre("▁Hey", "▁", "▁", "▁friend!"));
  EXPECT_THAT(Pieces(always, "Hey", /*at_origin=*/false), ElementsAre("▁Hey"));
  const std::string first =
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})";
  EXPECT_THAT(Pieces(first, "hello world"), ElementsAre("▁hello▁world"));
  EXPECT_THAT(Pieces(first, "hello world", /*at_origin=*/false), ElementsAre("hello▁world"));
  EXPECT_THAT(Pieces(first, " hello"), ElementsAre("▁hello"));  // already starts with ▁
  const std::string never =
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"})";
  EXPECT_THAT(Pieces(never, "hi there"), ElementsAre("hi", "▁there"));
  // The legacy field: add_prefix_space false means never.
  EXPECT_THAT(
      Pieces(R"({"type": "Metaspace", "replacement": "_", "add_prefix_space": false})", "hi there"),
      ElementsAre("hi", "_there"));
}

TEST(PreTokenizerTest, DigitsWhitespacePunctuationAndStrings) {
  EXPECT_THAT(Pieces(R"({"type": "Digits", "individual_digits": true})", "a123b"),
              ElementsAre("a", "1", "2", "3", "b"));
  EXPECT_THAT(Pieces(R"({"type": "Digits", "individual_digits": false})", "a123b45"),
              ElementsAre("a", "123", "b", "45"));
  EXPECT_THAT(Pieces(R"({"type": "WhitespaceSplit"})", " a \t b\n\u3000c "),
              ElementsAre("a", "b", "c"));
  EXPECT_THAT(Pieces(R"({"type": "Punctuation", "behavior": "Isolated"})", "hi!?x"),
              ElementsAre("hi", "!", "?", "x"));
  EXPECT_THAT(Pieces(R"({"type": "Whitespace"})", "Hello, world!!"),
              ElementsAre("Hello", ",", "world", "!!"));
  EXPECT_THAT(Pieces(R"({"type": "BertPreTokenizer"})", "Hi, you!"),
              ElementsAre("Hi", ",", "you", "!"));
  EXPECT_THAT(
      Pieces(R"({"type": "Split", "pattern": {"String": "ab"}, "behavior": "Removed"})", "xabyab"),
      ElementsAre("x", "y"));
  EXPECT_THAT(Pieces(R"({"type": "CharDelimiterSplit", "delimiter": "-"})", "a-b--c"),
              ElementsAre("a", "b", "c"));
}

TEST(PreTokenizerTest, ErrorsNameTheField) {
  absl::Status st = LoadError(R"({"type": "UnicodeScripts"})");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("test.json"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.type"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("UnicodeScripts"));

  st = LoadError(R"({"type": "Split", "pattern": {"Regex": "(?<=x)y"}, "behavior": "Isolated"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.pattern.Regex"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("(?<=x)y"));

  st = LoadError(R"({"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Sideways"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.behavior"));
  st = LoadError(R"({"type": "Split", "behavior": "Isolated"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.pattern"));
  st = LoadError(R"({"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("empty pattern"));
  st = LoadError(R"({"type": "Metaspace", "replacement": "ab"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.replacement"));
  st = LoadError(R"({"type": "Metaspace", "replacement": "_", "prepend_scheme": "sometimes"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.prepend_scheme"));
  st = LoadError(R"({"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": 3}]})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.pretokenizers[1].type"));
  st = LoadError(R"({"type": "ByteLevel", "add_prefix_space": "yes"})");
  EXPECT_THAT(std::string(st.message()), HasSubstr("pre_tokenizer.add_prefix_space"));
}

}  // namespace
}  // namespace qwha::tokenizer
