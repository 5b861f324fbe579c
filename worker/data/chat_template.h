// The chat template qwha trains and serves with: one fixed, tokenizer-agnostic
// rendering of a conversation, so that an adapter fine-tuned on {"messages"}
// data is prompted at inference exactly as it was trained.
//
// A conversation renders to (shown as text; `\n` is a newline, EOS the
// tokenizer's end-of-sequence id, BOS its beginning-of-sequence id):
//
//   BOS
//   <|system|>\n{content}\n                  (only as the first message)
//   <|user|>\n{content}\n
//   <|assistant|>\n{content}EOS
//   <|user|>\n{content}\n
//   <|assistant|>\n{content}EOS
//   ...
//
// The role markers `<|system|>`, `<|user|>`, `<|assistant|>` are plain text:
// they are encoded by the tokenizer like any other text (a tokenizer that has
// them as added tokens maps each to its single id). BOS and EOS are inserted
// as ids, never as text; BOS is omitted when the tokenizer has none. An
// assistant turn ends with EOS and nothing else, so the next marker follows
// EOS directly. Supervised (loss) tokens are exactly the assistant contents
// and the EOS after each of them; BOS, markers, newlines, system and user
// contents are context only.
//
// A generation prompt (inference, exact-match evaluation) is the rendering of
// the conversation so far followed by `<|assistant|>\n`; the model's reply
// ends when it emits EOS.
//
// Validity (ValidateChat): at least one message; roles "system", "user",
// "assistant" only; a system message only as the first message; for training,
// the last message is an assistant message, and every assistant content is
// non-empty. System and user contents may be empty.
//
// Thread safety: all functions are pure and safe to call concurrently.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace qwha::data {

enum class Role { kSystem, kUser, kAssistant };

// "system", "user", "assistant".
std::string_view RoleName(Role role);
// The role named `name` (exact, lower case), or nullopt.
std::optional<Role> ParseRole(std::string_view name);

struct ChatMessage {
  Role role = Role::kUser;
  std::string content;
};

// The role markers, as rendered (marker + "\n" starts each message).
inline constexpr std::string_view kSystemMarker = "<|system|>";
inline constexpr std::string_view kUserMarker = "<|user|>";
inline constexpr std::string_view kAssistantMarker = "<|assistant|>";

// One piece of a rendered conversation: text to encode, or the EOS id.
struct ChatPiece {
  enum class Kind { kText, kEos };
  Kind kind = Kind::kText;
  std::string text;         // empty for kEos
  bool supervised = false;  // contributes to the loss
  // Marks the first piece of the last assistant reply (its content): what an
  // exact-match evaluation asks the model to produce. Set on one piece only.
  bool last_reply_start = false;
};

// Checks the rules above. `for_training` also requires the last message to be
// from the assistant and every assistant content to be non-empty.
// InvalidArgument with a reason naming the message index (0-based) otherwise.
absl::Status ValidateChat(const std::vector<ChatMessage>& messages, bool for_training);

// The pieces of `messages` (BOS is not a piece: the encoder adds it). With
// `add_generation_prompt`, appends an unsupervised "<|assistant|>\n" piece.
// Adjacent unsupervised text is merged into one piece, so e.g. a user turn and
// the following assistant marker are encoded together. Does not validate.
std::vector<ChatPiece> RenderChat(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt);

// The rendering as one string, with `eos_text` standing for EOS (for logs,
// documentation and inference servers that take text prompts).
std::string RenderChatText(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                           std::string_view eos_text);

}  // namespace qwha::data
