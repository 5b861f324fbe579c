#include "worker/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/byte_level.h"
#include "worker/tokenizer/pattern.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

using Ranges = std::vector<std::pair<size_t, size_t>>;

// The GPT-2 pattern that ByteLevel uses when use_regex is true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Every code point of `text` for which `pred` holds, each as its own match.
Ranges CharMatches(std::string_view text, const std::function<bool(char32_t)>& pred) {
  Ranges out;
  const CodePoints cps = DecodeUtf8(text);
  for (size_t i = 0; i < cps.chars.size(); ++i) {
    if (pred(cps.chars[i])) out.emplace_back(cps.offsets[i], cps.offsets[i + 1]);
  }
  return out;
}

void Emit(const std::string& text, bool at_origin, const Ranges& ranges,
          std::vector<PreToken>* out) {
  for (const auto& [b, e] : ranges) {
    if (e > b) out->push_back({text.substr(b, e - b), at_origin && b == 0});
  }
}

// Applies `split_one` (piece -> sub-pieces appended to out) to every piece.
void ForEachPiece(std::vector<PreToken>* pieces,
                  const std::function<void(const PreToken&, std::vector<PreToken>*)>& split_one) {
  std::vector<PreToken> out;
  out.reserve(pieces->size());
  for (const PreToken& piece : *pieces) split_one(piece, &out);
  *pieces = std::move(out);
}

