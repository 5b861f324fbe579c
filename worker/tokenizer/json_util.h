// Reading tokenizer.json fields with errors that name the file and the field
// (internal to worker/tokenizer/).
//
// Every reader takes the object holding the field and a JsonPath naming that
// object; a missing field, a field of the wrong type or an invalid value is
// InvalidArgument: "tokenizer.json '<source>': field '<path>.<key>': <what>".
// A JSON null counts as missing (tokenizer.json writes absent options as null).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::tokenizer {

using Json = nlohmann::json;

// Where a JSON value sits: the source name (a file path, or "<memory>") and
// the path within the document ("pre_tokenizer.pretokenizers[1]"). Cheap to
// copy; the source string must outlive it.
class JsonPath {
 public:
  explicit JsonPath(const std::string* source, std::string path = "")
      : source_(source), path_(std::move(path)) {}

  JsonPath Child(std::string_view key) const;
  JsonPath Index(size_t i) const;
  // An object member named by an arbitrary string: path["key"].
  JsonPath Entry(std::string_view key) const;
  const std::string& path() const { return path_; }
  const std::string& source() const { return *source_; }

  // InvalidArgument naming the source and this path.
  absl::Status Error(std::string_view what) const;

 private:
  const std::string* source_;
  std::string path_;
};

// True if `obj` has `key` with a non-null value.
bool HasField(const Json& obj, std::string_view key);

// `obj` must be an object (an error naming `at` otherwise).
absl::Status RequireObject(const Json& obj, const JsonPath& at);

// The required string field `obj[key]`.
absl::StatusOr<std::string> ReadString(const Json& obj, std::string_view key, const JsonPath& at);
// An optional string field (missing or null gives nullopt).
absl::StatusOr<std::optional<std::string>> ReadOptionalString(const Json& obj, std::string_view key,
                                                              const JsonPath& at);
// A boolean field, `fallback` when missing.
absl::StatusOr<bool> ReadBool(const Json& obj, std::string_view key, bool fallback,
                              const JsonPath& at);
// A non-negative integer field, `fallback` when missing; an error for
// fractional, negative or values above `max`.
absl::StatusOr<int64_t> ReadCount(const Json& obj, std::string_view key, int64_t fallback,
                                  int64_t max, const JsonPath& at);
// A string field holding exactly one Unicode character.
absl::StatusOr<char32_t> ReadChar(const Json& obj, std::string_view key, const JsonPath& at);

// Converts a JSON value to a token id: an integer in [0, 2^31). Error names `at`.
absl::StatusOr<int32_t> ToTokenId(const Json& value, const JsonPath& at);

// Adapts std::string_view for absl::StrCat (this Abseil build has its own
// string_view type).
inline std::string S(std::string_view s) { return std::string(s); }

}  // namespace qwha::tokenizer
