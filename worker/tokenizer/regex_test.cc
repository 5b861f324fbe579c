#include "worker/tokenizer/regex.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kGpt2[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kLlama3[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The matched substrings of `text` (UTF-8) in order.
std::vector<std::string> Matches(const std::string& pattern, const std::string& text) {
  absl::StatusOr<Regex> re = Regex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status();
  if (!re.ok()) return {};
  const CodePoints cps = DecodeUtf8(text);
  std::vector<std::string> out;
  for (const auto& [b, e] : re->FindAll(cps.chars)) {
    out.push_back(text.substr(cps.offsets[b], cps.offsets[e] - cps.offsets[b]));
  }
  return out;
}

// Every expectation below follows from leftmost-first alternation and greedy
// backtracking (Oniguruma / Perl semantics); the same splits were confirmed
// with Python's `regex` module.
TEST(RegexTest, Gpt2Contractions) {
  EXPECT_THAT(Matches(kGpt2, "I'm here, don't."),
              ElementsAre("I", "'m", " here", ",", " don", "'t", "."));
  // Case-sensitive: 'T is not a contraction, so ' and T part.
  EXPECT_THAT(Matches(kGpt2, "DON'T"), ElementsAre("DON", "'", "T"));
  EXPECT_THAT(Matches(kGpt2, "we'll they've"), ElementsAre("we", "'ll", " they", "'ve"));
}

TEST(RegexTest, Llama3ContractionsAreCaseInsensitive) {
  EXPECT_THAT(Matches(kLlama3, "DON'T I'M we'LL"),
              ElementsAre("DON", "'T", " I", "'M", " we", "'LL"));
  // U+017F (long s) folds to s under Oniguruma's case folding.
  EXPECT_THAT(Matches(kLlama3, "it'\u017F"), ElementsAre("it", "'\u017F"));
}

TEST(RegexTest, DigitsInGroupsOfThreeForLlama3) {
  EXPECT_THAT(Matches(kLlama3, "12345678"), ElementsAre("123", "456", "78"));
  EXPECT_THAT(Matches(kLlama3, "x=1234567;"), ElementsAre("x", "=", "123", "456", "7", ";"));
  EXPECT_THAT(Matches(kLlama3, "$100"), ElementsAre("$", "100"));
  EXPECT_THAT(Matches(kGpt2, "12345678 9"), ElementsAre("12345678", " 9"));
  // Non-ASCII numbers are \p{N} too: Arabic-Indic digits, superscripts.
  EXPECT_THAT(Matches(kLlama3, "\u0661\u0662\u0663\u0664\u00B2"),
              ElementsAre("\u0661\u0662\u0663", "\u0664\u00B2"));
}

TEST(RegexTest, WhitespaceRuns) {
  // \s+(?!\S) gives back the last space so that it prefixes the next word.
  EXPECT_THAT(Matches(kLlama3, "a  b"), ElementsAre("a", " ", " b"));
  EXPECT_THAT(Matches(kLlama3, "a    b"), ElementsAre("a", "   ", " b"));
  EXPECT_THAT(Matches(kLlama3, "  x"), ElementsAre(" ", " x"));
  EXPECT_THAT(Matches(kLlama3, "x   "), ElementsAre("x", "   "));
  EXPECT_THAT(Matches(kGpt2, "a  b"), ElementsAre("a", " ", " b"));
  EXPECT_THAT(Matches(kGpt2, "x   "), ElementsAre("x", "   "));
  // A tab is not ' ': GPT-2 keeps it apart, LLaMA-3 lets it prefix a word.
  EXPECT_THAT(Matches(kGpt2, "\tfoo"), ElementsAre("\t", "foo"));
  EXPECT_THAT(Matches(kLlama3, "\tfoo"), ElementsAre("\tfoo"));
  EXPECT_THAT(Matches(kLlama3, "\u3000\u4E2D"), ElementsAre("\u3000\u4E2D"));
}

TEST(RegexTest, Newlines) {
  EXPECT_THAT(Matches(kLlama3, "a\n\nb"), ElementsAre("a", "\n\n", "b"));
  EXPECT_THAT(Matches(kLlama3, "hello \n world"), ElementsAre("hello", " \n", " world"));
  EXPECT_THAT(Matches(kLlama3, "a\r\n\r\nb"), ElementsAre("a", "\r\n\r\n", "b"));
  // Punctuation swallows the newlines that follow it.
  EXPECT_THAT(Matches(kLlama3, "end.\n\nNext"), ElementsAre("end", ".\n\n", "Next"));
  // \s*[\r\n]+ ends at the last newline; the spaces after it go on.
  EXPECT_THAT(Matches(kLlama3, "x\n  \n  y"), ElementsAre("x", "\n  \n", " ", " y"));
  // GPT-2 has no \s*[\r\n]+: \s+(?!\S) leaves the last newline to \s+.
  EXPECT_THAT(Matches(kGpt2, "a\n\nb"), ElementsAre("a", "\n", "\n", "b"));
  EXPECT_THAT(Matches(kGpt2, "a\n b"), ElementsAre("a", "\n", " b"));
}

