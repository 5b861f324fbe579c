// Decoders of tokenizer.json (internal to worker/tokenizer/): turn the token
// strings of a sequence of ids back into text, as Hugging Face's
// decode_chain does (each step maps a list of strings to a list of strings;
// the tokenizer joins the final list).
//
// Supported "type"s:
//   ByteLevel     all tokens -> bytes through the byte-level map (a token with
//                 a character outside the map contributes its own UTF-8),
//                 then one string with invalid UTF-8 replaced by U+FFFD
//   ByteFallback  runs of <0xXX> tokens -> their bytes if valid UTF-8, else
//                 one U+FFFD per byte
//   Fuse          joins all tokens into one
//   Strip         {"content": c, "start": n, "stop": m}: per token, removes up
//                 to n leading and m trailing c
//   Replace       {"pattern": {"String"|"Regex": p}, "content": s}, per token
//   Metaspace     {"replacement", "prepend_scheme"/"add_prefix_space"}:
//                 replacement -> ' ', dropped in the first token unless never
//   Sequence      {"decoders": [...]}
// Others (WordPiece, BPEDecoder, CTC) are rejected.
//
// Thread safety: immutable after construction; safe for concurrent use.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/json_util.h"

namespace qwha::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms `tokens` (each valid UTF-8) in place.
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Builds the decoder that `value` (tokenizer.json's "decoder", at `at`)
// describes; nullptr for JSON null. InvalidArgument naming the field for an
// unsupported type or a malformed option.
absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const Json& value, const JsonPath& at);

}  // namespace qwha::tokenizer
