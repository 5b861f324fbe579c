// UTF-8 and Unicode character properties for the tokenizer (internal to
// worker/tokenizer/).
//
// Character classes follow Oniguruma's Unicode definitions, which is what the
// Hugging Face tokenizers library uses for its regexes: \p{L} is the general
// category L*, \p{N} is N*, whitespace is White_Space. Tables are generated
// from Unicode 14.0 by scripts/fixtures/gen_unicode_tables.py.
//
// Thread safety: every function is pure and safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qwha::tokenizer {

// Unicode general categories; the numbering matches unicode_tables.h.
enum class GeneralCategory : uint8_t {
  kLu,
  kLl,
  kLt,
  kLm,
  kLo,
  kMn,
  kMc,
  kMe,
  kNd,
  kNl,
  kNo,
  kPc,
  kPd,
  kPs,
  kPe,
  kPi,
  kPf,
  kPo,
  kSm,
  kSc,
  kSk,
  kSo,
  kZs,
  kZl,
  kZp,
  kCc,
  kCf,
  kCs,
  kCo,
  kCn,
};
inline constexpr int kGeneralCategoryCount = 30;

// Bit (1u << category) for each category; masks combine categories.
inline constexpr uint32_t CategoryBit(GeneralCategory c) { return 1u << static_cast<int>(c); }
inline constexpr uint32_t kLetterMask = 0x1Fu;             // L*: Lu Ll Lt Lm Lo
inline constexpr uint32_t kMarkMask = 0x7u << 5;           // M*: Mn Mc Me
inline constexpr uint32_t kNumberMask = 0x7u << 8;         // N*: Nd Nl No
inline constexpr uint32_t kPunctuationMask = 0x7Fu << 11;  // P*
inline constexpr uint32_t kSymbolMask = 0xFu << 18;        // S*
inline constexpr uint32_t kSeparatorMask = 0x7u << 22;     // Z*
inline constexpr uint32_t kOtherMask = 0x1Fu << 25;        // C*

// The general category of `c`; kCn for unassigned and out-of-range values.
GeneralCategory CategoryOf(char32_t c);

inline bool HasCategory(char32_t c, uint32_t mask) {
  return (mask & CategoryBit(CategoryOf(c))) != 0;
}
inline bool IsLetter(char32_t c) { return HasCategory(c, kLetterMask); }
inline bool IsNumber(char32_t c) { return HasCategory(c, kNumberMask); }
// White_Space: U+0009..U+000D, U+0085 and the categories Zs, Zl, Zp (the
// generator checks that this equals the property).
bool IsWhitespace(char32_t c);
// A "word" character (regex \w): letters, marks, Nd, Nl, Pc, ZWNJ and ZWJ.
bool IsWordChar(char32_t c);

// Parses a category name as written in \p{...}: one letter ("L", "N", ...) or
// two ("Lu", "Nd", ...). Returns the mask, or 0 if the name is unknown.
uint32_t CategoryMaskFromName(std::string_view name);

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Appends the UTF-8 encoding of `c` (a Unicode scalar value) to `out`.
void AppendUtf8(char32_t c, std::string* out);

// Returns `bytes` with every ill-formed UTF-8 subsequence replaced by U+FFFD,
// one replacement per maximal subpart (the Unicode "best practice", as in
// Python's bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy).
// Valid input is returned unchanged.
std::string SanitizeUtf8(std::string_view bytes);

// Decoded text: code points plus the byte offset where each starts in the
// UTF-8 source (offsets has one extra entry: the source length).
struct CodePoints {
  std::u32string chars;
  std::vector<size_t> offsets;
};

// Decodes UTF-8 `text`, which must be valid (e.g. from SanitizeUtf8).
CodePoints DecodeUtf8(std::string_view text);

// Byte length of the UTF-8 sequence starting with lead byte `lead` (1 for
// bytes that cannot start a sequence).
size_t Utf8SequenceLength(unsigned char lead);

// Returns true if `bytes` is well-formed UTF-8.
bool IsValidUtf8(std::string_view bytes);

}  // namespace qwha::tokenizer
