#include "worker/tokenizer/unicode.h"

#include <gtest/gtest.h>

#include <string>

#include "worker/tokenizer/byte_level.h"

namespace qwha::tokenizer {
namespace {

TEST(UnicodeTest, CategoriesOfKnownCharacters) {
  EXPECT_EQ(CategoryOf('A'), GeneralCategory::kLu);
  EXPECT_EQ(CategoryOf('z'), GeneralCategory::kLl);
  EXPECT_EQ(CategoryOf('7'), GeneralCategory::kNd);
  EXPECT_EQ(CategoryOf(0x00E9), GeneralCategory::kLl);   // é
  EXPECT_EQ(CategoryOf(0x4E2D), GeneralCategory::kLo);   // 中
  EXPECT_EQ(CategoryOf(0x0416), GeneralCategory::kLu);   // Ж
  EXPECT_EQ(CategoryOf(0x0663), GeneralCategory::kNd);   // Arabic-Indic 3
  EXPECT_EQ(CategoryOf(0x00B2), GeneralCategory::kNo);   // superscript 2
  EXPECT_EQ(CategoryOf(0x216B), GeneralCategory::kNl);   // Roman numeral twelve
  EXPECT_EQ(CategoryOf(0x0301), GeneralCategory::kMn);   // combining acute
  EXPECT_EQ(CategoryOf(0x1F600), GeneralCategory::kSo);  // 😀
  EXPECT_EQ(CategoryOf(0x1F3FD), GeneralCategory::kSk);  // skin tone modifier
  EXPECT_EQ(CategoryOf(0x200D), GeneralCategory::kCf);   // ZWJ
  EXPECT_EQ(CategoryOf(0x0378), GeneralCategory::kCn);   // unassigned
  EXPECT_EQ(CategoryOf(0x10FFFF), GeneralCategory::kCn);
  EXPECT_EQ(CategoryOf(0x110000), GeneralCategory::kCn);  // beyond Unicode
  EXPECT_TRUE(IsLetter(0x3042));                          // あ
  EXPECT_TRUE(IsNumber(0xFF11));                          // fullwidth 1
  EXPECT_FALSE(IsLetter('_'));
}

TEST(UnicodeTest, WhitespaceIsTheWhiteSpaceProperty) {
  for (char32_t c :
       std::initializer_list<char32_t>{0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680,
                                       0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}) {
    EXPECT_TRUE(IsWhitespace(c)) << std::hex << c;
  }
  for (char32_t c : std::u32string(U"\x08\x1C\x1F\u200B\u200D\uFEFF\u180Ea")) {
    EXPECT_FALSE(IsWhitespace(c)) << std::hex << c;
  }
}

TEST(UnicodeTest, CategoryNames) {
  EXPECT_EQ(CategoryMaskFromName("L"), kLetterMask);
  EXPECT_EQ(CategoryMaskFromName("N"), kNumberMask);
  EXPECT_EQ(CategoryMaskFromName("Lu"), CategoryBit(GeneralCategory::kLu));
  EXPECT_EQ(CategoryMaskFromName("Nd"), CategoryBit(GeneralCategory::kNd));
  EXPECT_EQ(CategoryMaskFromName("Letter"), 0u);
  EXPECT_EQ(CategoryMaskFromName("Xx"), 0u);
}

TEST(UnicodeTest, Utf8RoundTrip) {
  std::string s;
  for (char32_t c : {0x41, 0xE9, 0x4E2D, 0x1F600, 0x10FFFF}) AppendUtf8(c, &s);
  EXPECT_EQ(s, "A\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF");
  EXPECT_TRUE(IsValidUtf8(s));
  const CodePoints cps = DecodeUtf8(s);
  EXPECT_EQ(cps.chars, (std::u32string{0x41, 0xE9, 0x4E2D, 0x1F600, 0x10FFFF}));
  EXPECT_EQ(cps.offsets, (std::vector<size_t>{0, 1, 3, 6, 10, 14}));
}

// Each case checked against Python's bytes.decode("utf-8", "replace").
TEST(UnicodeTest, SanitizeReplacesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";  // U+FFFD
  EXPECT_EQ(SanitizeUtf8("abc"), "abc");
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a" + r + "b");
  EXPECT_EQ(SanitizeUtf8("\x80\x80"), r + r);  // lone continuations
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"), r);  // truncated emoji: one
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"
                         "a"),
            r + "a");
  EXPECT_EQ(SanitizeUtf8("\xE0\x80\xAF"), r + r + r);          // overlong: E0 needs A0..BF
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), r + r + r);          // surrogate U+D800
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), r + r);                  // C0 never valid
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(SanitizeUtf8("\xE4\xB8"), r);                      // truncated 中
  EXPECT_EQ(SanitizeUtf8("\xE4\xB8\xAD\xE4"), "\xE4\xB8\xAD" + r);
  EXPECT_EQ(SanitizeUtf8(std::string("\0x", 2)), std::string("\0x", 2));
}

TEST(ByteLevelTest, Gpt2ByteToUnicodeMap) {
  EXPECT_EQ(ByteToChar('!'), U'!');
  EXPECT_EQ(ByteToChar('~'), U'~');
  EXPECT_EQ(ByteToChar(0xA1), U'\u00A1');
  EXPECT_EQ(ByteToChar(0xFF), U'\u00FF');
  EXPECT_EQ(ByteToChar(0x00), U'\u0100');
  EXPECT_EQ(ByteToChar('\n'), U'\u010A');  // Ċ
  EXPECT_EQ(ByteToChar(' '), U'\u0120');   // Ġ
  EXPECT_EQ(ByteToChar(0x7F), U'\u0121');
  EXPECT_EQ(ByteToChar(0xAD), U'\u0143');  // the last one
  for (int b = 0; b < 256; ++b) EXPECT_EQ(CharToByte(ByteToChar(b)), b);
  EXPECT_EQ(CharToByte(U' '), -1);
  EXPECT_EQ(CharToByte(U'\u0144'), -1);
  EXPECT_EQ(BytesToByteLevel("a b\n"),
            "a\xC4\xA0"
            "b\xC4\x8A");
}

}  // namespace
}  // namespace qwha::tokenizer
