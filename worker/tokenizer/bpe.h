// The BPE model of tokenizer.json (internal to worker/tokenizer/): turns one
// pre-tokenized word into token ids by applying merges in rank order, exactly
// as Hugging Face's BPE does (same tie-breaking, unknown-character handling,
// byte fallback and ignore_merges).
//
// JSON fields: "vocab" {token: id}, "merges" (["a b", ...] or [["a", "b"], ...];
// lines starting with "#version" are skipped), "unk_token", "fuse_unk",
// "byte_fallback", "ignore_merges", "dropout" (null or 0 only),
// "continuing_subword_prefix" / "end_of_word_suffix" (null or "" only).
//
// Thread safety: immutable after construction; Tokenize may be called
// concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/json_util.h"

namespace qwha::tokenizer {

class BpeModel {
 public:
  // Builds the model from tokenizer.json's "model" object at `at`.
  // InvalidArgument naming the field for: a type other than "BPE", a missing
  // or non-object vocab, a non-integer or negative id, merges of the wrong
  // shape, a merge whose parts or result are not in the vocab, an unk_token
  // not in the vocab, and the unsupported options listed above.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& model, const JsonPath& at);

  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of `word` (valid UTF-8, non-empty) to `ids`. Characters
  // not in the vocab become <0xXX> byte tokens (byte_fallback, when all
  // exist), else the unk token (runs fused with fuse_unk), else are dropped.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token of `id`, or nullptr if the vocab has no such id.
  const std::string* IdToToken(int32_t id) const;
  // One more than the largest id in the vocab (0 for an empty vocab).
  int32_t id_limit() const { return id_limit_; }
  size_t vocab_count() const { return tokens_.size(); }

 private:
  struct MergeResult {
    uint32_t rank;
    int32_t new_id;
  };
  BpeModel() = default;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  absl::Status ReadVocab(const Json& vocab, const JsonPath& at);
  absl::Status ReadMerges(const Json& merges, const JsonPath& at);
  absl::Status AddMerge(const std::string& a, const std::string& b, uint32_t rank,
                        const JsonPath& at);

  std::vector<std::string> tokens_;  // storage; vocab_ keys view into it
  std::unordered_map<std::string_view, int32_t> vocab_;
  std::unordered_map<int32_t, size_t> id_to_index_;
  std::unordered_map<uint64_t, MergeResult> merges_;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xXX>" or -1
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t id_limit_ = 0;
};

}  // namespace qwha::tokenizer
