#include "client/job_file.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "worker/io/atomic_file.h"

namespace qwha::client {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Kind = Node::Kind;

// Context of one conversion: where errors point.
struct Where {
  absl::string_view source;
  const Node& node;
  const std::string& path;

  absl::Status Error(absl::string_view reason) const {
    return absl::InvalidArgumentError(NodeError(source, node, path, reason));
  }
  absl::Status Expected(absl::string_view what) const {
    return Error(absl::StrCat("expected ", what, ", got ", DescribeNode(node)));
  }
};

bool IsScalar(const Node& node) { return node.kind == Kind::kPlain || node.kind == Kind::kNumber; }

bool IsInteger(const Node& node) { return IsScalar(node) || node.kind == Kind::kString; }

// A plain or JSON number, or a string of one (protobuf's JSON mapping writes
// 64-bit integers as strings: `qwhactl get -o json`'s spec parses back), as
// an integer of the field's range.
absl::Status SetInteger(const Where& where, Message* message, const FieldDescriptor* field,
                        bool add) {
  const Reflection* reflection = message->GetReflection();
  std::string text(absl::StripAsciiWhitespace(where.node.text));
  const bool is_unsigned = field->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ||
                           field->cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
  if (is_unsigned) {
    uint64_t value = 0;
    if (!IsInteger(where.node) || !absl::SimpleAtoi(text, &value)) {
      return where.Expected("a non-negative integer");
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_UINT32) {
      if (value > std::numeric_limits<uint32_t>::max()) {
        return where.Expected("an integer in [0, 4294967295]");
      }
      add ? reflection->AddUInt32(message, field, value)
          : reflection->SetUInt32(message, field, value);
    } else {
      add ? reflection->AddUInt64(message, field, value)
          : reflection->SetUInt64(message, field, value);
    }
    return absl::OkStatus();
  }
  int64_t value = 0;
  if (!IsInteger(where.node) || !absl::SimpleAtoi(text, &value)) {
    return where.Expected("an integer");
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_INT32) {
    if (value < std::numeric_limits<int32_t>::min() ||
        value > std::numeric_limits<int32_t>::max()) {
      return where.Expected("an integer in [-2147483648, 2147483647]");
    }
    add ? reflection->AddInt32(message, field, static_cast<int32_t>(value))
        : reflection->SetInt32(message, field, static_cast<int32_t>(value));
  } else {
    add ? reflection->AddInt64(message, field, value) : reflection->SetInt64(message, field, value);
  }
  return absl::OkStatus();
}

absl::Status SetNumber(const Where& where, Message* message, const FieldDescriptor* field,
                       bool add) {
  std::string text(absl::StripAsciiWhitespace(where.node.text));
  double value = 0;
  // YAML spells the specials .inf, -.inf and .nan.
  std::string lower = absl::AsciiStrToLower(text);
  if (where.node.kind == Kind::kPlain && (lower == ".inf" || lower == "+.inf")) {
    value = std::numeric_limits<double>::infinity();
  } else if (where.node.kind == Kind::kPlain && lower == "-.inf") {
    value = -std::numeric_limits<double>::infinity();
  } else if (where.node.kind == Kind::kPlain && lower == ".nan") {
    value = std::numeric_limits<double>::quiet_NaN();
  } else if (!IsScalar(where.node) || !absl::SimpleAtod(text, &value)) {
    return where.Expected("a number");
  }
  const Reflection* reflection = message->GetReflection();
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
    add ? reflection->AddFloat(message, field, static_cast<float>(value))
        : reflection->SetFloat(message, field, static_cast<float>(value));
  } else {
    add ? reflection->AddDouble(message, field, value)
        : reflection->SetDouble(message, field, value);
  }
  return absl::OkStatus();
}

absl::Status SetBool(const Where& where, Message* message, const FieldDescriptor* field, bool add) {
  const std::string& text = where.node.text;
  bool value;
  if ((where.node.kind == Kind::kBool || where.node.kind == Kind::kPlain) &&
      (text == "true" || text == "True" || text == "TRUE")) {
    value = true;
  } else if ((where.node.kind == Kind::kBool || where.node.kind == Kind::kPlain) &&
             (text == "false" || text == "False" || text == "FALSE")) {
    value = false;
  } else {
    return where.Expected("true or false");
  }
  const Reflection* reflection = message->GetReflection();
  add ? reflection->AddBool(message, field, value) : reflection->SetBool(message, field, value);
  return absl::OkStatus();
}

