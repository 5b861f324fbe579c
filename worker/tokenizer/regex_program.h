// The compiled form of a Regex (internal to regex.cc and regex_parser.cc):
// a tree of alternatives, sequences and atoms over code points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer::regex_internal {

// One member of a bracket class (or a class escape such as \s).
struct ClassItem {
  enum class Kind { kRange, kCategory, kSpace, kWord };
  Kind kind = Kind::kRange;
  char32_t lo = 0, hi = 0;  // kRange
  uint32_t mask = 0;        // kCategory
  bool negated = false;     // \S \W \D \P{..}

  bool Matches(char32_t c) const {
    bool m = false;
    switch (kind) {
      case Kind::kRange:
        m = c >= lo && c <= hi;
        break;
      case Kind::kCategory:
        m = HasCategory(c, mask);
        break;
      case Kind::kSpace:
        m = IsWhitespace(c);
        break;
      case Kind::kWord:
        m = IsWordChar(c);
        break;
    }
    return m != negated;
  }
};

struct CharClass {
  std::vector<ClassItem> items;
  bool negated = false;

  bool MatchesExact(char32_t c) const {
    bool m = false;
    for (const ClassItem& item : items) {
      if (item.Matches(c)) {
        m = true;
        break;
      }
    }
    return m != negated;
  }
};

struct Node {
  enum class Kind { kChar, kClass, kGroup, kLookahead, kAnchor };
  enum class Greed { kGreedy, kLazy, kPossessive };
  enum class Anchor { kLineStart, kLineEnd, kTextStart, kTextEnd, kTextEndBeforeNewline };

  Kind kind = Kind::kChar;
  char32_t ch = 0;
  bool fold = false;  // case-insensitive (kChar, kClass)
  CharClass cls;
  std::vector<std::vector<Node>> alts;  // kGroup, kLookahead
  bool negative = false;                // kLookahead
  Anchor anchor = Anchor::kLineStart;
  size_t min = 1;
  size_t max = 1;  // kUnbounded for no limit
  Greed greed = Greed::kGreedy;

  static constexpr size_t kUnbounded = static_cast<size_t>(-1);

  // Whether the single-character atom (kChar or kClass) accepts `c`.
  bool MatchesChar(char32_t c) const;
};

using Alternatives = std::vector<std::vector<Node>>;

// Parses `pattern` (valid UTF-8) into alternatives; InvalidArgument naming the
// pattern and position for errors and unsupported syntax (see regex.h).
absl::StatusOr<Alternatives> ParsePattern(std::string_view pattern);

}  // namespace qwha::tokenizer::regex_internal
