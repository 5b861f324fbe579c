#include "worker/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

// The code point starting at byte `i` of valid UTF-8 `s`.
char32_t CodePointAt(std::string_view s, size_t i) {
  const size_t n = std::min(Utf8SequenceLength(static_cast<unsigned char>(s[i])), s.size() - i);
  return DecodeUtf8(s.substr(i, n)).chars[0];
}

// The code point ending at byte `end` of valid UTF-8 `s` (end > 0).
char32_t CodePointBefore(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return CodePointAt(s, i);
}

// Start of the White_Space run that ends at `end` (Hugging Face's \s*$).
size_t WhitespaceRunStart(std::string_view s, size_t end) {
  while (end > 0) {
    size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    if (!IsWhitespace(CodePointAt(s, i))) break;
    end = i;
  }
  return end;
}

// End of the White_Space run that starts at `begin` (Hugging Face's ^\s*).
size_t WhitespaceRunEnd(std::string_view s, size_t begin) {
  while (begin < s.size()) {
    const char32_t c = CodePointAt(s, begin);
    if (!IsWhitespace(c)) break;
    begin += std::min(Utf8SequenceLength(static_cast<unsigned char>(s[begin])), s.size() - begin);
  }
  return begin;
}

}  // namespace

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const Json& value, const JsonPath& at,
                                                          const BpeModel& model,
                                                          const Normalizer* normalizer) {
  AddedVocabulary vocab;
  if (value.is_null()) return vocab;
  if (!value.is_array())
    return at.Error(absl::StrCat("expected an array, got ", value.type_name()));
  int32_t max_added_id = -1;
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& entry = value[i];
    const JsonPath entry_at = at.Index(i);
    if (absl::Status st = RequireObject(entry, entry_at); !st.ok()) return st;
    AddedToken token;
    absl::StatusOr<std::string> content = ReadString(entry, "content", entry_at);
    if (!content.ok()) return content.status();
    token.content = std::move(*content);
    // The "id" must be well-formed, but like Hugging Face the id is assigned
    // below (they agree in every file the library wrote).
    if (!HasField(entry, "id")) return entry_at.Child("id").Error("missing");
    absl::StatusOr<int32_t> id = ToTokenId(entry["id"], entry_at.Child("id"));
    if (!id.ok()) return id.status();
    struct Flag {
      const char* key;
      bool* target;
      bool fallback;
    };
    for (const Flag& flag :
         {Flag{"special", &token.special, false}, Flag{"single_word", &token.single_word, false},
          Flag{"lstrip", &token.lstrip, false}, Flag{"rstrip", &token.rstrip, false},
          Flag{"normalized", &token.normalized, true}}) {
      absl::StatusOr<bool> b = ReadBool(entry, flag.key, flag.fallback, entry_at);
      if (!b.ok()) return b.status();
      *flag.target = *b;
    }
    if (token.content.empty()) continue;  // Hugging Face ignores empty tokens
    if (token.special) vocab.special_contents_.insert(token.content);
    auto existing = vocab.by_content_.find(token.content);
    if (existing != vocab.by_content_.end()) {
      // A repeated content keeps its id; its latest flags apply.
      token.id = vocab.tokens_[existing->second].id;
      vocab.tokens_[existing->second] = token;
      continue;
    }
    // Hugging Face's id assignment: the model's id for a token in its vocab,
    // else the next id after the model vocab and the added ids so far.
    if (std::optional<int32_t> model_id = model.TokenToId(token.content)) {
      token.id = *model_id;
    } else {
      const int32_t vocab_count = static_cast<int32_t>(model.vocab_count());
      token.id = (max_added_id >= vocab_count || vocab_count == 0) ? max_added_id + 1 : vocab_count;
    }
    max_added_id = std::max(max_added_id, token.id);
    vocab.by_content_.emplace(token.content, vocab.tokens_.size());
    vocab.by_id_.emplace(token.id, vocab.tokens_.size());
    vocab.id_limit_ = std::max(vocab.id_limit_, token.id + 1);
    vocab.tokens_.push_back(std::move(token));
  }

  // The form of each token that decoding sees: its normalized form when it
  // is matched normalized and the normalizer changes it (Hugging Face's
  // normalized cache), else its content.
  for (AddedToken& t : vocab.tokens_) {
    t.decode_form = t.content;
    if (t.normalized && normalizer != nullptr) normalizer->Normalize(&t.decode_form);
  }

  // Special tokens first, then the others, like Hugging Face's matcher order.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < vocab.tokens_.size(); ++i) {
      const AddedToken& t = vocab.tokens_[i];
      if (t.special != (pass == 0)) continue;
      if (!t.normalized) {
        vocab.raw_.patterns.emplace_back(t.content, i);
        continue;
      }
      if (!t.decode_form.empty()) vocab.normalized_.patterns.emplace_back(t.decode_form, i);
    }
  }
  BuildMatcher(&vocab.raw_);
  BuildMatcher(&vocab.normalized_);
  return vocab;
}

void AddedVocabulary::BuildMatcher(Matcher* m) {
  for (size_t p = 0; p < m->patterns.size(); ++p) {
    m->by_first_byte[static_cast<unsigned char>(m->patterns[p].first[0])].push_back(p);
  }
  for (std::vector<size_t>& bucket : m->by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(), [m](size_t a, size_t b) {
      return m->patterns[a].first.size() > m->patterns[b].first.size();
    });
  }
}

std::vector<AddedVocabulary::Span> AddedVocabulary::Split(std::string_view text,
                                                          const Matcher& matcher) const {
  std::vector<Span> spans;
  size_t start_offset = 0;  // end of the previous emitted span
  size_t pos = 0;
  while (pos < text.size()) {
    // The leftmost-longest match at or after pos.
    const std::vector<size_t>& bucket =
        matcher.by_first_byte[static_cast<unsigned char>(text[pos])];
    const std::pair<std::string, size_t>* found = nullptr;
    for (size_t p : bucket) {
      const std::string& pattern = matcher.patterns[p].first;
      if (text.compare(pos, pattern.size(), pattern) == 0) {
        found = &matcher.patterns[p];
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + found->first.size();
    pos = stop;  // a match discarded by single_word is still consumed
    const AddedToken& token = tokens_[found->second];
    if (token.single_word) {
      const bool start_space = start == 0 || !IsWordChar(CodePointBefore(text, start));
      const bool stop_space = stop == text.size() || !IsWordChar(CodePointAt(text, stop));
      if (!start_space || !stop_space) continue;
    }
    // lstrip never reaches back into the previous span. rstrip may swallow
    // the start of the next match (the search resumes at the match end, as
    // Hugging Face's does); that match's span then overlaps this one, which
    // is harmless: token spans contribute only their id.
    if (token.lstrip) start = std::max(WhitespaceRunStart(text, start), start_offset);
    if (token.rstrip) stop = WhitespaceRunEnd(text, stop);
    if (start_offset < start) spans.push_back({start_offset, start, -1});
    spans.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) spans.push_back({start_offset, text.size(), -1});
  return spans;
}

std::optional<int32_t> AddedVocabulary::TokenToId(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::IsSpecialContent(std::string_view content) const {
  return !special_contents_.empty() && special_contents_.count(std::string(content)) > 0;
}

}  // namespace qwha::tokenizer
