// Validates a JSONL dataset while it streams in, line by line, with the rules
// of worker/data/jsonl.h (one of three forms per line, one form per file,
// blank lines skipped but counted, "\r\n" and a UTF-8 byte-order mark
// accepted). Only the current partial line is buffered, so a dataset of any
// size is checked in bounded memory (at most kMaxLineBytes per line).
//
// Errors are InvalidArgument "dataset <name> line <N>: <reason>" (1-based N)
// for the first malformed line, or "dataset <name>: no examples". After an
// error every further call returns the same error.
//
// Thread safety: one validator per upload; not shared between threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "worker/data/jsonl.h"

namespace qwha::registry {

class DatasetValidator {
 public:
  static constexpr int64_t kMaxLineBytes = int64_t{64} << 20;

  explicit DatasetValidator(std::string dataset_name) : name_(std::move(dataset_name)) {}

  // Consumes the next bytes of the file.
  absl::Status Feed(std::string_view data);
  // Checks the last line (which may lack a line end) and that there was at
  // least one example.
  absl::Status Finish();

  int64_t records() const { return records_; }
  // "text", "prompt_completion" or "messages" (the proto's names); empty
  // before the first example.
  std::string format() const;

 private:
  absl::Status Line(std::string_view line);
  absl::Status Fail(int64_t line, absl::string_view reason);

  std::string name_;
  std::string partial_;  // bytes of the current line received so far
  int64_t line_ = 0;     // lines completed
  int64_t records_ = 0;
  int64_t form_line_ = 0;  // the line that fixed the file's form
  std::optional<data::ExampleFormat> format_;
  absl::Status error_;
};

}  // namespace qwha::registry
