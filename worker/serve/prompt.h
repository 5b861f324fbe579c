// Prompts to token ids, as the training data was encoded (worker/data):
//   text:  BOS + Encode(text)                         (a prompt/completion prompt)
//   chat:  BOS + the chat template of chat_template.h with the generation
//          prompt "<|assistant|>\n" (EOS pieces as the EOS id)
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/chat_template.h"
#include "worker/tokenizer/tokenizer.h"

namespace qwha::serve {

absl::StatusOr<std::vector<int64_t>> EncodeTextPrompt(const tokenizer::Tokenizer& tokenizer,
                                                      const std::string& text);

// InvalidArgument (from ValidateChat, naming the message) for an invalid
// conversation or a last message from the assistant.
absl::StatusOr<std::vector<int64_t>> EncodeChatPrompt(
    const tokenizer::Tokenizer& tokenizer, const std::vector<data::ChatMessage>& messages);

}  // namespace qwha::serve
