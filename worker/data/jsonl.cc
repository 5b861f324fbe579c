#include "worker/data/jsonl.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qwha::data {
namespace {

using Json = nlohmann::json;

// Debian's Abseil does not alias absl::string_view to std::string_view.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status ErrnoStatus(int err, const std::string& path, const char* what) {
  const std::string message = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoStatus(errno, path, "cannot open dataset file");
  std::string content;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) content.append(buffer, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return ErrnoStatus(err, path, "cannot read dataset file");
  return content;
}

absl::Status Invalid(const std::string& reason) { return absl::InvalidArgumentError(reason); }

// The string value of `object[key]`, or an error naming the key.
absl::StatusOr<std::string> StringField(const Json& object, const char* key,
                                        const std::string& where = "") {
  auto it = object.find(key);
  if (it == object.end()) return Invalid(absl::StrCat(where, "missing field \"", key, "\""));
  if (!it->is_string()) {
    return Invalid(
        absl::StrCat(where, "field \"", key, "\" must be a string, not ", it->type_name()));
  }
  return it->get<std::string>();
}

absl::StatusOr<std::vector<ChatMessage>> ParseMessages(const Json& value) {
  if (!value.is_array()) {
    return Invalid(absl::StrCat("field \"messages\" must be an array, not ", value.type_name()));
  }
  std::vector<ChatMessage> messages;
  messages.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& m = value[i];
    const std::string where = absl::StrCat("messages[", i, "]: ");
    if (!m.is_object()) {
      return Invalid(absl::StrCat(where, "must be an object, not ", m.type_name()));
    }
    absl::StatusOr<std::string> role = StringField(m, "role", where);
    if (!role.ok()) return role.status();
    absl::StatusOr<std::string> content = StringField(m, "content", where);
    if (!content.ok()) return content.status();
    std::optional<Role> parsed = ParseRole(*role);
    if (!parsed) {
      return Invalid(absl::StrCat(where, "unknown role \"", *role,
                                  "\" (expected \"system\", \"user\" or \"assistant\")"));
    }
    messages.push_back(ChatMessage{*parsed, std::move(*content)});
  }
  if (absl::Status s = ValidateChat(messages, /*for_training=*/true); !s.ok()) return s;
  return messages;
}

bool IsBlank(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\f' && c != '\v') return false;
  }
  return true;
}

}  // namespace

std::string_view FormatName(ExampleFormat format) {
  switch (format) {
    case ExampleFormat::kText:
      return "text";
    case ExampleFormat::kPromptCompletion:
      return "prompt/completion";
    case ExampleFormat::kMessages:
      return "messages";
  }
  return "unknown";
}

absl::StatusOr<Record> ParseRecord(std::string_view line) {
  Json value;
  try {
    value = Json::parse(line.begin(), line.end());
  } catch (const Json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1,
    // column 13: <reason>; last read: '<bytes>'". Keep "column 13: <reason>":
    // the line is always 1, and the bytes read may be invalid UTF-8.
    absl::string_view what = e.what();
    if (const size_t column = what.find("column "); column != absl::string_view::npos) {
      what.remove_prefix(column);
    } else if (const size_t close = what.find("] "); close != absl::string_view::npos) {
      what.remove_prefix(close + 2);
    }
    if (const size_t last = what.find("; last read:"); last != absl::string_view::npos) {
      what = what.substr(0, last);
    }
    return Invalid(absl::StrCat("invalid JSON at ", what));
  }
  if (!value.is_object()) {
    return Invalid(absl::StrCat("expected a JSON object, not ", value.type_name()));
  }
  const bool has_text = value.contains("text");
  const bool has_pair = value.contains("prompt") || value.contains("completion");
  const bool has_messages = value.contains("messages");
  if (has_text + has_pair + has_messages > 1) {
    return Invalid(
        "ambiguous form: expected exactly one of \"text\", \"prompt\"/\"completion\", "
        "\"messages\"");
  }
  Record record;
  if (has_text) {
    record.format = ExampleFormat::kText;
    absl::StatusOr<std::string> text = StringField(value, "text");
    if (!text.ok()) return text.status();
    if (text->empty()) return Invalid("field \"text\" is empty");
    record.text = std::move(*text);
  } else if (has_pair) {
    record.format = ExampleFormat::kPromptCompletion;
    absl::StatusOr<std::string> prompt = StringField(value, "prompt");
    if (!prompt.ok()) return prompt.status();
    absl::StatusOr<std::string> completion = StringField(value, "completion");
    if (!completion.ok()) return completion.status();
    if (prompt->empty()) {
      return Invalid("field \"prompt\" is empty (use {\"text\": ...} for unconditioned text)");
    }
    if (completion->empty()) return Invalid("field \"completion\" is empty");
    record.prompt = std::move(*prompt);
    record.completion = std::move(*completion);
  } else if (has_messages) {
    record.format = ExampleFormat::kMessages;
    absl::StatusOr<std::vector<ChatMessage>> messages = ParseMessages(value["messages"]);
    if (!messages.ok()) return messages.status();
    record.messages = std::move(*messages);
  } else {
    return Invalid(
        "no example: expected a \"text\", a \"prompt\" and \"completion\", or a \"messages\" "
        "field");
  }
  return record;
}

absl::StatusOr<JsonlFile> ParseJsonl(std::string_view content, std::string_view source_name,
                                     int max_errors) {
  if (max_errors < 1) max_errors = 1;
  constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";
  if (content.substr(0, kUtf8Bom.size()) == kUtf8Bom) content.remove_prefix(kUtf8Bom.size());

  JsonlFile file;
  int64_t first_line = 0;  // the line that fixed the file's form
  std::vector<std::string> errors;
  int64_t error_count = 0;
  auto add_error = [&](int64_t line, absl::string_view reason) {
    if (static_cast<int>(errors.size()) < max_errors) {
      errors.push_back(absl::StrCat(Absl(source_name), ":", line, ": ", reason));
    }
    ++error_count;
  };

  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (IsBlank(line)) continue;

    absl::StatusOr<Record> record = ParseRecord(line);
    if (!record.ok()) {
      add_error(line_number, record.status().message());
      continue;
    }
    if (first_line == 0) {
      first_line = line_number;
      file.format = record->format;
    } else if (record->format != file.format) {
      add_error(line_number,
                absl::StrCat("form \"", Absl(FormatName(record->format)),
                             "\" differs from the form \"", Absl(FormatName(file.format)),
                             "\" of line ", first_line, "; a file may not mix forms"));
      continue;
    }
    record->line = line_number;
    if (error_count == 0) file.records.push_back(*std::move(record));
  }

  if (error_count > 0) {
    std::string message = absl::StrJoin(errors, "\n");
    if (error_count > static_cast<int64_t>(errors.size())) {
      absl::StrAppend(&message, "\n(and ", error_count - static_cast<int64_t>(errors.size()),
                      " more malformed lines)");
    }
    return absl::InvalidArgumentError(message);
  }
  if (file.records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        Absl(source_name), ": no examples (the file is empty or has only blank lines)"));
  }
  return file;
}

absl::StatusOr<JsonlFile> ReadJsonl(const std::string& path, int max_errors) {
  absl::StatusOr<std::string> content = ReadWholeFile(path);
  if (!content.ok()) return content.status();
  return ParseJsonl(*content, path, max_errors);
}

}  // namespace qwha::data