// Sets (or, for repeated fields, appends) one value of `field` from a node.
absl::Status SetValue(const Where& where, Message* message, const FieldDescriptor* field) {
  const bool add = field->is_repeated();
  const Reflection* reflection = message->GetReflection();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (where.node.kind != Kind::kString && where.node.kind != Kind::kPlain) {
        return where.Expected("a string");
      }
      add ? reflection->AddString(message, field, where.node.text)
          : reflection->SetString(message, field, where.node.text);
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      return SetInteger(where, message, field, add);
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return SetNumber(where, message, field, add);
    case FieldDescriptor::CPPTYPE_BOOL:
      return SetBool(where, message, field, add);
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* value = (where.node.kind == Kind::kString || where.node.kind == Kind::kPlain)
                              ? field->enum_type()->FindValueByName(where.node.text)
                              : nullptr;
      if (value == nullptr) {
        std::string names;
        for (int i = 0; i < field->enum_type()->value_count(); ++i) {
          absl::StrAppend(&names, i ? ", " : "", field->enum_type()->value(i)->name());
        }
        return where.Expected(absl::StrCat("one of ", names));
      }
      add ? reflection->AddEnum(message, field, value) : reflection->SetEnum(message, field, value);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      Message* child =
          add ? reflection->AddMessage(message, field) : reflection->MutableMessage(message, field);
      return FillMessage(where.node, where.source, where.path, child);
    }
  }
  return where.Error("unsupported field type");
}

// A map field: a mapping of key → value, stored as repeated entries.
absl::Status SetMap(const Where& where, Message* message, const FieldDescriptor* field) {
  if (where.node.kind != Kind::kMap) return where.Expected("a mapping");
  const FieldDescriptor* key_field = field->message_type()->map_key();
  const FieldDescriptor* value_field = field->message_type()->map_value();
  for (const auto& [key, value] : where.node.fields) {
    std::string path = absl::StrCat(where.path, ".", key);
    if (value.kind == Kind::kNull) {
      return Where{where.source, value, path}.Expected("a value");
    }
    Message* entry = message->GetReflection()->AddMessage(message, field);
    Node key_node{Kind::kString, key, {}, {}, value.line};
    if (auto status = SetValue(Where{where.source, key_node, path}, entry, key_field);
        !status.ok()) {
      return status;
    }
    if (auto status = SetValue(Where{where.source, value, path}, entry, value_field);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FillMessage(const Node& node, absl::string_view source, const std::string& path,
                         Message* message) {
  if (node.kind == Kind::kNull) return absl::OkStatus();
  if (node.kind != Kind::kMap) {
    return Where{source, node, path}.Expected(
        absl::StrCat("a mapping of ", message->GetDescriptor()->name(), " fields"));
  }
  const auto* descriptor = message->GetDescriptor();
  std::set<std::string> seen;
  for (const auto& [key, value] : node.fields) {
    std::string key_path = path.empty() ? key : absl::StrCat(path, ".", key);
    Where where{source, value, key_path};
    const FieldDescriptor* field = descriptor->FindFieldByName(key);
    if (field == nullptr) {
      std::vector<std::string> names;
      for (int i = 0; i < descriptor->field_count(); ++i) {
        names.push_back(descriptor->field(i)->name());
      }
      const FieldDescriptor* by_json = descriptor->FindFieldByCamelcaseName(key);
      std::string hint = by_json != nullptr ? by_json->name() : ClosestName(key, names);
      return where.Error(hint.empty() ? "unknown key"
                                      : absl::StrCat("unknown key (did you mean ", hint, "?)"));
    }
    if (!seen.insert(key).second) return where.Error("duplicate key");
    if (value.kind == Kind::kNull) continue;
    absl::Status status;
    if (field->is_map()) {
      status = SetMap(where, message, field);
    } else if (field->is_repeated()) {
      if (value.kind != Kind::kList) return where.Expected("a list");
      for (size_t i = 0; i < value.items.size() && status.ok(); ++i) {
        std::string item_path = absl::StrCat(key_path, "[", i, "]");
        status = SetValue(Where{source, value.items[i], item_path}, message, field);
      }
    } else {
      status = SetValue(where, message, field);
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<qwha::v1::JobSpec> ParseJobFile(absl::string_view content, DocumentFormat format,
                                               absl::string_view source) {
  auto document = ParseDocument(content, format, source);
  if (!document.ok()) return document.status();
  if (document->kind == Kind::kNull) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": the job file is empty"));
  }
  qwha::v1::JobSpec spec;
  if (auto status = FillMessage(*document, source, "", &spec); !status.ok()) return status;
  return spec;
}

absl::StatusOr<qwha::v1::JobSpec> ReadJobFile(const std::string& path) {
  auto content = io::ReadFile(path);
  if (!content.ok()) return content.status();
  return ParseJobFile(*content, FormatFromPath(path), path);
}

}  // namespace qwha::client
