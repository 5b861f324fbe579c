// Post-processors of tokenizer.json (internal to worker/tokenizer/): the
// special tokens that Encode(..., add_special_tokens=true) puts around a
// single sequence.
//
// Supported "type"s: TemplateProcessing ("single" as a list of
// {"SpecialToken": {"id"}} / {"Sequence": {"id": "A"}} items, or the string
// form "<s> $A"; "special_tokens" maps each name to its "ids"),
// BertProcessing / RobertaProcessing ({"cls": [tok, id], "sep": [tok, id]}),
// ByteLevel (ids unchanged) and Sequence ({"processors": [...]}, applied in
// order). Pair templates are not used (single sequences only).
//
// Thread safety: immutable after construction; safe for concurrent use.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/json_util.h"

namespace qwha::tokenizer {

class PostProcessor {
 public:
  // Builds the processor that `value` (tokenizer.json's "post_processor", at
  // `at`) describes; nullptr for JSON null. InvalidArgument naming the field
  // for an unsupported type, a template naming a token missing from
  // "special_tokens", or a malformed id.
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const Json& value,
                                                                 const JsonPath& at);

  // `ids` wrapped in the single-sequence template.
  std::vector<int32_t> Apply(const std::vector<int32_t>& ids) const;

  // The ids the template puts before / after the sequence.
  const std::vector<int32_t>& prefix() const { return prefix_; }
  const std::vector<int32_t>& suffix() const { return suffix_; }

 private:
  PostProcessor() = default;
  // Wraps the current template inside `outer_prefix` ... `outer_suffix`.
  void Wrap(const std::vector<int32_t>& outer_prefix, const std::vector<int32_t>& outer_suffix);
  static absl::Status Compose(const Json& value, const JsonPath& at, PostProcessor* result);

  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

}  // namespace qwha::tokenizer
