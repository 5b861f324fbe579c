#include "worker/data/jsonl.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "worker/data/test_util.h"

namespace qwha::data {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::WriteTempFile;

TEST(JsonlTest, ParsesEachForm) {
  const std::string path = WriteTempFile("forms_text.jsonl",
                                         "{\"text\": \"hello\", \"id\": 7}\n"
                                         "\n"
                                         "{\"text\": \"world\\n\"}\n");
  absl::StatusOr<JsonlFile> text = ReadJsonl(path);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->format, ExampleFormat::kText);
  ASSERT_EQ(text->records.size(), 2u);
  EXPECT_EQ(text->records[0].text, "hello");
  EXPECT_EQ(text->records[0].line, 1);
  EXPECT_EQ(text->records[1].text, "world\n");
  EXPECT_EQ(text->records[1].line, 3);  // blank lines count

  absl::StatusOr<JsonlFile> pair = ParseJsonl(
      "{\"prompt\": \"Q: 1+1?\\nA:\", \"completion\": \" 2\", \"meta\": {\"x\": 1}}\n", "p.jsonl");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(pair->format, ExampleFormat::kPromptCompletion);
  ASSERT_EQ(pair->records.size(), 1u);
  EXPECT_EQ(pair->records[0].prompt, "Q: 1+1?\nA:");
  EXPECT_EQ(pair->records[0].completion, " 2");

  absl::StatusOr<JsonlFile> chat = ParseJsonl(
      R"({"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "hi"},)"
      R"( {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"},)"
      R"( {"role": "assistant", "content": "ciao", "name": "bot"}]})",
      "m.jsonl");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->format, ExampleFormat::kMessages);
  ASSERT_EQ(chat->records.size(), 1u);
  const std::vector<ChatMessage>& m = chat->records[0].messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].role, Role::kSystem);
  EXPECT_EQ(m[0].content, "");
  EXPECT_EQ(m[2].role, Role::kAssistant);
  EXPECT_EQ(m[4].content, "ciao");
}

TEST(JsonlTest, AcceptsCrlfBomAndTrailingBlankLines) {
  absl::StatusOr<JsonlFile> file = ParseJsonl(
      "\xEF\xBB\xBF{\"text\": \"a\"}\r\n  \t\r\n{\"text\": \"b\"}\r\n\r\n\n", "crlf.jsonl");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->records.size(), 2u);
  EXPECT_EQ(file->records[0].text, "a");
  EXPECT_EQ(file->records[1].line, 3);
}

struct MalformedCase {
  std::string line;
  std::string reason;  // expected substring of the message
};

// Each case is line 3 of a file whose line 1 is a valid text example and
// line 2 is blank.
TEST(JsonlTest, MalformedLinesNameFileLineAndReason) {
  const std::vector<MalformedCase> cases = {
      {R"({"text": "a")", "invalid JSON"},
      {"{\"text\": \"\xff\"}", "invalid JSON"},  // invalid UTF-8
      {"[1, 2]", "expected a JSON object, not array"},
      {"\"text\"", "expected a JSON object, not string"},
      {R"({"foo": 1})", "no example"},
      {R"({"text": 5})", "field \"text\" must be a string, not number"},
      {R"({"text": ""})", "field \"text\" is empty"},
      {R"({"text": null})", "field \"text\" must be a string, not null"},
      {R"({"prompt": "a"})", "missing field \"completion\""},
      {R"({"completion": "a"})", "missing field \"prompt\""},
      {R"({"prompt": "a", "completion": ""})", "field \"completion\" is empty"},
      {R"({"prompt": "", "completion": "b"})", "field \"prompt\" is empty"},
      {R"({"prompt": "a", "completion": 3})", "field \"completion\" must be a string"},
      {R"({"text": "a", "prompt": "b", "completion": "c"})", "ambiguous form"},
      {R"({"text": "a", "messages": []})", "ambiguous form"},
      {R"({"messages": "hi"})", "field \"messages\" must be an array, not string"},
      {R"({"messages": []})", "\"messages\" is empty"},
      {R"({"messages": [1]})", "messages[0]: must be an object, not number"},
      {R"({"messages": [{"role": "user"}]})", "messages[0]: missing field \"content\""},
      {R"({"messages": [{"content": "x"}]})", "messages[0]: missing field \"role\""},
      {R"({"messages": [{"role": "bot", "content": "x"}]})", "messages[0]: unknown role \"bot\""},
      {R"({"messages": [{"role": "User", "content": "x"}]})", "unknown role \"User\""},
      {R"({"messages": [{"role": "user", "content": ["a"]}]})",
       "messages[0]: field \"content\" must be a string, not array"},
      {R"({"messages": [{"role": "user", "content": "hi"}]})", "no assistant message"},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]})",
       "messages[1]: assistant content is empty"},
      {R"({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]})",
       "messages[1]: the last message must be from the assistant, not \"user\""},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},)"
       R"( {"role": "assistant", "content": "b"}]})",
       "messages[1]: a system message may only be the first message"},
  };
  int index = 0;
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.line);
    const std::string name = "malformed_" + std::to_string(index++) + ".jsonl";
    const std::string path = WriteTempFile(name, "{\"text\": \"ok\"}\n\n" + c.line + "\n");
    absl::StatusOr<JsonlFile> file = ReadJsonl(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(file.status().message()), StartsWith(path + ":3: "));
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(c.reason));
  }
}

TEST(JsonlTest, MixedFormsAreRejectedNamingBothLines) {
  absl::StatusOr<JsonlFile> file =
      ParseJsonl("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"text\": \"c\"}\n", "mixed.jsonl");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(std::string(file.status().message()),
            "mixed.jsonl:2: form \"text\" differs from the form \"prompt/completion\" of line 1; "
            "a file may not mix forms");
}

TEST(JsonlTest, ReportsUpToMaxErrorsInFileOrder) {
  std::string content = "{\"text\": \"ok\"}\n";
  for (int i = 0; i < 15; ++i) content += "{bad\n";  // lines 2..16
  absl::StatusOr<JsonlFile> file = ParseJsonl(content, "many.jsonl", /*max_errors=*/3);
  ASSERT_FALSE(file.ok());
  const std::string message(file.status().message());
  EXPECT_THAT(message, StartsWith("many.jsonl:2: invalid JSON"));
  EXPECT_THAT(message, HasSubstr("\nmany.jsonl:3: "));
  EXPECT_THAT(message, HasSubstr("\nmany.jsonl:4: "));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("many.jsonl:5:")));
  EXPECT_THAT(message, HasSubstr("(and 12 more malformed lines)"));
}

TEST(JsonlTest, EmptyFilesAreMalformed) {
  for (const std::string content : {"", "\n", "  \n\r\n\t\n"}) {
    const std::string path = WriteTempFile("empty.jsonl", content);
    absl::StatusOr<JsonlFile> file = ReadJsonl(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(file.status().message()),
              path + ": no examples (the file is empty or has only blank lines)");
  }
}

TEST(JsonlTest, MissingFileIsNotFoundNamingThePath) {
  absl::StatusOr<JsonlFile> file = ReadJsonl("/nonexistent/dir/train.jsonl");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("/nonexistent/dir/train.jsonl"));
}

TEST(JsonlTest, ParseRecordGivesTheBareReason) {
  absl::StatusOr<Record> r = ParseRecord(R"({"text": 1})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(std::string(r.status().message()), "field \"text\" must be a string, not number");
}

}  // namespace
}  // namespace qwha::data
