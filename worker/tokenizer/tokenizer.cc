#include "worker/tokenizer/tokenizer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/tokenizer/added_vocabulary.h"
#include "worker/tokenizer/bpe.h"
#include "worker/tokenizer/decoder.h"
#include "worker/tokenizer/json_util.h"
#include "worker/tokenizer/normalizer.h"
#include "worker/tokenizer/post_processor.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

absl::Status ErrnoStatus(int err, const std::string& path, const char* what) {
  const std::string message = absl::StrCat(what, " '", path, "': ", std::strerror(err));
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoStatus(errno, path, "cannot open tokenizer file");
  std::string data;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) data.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return ErrnoStatus(err, path, "cannot read tokenizer file");
  return data;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string_view source_name) {
  const std::string source(source_name);
  const JsonPath root(&source);
  Json doc;
  try {
    doc = Json::parse(json.begin(), json.end());
  } catch (const Json::parse_error& e) {
    return root.Error(absl::StrCat("invalid JSON: ", e.what()));
  }
  if (absl::Status st = RequireObject(doc, root); !st.ok()) return st;

  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  try {
    if (!doc.contains("model"))
      return root.Child("model").Error("missing (the tokenizer has no model)");
    absl::StatusOr<std::unique_ptr<BpeModel>> model =
        BpeModel::FromJson(doc["model"], root.Child("model"));
    if (!model.ok()) return model.status();
    tok->model_ = std::move(*model);

    const Json null_value;
    auto field = [&](const char* key) -> const Json& {
      return doc.contains(key) ? doc[key] : null_value;
    };
    absl::StatusOr<std::unique_ptr<Normalizer>> normalizer =
        NormalizerFromJson(field("normalizer"), root.Child("normalizer"));
    if (!normalizer.ok()) return normalizer.status();
    tok->normalizer_ = std::move(*normalizer);

    absl::StatusOr<std::unique_ptr<PreTokenizer>> pre_tokenizer =
        PreTokenizerFromJson(field("pre_tokenizer"), root.Child("pre_tokenizer"));
    if (!pre_tokenizer.ok()) return pre_tokenizer.status();
    tok->pre_tokenizer_ = std::move(*pre_tokenizer);

    absl::StatusOr<std::unique_ptr<Decoder>> decoder =
        DecoderFromJson(field("decoder"), root.Child("decoder"));
    if (!decoder.ok()) return decoder.status();
    tok->decoder_ = std::move(*decoder);

    absl::StatusOr<std::unique_ptr<PostProcessor>> post_processor =
        PostProcessor::FromJson(field("post_processor"), root.Child("post_processor"));
    if (!post_processor.ok()) return post_processor.status();
    tok->post_processor_ = std::move(*post_processor);

    absl::StatusOr<AddedVocabulary> added = AddedVocabulary::FromJson(
        field("added_tokens"), root.Child("added_tokens"), *tok->model_, tok->normalizer_.get());
    if (!added.ok()) return added.status();
    tok->added_ = std::make_unique<AddedVocabulary>(std::move(*added));
  } catch (const Json::exception& e) {
    // The readers check types before access; this is a safety net.
    return root.Error(absl::StrCat("unexpected JSON structure: ", e.what()));
  }

  tok->vocab_size_ = std::max(tok->model_->id_limit(), tok->added_->id_limit());
  auto special_named = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* name : names) {
      std::optional<int32_t> id = tok->added_->TokenToId(name);
      if (id && tok->IsSpecial(*id)) return id;
    }
    return std::nullopt;
  };
  if (tok->post_processor_ && !tok->post_processor_->prefix().empty()) {
    tok->bos_id_ = tok->post_processor_->prefix().front();
  } else {
    tok->bos_id_ = special_named({"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"});
  }
  if (tok->post_processor_ && !tok->post_processor_->suffix().empty()) {
    tok->eos_id_ = tok->post_processor_->suffix().back();
  } else {
    tok->eos_id_ = special_named({"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"});
  }
  return tok;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  const std::string input = SanitizeUtf8(text);
  std::vector<int32_t> ids;
  std::vector<PreToken> pieces;
  for (const AddedVocabulary::Span& raw : added_->SplitRaw(input)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    std::string normalized = input.substr(raw.begin, raw.end - raw.begin);
    if (normalizer_) normalizer_->Normalize(&normalized);
    for (const AddedVocabulary::Span& part : added_->SplitNormalized(normalized)) {
      if (part.id >= 0) {
        ids.push_back(part.id);
        continue;
      }
      pieces.clear();
      pieces.push_back({normalized.substr(part.begin, part.end - part.begin),
                        raw.begin == 0 && part.begin == 0});
      if (pre_tokenizer_) pre_tokenizer_->PreTokenize(&pieces);
      for (const PreToken& piece : pieces) model_->Tokenize(piece.text, &ids);
    }
  }
  if (add_special_tokens && post_processor_) return post_processor_->Apply(ids);
  return ids;
}

const std::string* Tokenizer::IdToTokenPtr(int32_t id) const {
  if (const AddedToken* added = added_->FindById(id)) return &added->decode_form;
  return model_->IdToToken(id);
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = IdToTokenPtr(id);
    if (token == nullptr) continue;
    if (skip_special_tokens && added_->IsSpecialContent(*token)) continue;
    tokens.push_back(*token);
  }
  if (!decoder_) return absl::StrJoin(tokens, " ");
  decoder_->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (std::optional<int32_t> id = added_->TokenToId(token)) return id;
  return model_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const std::string* token = IdToTokenPtr(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const AddedToken* added = added_->FindById(id);
  return added != nullptr && added->special;
}

}  // namespace qwha::tokenizer
