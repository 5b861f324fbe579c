#include "worker/tokenizer/regex.h"

#include <algorithm>
#include <type_traits>

#include "worker/tokenizer/regex_program.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace regex_internal {
namespace {

// Other spellings of `c` under simple case folding (ASCII letters, plus the
// two non-ASCII code points that fold to ASCII letters).
int CaseVariants(char32_t c, char32_t out[3]) {
  int n = 0;
  if (c >= 'a' && c <= 'z') out[n++] = c - 'a' + 'A';
  if (c >= 'A' && c <= 'Z') out[n++] = c - 'A' + 'a';
  const char32_t lower = (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
  if (lower == 's') out[n++] = 0x017F;
  if (lower == 'k') out[n++] = 0x212A;
  if (c == 0x017F) {
    out[n++] = 's';
    out[n++] = 'S';
  }
  if (c == 0x212A) {
    out[n++] = 'k';
    out[n++] = 'K';
  }
  return n;
}

}  // namespace

bool Node::MatchesChar(char32_t c) const {
  if (kind == Kind::kChar) {
    if (c == ch) return true;
    if (!fold) return false;
    char32_t variants[3];
    const int n = CaseVariants(ch, variants);
    for (int i = 0; i < n; ++i) {
      if (variants[i] == c) return true;
    }
    return false;
  }
  if (cls.MatchesExact(c)) return true;
  if (!fold) return false;
  char32_t variants[3];
  const int n = CaseVariants(c, variants);
  for (int i = 0; i < n; ++i) {
    if (cls.MatchesExact(variants[i])) return true;
  }
  return false;
}

}  // namespace regex_internal

namespace {

using regex_internal::Alternatives;
using regex_internal::Node;

// A non-owning reference to a `bool(size_t)` callable: the continuation
// ("match the rest from this position") of the backtracking matcher.
class Cont {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Cont>>>
  Cont(const F& f)  // NOLINT: implicit by design
      : obj_(&f), call_([](const void* o, size_t p) { return (*static_cast<const F*>(o))(p); }) {}
  bool operator()(size_t pos) const { return call_(obj_, pos); }

 private:
  const void* obj_;
  bool (*call_)(const void*, size_t);
};

class Matcher {
 public:
  explicit Matcher(std::u32string_view text) : text_(text) {}

  bool MatchAlts(const Alternatives& alts, size_t pos, const Cont& k) const {
    for (const std::vector<Node>& seq : alts) {
      if (MatchSeq(seq, 0, pos, k)) return true;
    }
    return false;
  }

 private:
  bool MatchSeq(const std::vector<Node>& seq, size_t i, size_t pos, const Cont& k) const {
    if (i == seq.size()) return k(pos);
    const Node& n = seq[i];
    switch (n.kind) {
      case Node::Kind::kChar:
      case Node::Kind::kClass: {
        const size_t avail = text_.size() - pos;
        const size_t limit = std::min(n.max, avail);
        size_t count = 0;
        while (count < limit && n.MatchesChar(text_[pos + count])) ++count;
        if (count < n.min) return false;
        if (n.greed == Node::Greed::kPossessive) return MatchSeq(seq, i + 1, pos + count, k);
        if (n.greed == Node::Greed::kLazy) {
          for (size_t c = n.min; c <= count; ++c) {
            if (MatchSeq(seq, i + 1, pos + c, k)) return true;
          }
          return false;
        }
        for (size_t c = count;; --c) {
          if (MatchSeq(seq, i + 1, pos + c, k)) return true;
          if (c == n.min) return false;
        }
      }
      case Node::Kind::kGroup: {
        auto rest = [&](size_t p) { return MatchSeq(seq, i + 1, p, k); };
        if (n.min == 1 && n.max == 1) return MatchAlts(n.alts, pos, Cont(rest));
        return MatchRepeat(n, 0, pos, Cont(rest));
      }
      case Node::Kind::kLookahead: {
        auto accept = [](size_t) { return true; };
        if (MatchAlts(n.alts, pos, Cont(accept)) == n.negative) return false;
        return MatchSeq(seq, i + 1, pos, k);
      }
      case Node::Kind::kAnchor:
        if (!AnchorHolds(n.anchor, pos)) return false;
        return MatchSeq(seq, i + 1, pos, k);
    }
    return false;
  }

  // Matches `count` or more further repetitions of group `n` from `pos`.
  bool MatchRepeat(const Node& n, size_t count, size_t pos, const Cont& k) const {
    const bool can_more = count < n.max;
    auto again = [&](size_t p) {
      if (p == pos && count >= n.min) return false;  // an empty iteration ends the loop
      return MatchRepeat(n, count + 1, p, k);
    };
    if (n.greed == Node::Greed::kLazy) {
      if (count >= n.min && k(pos)) return true;
      return can_more && MatchAlts(n.alts, pos, Cont(again));
    }
    if (can_more && MatchAlts(n.alts, pos, Cont(again))) return true;
    return count >= n.min && k(pos);
  }

  bool AnchorHolds(Node::Anchor a, size_t pos) const {
    const size_t n = text_.size();
    switch (a) {
      case Node::Anchor::kLineStart:
        return pos == 0 || text_[pos - 1] == '\n';
      case Node::Anchor::kLineEnd:
        return pos == n || text_[pos] == '\n';
      case Node::Anchor::kTextStart:
        return pos == 0;
      case Node::Anchor::kTextEnd:
        return pos == n;
      case Node::Anchor::kTextEndBeforeNewline:
        return pos == n || (pos + 1 == n && text_[pos] == '\n');
    }
    return false;
  }

  std::u32string_view text_;
};

}  // namespace

struct Regex::Program {
  Alternatives alts;
};

Regex::Regex(std::string pattern, std::unique_ptr<Program> program)
    : pattern_(std::move(pattern)), program_(std::move(program)) {}
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

absl::StatusOr<Regex> Regex::Compile(std::string_view pattern) {
  absl::StatusOr<Alternatives> alts = regex_internal::ParsePattern(SanitizeUtf8(pattern));
  if (!alts.ok()) return alts.status();
  auto program = std::make_unique<Program>();
  program->alts = std::move(*alts);
  return Regex(std::string(pattern), std::move(program));
}

std::vector<std::pair<size_t, size_t>> Regex::FindAll(std::u32string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  Matcher matcher(text);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = pos;
    auto accept = [&](size_t p) {
      end = p;
      return true;
    };
    if (matcher.MatchAlts(program_->alts, pos, Cont(accept)) && end > pos) {
      matches.emplace_back(pos, end);
      pos = end;
    } else {
      ++pos;
    }
  }
  return matches;
}

}  // namespace qwha::tokenizer