bool IsAsciiPunctuation(char32_t c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
         (c >= '{' && c <= '~');
}
bool IsPunctuation(char32_t c) { return IsAsciiPunctuation(c) || HasCategory(c, kPunctuationMask); }

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::optional<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  void PreTokenize(std::vector<PreToken>* pieces) const override {
    ForEachPiece(pieces, [&](const PreToken& piece, std::vector<PreToken>* out) {
      std::string text = piece.text;
      if (add_prefix_space_ && (text.empty() || text[0] != ' ')) text.insert(0, " ");
      Ranges ranges;
      if (regex_) {
        const CodePoints cps = DecodeUtf8(text);
        Ranges matches;
        for (const auto& [b, e] : regex_->FindAll(cps.chars)) {
          matches.emplace_back(cps.offsets[b], cps.offsets[e]);
        }
        ranges = SplitByMatches(text.size(), matches, SplitBehavior::kIsolated, false);
      } else {
        ranges = {{0, text.size()}};
      }
      for (const auto& [b, e] : ranges) {
        if (e > b)
          out->push_back({BytesToByteLevel(std::string_view(text).substr(b, e - b)),
                          piece.at_origin && b == 0});
      }
    });
  }

 private:
  bool add_prefix_space_;
  std::optional<Regex> regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void PreTokenize(std::vector<PreToken>* pieces) const override {
    ForEachPiece(pieces, [&](const PreToken& piece, std::vector<PreToken>* out) {
      Emit(piece.text, piece.at_origin,
           SplitByMatches(piece.text.size(), pattern_.FindAll(piece.text), behavior_, invert_),
           out);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Splits on code points satisfying a predicate (Digits, WhitespaceSplit, ...).
class CharSplitPreTokenizer : public PreTokenizer {
 public:
  CharSplitPreTokenizer(std::function<bool(char32_t)> pred, SplitBehavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}

  void PreTokenize(std::vector<PreToken>* pieces) const override {
    ForEachPiece(pieces, [&](const PreToken& piece, std::vector<PreToken>* out) {
      Emit(piece.text, piece.at_origin,
           SplitByMatches(piece.text.size(), CharMatches(piece.text, pred_), behavior_, false),
           out);
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  SplitBehavior behavior_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement), scheme_(scheme), split_(split) {
    AppendUtf8(replacement, &replacement_utf8_);
  }

  void PreTokenize(std::vector<PreToken>* pieces) const override {
    ForEachPiece(pieces, [&](const PreToken& piece, std::vector<PreToken>* out) {
      std::string text;
      text.reserve(piece.text.size() * 2);
      for (char c : piece.text) {
        if (c == ' ') {
          text += replacement_utf8_;
        } else {
          text.push_back(c);
        }
      }
      const bool starts_with_replacement =
          text.compare(0, replacement_utf8_.size(), replacement_utf8_) == 0;
      if (!starts_with_replacement && (scheme_ == PrependScheme::kAlways ||
                                       (scheme_ == PrependScheme::kFirst && piece.at_origin))) {
        text.insert(0, replacement_utf8_);
      }
      if (!split_) {
        if (!text.empty()) out->push_back({text, piece.at_origin});
        return;
      }
      Emit(text, piece.at_origin,
           SplitByMatches(text.size(),
                          CharMatches(text, [this](char32_t c) { return c == replacement_; }),
                          SplitBehavior::kMergedWithNext, false),
           out);
    });
  }

 private:
  char32_t replacement_;
  std::string replacement_utf8_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<PreToken>* pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<SplitBehavior> ReadBehavior(const Json& value, const JsonPath& at,
                                           SplitBehavior fallback) {
  absl::StatusOr<std::optional<std::string>> name = ReadOptionalString(value, "behavior", at);
  if (!name.ok()) return name.status();
  if (!name->has_value()) return fallback;
  const std::string& b = **name;
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return at.Child("behavior").Error(absl::StrCat("unknown split behavior '", b, "'"));
}

using PreTokenizerPtr = std::unique_ptr<PreTokenizer>;

absl::StatusOr<PreTokenizerPtr> MetaspaceFromJson(const Json& value, const JsonPath& at) {
  absl::StatusOr<char32_t> replacement = ReadChar(value, "replacement", at);
  if (!replacement.ok()) return replacement.status();
  absl::StatusOr<std::optional<std::string>> scheme_name =
      ReadOptionalString(value, "prepend_scheme", at);
  if (!scheme_name.ok()) return scheme_name.status();
  PrependScheme scheme = PrependScheme::kAlways;
  if (scheme_name->has_value()) {
    if (**scheme_name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (**scheme_name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (**scheme_name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return at.Child("prepend_scheme")
          .Error(absl::StrCat("expected always, first or never, got '", **scheme_name, "'"));
    }
  }
  absl::StatusOr<bool> add_prefix_space = ReadBool(value, "add_prefix_space", true, at);
  if (!add_prefix_space.ok()) return add_prefix_space.status();
  if (!*add_prefix_space) {
    if (scheme_name->has_value() && scheme != PrependScheme::kNever) {
      return at.Child("add_prefix_space").Error("false contradicts prepend_scheme");
    }
    scheme = PrependScheme::kNever;
  }
  absl::StatusOr<bool> split = ReadBool(value, "split", true, at);
  if (!split.ok()) return split.status();
  return PreTokenizerPtr(new MetaspacePreTokenizer(*replacement, scheme, *split));
}

}  // namespace

Ranges SplitByMatches(size_t length, const Ranges& matches, SplitBehavior behavior, bool invert) {
  struct Segment {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Segment> segments;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) segments.push_back({prev, b, invert});
    segments.push_back({b, e, !invert});
    prev = e;
  }
  if (prev < length) segments.push_back({prev, length, invert});

  Ranges out;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) out.emplace_back(s.begin, s.end);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) out.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  out.erase(
      std::remove_if(out.begin(), out.end(), [](const auto& r) { return r.second <= r.first; }),
      out.end());
  return out;
}

absl::StatusOr<PreTokenizerPtr> PreTokenizerFromJson(const Json& value, const JsonPath& at) {
  if (value.is_null()) return PreTokenizerPtr();
  if (absl::Status st = RequireObject(value, at); !st.ok()) return st;
  absl::StatusOr<std::string> type = ReadString(value, "type", at);
  if (!type.ok()) return type.status();

  if (*type == "Sequence") {
    if (!HasField(value, "pretokenizers") || !value["pretokenizers"].is_array()) {
      return at.Child("pretokenizers").Error("expected an array");
    }
    std::vector<PreTokenizerPtr> steps;
    const Json& list = value["pretokenizers"];
    for (size_t i = 0; i < list.size(); ++i) {
      absl::StatusOr<PreTokenizerPtr> step =
          PreTokenizerFromJson(list[i], at.Child("pretokenizers").Index(i));
      if (!step.ok()) return step.status();
      if (*step) steps.push_back(std::move(*step));
    }
    return PreTokenizerPtr(new SequencePreTokenizer(std::move(steps)));
  }
  if (*type == "ByteLevel") {
    absl::StatusOr<bool> add_prefix_space = ReadBool(value, "add_prefix_space", true, at);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    absl::StatusOr<bool> use_regex = ReadBool(value, "use_regex", true, at);
    if (!use_regex.ok()) return use_regex.status();
    std::optional<Regex> regex;
    if (*use_regex) {
      absl::StatusOr<Regex> re = Regex::Compile(kGpt2Pattern);
      if (!re.ok()) return re.status();  // a bug in kGpt2Pattern, not in the file
      regex = std::move(*re);
    }
    return PreTokenizerPtr(new ByteLevelPreTokenizer(*add_prefix_space, std::move(regex)));
  }
  if (*type == "Split") {
    if (!HasField(value, "pattern")) return at.Child("pattern").Error("missing");
    absl::StatusOr<Pattern> pattern = Pattern::FromJson(value["pattern"], at.Child("pattern"));
    if (!pattern.ok()) return pattern.status();
    if (!HasField(value, "behavior")) return at.Child("behavior").Error("missing");
    absl::StatusOr<SplitBehavior> behavior = ReadBehavior(value, at, SplitBehavior::kIsolated);
    if (!behavior.ok()) return behavior.status();
    absl::StatusOr<bool> invert = ReadBool(value, "invert", false, at);
    if (!invert.ok()) return invert.status();
    return PreTokenizerPtr(new SplitPreTokenizer(std::move(*pattern), *behavior, *invert));
  }
  if (*type == "Metaspace") return MetaspaceFromJson(value, at);
  if (*type == "Digits") {
    absl::StatusOr<bool> individual = ReadBool(value, "individual_digits", false, at);
    if (!individual.ok()) return individual.status();
    return PreTokenizerPtr(new CharSplitPreTokenizer(
        IsNumber, *individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous));
  }
  if (*type == "WhitespaceSplit") {
    return PreTokenizerPtr(new CharSplitPreTokenizer(IsWhitespace, SplitBehavior::kRemoved));
  }
  if (*type == "Whitespace") {
    absl::StatusOr<Pattern> pattern =
        Pattern::FromJson(Json{{"Regex", R"(\w+|[^\w\s]+)"}}, at.Child("type"));
    if (!pattern.ok()) return pattern.status();
    return PreTokenizerPtr(
        new SplitPreTokenizer(std::move(*pattern), SplitBehavior::kRemoved, /*invert=*/true));
  }
  if (*type == "Punctuation") {
    absl::StatusOr<SplitBehavior> behavior = ReadBehavior(value, at, SplitBehavior::kIsolated);
    if (!behavior.ok()) return behavior.status();
    return PreTokenizerPtr(new CharSplitPreTokenizer(IsPunctuation, *behavior));
  }
  if (*type == "BertPreTokenizer") {
    std::vector<PreTokenizerPtr> steps;
    steps.emplace_back(new CharSplitPreTokenizer(IsWhitespace, SplitBehavior::kRemoved));
    steps.emplace_back(new CharSplitPreTokenizer(IsPunctuation, SplitBehavior::kIsolated));
    return PreTokenizerPtr(new SequencePreTokenizer(std::move(steps)));
  }
  if (*type == "CharDelimiterSplit") {
    absl::StatusOr<char32_t> delimiter = ReadChar(value, "delimiter", at);
    if (!delimiter.ok()) return delimiter.status();
    const char32_t d = *delimiter;
    return PreTokenizerPtr(
        new CharSplitPreTokenizer([d](char32_t c) { return c == d; }, SplitBehavior::kRemoved));
  }
  return at.Child("type").Error(absl::StrCat(
      "pre-tokenizer type '", *type,
      "' is not supported (supported: Sequence, ByteLevel, Split, Metaspace, Digits, "
      "WhitespaceSplit, Whitespace, Punctuation, BertPreTokenizer, CharDelimiterSplit)"));
}

}  // namespace qwha::tokenizer
