// The added tokens of tokenizer.json (internal to worker/tokenizer/): tokens
// matched verbatim in the input before normalization and pre-tokenization,
// such as <|begin_of_text|> or <s>.
//
// As in Hugging Face: tokens with "normalized": false are matched in the raw
// text; the others are matched, in their normalized form, in the normalized
// text of the stretches between raw matches. Matching is leftmost-longest
// and non-overlapping. "single_word" keeps only matches not touching a word
// character (\w) on either side; "lstrip"/"rstrip" make the match swallow
// the White_Space to its left/right. "special" tokens are the ones
// Decode(..., skip_special_tokens=true) drops.
//
// Thread safety: immutable after construction; safe for concurrent use.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/bpe.h"
#include "worker/tokenizer/json_util.h"
#include "worker/tokenizer/normalizer.h"

namespace qwha::tokenizer {

struct AddedToken {
  std::string content;
  // What Decode and IdToToken see: the normalized content for a normalized
  // token (as Hugging Face's normalized cache), else the content.
  std::string decode_form;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

class AddedVocabulary {
 public:
  // A stretch [begin, end) of the searched text: an added token (id >= 0) or
  // plain text between matches (id == -1).
  struct Span {
    size_t begin;
    size_t end;
    int32_t id;
  };

  AddedVocabulary() = default;

  // Reads tokenizer.json's "added_tokens" array (null: none) at `at`. Ids
  // are assigned as Hugging Face does: a content in the model's vocab takes
  // the model's id, the others take consecutive ids after the model vocab in
  // file order (the file's "id" fields agree whenever the library wrote
  // them). `normalizer` (may be null) gives the matched form of normalized
  // tokens. InvalidArgument naming the entry for a non-object entry, a
  // missing or non-string content, a bad id or a non-boolean flag.
  static absl::StatusOr<AddedVocabulary> FromJson(const Json& value, const JsonPath& at,
                                                  const BpeModel& model,
                                                  const Normalizer* normalizer);

  // Splits raw input at tokens with normalized == false.
  std::vector<Span> SplitRaw(std::string_view text) const { return Split(text, raw_); }
  // Splits normalized text at tokens with normalized == true.
  std::vector<Span> SplitNormalized(std::string_view text) const {
    return Split(text, normalized_);
  }

  std::optional<int32_t> TokenToId(std::string_view content) const;
  // The added token with `id`, or nullptr.
  const AddedToken* FindById(int32_t id) const;
  // Whether `content` is the content of a special added token.
  bool IsSpecialContent(std::string_view content) const;
  // One more than the largest added id (0 if none).
  int32_t id_limit() const { return id_limit_; }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Literal patterns bucketed by first byte, longest first within a bucket.
  struct Matcher {
    std::vector<std::pair<std::string, size_t>> patterns;  // (text, index in tokens_)
    std::array<std::vector<size_t>, 256> by_first_byte;    // indices into patterns
  };
  static void BuildMatcher(Matcher* m);
  std::vector<Span> Split(std::string_view text, const Matcher& matcher) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, size_t> by_content_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_set<std::string> special_contents_;
  Matcher raw_;
  Matcher normalized_;
  int32_t id_limit_ = 0;
};

}  // namespace qwha::tokenizer
