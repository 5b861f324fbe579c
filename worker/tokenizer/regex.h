// A small backtracking regex engine over Unicode code points, for the
// pre-tokenizer patterns of Hugging Face tokenizer.json files (internal to
// worker/tokenizer/). std::regex has no \p{L}; this engine implements the
// Oniguruma (Perl-style, leftmost-first) semantics that Hugging Face uses, for
// the subset of syntax those patterns need:
//   literals and escapes  \r \n \t \f \v \e \0 \\ \xHH \x{H..} \uHHHH, \<punct>
//   classes               [...] [^...] with ranges; \s \S \d \D \w \W;
//                         \p{L} \p{Lu} \pL \P{N} ... (general categories); .
//   groups                (...) (?:...) (?i:...) (?-i:...) (?i) (at group start)
//   lookahead             (?=...) (?!...)
//   quantifiers           * + ? {n} {n,} {n,m} {,m}, lazy (?), possessive (+)
//   anchors               ^ $ (line) \A \z \Z
//   alternation           |
// Anything else (backreferences, lookbehind, named groups, \b, ...) is
// rejected by Compile. Case-insensitive matching folds ASCII letters (and
// U+017F, U+212A to s, k); \s is White_Space, \d is Nd, \w is IsWordChar.
//
// Matching is backtracking: patterns with nested quantified groups can take
// exponential time. Single-character atoms under a quantifier loop without
// recursion, so long runs of letters or spaces cost no stack.
//
// Thread safety: a compiled Regex is immutable; FindAll may be called
// concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::tokenizer {

class Regex {
 public:
  // Compiles `pattern` (UTF-8). InvalidArgument naming the pattern and the
  // offending position for syntax errors and unsupported constructs.
  static absl::StatusOr<Regex> Compile(std::string_view pattern);

  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Successive non-overlapping leftmost matches in `text`, as [begin, end)
  // code point index pairs; a search resumes at the previous match's end.
  // Empty matches are not reported (the search steps one code point past
  // them), which is what Hugging Face's splitting keeps of them.
  std::vector<std::pair<size_t, size_t>> FindAll(std::u32string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Program;
  Regex(std::string pattern, std::unique_ptr<Program> program);

  std::string pattern_;
  std::unique_ptr<Program> program_;
};

}  // namespace qwha::tokenizer
