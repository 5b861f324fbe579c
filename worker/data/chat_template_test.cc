#include "worker/data/chat_template.h"

#include <gtest/gtest.h>

#include <vector>

namespace qwha::data {
namespace {

std::vector<ChatMessage> Conversation() {
  return {{Role::kSystem, "Be brief."},
          {Role::kUser, "Hi"},
          {Role::kAssistant, "Hello!"},
          {Role::kUser, "2+2?"},
          {Role::kAssistant, "4"}};
}

TEST(ChatTemplateTest, RendersTheDocumentedText) {
  EXPECT_EQ(RenderChatText(Conversation(), /*add_generation_prompt=*/false, "<EOS>"),
            "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<EOS>"
            "<|user|>\n2+2?\n<|assistant|>\n4<EOS>");
  std::vector<ChatMessage> history = Conversation();
  history.pop_back();
  EXPECT_EQ(RenderChatText(history, /*add_generation_prompt=*/true, "<EOS>"),
            "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<EOS>"
            "<|user|>\n2+2?\n<|assistant|>\n");
}

TEST(ChatTemplateTest, PiecesMarkSupervisionAndTheLastReply) {
  const std::vector<ChatPiece> pieces = RenderChat(Conversation(), false);
  ASSERT_EQ(pieces.size(), 6u);
  EXPECT_EQ(pieces[0].text, "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n");
  EXPECT_FALSE(pieces[0].supervised);
  EXPECT_EQ(pieces[1].text, "Hello!");
  EXPECT_TRUE(pieces[1].supervised);
  EXPECT_FALSE(pieces[1].last_reply_start);
  EXPECT_EQ(pieces[2].kind, ChatPiece::Kind::kEos);
  EXPECT_TRUE(pieces[2].supervised);
  EXPECT_EQ(pieces[3].text, "<|user|>\n2+2?\n<|assistant|>\n");
  EXPECT_FALSE(pieces[3].supervised);
  EXPECT_EQ(pieces[4].text, "4");
  EXPECT_TRUE(pieces[4].last_reply_start);
  EXPECT_EQ(pieces[5].kind, ChatPiece::Kind::kEos);
}

TEST(ChatTemplateTest, GenerationPromptIsAPrefixOfTheTrainingPieces) {
  // The prompt at inference equals the training pieces before the last reply.
  std::vector<ChatMessage> history = Conversation();
  history.pop_back();
  const std::vector<ChatPiece> prompt = RenderChat(history, /*add_generation_prompt=*/true);
  const std::vector<ChatPiece> full = RenderChat(Conversation(), false);
  ASSERT_EQ(prompt.size(), 4u);
  for (size_t i = 0; i < prompt.size(); ++i) {
    EXPECT_EQ(prompt[i].text, full[i].text) << i;
    EXPECT_EQ(prompt[i].kind, full[i].kind) << i;
  }
}

TEST(ChatTemplateTest, Validation) {
  EXPECT_TRUE(ValidateChat(Conversation(), true).ok());
  EXPECT_FALSE(ValidateChat({}, false).ok());
  const std::vector<ChatMessage> open = {{Role::kUser, "hi"}};
  EXPECT_TRUE(ValidateChat(open, /*for_training=*/false).ok());
  EXPECT_FALSE(ValidateChat(open, /*for_training=*/true).ok());
  EXPECT_EQ(ParseRole("assistant"), Role::kAssistant);
  EXPECT_EQ(ParseRole("tool"), std::nullopt);
  EXPECT_EQ(RoleName(Role::kSystem), "system");
}

}  // namespace
}  // namespace qwha::data
