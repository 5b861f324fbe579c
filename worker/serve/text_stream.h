// CompletionText: the text of a completion as its tokens arrive, ready to be
// streamed — never a broken UTF-8 character, never text that might turn out
// to be the start of a stop string.
//
// Decoding is incremental (a window of the last tokens, as text-generation
// servers do) so each token costs O(1) decodes; the text equals decoding all
// completion tokens at once for byte-level and sentencepiece-style decoders.
// Stop strings are searched in the text; on a match the text ends before the
// stop string.
//
// Thread safety: belongs to one request; not thread-safe. The tokenizer must
// outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/tokenizer/tokenizer.h"

namespace qwha::serve {

class CompletionText {
 public:
  // `tokenizer` may be null (no text: every Append returns "" and no stop
  // string can match; callers reject stop strings then).
  CompletionText(const tokenizer::Tokenizer* tokenizer, std::vector<std::string> stop);

  // Adds a generated token. Returns the text that may be sent now (possibly
  // empty). After a stop string matched, stopped() is true and further calls
  // return "".
  std::string Append(int32_t id);
  // At the end of generation: the text held back (a possible stop-string
  // prefix, or trailing bytes of an incomplete character, decoded as U+FFFD).
  std::string Finish();

  bool stopped() const { return stopped_; }
  // All text sent so far plus what Finish would return.
  const std::string& text() const { return text_; }

 private:
  std::string Sendable();

  const tokenizer::Tokenizer* tokenizer_;
  std::vector<std::string> stop_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // window start
  size_t read_offset_ = 0;    // tokens whose text is in text_
  std::string text_;          // decoded completion text (up to read_offset_)
  size_t sent_ = 0;           // bytes of text_ already returned
  bool stopped_ = false;
};

}  // namespace qwha::serve
