// The parser of Regex patterns (see regex.h for the accepted syntax).
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/regex_program.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer::regex_internal {
namespace {

class Parser {
 public:
  Parser(std::string_view pattern, std::u32string chars)
      : pattern_(pattern), s_(std::move(chars)) {}

  absl::StatusOr<Alternatives> Parse() {
    bool fold = false;
    absl::StatusOr<Alternatives> alts = ParseAlternation(fold, 0);
    if (!alts.ok()) return alts;
    if (pos_ != s_.size()) return Error("unmatched ')'");
    return alts;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("regex pattern '", std::string(pattern_), "': ",
                                                   std::string(what), " at code point ", pos_));
  }
  bool AtEnd() const { return pos_ >= s_.size(); }
  char32_t Peek(size_t ahead = 0) const { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : 0; }

  absl::StatusOr<Alternatives> ParseAlternation(bool fold, int depth) {
    if (depth > 64) return Error("groups nested too deeply");
    Alternatives alts;
    alts.emplace_back();
    while (!AtEnd() && Peek() != ')') {
      if (Peek() == '|') {
        ++pos_;
        alts.emplace_back();
        continue;
      }
      // Inline flags "(?i)" / "(?-i)" apply to the rest of the enclosing group.
      if (Peek() == '(' && Peek(1) == '?' && (Peek(2) == 'i' || Peek(2) == '-')) {
        const size_t save = pos_;
        pos_ += 2;
        bool on = true;
        if (Peek() == '-') {
          on = false;
          ++pos_;
        }
        if (Peek() == 'i' && Peek(1) == ')') {
          pos_ += 2;
          fold = on;
          continue;
        }
        pos_ = save;
      }
      absl::StatusOr<Node> atom = ParseAtom(fold, depth);
      if (!atom.ok()) return atom.status();
      absl::Status q = ParseQuantifier(&*atom);
      if (!q.ok()) return q;
      alts.back().push_back(std::move(*atom));
    }
    return alts;
  }

  absl::StatusOr<Node> ParseAtom(bool fold, int depth) {
    Node node;
    node.fold = fold;
    const char32_t c = s_[pos_++];
    switch (c) {
      case '(':
        return ParseGroup(fold, depth);
      case '[': {
        node.kind = Node::Kind::kClass;
        absl::Status st = ParseBracket(&node.cls);
        if (!st.ok()) return st;
        return node;
      }
      case '.':
        node.kind = Node::Kind::kClass;
        node.cls.negated = true;
        node.cls.items.push_back({ClassItem::Kind::kRange, '\n', '\n'});
        return node;
      case '^':
        node.kind = Node::Kind::kAnchor;
        node.anchor = Node::Anchor::kLineStart;
        return node;
      case '$':
        node.kind = Node::Kind::kAnchor;
        node.anchor = Node::Anchor::kLineEnd;
        return node;
      case '*':
      case '+':
      case '?':
        --pos_;
        return Error("quantifier with nothing to repeat");
      case '\\': {
        if (AtEnd()) return Error("trailing backslash");
        const char32_t e = Peek();
        if (e == 'A' || e == 'z' || e == 'Z') {
          ++pos_;
          node.kind = Node::Kind::kAnchor;
          node.anchor = e == 'A'   ? Node::Anchor::kTextStart
                        : e == 'z' ? Node::Anchor::kTextEnd
                                   : Node::Anchor::kTextEndBeforeNewline;
          return node;
        }
        ClassItem item;
        char32_t literal = 0;
        bool is_class = false;
        absl::Status st = ParseEscape(/*in_class=*/false, &item, &literal, &is_class);
        if (!st.ok()) return st;
        if (is_class) {
          node.kind = Node::Kind::kClass;
          node.cls.items.push_back(item);
        } else {
          node.kind = Node::Kind::kChar;
          node.ch = literal;
        }
        return node;
      }
      default:
        node.kind = Node::Kind::kChar;
        node.ch = c;
        return node;
    }
  }

  absl::StatusOr<Node> ParseGroup(bool fold, int depth) {
    Node node;
    node.kind = Node::Kind::kGroup;
    if (Peek() == '?') {
      ++pos_;
      const char32_t k = Peek();
      if (k == ':') {
        ++pos_;
      } else if (k == '=' || k == '!') {
        ++pos_;
        node.kind = Node::Kind::kLookahead;
        node.negative = k == '!';
      } else if (k == 'i' || k == '-') {
        // (?i:...) / (?-i:...)
        bool on = true;
        if (k == '-') {
          on = false;
          ++pos_;
        }
        if (Peek() != 'i' || Peek(1) != ':') return Error("unsupported group flags (only i)");
        pos_ += 2;
        fold = on;
      } else {
        return Error("unsupported group syntax (lookbehind, named or atomic group)");
      }
    }
    absl::StatusOr<Alternatives> alts = ParseAlternation(fold, depth + 1);
    if (!alts.ok()) return alts.status();
    if (Peek() != ')') return Error("missing ')'");
    ++pos_;
    node.alts = std::move(*alts);
    return node;
  }

  // Parses "{n}", "{n,}", "{n,m}", "{,m}" at pos_ (just after '{'); false (pos_
  // unchanged) if the text is not a quantifier, which makes '{' a literal.
  bool ParseBraces(size_t* min, size_t* max) {
    size_t p = pos_;
    auto number = [&](size_t* out) {
      const size_t start = p;
      size_t v = 0;
      while (p < s_.size() && s_[p] >= '0' && s_[p] <= '9' && v < 100000)
        v = v * 10 + (s_[p++] - '0');
      *out = v;
      return p > start;
    };
    size_t lo = 0, hi = 0;
    if (!number(&lo)) {
      // "{,n}" means {0,n} in Oniguruma's Ruby syntax.
      if (p >= s_.size() || s_[p] != ',') return false;
      ++p;
      if (!number(&hi) || p >= s_.size() || s_[p] != '}') return false;
      *min = 0;
      *max = hi;
      pos_ = p + 1;
      return true;
    }
    if (p < s_.size() && s_[p] == '}') {
      *min = *max = lo;
      pos_ = p + 1;
      return true;
    }
    if (p >= s_.size() || s_[p] != ',') return false;
    ++p;
    if (p < s_.size() && s_[p] == '}') {
      *min = lo;
      *max = Node::kUnbounded;
      pos_ = p + 1;
      return true;
    }
    if (!number(&hi) || p >= s_.size() || s_[p] != '}') return false;
    *min = lo;
    *max = hi;
    pos_ = p + 1;
    return true;
  }

  absl::Status ParseQuantifier(Node* node) {
    size_t min = 1, max = 1;
    const char32_t c = Peek();
    if (c == '*') {
      min = 0, max = Node::kUnbounded;
      ++pos_;
    } else if (c == '+') {
      min = 1, max = Node::kUnbounded;
      ++pos_;
    } else if (c == '?') {
      min = 0, max = 1;
      ++pos_;
    } else if (c == '{') {
      ++pos_;
      if (!ParseBraces(&min, &max)) {
        --pos_;
        return absl::OkStatus();  // a literal '{', parsed as the next atom
      }
      if (max < min) return Error("quantifier {n,m} with m < n");
    } else {
      return absl::OkStatus();
    }
    if (node->kind == Node::Kind::kAnchor || node->kind == Node::Kind::kLookahead) {
      return Error("quantifier on an anchor or lookahead");
    }
    node->min = min;
    node->max = max;
    if (Peek() == '?') {
      node->greed = Node::Greed::kLazy;
      ++pos_;
    } else if (Peek() == '+') {
      if (node->kind == Node::Kind::kGroup) return Error("possessive quantifier on a group");
      node->greed = Node::Greed::kPossessive;
      ++pos_;
    }
    const char32_t next = Peek();
    if (next == '*' || next == '+' || next == '?') return Error("nested quantifier");
    return absl::OkStatus();
  }

  // Parses a hex number of at most `max_digits` digits (at least one).
  bool ParseHex(size_t max_digits, char32_t* out) {
    char32_t v = 0;
    size_t n = 0;
    while (n < max_digits && !AtEnd()) {
      const char32_t d = Peek();
      int digit;
      if (d >= '0' && d <= '9') {
        digit = d - '0';
      } else if (d >= 'a' && d <= 'f') {
        digit = d - 'a' + 10;
      } else if (d >= 'A' && d <= 'F') {
        digit = d - 'A' + 10;
      } else {
        break;
      }
      v = v * 16 + digit;
      ++pos_;
      ++n;
    }
    *out = v;
    return n > 0 && v <= 0x10FFFF;
  }

  // Parses the escape after a backslash: either a literal code point or a
  // class item (\s, \p{L}, ...).
  absl::Status ParseEscape(bool in_class, ClassItem* item, char32_t* literal, bool* is_class) {
    const char32_t e = s_[pos_++];
    *is_class = false;
    switch (e) {
      case 'n':
        *literal = '\n';
        return absl::OkStatus();
      case 'r':
        *literal = '\r';
        return absl::OkStatus();
      case 't':
        *literal = '\t';
        return absl::OkStatus();
      case 'f':
        *literal = '\f';
        return absl::OkStatus();
      case 'v':
        *literal = '\v';
        return absl::OkStatus();
      case 'a':
        *literal = 0x07;
        return absl::OkStatus();
      case 'e':
        *literal = 0x1B;
        return absl::OkStatus();
      case '0':
        *literal = 0;
        return absl::OkStatus();
      case 'b':
        if (in_class) {
          *literal = 0x08;
          return absl::OkStatus();
        }
        --pos_;
        return Error("unsupported escape \\b");
      case 'x':
        if (Peek() == '{') {
          ++pos_;
          if (!ParseHex(8, literal) || Peek() != '}') return Error("bad \\x{...} escape");
          ++pos_;
          return absl::OkStatus();
        }
        if (!ParseHex(2, literal)) return Error("bad \\x escape");
        return absl::OkStatus();
      case 'u':
        if (!ParseHex(4, literal)) return Error("bad \\u escape");
        return absl::OkStatus();
      case 's':
      case 'S':
        *is_class = true;
        *item = {ClassItem::Kind::kSpace, 0, 0, 0, e == 'S'};
        return absl::OkStatus();
      case 'w':
      case 'W':
        *is_class = true;
        *item = {ClassItem::Kind::kWord, 0, 0, 0, e == 'W'};
        return absl::OkStatus();
      case 'd':
      case 'D':
        *is_class = true;
        *item = {ClassItem::Kind::kCategory, 0, 0, CategoryBit(GeneralCategory::kNd), e == 'D'};
        return absl::OkStatus();
      case 'p':
      case 'P': {
        std::string name;
        if (Peek() == '{') {
          ++pos_;
          bool negate = false;
          if (Peek() == '^') {
            negate = true;
            ++pos_;
          }
          while (!AtEnd() && Peek() != '}' && name.size() < 32)
            name.push_back(static_cast<char>(s_[pos_++]));
          if (Peek() != '}') return Error("unterminated \\p{...}");
          ++pos_;
          if (negate) name = "^" + name;
        } else if (!AtEnd()) {
          name.push_back(static_cast<char>(s_[pos_++]));
        }
        bool negated = e == 'P';
        if (!name.empty() && name[0] == '^') {
          negated = !negated;
          name.erase(0, 1);
        }
        const uint32_t mask = CategoryMaskFromName(name);
        if (mask == 0) return Error(absl::StrCat("unsupported property \\p{", name, "}"));
        *is_class = true;
        *item = {ClassItem::Kind::kCategory, 0, 0, mask, negated};
        return absl::OkStatus();
      }
      default:
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '1' && e <= '9')) {
          --pos_;
          return Error(absl::StrCat("unsupported escape \\", std::string(1, static_cast<char>(e))));
        }
        *literal = e;  // an escaped punctuation or other character
        return absl::OkStatus();
    }
  }

  // Parses a bracket class; pos_ is just after '['.
  absl::Status ParseBracket(CharClass* cls) {
    if (Peek() == '^') {
      cls->negated = true;
      ++pos_;
    }
    bool first = true;
    while (true) {
      if (AtEnd()) return Error("missing ']'");
      char32_t c = Peek();
      if (c == ']' && !first) {
        ++pos_;
        return absl::OkStatus();
      }
      first = false;
      if (c == '[') return Error("nested character classes and POSIX brackets are unsupported");
      if (c == '&' && Peek(1) == '&') return Error("class intersection '&&' is unsupported");
      ++pos_;
      char32_t lo = c;
      if (c == '\\') {
        if (AtEnd()) return Error("trailing backslash");
        ClassItem item;
        bool is_class = false;
        absl::Status st = ParseEscape(/*in_class=*/true, &item, &lo, &is_class);
        if (!st.ok()) return st;
        if (is_class) {
          cls->items.push_back(item);
          continue;
        }
      }
      // A range "lo-hi" (a '-' before ']' is a literal).
      if (Peek() == '-' && Peek(1) != ']' && pos_ + 1 < s_.size()) {
        ++pos_;
        char32_t hi = s_[pos_++];
        if (hi == '\\') {
          if (AtEnd()) return Error("trailing backslash");
          ClassItem item;
          bool is_class = false;
          absl::Status st = ParseEscape(/*in_class=*/true, &item, &hi, &is_class);
          if (!st.ok()) return st;
          if (is_class) return Error("class escape as a range bound");
        }
        if (hi < lo) return Error("range out of order");
        cls->items.push_back({ClassItem::Kind::kRange, lo, hi});
        continue;
      }
      cls->items.push_back({ClassItem::Kind::kRange, lo, lo});
    }
  }

  std::string_view pattern_;
  std::u32string s_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Alternatives> ParsePattern(std::string_view pattern) {
  Parser parser(pattern, DecodeUtf8(pattern).chars);
  return parser.Parse();
}

}  // namespace qwha::tokenizer::regex_internal
