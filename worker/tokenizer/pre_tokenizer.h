// Pre-tokenizers of tokenizer.json (internal to worker/tokenizer/): cut each
// normalized span into the words that the model tokenizes one by one.
//
// Supported "type"s (Hugging Face semantics; empty pieces are dropped):
//   ByteLevel          {"add_prefix_space", "use_regex"}: optional leading ' ',
//                      the GPT-2 regex split, then every byte -> its
//                      byte-level character (byte_level.h)
//   Split              {"pattern": {"String"|"Regex": p}, "behavior", "invert"}
//   Metaspace          {"replacement", "prepend_scheme": always|first|never,
//                      "split", legacy "add_prefix_space"}
//   Digits             {"individual_digits"}
//   WhitespaceSplit, Whitespace, BertPreTokenizer, Punctuation {"behavior"},
//   CharDelimiterSplit {"delimiter"}
//   Sequence           {"pretokenizers": [...]}
// Others (ByteLevel with a custom regex, UnicodeScripts, ...) are rejected.
//
// Thread safety: immutable after construction; safe for concurrent use.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/json_util.h"

namespace qwha::tokenizer {

// One piece of text on its way to the model.
struct PreToken {
  std::string text;
  // True while the piece starts at byte 0 of the original input (Metaspace's
  // prepend_scheme "first" prepends only to such a piece).
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces each piece of `pieces` (valid UTF-8) by its sub-pieces, in order.
  virtual void PreTokenize(std::vector<PreToken>* pieces) const = 0;
};

// Builds the pre-tokenizer that `value` (tokenizer.json's "pre_tokenizer",
// at `at`) describes; nullptr for JSON null. InvalidArgument naming the field
// for an unsupported type, pattern or option.
absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const Json& value,
                                                                   const JsonPath& at);

// How the matches of a split pattern become pieces (Hugging Face's
// SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Cuts [0, length) by `matches` (sorted, non-overlapping [begin, end) ranges;
// with `invert` the non-matching stretches are the delimiters instead) and
// returns the pieces' ranges, empty ones dropped.
std::vector<std::pair<size_t, size_t>> SplitByMatches(
    size_t length, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
    bool invert);

}  // namespace qwha::tokenizer
