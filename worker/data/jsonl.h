// Fine-tuning records from JSONL files, before tokenization. No tokenizer and
// no LibTorch: the registry can validate an uploaded dataset with this alone.
//
// Each non-blank line is one JSON object in one of three forms:
//   {"text": "..."}                               loss on every token
//   {"prompt": "...", "completion": "..."}        loss on the completion only
//   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
//                                                 loss on assistant turns only
//                                                 (rendered by chat_template.h)
// Keys other than these are ignored (e.g. "id", "source"). A line holding keys
// of two forms (say "text" and "prompt") is malformed. All lines of one file
// must have the same form: a file mixing forms is almost always a mistake
// (concatenated files, a bad export), and one form per file keeps the loss
// semantics of a dataset uniform.
//
// Malformed (InvalidArgument, "<path>:<line>: <reason>", 1-based lines):
// invalid JSON (incl. invalid UTF-8), a line that is not an object, no or
// ambiguous form, a missing or non-string field, an empty "text", "prompt" or
// "completion", "messages" not a non-empty array, a message that is not an
// object with string "role" and "content", an unknown role, and the chat rules
// of ValidateChat(for_training = true). A file with no examples at all is
// malformed too ("<path>: no examples"). Blank (whitespace-only) lines are
// skipped but counted; "\r\n" line ends and a UTF-8 byte-order mark are
// accepted.
//
// Thread safety: all functions are pure and safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/chat_template.h"

namespace qwha::data {

enum class ExampleFormat { kText, kPromptCompletion, kMessages };

// "text", "prompt/completion", "messages".
std::string_view FormatName(ExampleFormat format);

struct Record {
  ExampleFormat format = ExampleFormat::kText;
  int64_t line = 0;                   // 1-based line in the source file
  std::string text;                   // kText
  std::string prompt;                 // kPromptCompletion
  std::string completion;             // kPromptCompletion
  std::vector<ChatMessage> messages;  // kMessages
};

// Parses one line (without its line end). InvalidArgument with the bare
// reason (no file or line) when it is malformed; the returned record's `line`
// is 0.
absl::StatusOr<Record> ParseRecord(std::string_view line);

struct JsonlFile {
  ExampleFormat format = ExampleFormat::kText;
  std::vector<Record> records;  // in file order
};

// Reads and parses a whole file. On any malformed line returns
// InvalidArgument listing up to `max_errors` (>= 1) of them in file order,
// one per line, each "<path>:<line>: <reason>", then a line "(and N more
// malformed lines)" if there are more; nothing partial is returned. NotFound / PermissionDenied /
// Internal naming the path when it cannot be read.
absl::StatusOr<JsonlFile> ReadJsonl(const std::string& path, int max_errors = 10);

// As ReadJsonl, on content already in memory; `source_name` stands for the path.
absl::StatusOr<JsonlFile> ParseJsonl(std::string_view content, std::string_view source_name,
                                     int max_errors = 10);

}  // namespace qwha::data
