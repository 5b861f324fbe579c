// Command-line flags of qwhactl: declared per command, parsed with their
// types checked, so that a bad value is a usage error naming the flag.
//
// Syntax: "--name value", "--name=value"; boolean flags take no value
// ("--watch", or "--watch=true|false"); "-x" for flags with a short name;
// "--" ends the flags. Everything else is a positional argument, in order.
//
// Thread safety: pure functions; ParsedFlags is immutable once returned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::client {

enum class FlagType {
  kString,
  kInt,     // a signed 64-bit decimal integer
  kDouble,  // a decimal number
  kBool,    // no value
  kList,    // repeatable string: every occurrence is kept, in order
};

struct FlagSpec {
  std::string name;  // without the dashes, e.g. "max-steps"
  FlagType type = FlagType::kString;
  std::string value_name;  // shown in help, e.g. "N"; unused for kBool
  std::string help;        // one line
  char short_name = 0;     // e.g. 'o' for -o; 0: none
};

class ParsedFlags {
 public:
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // The last value given, or `fallback` when the flag is absent.
  std::string String(const std::string& name, const std::string& fallback = "") const;
  int64_t Int(const std::string& name, int64_t fallback = 0) const;
  double Double(const std::string& name, double fallback = 0) const;
  bool Bool(const std::string& name) const;
  // Every value of a repeatable flag, in order (empty when absent).
  std::vector<std::string> List(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  friend absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args,
                                                const std::vector<FlagSpec>& specs);
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Parses `args` against `specs`. InvalidArgument (the message meant for the
// user, naming the flag) on an unknown flag ("unknown flag --colour (did you
// mean --color?)"), a missing value ("--rank needs a value N"), or a value of
// the wrong type ("--rank: expected an integer, got \"abc\"").
absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args,
                                       const std::vector<FlagSpec>& specs);

// True if `args` asks for help: "-h" or "--help" before any "--".
bool WantsHelp(const std::vector<std::string>& args);

// Usage lines for `specs`: "  --name VALUE   help", aligned.
std::string FlagsHelp(const std::vector<FlagSpec>& specs);

// Splits "key=value" (the --label form). InvalidArgument naming `flag` when
// there is no '=' or the key is empty.
absl::StatusOr<std::pair<std::string, std::string>> ParseKeyValue(const std::string& flag,
                                                                  const std::string& text);

}  // namespace qwha::client
