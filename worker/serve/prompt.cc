#include "worker/serve/prompt.h"

namespace qwha::serve {
namespace {

void AppendText(const tokenizer::Tokenizer& tokenizer, const std::string& text,
                std::vector<int64_t>* ids) {
  for (int32_t id : tokenizer.Encode(text, /*add_special_tokens=*/false)) ids->push_back(id);
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> EncodeTextPrompt(const tokenizer::Tokenizer& tokenizer,
                                                      const std::string& text) {
  std::vector<int64_t> ids;
  if (tokenizer.bos_id()) ids.push_back(*tokenizer.bos_id());
  AppendText(tokenizer, text, &ids);
  if (ids.empty()) return absl::InvalidArgumentError("prompt: encodes to no tokens");
  return ids;
}

absl::StatusOr<std::vector<int64_t>> EncodeChatPrompt(
    const tokenizer::Tokenizer& tokenizer, const std::vector<data::ChatMessage>& messages) {
  if (absl::Status st = data::ValidateChat(messages, /*for_training=*/false); !st.ok()) {
    return absl::InvalidArgumentError(std::string("messages: ") + std::string(st.message()));
  }
  if (messages.back().role == data::Role::kAssistant) {
    return absl::InvalidArgumentError("messages: the last message must not be the assistant's");
  }
  if (!tokenizer.eos_id()) return absl::InvalidArgumentError("messages: the tokenizer has no EOS");
  std::vector<int64_t> ids;
  if (tokenizer.bos_id()) ids.push_back(*tokenizer.bos_id());
  for (const data::ChatPiece& piece : data::RenderChat(messages, /*add_generation_prompt=*/true)) {
    if (piece.kind == data::ChatPiece::Kind::kEos) {
      ids.push_back(*tokenizer.eos_id());
    } else {
      AppendText(tokenizer, piece.text, &ids);
    }
  }
  return ids;
}

}  // namespace qwha::serve
