// A parsed YAML or JSON document as one small tree, so that job files and
// the qwhactl config file are checked by the same code whichever syntax they
// use. Internal to client/.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qwha::client {

enum class DocumentFormat { kYaml, kJson };

// ".json" → kJson; anything else → kYaml.
DocumentFormat FormatFromPath(absl::string_view path);

struct Node {
  enum class Kind {
    kNull,    // YAML null/~/empty, JSON null
    kString,  // JSON string, quoted YAML scalar
    kPlain,   // unquoted YAML scalar: its type comes from where it is used
    kNumber,  // JSON number (text as written)
    kBool,    // JSON true/false (text "true"/"false")
    kList,
    kMap,
  };
  Kind kind = Kind::kNull;
  std::string text;                                  // scalars
  std::vector<Node> items;                           // kList
  std::vector<std::pair<std::string, Node>> fields;  // kMap, in document order
  int line = 0;                                      // 1-based; 0: unknown (JSON)
};

// Parses `content`. InvalidArgument "<source>[:<line>:<column>]: invalid
// YAML|JSON: <reason>" on a syntax error or a map key that is not a scalar.
absl::StatusOr<Node> ParseDocument(absl::string_view content, DocumentFormat format,
                                   absl::string_view source);

// What a node is, for messages: `the string "x"`, `12`, `a list`, ...
std::string DescribeNode(const Node& node);

// "<source>:<line>: <path>: <reason>" (no line if unknown, no path if empty).
std::string NodeError(absl::string_view source, const Node& node, absl::string_view path,
                      absl::string_view reason);

// The known name closest to `key` (edit distance ≤ 2), or "" if none is.
std::string ClosestName(absl::string_view key, const std::vector<std::string>& names);

}  // namespace qwha::client
