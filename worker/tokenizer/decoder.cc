#include "worker/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/byte_level.h"
#include "worker/tokenizer/pattern.h"
#include "worker/tokenizer/unicode.h"

namespace qwha::tokenizer {
namespace {

using DecoderPtr = std::unique_ptr<Decoder>;

class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      const CodePoints cps = DecodeUtf8(token);
      std::string mapped;
      bool all_mapped = true;
      for (char32_t c : cps.chars) {
        const int b = CharToByte(c);
        if (b < 0) {
          all_mapped = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes += all_mapped ? mapped : token;
    }
    *tokens = {SanitizeUtf8(bytes)};
  }
};

class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;  // bytes of consecutive <0xXX> tokens
    auto flush = [&] {
      if (pending.empty()) return;
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        std::string fffd;
        AppendUtf8(kReplacementChar, &fffd);
        for (size_t i = 0; i < pending.size(); ++i) out.push_back(fffd);
      }
      pending.clear();
    };
    for (std::string& token : *tokens) {
      int byte = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        byte = ParseHexByte(token.substr(3, 2));
      }
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  // Rust's u8::from_str_radix(s, 16) for a two-character s: hex digits, an
  // optional leading '+'; -1 when invalid.
  static int ParseHexByte(const std::string& s) {
    auto digit = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[0] == '+') return digit(s[1]);
    const int hi = digit(s[0]), lo = digit(s[1]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& t : *tokens) joined += t;
    *tokens = {std::move(joined)};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      const CodePoints cps = DecodeUtf8(token);
      const size_t n = cps.chars.size();
      size_t begin = 0;
      while (begin < std::min(start_, n) && cps.chars[begin] == content_) ++begin;
      size_t end = n;
      const size_t max_stop = std::min(stop_, n - begin);
      for (size_t i = 0; i < max_stop && cps.chars[end - 1] == content_; ++i) --end;
      token = token.substr(cps.offsets[begin], cps.offsets[end] - cps.offsets[begin]);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) token = pattern_.ReplaceAll(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool strip_first)
      : replacement_(replacement), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      const CodePoints cps = DecodeUtf8(token);
      std::string out;
      out.reserve(token.size());
      for (size_t k = 0; k < cps.chars.size(); ++k) {
        if (cps.chars[k] == replacement_) {
          if (!(i == 0 && strip_first_)) out.push_back(' ');
        } else {
          out.append(token, cps.offsets[k], cps.offsets[k + 1] - cps.offsets[k]);
        }
      }
      token = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  bool strip_first_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<DecoderPtr> steps) : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<DecoderPtr> steps_;
};

absl::StatusOr<DecoderPtr> MetaspaceDecoderFromJson(const Json& value, const JsonPath& at) {
  absl::StatusOr<char32_t> replacement = ReadChar(value, "replacement", at);
  if (!replacement.ok()) return replacement.status();
  absl::StatusOr<std::optional<std::string>> scheme =
      ReadOptionalString(value, "prepend_scheme", at);
  if (!scheme.ok()) return scheme.status();
  bool strip_first = true;
  if (scheme->has_value()) {
    if (**scheme != "always" && **scheme != "first" && **scheme != "never") {
      return at.Child("prepend_scheme")
          .Error(absl::StrCat("expected always, first or never, got '", **scheme, "'"));
    }
    strip_first = **scheme != "never";
  }
  absl::StatusOr<bool> add_prefix_space = ReadBool(value, "add_prefix_space", true, at);
  if (!add_prefix_space.ok()) return add_prefix_space.status();
  if (!*add_prefix_space) strip_first = false;
  return DecoderPtr(new MetaspaceDecoder(*replacement, strip_first));
}

}  // namespace

absl::StatusOr<DecoderPtr> DecoderFromJson(const Json& value, const JsonPath& at) {
  if (value.is_null()) return DecoderPtr();
  if (absl::Status st = RequireObject(value, at); !st.ok()) return st;
  absl::StatusOr<std::string> type = ReadString(value, "type", at);
  if (!type.ok()) return type.status();

  if (*type == "Sequence") {
    if (!HasField(value, "decoders") || !value["decoders"].is_array()) {
      return at.Child("decoders").Error("expected an array");
    }
    std::vector<DecoderPtr> steps;
    const Json& list = value["decoders"];
    for (size_t i = 0; i < list.size(); ++i) {
      absl::StatusOr<DecoderPtr> step = DecoderFromJson(list[i], at.Child("decoders").Index(i));
      if (!step.ok()) return step.status();
      if (*step) steps.push_back(std::move(*step));
    }
    return DecoderPtr(new SequenceDecoder(std::move(steps)));
  }
  if (*type == "ByteLevel") return DecoderPtr(new ByteLevelDecoder());
  if (*type == "ByteFallback") return DecoderPtr(new ByteFallbackDecoder());
  if (*type == "Fuse") return DecoderPtr(new FuseDecoder());
  if (*type == "Strip") {
    absl::StatusOr<char32_t> content = ReadChar(value, "content", at);
    if (!content.ok()) return content.status();
    absl::StatusOr<int64_t> start = ReadCount(value, "start", 0, 1 << 20, at);
    if (!start.ok()) return start.status();
    absl::StatusOr<int64_t> stop = ReadCount(value, "stop", 0, 1 << 20, at);
    if (!stop.ok()) return stop.status();
    return DecoderPtr(new StripDecoder(*content, *start, *stop));
  }
  if (*type == "Replace") {
    if (!HasField(value, "pattern")) return at.Child("pattern").Error("missing");
    absl::StatusOr<Pattern> pattern = Pattern::FromJson(value["pattern"], at.Child("pattern"));
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = ReadString(value, "content", at);
    if (!content.ok()) return content.status();
    return DecoderPtr(new ReplaceDecoder(std::move(*pattern), std::move(*content)));
  }
  if (*type == "Metaspace") return MetaspaceDecoderFromJson(value, at);
  return at.Child("type").Error(
      absl::StrCat("decoder type '", *type,
                   "' is not supported (supported: Sequence, ByteLevel, ByteFallback, Fuse, Strip, "
                   "Replace, Metaspace)"));
}

}  // namespace qwha::tokenizer
