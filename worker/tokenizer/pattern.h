// The patterns of Split pre-tokenizers and Replace normalizers/decoders in
// tokenizer.json (internal to worker/tokenizer/): {"String": "..."} matches
// the literal text, {"Regex": "..."} a regex (see regex.h for the supported
// syntax). Matches are non-overlapping and found left to right, as Hugging
// Face does.
//
// Thread safety: immutable after construction; safe for concurrent use.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/json_util.h"
#include "worker/tokenizer/regex.h"

namespace qwha::tokenizer {

class Pattern {
 public:
  // Parses {"String": s} or {"Regex": r} at `at`. InvalidArgument naming the
  // field for another shape, an empty pattern, or a regex Regex::Compile
  // rejects.
  static absl::StatusOr<Pattern> FromJson(const Json& value, const JsonPath& at);
  // A literal pattern; InvalidArgument if `text` is empty.
  static absl::StatusOr<Pattern> Literal(std::string text);

  // Matches in `text` (valid UTF-8) as [begin, end) byte ranges.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;
  // `text` with every match replaced by `content`.
  std::string ReplaceAll(std::string_view text, std::string_view content) const;

 private:
  Pattern(std::string literal, std::optional<Regex> regex)
      : literal_(std::move(literal)), regex_(std::move(regex)) {}

  std::string literal_;  // when regex_ is empty
  std::optional<Regex> regex_;
};

}  // namespace qwha::tokenizer
