#include "worker/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/pattern.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override { *text = pattern_.ReplaceAll(*text, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    const CodePoints cps = DecodeUtf8(*text);
    size_t begin = 0, end = cps.chars.size();
    if (left_) {
      while (begin < end && IsWhitespace(cps.chars[begin])) ++begin;
    }
    if (right_) {
      while (end > begin && IsWhitespace(cps.chars[end - 1])) --end;
    }
    *text = text->substr(cps.offsets[begin], cps.offsets[end] - cps.offsets[begin]);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& step : steps_) step->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const Json& value,
                                                               const JsonPath& at) {
  if (value.is_null()) return std::unique_ptr<Normalizer>();
  if (absl::Status st = RequireObject(value, at); !st.ok()) return st;
  absl::StatusOr<std::string> type = ReadString(value, "type", at);
  if (!type.ok()) return type.status();

  if (*type == "Sequence") {
    if (!HasField(value, "normalizers") || !value["normalizers"].is_array()) {
      return at.Child("normalizers").Error("expected an array");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    const Json& list = value["normalizers"];
    for (size_t i = 0; i < list.size(); ++i) {
      absl::StatusOr<std::unique_ptr<Normalizer>> step =
          NormalizerFromJson(list[i], at.Child("normalizers").Index(i));
      if (!step.ok()) return step.status();
      if (*step) steps.push_back(std::move(*step));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(steps)));
  }
  if (*type == "Prepend") {
    absl::StatusOr<std::string> prefix = ReadString(value, "prepend", at);
    if (!prefix.ok()) return prefix.status();
    return std::unique_ptr<Normalizer>(new PrependNormalizer(std::move(*prefix)));
  }
  if (*type == "Replace") {
    if (!HasField(value, "pattern")) return at.Child("pattern").Error("missing");
    absl::StatusOr<Pattern> pattern = Pattern::FromJson(value["pattern"], at.Child("pattern"));
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = ReadString(value, "content", at);
    if (!content.ok()) return content.status();
    return std::unique_ptr<Normalizer>(
        new ReplaceNormalizer(std::move(*pattern), std::move(*content)));
  }
  if (*type == "Strip") {
    absl::StatusOr<bool> left = ReadBool(value, "strip_left", true, at);
    if (!left.ok()) return left.status();
    absl::StatusOr<bool> right = ReadBool(value, "strip_right", true, at);
    if (!right.ok()) return right.status();
    return std::unique_ptr<Normalizer>(new StripNormalizer(*left, *right));
  }
  return at.Child("type").Error(absl::StrCat("normalizer type '", *type,
                                             "' is not supported (supported: Sequence, Prepend, "
                                             "Replace, Strip)"));
}

}  // namespace qwha::tokenizer
