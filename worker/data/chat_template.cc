#include "worker/data/chat_template.h"

#include "absl/strings/str_cat.h"

namespace qwha::data {
namespace {

// Debian's Abseil does not alias absl::string_view to std::string_view.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
  }
  return "unknown";
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "system") return Role::kSystem;
  if (name == "user") return Role::kUser;
  if (name == "assistant") return Role::kAssistant;
  return std::nullopt;
}

absl::Status ValidateChat(const std::vector<ChatMessage>& messages, bool for_training) {
  if (messages.empty()) return absl::InvalidArgumentError("\"messages\" is empty");
  bool has_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == Role::kSystem && i != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "]: a system message may only be the first message"));
    }
    if (m.role == Role::kAssistant) {
      has_assistant = true;
      if (for_training && m.content.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("messages[", i, "]: assistant content is empty"));
      }
    }
  }
  if (for_training) {
    if (!has_assistant) {
      return absl::InvalidArgumentError("no assistant message (nothing to train on)");
    }
    if (messages.back().role != Role::kAssistant) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", messages.size() - 1,
                                                     "]: the last message must be from the "
                                                     "assistant, not \"",
                                                     Absl(RoleName(messages.back().role)), "\""));
    }
  }
  return absl::OkStatus();
}

namespace {

std::string_view Marker(Role role) {
  switch (role) {
    case Role::kSystem:
      return kSystemMarker;
    case Role::kUser:
      return kUserMarker;
    case Role::kAssistant:
      return kAssistantMarker;
  }
  return kUserMarker;
}

// Appends unsupervised text, merging it into a preceding unsupervised piece.
void AppendContext(std::vector<ChatPiece>& pieces, std::string_view text) {
  if (!pieces.empty() && pieces.back().kind == ChatPiece::Kind::kText &&
      !pieces.back().supervised) {
    pieces.back().text.append(text);
    return;
  }
  ChatPiece piece;
  piece.text = std::string(text);
  pieces.push_back(std::move(piece));
}

}  // namespace

std::vector<ChatPiece> RenderChat(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt) {
  std::vector<ChatPiece> pieces;
  size_t last_assistant = messages.size();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == Role::kAssistant) last_assistant = i;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    AppendContext(pieces, absl::StrCat(Absl(Marker(m.role)), "\n"));
    if (m.role != Role::kAssistant) {
      AppendContext(pieces, absl::StrCat(m.content, "\n"));
      continue;
    }
    ChatPiece reply;
    reply.text = m.content;
    reply.supervised = true;
    reply.last_reply_start = i == last_assistant;
    pieces.push_back(std::move(reply));
    ChatPiece eos;
    eos.kind = ChatPiece::Kind::kEos;
    eos.supervised = true;
    pieces.push_back(std::move(eos));
  }
  if (add_generation_prompt) AppendContext(pieces, absl::StrCat(Absl(kAssistantMarker), "\n"));
  return pieces;
}

std::string RenderChatText(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                           std::string_view eos_text) {
  std::string out;
  for (const ChatPiece& piece : RenderChat(messages, add_generation_prompt)) {
    if (piece.kind == ChatPiece::Kind::kEos) {
      out.append(eos_text);
    } else {
      out.append(piece.text);
    }
  }
  return out;
}

}  // namespace qwha::data
