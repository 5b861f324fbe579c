#include "worker/serve/text_stream.h"

#include <algorithm>

namespace qwha::serve {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

bool EndsWithReplacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
}

// Start of the last UTF-8 character boundary at or before `pos`.
size_t Utf8Boundary(const std::string& s, size_t pos) {
  while (pos > 0 && pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace

CompletionText::CompletionText(const tokenizer::Tokenizer* tokenizer, std::vector<std::string> stop)
    : tokenizer_(tokenizer), stop_(std::move(stop)) {
  stop_.erase(std::remove(stop_.begin(), stop_.end(), std::string()), stop_.end());
}

std::string CompletionText::Append(int32_t id) {
  if (stopped_ || tokenizer_ == nullptr) return "";
  ids_.push_back(id);
  const std::vector<int32_t> prefix(ids_.begin() + static_cast<long>(prefix_offset_),
                                    ids_.begin() + static_cast<long>(read_offset_));
  const std::vector<int32_t> window(ids_.begin() + static_cast<long>(prefix_offset_), ids_.end());
  const std::string prefix_text = tokenizer_->Decode(prefix, /*skip_special_tokens=*/true);
  const std::string window_text = tokenizer_->Decode(window, /*skip_special_tokens=*/true);
  if (window_text.size() > prefix_text.size() && !EndsWithReplacement(window_text) &&
      window_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    text_ += window_text.substr(prefix_text.size());
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
  }
  return Sendable();
}

std::string CompletionText::Sendable() {
  // A stop string anywhere in the text not yet sent (or straddling it).
  size_t longest = 0;
  for (const std::string& s : stop_) longest = std::max(longest, s.size());
  const size_t from = sent_ > longest ? sent_ - longest : 0;
  size_t match = std::string::npos;
  for (const std::string& s : stop_) match = std::min(match, text_.find(s, from));
  if (match != std::string::npos) {
    stopped_ = true;
    text_.resize(std::max(match, sent_));
    std::string out = text_.substr(sent_);
    sent_ = text_.size();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& s : stop_) {
    for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k) {
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  const size_t end = Utf8Boundary(text_, text_.size() - hold);
  if (end <= sent_) return "";
  std::string out = text_.substr(sent_, end - sent_);
  sent_ = end;
  return out;
}

std::string CompletionText::Finish() {
  if (tokenizer_ != nullptr && !stopped_ && read_offset_ < ids_.size()) {
    // Tokens whose text never completed (e.g. a cut multi-byte character).
    const std::vector<int32_t> prefix(ids_.begin() + static_cast<long>(prefix_offset_),
                                      ids_.begin() + static_cast<long>(read_offset_));
    const std::vector<int32_t> window(ids_.begin() + static_cast<long>(prefix_offset_), ids_.end());
    const std::string prefix_text = tokenizer_->Decode(prefix, true);
    const std::string window_text = tokenizer_->Decode(window, true);
    if (window_text.size() > prefix_text.size()) text_ += window_text.substr(prefix_text.size());
    read_offset_ = ids_.size();
    std::string pending = Sendable();
    if (stopped_) return pending;
    std::string rest = text_.substr(sent_);
    sent_ = text_.size();
    return pending + rest;
  }
  std::string rest = stopped_ ? "" : text_.substr(sent_);
  sent_ = text_.size();
  return rest;
}

}  // namespace qwha::serve