TEST(RegexTest, UnicodeLettersAndSymbols) {
  EXPECT_THAT(Matches(kLlama3, "Привет, мир!"), ElementsAre("Привет", ",", " мир", "!"));
  EXPECT_THAT(Matches(kLlama3, "你好世界"), ElementsAre("你好世界"));
  EXPECT_THAT(Matches(kLlama3, "café"), ElementsAre("café"));
  // A combining mark is not \p{L}: "e" + U+0301 splits.
  EXPECT_THAT(Matches(kLlama3, "cafe\u0301"), ElementsAre("cafe", "\u0301"));
  // Emoji (So) with a skin-tone modifier (Sk) and ZWJ (Cf) stay together.
  EXPECT_THAT(Matches(kLlama3, "hi \U0001F44B\U0001F3FD there"),
              ElementsAre("hi", " \U0001F44B\U0001F3FD", " there"));
  EXPECT_THAT(Matches(kLlama3, "\U0001F468\u200D\U0001F469\u200D\U0001F467!"),
              ElementsAre("\U0001F468\u200D\U0001F469\u200D\U0001F467!"));
  // [^\r\n\p{L}\p{N}]? lets one symbol prefix a word.
  EXPECT_THAT(Matches(kLlama3, "(hello)"), ElementsAre("(hello", ")"));
  EXPECT_THAT(Matches(kGpt2, "(hello)"), ElementsAre("(", "hello", ")"));
}

TEST(RegexTest, CodeSnippet) {
  EXPECT_THAT(Matches(kLlama3, "def f(x):\n    return x**2"),
              ElementsAre("def", " f", "(x", "):\n", "   ", " return", " x", "**", "2"));
}

TEST(RegexTest, QuantifiersAndGroups) {
  EXPECT_THAT(Matches("a{2,3}", "aaaaaaa"), ElementsAre("aaa", "aaa"));
  EXPECT_THAT(Matches("a{2}", "aaaaa"), ElementsAre("aa", "aa"));
  EXPECT_THAT(Matches("a{2,}", "a aaaa"), ElementsAre("aaaa"));
  EXPECT_THAT(Matches("a+?", "aaa"), ElementsAre("a", "a", "a"));
  EXPECT_THAT(Matches("(ab)+", "ababxab"), ElementsAre("abab", "ab"));
  EXPECT_THAT(Matches("(?:ab)+?c", "ababc"), ElementsAre("ababc"));
  EXPECT_THAT(Matches("a|ab", "ab"), ElementsAre("a"));  // leftmost-first, not longest
  EXPECT_THAT(Matches("x(?=y)", "xyxz"), ElementsAre("x"));
  EXPECT_THAT(Matches("a*+a", "aaa"), ElementsAre());  // possessive never gives back
  EXPECT_THAT(Matches("[a-c\\-]+", "xa-cbz"), ElementsAre("a-cb"));
  EXPECT_THAT(Matches("\\d+", "a12\u0663b"), ElementsAre("12\u0663"));
  EXPECT_THAT(Matches("\\w+", "foo_bar baz"), ElementsAre("foo_bar", "baz"));
  EXPECT_THAT(Matches("\\p{Lu}\\p{Ll}*", "HelloWorld x"), ElementsAre("Hello", "World"));
  EXPECT_THAT(Matches("(?i)hello", "HeLLo hello"), ElementsAre("HeLLo", "hello"));
  EXPECT_THAT(Matches("^a", "a\na"), ElementsAre("a", "a"));  // ^ is line start
  EXPECT_THAT(Matches("\\Aa", "a\na"), ElementsAre("a"));
  EXPECT_THAT(Matches("x{,2}", "xxx"), ElementsAre("xx", "x"));  // Ruby syntax: {0,2}
  EXPECT_THAT(Matches("x{a}", "x{a}"), ElementsAre("x{a}"));     // not a quantifier
  EXPECT_THAT(Matches("\\x41\\u00e9\\x{1F600}", "A\u00e9\U0001F600"),
              ElementsAre("A\u00e9\U0001F600"));
  EXPECT_THAT(Matches(".", "a\nb"), ElementsAre("a", "b"));
  EXPECT_THAT(Matches("a?", "bab"), ElementsAre("a"));  // empty matches are skipped
}

TEST(RegexTest, LongRunsNeedNoRecursionPerCharacter) {
  const std::string letters(200000, 'a');
  EXPECT_THAT(Matches(kLlama3, letters), ElementsAre(letters));
  const std::string spaces(100000, ' ');
  EXPECT_THAT(Matches(kLlama3, spaces + "x"), ElementsAre(std::string(99999, ' '), " x"));
}

TEST(RegexTest, RejectsUnsupportedSyntaxNamingThePattern) {
  for (const char* pattern :
       {"(?<=a)b", "(?<name>a)", "(a)\\1", "\\bword", "[[:alpha:]]", "[a&&b]", "a**", "(?s:a)",
        "\\p{Greek}", "(a", "a)", "[abc", "*a", "a{3,2}", "(a)++", "\\"}) {
    absl::StatusOr<Regex> re = Regex::Compile(pattern);
    ASSERT_FALSE(re.ok()) << pattern;
    EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(re.status().message()), HasSubstr(pattern));
  }
}

}  // namespace
}  // namespace qwha::tokenizer
