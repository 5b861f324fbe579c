// A Hugging Face tokenizer.json tokenizer (BPE models: LLaMA-2/3, Mistral,
// GPT-2 style), without LibTorch or Python.
//
//   auto tok = qwha::tokenizer::Tokenizer::FromFile("tokenizer.json");
//   if (!tok.ok()) return tok.status();
//   std::vector<int32_t> ids = (*tok)->Encode("Hello world", /*add_special_tokens=*/true);
//   std::string text = (*tok)->Decode(ids, /*skip_special_tokens=*/true);
//
// Encode follows the Hugging Face `tokenizers` pipeline: added tokens are cut
// out first, the text between them is normalized, pre-tokenized into words,
// each word is BPE-merged, and with add_special_tokens the post-processor's
// template (e.g. "<|begin_of_text|> $A") is applied. Decode maps ids to
// tokens and runs the decoder chain. Outputs equal those of `tokenizers`
// 0.2x for the supported components, which are (see the component headers in
// this folder for details):
//   model           BPE (vocab, merges in both formats, byte_fallback,
//                   unk_token, fuse_unk, ignore_merges)
//   normalizer      Prepend, Replace, Strip, Sequence
//   pre_tokenizer   ByteLevel, Split (String or Regex; regex.h lists the
//                   syntax, which covers the GPT-2, LLaMA-3 and Qwen2
//                   patterns), Metaspace, Digits, WhitespaceSplit,
//                   Whitespace, Punctuation, BertPreTokenizer,
//                   CharDelimiterSplit, Sequence
//   decoder         ByteLevel, ByteFallback, Fuse, Strip, Replace,
//                   Metaspace, Sequence
//   post_processor  TemplateProcessing (single), Bert/RobertaProcessing,
//                   ByteLevel, Sequence
//   added_tokens    content, special, normalized, single_word, lstrip, rstrip
//                   (ids assigned as Hugging Face does: see added_vocabulary.h)
// Anything else (WordPiece/Unigram models, NFC/NFKC normalizers, BPE
// dropout or subword prefixes/suffixes, unsupported regex syntax) is rejected
// at load time with an InvalidArgument naming the field. "truncation" and
// "padding" are ignored: Encode never truncates or pads.
//
// Character classes (\p{L}, \p{N}, \s) use Unicode 14.0 tables (generated
// from Python 3.11); characters assigned in later Unicode versions may be
// classified differently than by the regex engine inside Hugging Face.
//
// Invalid UTF-8 input: Encode first replaces each ill-formed subsequence by
// U+FFFD (as Python's bytes.decode("utf-8", "replace") does), so the ids are
// those Hugging Face gives for that decoded string. Decode output is always
// valid UTF-8: byte sequences that do not form UTF-8 become U+FFFD, as in
// Hugging Face.
//
// Thread safety: a Tokenizer is immutable after loading; all const methods
// may be called concurrently from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::tokenizer {

class AddedVocabulary;
class BpeModel;
class Decoder;
class Normalizer;
class PostProcessor;
class PreTokenizer;

class Tokenizer {
 public:
  // Loads a tokenizer.json file. NotFound / PermissionDenied / Internal
  // naming the path when it cannot be read; InvalidArgument naming the path
  // and the JSON field (or the parse position) when it is malformed or uses
  // an unsupported component.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);

  // Parses tokenizer.json content. Errors as FromFile, naming `source_name`
  // in place of the path.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view json, std::string_view source_name = "<memory>");

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids of `text` (any bytes; see above for invalid UTF-8). With
  // `add_special_tokens`, the post-processor's template is applied (e.g. a
  // BOS id first); added tokens written in `text` are always recognized.
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;

  // The text of `ids`. Ids the vocabulary does not have are skipped, as are
  // special added tokens when `skip_special_tokens`.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // The id of a token string (added tokens first, then the model's vocab).
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of an id, or nullopt if no token has it. For an added
  // token matched in normalized form this is that form (e.g. "▁hello" under
  // a Prepend("▁") normalizer), as in Hugging Face.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Whether `id` is a special added token (those skip_special_tokens drops).
  bool IsSpecial(int32_t id) const;

  // One more than the largest id of the model vocab and the added tokens:
  // the embedding size a model needs. Ids below it may be unassigned.
  int32_t vocab_size() const { return vocab_size_; }

  // The beginning-of-sequence id: the first id the post-processor puts
  // before the text, else the first of <|begin_of_text|>, <s>, <bos>,
  // <|startoftext|> that is a special added token; nullopt if none.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  // The end-of-sequence id: the last id the post-processor puts after the
  // text, else the first of <|end_of_text|>, </s>, <eos>, <|endoftext|> that
  // is a special added token; nullopt if none. (Chat models may stop on
  // other ids too, e.g. <|eot_id|>: generation_config.json says which.)
  std::optional<int32_t> eos_id() const { return eos_id_; }

 private:
  Tokenizer();
  const std::string* IdToTokenPtr(int32_t id) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<AddedVocabulary> added_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace qwha::tokenizer
