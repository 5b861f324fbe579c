#include "worker/tokenizer/json_util.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {

JsonPath JsonPath::Child(std::string_view key) const {
  return JsonPath(source_, path_.empty() ? S(key) : absl::StrCat(path_, ".", S(key)));
}

JsonPath JsonPath::Index(size_t i) const {
  return JsonPath(source_, absl::StrCat(path_, "[", i, "]"));
}

JsonPath JsonPath::Entry(std::string_view key) const {
  return JsonPath(source_, absl::StrCat(path_, "[\"", S(key), "\"]"));
}

absl::Status JsonPath::Error(std::string_view what) const {
  if (path_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json '", *source_, "': ", S(what)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json '", *source_, "': field '", path_, "': ", S(what)));
}

bool HasField(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return false;
  auto it = obj.find(std::string(key));
  return it != obj.end() && !it->is_null();
}

absl::Status RequireObject(const Json& obj, const JsonPath& at) {
  if (!obj.is_object()) {
    return at.Error(absl::StrCat("expected a JSON object, got ", obj.type_name()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadString(const Json& obj, std::string_view key, const JsonPath& at) {
  if (!HasField(obj, key)) return at.Child(key).Error("missing (expected a string)");
  const Json& v = obj.at(std::string(key));
  if (!v.is_string()) {
    return at.Child(key).Error(absl::StrCat("expected a string, got ", v.type_name()));
  }
  return v.get<std::string>();
}

absl::StatusOr<std::optional<std::string>> ReadOptionalString(const Json& obj, std::string_view key,
                                                              const JsonPath& at) {
  if (!HasField(obj, key)) return std::optional<std::string>();
  absl::StatusOr<std::string> s = ReadString(obj, key, at);
  if (!s.ok()) return s.status();
  return std::optional<std::string>(std::move(*s));
}

absl::StatusOr<bool> ReadBool(const Json& obj, std::string_view key, bool fallback,
                              const JsonPath& at) {
  if (!HasField(obj, key)) return fallback;
  const Json& v = obj.at(std::string(key));
  if (!v.is_boolean()) {
    return at.Child(key).Error(absl::StrCat("expected true or false, got ", v.type_name()));
  }
  return v.get<bool>();
}

absl::StatusOr<int64_t> ReadCount(const Json& obj, std::string_view key, int64_t fallback,
                                  int64_t max, const JsonPath& at) {
  if (!HasField(obj, key)) return fallback;
  const Json& v = obj.at(std::string(key));
  if (!v.is_number_integer()) {
    return at.Child(key).Error(absl::StrCat("expected an integer, got ", v.dump()));
  }
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(max)) {
      return at.Child(key).Error(absl::StrCat("value ", u, " is larger than ", max));
    }
    return static_cast<int64_t>(u);
  }
  const int64_t i = v.get<int64_t>();
  if (i < 0 || i > max)
    return at.Child(key).Error(absl::StrCat("value ", i, " out of [0, ", max, "]"));
  return i;
}

absl::StatusOr<char32_t> ReadChar(const Json& obj, std::string_view key, const JsonPath& at) {
  absl::StatusOr<std::string> s = ReadString(obj, key, at);
  if (!s.ok()) return s.status();
  const CodePoints cps = DecodeUtf8(*s);
  if (cps.chars.size() != 1) {
    return at.Child(key).Error(absl::StrCat("expected exactly one character, got '", *s, "'"));
  }
  return cps.chars[0];
}

absl::StatusOr<int32_t> ToTokenId(const Json& value, const JsonPath& at) {
  if (!value.is_number_integer()) {
    return at.Error(absl::StrCat("token id must be a non-negative integer, got ", value.dump()));
  }
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(kMax))
      return at.Error(absl::StrCat("token id ", u, " too large"));
    return static_cast<int32_t>(u);
  }
  const int64_t i = value.get<int64_t>();
  if (i < 0 || i > kMax) return at.Error(absl::StrCat("token id ", i, " out of range"));
  return static_cast<int32_t>(i);
}

}  // namespace qwha::tokenizer
