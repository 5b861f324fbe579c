#include "worker/tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& model,
                                                             const JsonPath& at) {
  if (model.is_null()) return at.Error("missing (the tokenizer has no model)");
  if (absl::Status st = RequireObject(model, at); !st.ok()) return st;
  absl::StatusOr<std::optional<std::string>> type = ReadOptionalString(model, "type", at);
  if (!type.ok()) return type.status();
  if (!type->has_value() && !HasField(model, "merges")) {
    return at.Child("type").Error("missing (only \"BPE\" models are supported)");
  }
  if (type->has_value() && **type != "BPE") {
    return at.Child("type").Error(
        absl::StrCat("model type '", **type, "' is not supported (only \"BPE\")"));
  }

  std::unique_ptr<BpeModel> bpe(new BpeModel());
  if (!HasField(model, "vocab")) return at.Child("vocab").Error("missing");
  if (absl::Status st = bpe->ReadVocab(model["vocab"], at.Child("vocab")); !st.ok()) return st;
  if (!HasField(model, "merges")) return at.Child("merges").Error("missing");
  if (absl::Status st = bpe->ReadMerges(model["merges"], at.Child("merges")); !st.ok()) return st;

  absl::StatusOr<std::optional<std::string>> unk = ReadOptionalString(model, "unk_token", at);
  if (!unk.ok()) return unk.status();
  if (unk->has_value()) {
    std::optional<int32_t> id = bpe->TokenToId(**unk);
    if (!id) {
      return at.Child("unk_token").Error(absl::StrCat("'", **unk, "' is not in model.vocab"));
    }
    bpe->unk_id_ = id;
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    absl::StatusOr<std::optional<std::string>> affix = ReadOptionalString(model, key, at);
    if (!affix.ok()) return affix.status();
    if (affix->has_value() && !(*affix)->empty()) {
      return at.Child(key).Error(absl::StrCat("'", **affix, "' is not supported (only null)"));
    }
  }
  if (HasField(model, "dropout")) {
    const Json& d = model["dropout"];
    if (!d.is_number() || d.get<double>() != 0.0) {
      return at.Child("dropout").Error(
          absl::StrCat("BPE dropout ", d.dump(), " is not supported (only null or 0)"));
    }
  }
  absl::StatusOr<bool> b = ReadBool(model, "fuse_unk", false, at);
  if (!b.ok()) return b.status();
  bpe->fuse_unk_ = *b;
  b = ReadBool(model, "byte_fallback", false, at);
  if (!b.ok()) return b.status();
  bpe->byte_fallback_ = *b;
  b = ReadBool(model, "ignore_merges", false, at);
  if (!b.ok()) return b.status();
  bpe->ignore_merges_ = *b;

  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    bpe->byte_ids_[byte] = bpe->TokenToId(name).value_or(-1);
  }
  return bpe;
}

absl::Status BpeModel::ReadVocab(const Json& vocab, const JsonPath& at) {
  if (!vocab.is_object()) {
    return at.Error(absl::StrCat("expected an object {token: id}, got ", vocab.type_name()));
  }
  tokens_.reserve(vocab.size());  // no reallocation below: vocab_ keys view into tokens_
  std::vector<int32_t> ids;
  ids.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    absl::StatusOr<int32_t> id = ToTokenId(it.value(), at.Entry(it.key()));
    if (!id.ok()) return id.status();
    tokens_.push_back(it.key());
    ids.push_back(*id);
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    vocab_.emplace(tokens_[i], ids[i]);
    id_to_index_.emplace(ids[i], i);  // the first token wins if ids repeat
    id_limit_ = std::max(id_limit_, ids[i] + 1);
  }
  return absl::OkStatus();
}

absl::Status BpeModel::ReadMerges(const Json& merges, const JsonPath& at) {
  if (!merges.is_array()) {
    return at.Error(absl::StrCat("expected an array of merges, got ", merges.type_name()));
  }
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    const JsonPath where = at.Index(i);
    if (m.is_string()) {
      const std::string& line = m.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return where.Error(
            absl::StrCat("merge '", line, "' is not two tokens separated by one space"));
      }
      absl::Status st = AddMerge(line.substr(0, space), line.substr(space + 1), rank++, where);
      if (!st.ok()) return st;
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      absl::Status st = AddMerge(m[0].get<std::string>(), m[1].get<std::string>(), rank++, where);
      if (!st.ok()) return st;
    } else {
      return where.Error(absl::StrCat("expected \"a b\" or [\"a\", \"b\"], got ", m.dump()));
    }
  }
  return absl::OkStatus();
}

absl::Status BpeModel::AddMerge(const std::string& a, const std::string& b, uint32_t rank,
                                const JsonPath& at) {
  const std::string merged = a + b;
  for (const std::string* part : {&a, &b, &merged}) {
    if (!vocab_.count(*part)) {
      return at.Error(
          absl::StrCat("merge '", a, " ", b, "': token '", *part, "' is not in model.vocab"));
    }
  }
  // A repeated pair keeps its last rank, as Hugging Face's map does.
  merges_[PairKey(vocab_.at(a), vocab_.at(b))] = MergeResult{rank, vocab_.at(merged)};
  return absl::OkStatus();
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  auto it = id_to_index_.find(id);
  return it == id_to_index_.end() ? nullptr : &tokens_[it->second];
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (std::optional<int32_t> id = TokenToId(word)) {
      ids->push_back(*id);
      return;
    }
  }

  // The word as a doubly linked list of symbols (Hugging Face's Word).
  struct Symbol {
    int32_t id;
    int prev;
    int next;
    size_t len;  // bytes covered; 0 once merged into the symbol on its left
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&symbols](int32_t id, size_t len) {
    const int index = static_cast<int>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, len});
  };

  // An unknown-character run not yet added: its byte length (0 when none).
  size_t unk_len = 0;
  auto flush_unk = [&] {
    if (unk_len > 0) add(*unk_id_, unk_len);
    unk_len = 0;
  };
  size_t i = 0;
  while (i < word.size()) {
    const size_t n =
        std::min(Utf8SequenceLength(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch = word.substr(i, n);
    i += n;
    if (std::optional<int32_t> id = TokenToId(ch)) {
      flush_unk();
      add(*id, n);
      continue;
    }
    if (byte_fallback_) {
      bool all_known = true;
      for (char c : ch) all_known = all_known && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all_known) {
        // Like Hugging Face, a pending unk is not flushed before byte tokens.
        for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_id_) {
      if (!fuse_unk_) flush_unk();
      unk_len += n;
    }
  }
  flush_unk();

  // Merge the lowest-ranked pair first; among equal ranks the leftmost.
  struct Candidate {
    uint32_t rank;
    int pos;
    int32_t new_id;
  };
  auto later = [](const Candidate& x, const Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  auto push_pair = [&](int pos) {
    const Symbol& left = symbols[pos];
    if (left.next < 0) return;
    auto m = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (m != merges_.end()) queue.push({m->second.rank, pos, m->second.new_id});
  };
  for (int pos = 0; pos + 1 < static_cast<int>(symbols.size()); ++pos) push_pair(pos);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const int right_pos = left.next;
    const Symbol right = symbols[right_pos];
    // Skip entries made stale by earlier merges.
    auto m = merges_.find(PairKey(left.id, right.id));
    if (m == merges_.end() || m->second.new_id != top.new_id) continue;

    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    symbols[right_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids->push_back(s.id);
  }
}

}  // namespace qwha::tokenizer
