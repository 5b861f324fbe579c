#include "worker/tokenizer/post_processor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace qwha::tokenizer {
namespace {

// Whether a string-form template piece names the sequence ("$A", "$", "$0",
// "$A:1", ...), and which one.
bool IsSequencePiece(const std::string& piece, bool* is_a) {
  if (piece.empty() || piece[0] != '$') return false;
  const std::string name = piece.substr(
      1, piece.find(':') == std::string::npos ? std::string::npos : piece.find(':') - 1);
  *is_a = name.empty() || name == "A" || name == "0";
  return true;
}

// The ids of special token `name` from the template's "special_tokens".
absl::StatusOr<std::vector<int32_t>> SpecialIds(const Json& value, const std::string& name,
                                                const JsonPath& at) {
  const JsonPath table_at = at.Child("special_tokens");
  if (!HasField(value, "special_tokens") || !value["special_tokens"].is_object()) {
    return table_at.Error("missing or not an object");
  }
  const Json& table = value["special_tokens"];
  if (!table.contains(name)) {
    return table_at.Error(absl::StrCat("template uses '", name, "', which is not listed"));
  }
  const Json& entry = table[name];
  const JsonPath entry_at = table_at.Entry(name);
  if (!entry.is_object() || !HasField(entry, "ids") || !entry["ids"].is_array()) {
    return entry_at.Child("ids").Error("expected an array of ids");
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i < entry["ids"].size(); ++i) {
    absl::StatusOr<int32_t> id = ToTokenId(entry["ids"][i], entry_at.Child("ids").Index(i));
    if (!id.ok()) return id.status();
    ids.push_back(*id);
  }
  return ids;
}

absl::StatusOr<int32_t> ReadCls(const Json& value, const char* key, const JsonPath& at) {
  if (!HasField(value, key) || !value[key].is_array() || value[key].size() != 2) {
    return at.Child(key).Error("expected [token, id]");
  }
  return ToTokenId(value[key][1], at.Child(key).Index(1));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const Json& value,
                                                                       const JsonPath& at) {
  if (value.is_null()) return std::unique_ptr<PostProcessor>();
  std::unique_ptr<PostProcessor> result(new PostProcessor());
  if (absl::Status st = Compose(value, at, result.get()); !st.ok()) return st;
  return result;
}

void PostProcessor::Wrap(const std::vector<int32_t>& outer_prefix,
                         const std::vector<int32_t>& outer_suffix) {
  prefix_.insert(prefix_.begin(), outer_prefix.begin(), outer_prefix.end());
  suffix_.insert(suffix_.end(), outer_suffix.begin(), outer_suffix.end());
}

absl::Status PostProcessor::Compose(const Json& value, const JsonPath& at, PostProcessor* result) {
  if (absl::Status st = RequireObject(value, at); !st.ok()) return st;
  absl::StatusOr<std::string> type = ReadString(value, "type", at);
  if (!type.ok()) return type.status();

  if (*type == "Sequence") {
    if (!HasField(value, "processors") || !value["processors"].is_array()) {
      return at.Child("processors").Error("expected an array");
    }
    const Json& list = value["processors"];
    for (size_t i = 0; i < list.size(); ++i) {
      absl::Status st = Compose(list[i], at.Child("processors").Index(i), result);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
  if (*type == "ByteLevel") return absl::OkStatus();
  if (*type == "BertProcessing" || *type == "RobertaProcessing") {
    absl::StatusOr<int32_t> cls = ReadCls(value, "cls", at);
    if (!cls.ok()) return cls.status();
    absl::StatusOr<int32_t> sep = ReadCls(value, "sep", at);
    if (!sep.ok()) return sep.status();
    result->Wrap({*cls}, {*sep});
    return absl::OkStatus();
  }
  if (*type != "TemplateProcessing") {
    return at.Child("type").Error(absl::StrCat(
        "post-processor type '", *type,
        "' is not supported (supported: TemplateProcessing, BertProcessing, RobertaProcessing, "
        "ByteLevel, Sequence)"));
  }

  const JsonPath single_at = at.Child("single");
  if (!HasField(value, "single")) return single_at.Error("missing");
  // Normalize both template forms to a list of (is_sequence, name) pieces.
  std::vector<std::pair<bool, std::string>> pieces;
  const Json& single = value["single"];
  if (single.is_string()) {
    for (absl::string_view part :
         absl::StrSplit(single.get<std::string>(), ' ', absl::SkipEmpty())) {
      std::string piece(part);
      bool is_a = false;
      if (IsSequencePiece(piece, &is_a)) {
        if (is_a) pieces.emplace_back(true, "A");
      } else {
        pieces.emplace_back(false, piece.substr(0, piece.find(':')));
      }
    }
  } else if (single.is_array()) {
    for (size_t i = 0; i < single.size(); ++i) {
      const Json& item = single[i];
      const JsonPath item_at = single_at.Index(i);
      if (item.is_object() && HasField(item, "SpecialToken")) {
        absl::StatusOr<std::string> id =
            ReadString(item["SpecialToken"], "id", item_at.Child("SpecialToken"));
        if (!id.ok()) return id.status();
        pieces.emplace_back(false, *id);
      } else if (item.is_object() && HasField(item, "Sequence")) {
        absl::StatusOr<std::string> id =
            ReadString(item["Sequence"], "id", item_at.Child("Sequence"));
        if (!id.ok()) return id.status();
        if (*id == "A") pieces.emplace_back(true, "A");
      } else {
        return item_at.Error(absl::StrCat(
            "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}, got ", item.dump()));
      }
    }
  } else {
    return single_at.Error("expected a template string or array");
  }

  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (const auto& [is_sequence, name] : pieces) {
    if (is_sequence) {
      if (seen_sequence) return single_at.Error("the template repeats $A (unsupported)");
      seen_sequence = true;
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> ids = SpecialIds(value, name, at);
    if (!ids.ok()) return ids.status();
    std::vector<int32_t>& target = seen_sequence ? after : before;
    target.insert(target.end(), ids->begin(), ids->end());
  }
  if (!seen_sequence) return single_at.Error("the template has no $A");
  result->Wrap(before, after);
  return absl::OkStatus();
}

std::vector<int32_t> PostProcessor::Apply(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> out;
  out.reserve(prefix_.size() + ids.size() + suffix_.size());
  out.insert(out.end(), prefix_.begin(), prefix_.end());
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

}  // namespace qwha::tokenizer
