#include "worker/tokenizer/pattern.h"

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {

absl::StatusOr<Pattern> Pattern::FromJson(const Json& value, const JsonPath& at) {
  if (!value.is_object() || value.size() != 1) {
    return at.Error(
        absl::StrCat("expected {\"String\": \"...\"} or {\"Regex\": \"...\"}, got ", value.dump()));
  }
  if (HasField(value, "String")) {
    absl::StatusOr<std::string> s = ReadString(value, "String", at);
    if (!s.ok()) return s.status();
    if (s->empty()) return at.Child("String").Error("empty pattern");
    return Pattern(std::move(*s), std::nullopt);
  }
  if (HasField(value, "Regex")) {
    absl::StatusOr<std::string> s = ReadString(value, "Regex", at);
    if (!s.ok()) return s.status();
    absl::StatusOr<Regex> re = Regex::Compile(*s);
    if (!re.ok()) return at.Child("Regex").Error(std::string(re.status().message()));
    return Pattern("", std::move(*re));
  }
  return at.Error(absl::StrCat("expected key \"String\" or \"Regex\", got ", value.dump()));
}

absl::StatusOr<Pattern> Pattern::Literal(std::string text) {
  if (text.empty()) return absl::InvalidArgumentError("empty literal pattern");
  return Pattern(std::move(text), std::nullopt);
}

std::vector<std::pair<size_t, size_t>> Pattern::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  if (!regex_) {
    size_t pos = 0;
    while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
      out.emplace_back(pos, pos + literal_.size());
      pos += literal_.size();
    }
    return out;
  }
  const CodePoints cps = DecodeUtf8(text);
  for (const auto& [b, e] : regex_->FindAll(cps.chars)) {
    out.emplace_back(cps.offsets[b], cps.offsets[e]);
  }
  return out;
}

std::string Pattern::ReplaceAll(std::string_view text, std::string_view content) const {
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [b, e] : FindAll(text)) {
    out.append(text.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace qwha::tokenizer
