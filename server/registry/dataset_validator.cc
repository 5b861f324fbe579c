#include "server/registry/dataset_validator.h"

#include "absl/strings/str_cat.h"

namespace qwha::registry {
namespace {

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

// Debian's Abseil does not alias absl::string_view to std::string_view.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsBlank(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\f' && c != '\v') return false;
  }
  return true;
}

std::string_view ProtoFormatName(data::ExampleFormat format) {
  switch (format) {
    case data::ExampleFormat::kText:
      return "text";
    case data::ExampleFormat::kPromptCompletion:
      return "prompt_completion";
    case data::ExampleFormat::kMessages:
      return "messages";
  }
  return "";
}

}  // namespace

absl::Status DatasetValidator::Fail(int64_t line, absl::string_view reason) {
  error_ =
      absl::InvalidArgumentError(absl::StrCat("dataset ", name_, " line ", line, ": ", reason));
  return error_;
}

absl::Status DatasetValidator::Feed(std::string_view data) {
  if (!error_.ok()) return error_;
  while (!data.empty()) {
    size_t end = data.find('\n');
    std::string_view piece = data.substr(0, end);
    if (static_cast<int64_t>(partial_.size() + piece.size()) > kMaxLineBytes) {
      return Fail(line_ + 1, absl::StrCat("longer than ", kMaxLineBytes, " bytes"));
    }
    if (end == std::string_view::npos) {
      partial_.append(piece);
      return absl::OkStatus();
    }
    data.remove_prefix(end + 1);
    absl::Status s;
    if (partial_.empty()) {
      s = Line(piece);
    } else {
      partial_.append(piece);
      s = Line(partial_);
      partial_.clear();
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DatasetValidator::Line(std::string_view line) {
  ++line_;
  if (line_ == 1 && line.substr(0, kUtf8Bom.size()) == kUtf8Bom)
    line.remove_prefix(kUtf8Bom.size());
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (IsBlank(line)) return absl::OkStatus();
  absl::StatusOr<data::Record> record = data::ParseRecord(line);
  if (!record.ok()) return Fail(line_, record.status().message());
  if (!format_) {
    format_ = record->format;
    form_line_ = line_;
  } else if (record->format != *format_) {
    return Fail(line_, absl::StrCat("form \"", Absl(data::FormatName(record->format)),
                                    "\" differs from the form \"", Absl(data::FormatName(*format_)),
                                    "\" of line ", form_line_, "; a file may not mix forms"));
  }
  ++records_;
  return absl::OkStatus();
}

absl::Status DatasetValidator::Finish() {
  if (!error_.ok()) return error_;
  if (!partial_.empty()) {
    std::string last = std::move(partial_);
    partial_.clear();
    if (absl::Status s = Line(last); !s.ok()) return s;
  }
  if (records_ == 0) {
    error_ = absl::InvalidArgumentError(absl::StrCat(
        "dataset ", name_, ": no examples (the file is empty or has only blank lines)"));
    return error_;
  }
  return absl::OkStatus();
}

std::string DatasetValidator::format() const {
  return format_ ? std::string(ProtoFormatName(*format_)) : std::string();
}

}  // namespace qwha::registry
