// Normalizers of tokenizer.json (internal to worker/tokenizer/): rewrite the
// text of each span between added tokens before pre-tokenization.
//
// Supported "type"s:
//   Prepend   {"prepend": s}: prefixes s to non-empty text
//   Replace   {"pattern": {"String"|"Regex": p}, "content": s}: every match -> s
//   Strip     {"strip_left": b, "strip_right": b}: trims White_Space
//   Sequence  {"normalizers": [...]}: applies each in order
// Anything else (NFC, NFKC, Lowercase, BertNormalizer, Precompiled, ...) is
// rejected: this library does not carry Unicode normalization tables.
//
// Thread safety: immutable after construction; safe for concurrent use.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/tokenizer/json_util.h"

namespace qwha::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void Normalize(std::string* text) const = 0;
};

// Builds the normalizer that `value` (tokenizer.json's "normalizer", at `at`)
// describes; nullptr for JSON null. InvalidArgument naming the field for an
// unsupported type or a malformed option.
absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const Json& value,
                                                               const JsonPath& at);

}  // namespace qwha::tokenizer
