#include "worker/tokenizer/byte_level.h"

#include <array>

#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

struct ByteTables {
  std::array<char32_t, 256> to_char{};
  std::array<int, 324> to_byte{};  // indexed by code point; the map's range ends at U+0143
  std::array<std::string, 256> utf8;
};

const ByteTables& Tables() {
  static const ByteTables tables = [] {
    ByteTables t;
    t.to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t c =
          printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      t.to_char[b] = c;
      t.to_byte[c] = b;
      AppendUtf8(c, &t.utf8[b]);
    }
    return t;
  }();
  return tables;
}

}  // namespace

char32_t ByteToChar(unsigned char b) { return Tables().to_char[b]; }

int CharToByte(char32_t c) {
  const ByteTables& t = Tables();
  return c < t.to_byte.size() ? t.to_byte[c] : -1;
}

std::string BytesToByteLevel(std::string_view text) {
  const ByteTables& t = Tables();
  std::string out;
  out.reserve(text.size() * 2);
  for (char ch : text) out += t.utf8[static_cast<unsigned char>(ch)];
  return out;
}

}  // namespace qwha::tokenizer
