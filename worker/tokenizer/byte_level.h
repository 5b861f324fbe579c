// GPT-2's byte-to-unicode map (internal to worker/tokenizer/): byte-level BPE
// vocabularies spell every byte as a printable character. Printable Latin-1
// bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the
// other 68 bytes map, in byte order, to U+0100, U+0101, ... (so ' ' is 'Ġ',
// U+0120, and '\n' is 'Ċ', U+010A).
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace qwha::tokenizer {

// The character that stands for byte `b`.
char32_t ByteToChar(unsigned char b);

// The byte that `c` stands for, or -1 if `c` is not in the map.
int CharToByte(char32_t c);

// `text` with each byte replaced by the UTF-8 of its ByteToChar character.
std::string BytesToByteLevel(std::string_view text);

}  // namespace qwha::tokenizer
