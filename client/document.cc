#include "client/document.h"

#include <algorithm>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace qwha::client {
namespace {

absl::StatusOr<Node> FromYaml(const YAML::Node& yaml, absl::string_view source) {
  Node node;
  node.line = yaml.Mark().line >= 0 ? yaml.Mark().line + 1 : 0;
  switch (yaml.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      node.kind = Node::Kind::kNull;
      break;
    case YAML::NodeType::Scalar:
      // "!" is the non-specific tag of quoted scalars; "?" of plain ones.
      node.kind = (yaml.Tag() == "!" || yaml.Tag() == "tag:yaml.org,2002:str") ? Node::Kind::kString
                                                                               : Node::Kind::kPlain;
      node.text = yaml.Scalar();
      break;
    case YAML::NodeType::Sequence:
      node.kind = Node::Kind::kList;
      for (const YAML::Node& item : yaml) {
        auto child = FromYaml(item, source);
        if (!child.ok()) return child.status();
        node.items.push_back(*std::move(child));
      }
      break;
    case YAML::NodeType::Map:
      node.kind = Node::Kind::kMap;
      for (auto it = yaml.begin(); it != yaml.end(); ++it) {
        if (!it->first.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat(source, ":", it->first.Mark().line + 1,
                                                         ": invalid YAML: a key must be a scalar"));
        }
        auto child = FromYaml(it->second, source);
        if (!child.ok()) return child.status();
        if (child->line == 0) child->line = it->first.Mark().line + 1;
        node.fields.emplace_back(it->first.Scalar(), *std::move(child));
      }
      break;
  }
  return node;
}

Node FromJson(const nlohmann::json& json) {
  Node node;
  switch (json.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      node.kind = Node::Kind::kNull;
      break;
    case nlohmann::json::value_t::string:
      node.kind = Node::Kind::kString;
      node.text = json.get<std::string>();
      break;
    case nlohmann::json::value_t::boolean:
      node.kind = Node::Kind::kBool;
      node.text = json.get<bool>() ? "true" : "false";
      break;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      node.kind = Node::Kind::kNumber;
      node.text = json.dump();
      break;
    case nlohmann::json::value_t::array:
      node.kind = Node::Kind::kList;
      for (const auto& item : json) node.items.push_back(FromJson(item));
      break;
    case nlohmann::json::value_t::object:
      node.kind = Node::Kind::kMap;
      for (const auto& [key, value] : json.items()) node.fields.emplace_back(key, FromJson(value));
      break;
    case nlohmann::json::value_t::binary:
      node.kind = Node::Kind::kString;
      break;
  }
  return node;
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

DocumentFormat FormatFromPath(absl::string_view path) {
  return absl::EndsWithIgnoreCase(path, ".json") ? DocumentFormat::kJson : DocumentFormat::kYaml;
}

absl::StatusOr<Node> ParseDocument(absl::string_view content, DocumentFormat format,
                                   absl::string_view source) {
  if (format == DocumentFormat::kJson) {
    // Exceptions of the parser stop here (STYLE: errors are values).
    try {
      return FromJson(nlohmann::json::parse(content.begin(), content.end()));
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": invalid JSON: ", e.what()));
    }
  }
  try {
    return FromYaml(YAML::Load(std::string(content)), source);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
}

std::string DescribeNode(const Node& node) {
  switch (node.kind) {
    case Node::Kind::kNull:
      return "null";
    case Node::Kind::kString:
      return absl::StrCat("the string \"", node.text, "\"");
    case Node::Kind::kPlain:
    case Node::Kind::kNumber:
    case Node::Kind::kBool:
      return node.text;
    case Node::Kind::kList:
      return "a list";
    case Node::Kind::kMap:
      return "a mapping";
  }
  return "?";
}

std::string NodeError(absl::string_view source, const Node& node, absl::string_view path,
                      absl::string_view reason) {
  std::string message(source);
  if (node.line > 0) absl::StrAppend(&message, ":", node.line);
  absl::StrAppend(&message, ": ");
  if (!path.empty()) absl::StrAppend(&message, path, ": ");
  absl::StrAppend(&message, reason);
  return message;
}

std::string ClosestName(absl::string_view key, const std::vector<std::string>& names) {
  std::string best;
  size_t best_distance = 3;
  for (const std::string& name : names) {
    size_t distance = EditDistance(key, name);
    if (distance < best_distance) {
      best = name;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace qwha::client
