#include "worker/tokenizer/unicode.h"

#include <algorithm>
#include <array>

#include "worker/tokenizer/unicode_tables.h"

namespace qwha::tokenizer {
namespace {

static_assert(unicode_tables::kCategoryCount == kGeneralCategoryCount,
              "unicode_tables.h and GeneralCategory disagree: rerun gen_unicode_tables.py");

GeneralCategory LookUpCategory(char32_t c) {
  if (c > 0x10FFFF) return GeneralCategory::kCn;
  // The last run whose start is <= c: upper_bound on the packed value with the
  // largest possible category bits.
  const uint32_t key = (static_cast<uint32_t>(c) << 5) | 0x1Fu;
  const uint32_t* begin = unicode_tables::kCategoryRuns;
  const uint32_t* end = begin + unicode_tables::kCategoryRunCount;
  const uint32_t* it = std::upper_bound(begin, end, key);
  return static_cast<GeneralCategory>(*(it - 1) & 0x1Fu);  // the first run starts at 0
}

const std::array<GeneralCategory, 128>& AsciiCategories() {
  static const std::array<GeneralCategory, 128> table = [] {
    std::array<GeneralCategory, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = LookUpCategory(c);
    return t;
  }();
  return table;
}

// Second-byte bounds of a well-formed sequence for each lead byte (Unicode
// Table 3-7); continuation bytes after the second are always 80..BF.
bool SecondByteOk(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

// Length of the well-formed sequence at bytes[i], or 0 if ill-formed; on 0,
// *bad_len is the length of the maximal subpart to replace (>= 1).
size_t WellFormedLength(std::string_view bytes, size_t i, size_t* bad_len) {
  const auto lead = static_cast<unsigned char>(bytes[i]);
  size_t need;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
  } else {
    *bad_len = 1;
    return 0;
  }
  size_t k = 1;
  for (; k < need; ++k) {
    if (i + k >= bytes.size()) break;
    const auto b = static_cast<unsigned char>(bytes[i + k]);
    const bool ok = (k == 1) ? SecondByteOk(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
  }
  if (k == need) return need;
  *bad_len = k;
  return 0;
}

}  // namespace

GeneralCategory CategoryOf(char32_t c) {
  if (c < 128) return AsciiCategories()[c];
  return LookUpCategory(c);
}

bool IsWhitespace(char32_t c) {
  if (c < 128) return (c >= 0x09 && c <= 0x0D) || c == 0x20;
  if (c == 0x85) return true;
  return HasCategory(c, kSeparatorMask);
}

bool IsWordChar(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  constexpr uint32_t kWordMask = kLetterMask | kMarkMask | CategoryBit(GeneralCategory::kNd) |
                                 CategoryBit(GeneralCategory::kNl) |
                                 CategoryBit(GeneralCategory::kPc);
  return HasCategory(c, kWordMask);
}

uint32_t CategoryMaskFromName(std::string_view name) {
  if (name.size() == 1) {
    switch (name[0]) {
      case 'L':
        return kLetterMask;
      case 'M':
        return kMarkMask;
      case 'N':
        return kNumberMask;
      case 'P':
        return kPunctuationMask;
      case 'S':
        return kSymbolMask;
      case 'Z':
        return kSeparatorMask;
      case 'C':
        return kOtherMask;
      default:
        return 0;
    }
  }
  static constexpr std::string_view kNames[kGeneralCategoryCount] = {
      "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
      "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
  for (int i = 0; i < kGeneralCategoryCount; ++i) {
    if (kNames[i] == name) return 1u << i;
  }
  return 0;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    size_t bad_len = 0;
    const size_t n = WellFormedLength(bytes, i, &bad_len);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view bytes) {
  if (IsValidUtf8(bytes)) return std::string(bytes);
  std::string out;
  out.reserve(bytes.size() + 8);
  size_t i = 0;
  while (i < bytes.size()) {
    size_t bad_len = 0;
    const size_t n = WellFormedLength(bytes, i, &bad_len);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      AppendUtf8(kReplacementChar, &out);
      i += bad_len;
    }
  }
  return out;
}

size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 1;
}

CodePoints DecodeUtf8(std::string_view text) {
  CodePoints cps;
  cps.chars.reserve(text.size());
  cps.offsets.reserve(text.size() + 1);
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t n = std::min(Utf8SequenceLength(lead), text.size() - i);
    char32_t c;
    switch (n) {
      case 2:
        c = lead & 0x1F;
        break;
      case 3:
        c = lead & 0x0F;
        break;
      case 4:
        c = lead & 0x07;
        break;
      default:
        c = lead;
        n = 1;
        break;
    }
    for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    cps.chars.push_back(c);
    cps.offsets.push_back(i);
    i += n;
  }
  cps.offsets.push_back(text.size());
  return cps;
}

}  // namespace qwha::tokenizer
