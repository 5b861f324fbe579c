#include "client/flags.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/document.h"

namespace qwha::client {
namespace {

const FlagSpec* FindLong(const std::vector<FlagSpec>& specs, const std::string& name) {
  for (const FlagSpec& spec : specs) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const FlagSpec* FindShort(const std::vector<FlagSpec>& specs, char name) {
  for (const FlagSpec& spec : specs) {
    if (spec.short_name != 0 && spec.short_name == name) return &spec;
  }
  return nullptr;
}

absl::Status CheckValue(const FlagSpec& spec, const std::string& value) {
  if (spec.type == FlagType::kInt) {
    int64_t parsed;
    if (!absl::SimpleAtoi(value, &parsed)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", spec.name, ": expected an integer, got \"", value, "\""));
    }
  } else if (spec.type == FlagType::kDouble) {
    double parsed;
    if (!absl::SimpleAtod(value, &parsed)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", spec.name, ": expected a number, got \"", value, "\""));
    }
  } else if (spec.type == FlagType::kBool && value != "true" && value != "false") {
    return absl::InvalidArgumentError(
        absl::StrCat("--", spec.name, ": expected true or false, got \"", value, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ParsedFlags::String(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

int64_t ParsedFlags::Int(const std::string& name, int64_t fallback) const {
  int64_t value = fallback;
  if (Has(name)) (void)absl::SimpleAtoi(String(name), &value);  // checked when parsed
  return value;
}

double ParsedFlags::Double(const std::string& name, double fallback) const {
  double value = fallback;
  if (Has(name)) (void)absl::SimpleAtod(String(name), &value);  // checked when parsed
  return value;
}

bool ParsedFlags::Bool(const std::string& name) const { return String(name, "false") == "true"; }

std::vector<std::string> ParsedFlags::List(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>() : it->second;
}

absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<std::string>& args,
                                       const std::vector<FlagSpec>& specs) {
  ParsedFlags parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      parsed.positional_.insert(parsed.positional_.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      parsed.positional_.push_back(arg);
      continue;
    }
    const FlagSpec* spec = nullptr;
    std::string shown;  // the flag as the user wrote it
    std::string value;
    bool has_value = false;
    if (arg[1] == '-') {
      std::string body = arg.substr(2);
      size_t equals = body.find('=');
      if (equals != std::string::npos) {
        value = body.substr(equals + 1);
        body = body.substr(0, equals);
        has_value = true;
      }
      shown = "--" + body;
      spec = FindLong(specs, body);
      if (spec == nullptr) {
        std::vector<std::string> names;
        for (const FlagSpec& s : specs) names.push_back(s.name);
        std::string hint = ClosestName(body, names);
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag ", shown,
                         hint.empty() ? "" : absl::StrCat(" (did you mean --", hint, "?)")));
      }
    } else {
      shown = arg;
      spec = arg.size() == 2 ? FindShort(specs, arg[1]) : nullptr;
      if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
    if (spec->type == FlagType::kBool) {
      if (!has_value) value = "true";
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(shown, " needs a value ", spec->value_name));
      }
      value = args[++i];
    }
    if (auto status = CheckValue(*spec, value); !status.ok()) return status;
    auto& values = parsed.values_[spec->name];
    if (spec->type != FlagType::kList) values.clear();
    values.push_back(value);
  }
  return parsed;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--") return false;
    if (arg == "-h" || arg == "--help") return true;
  }
  return false;
}

std::string FlagsHelp(const std::vector<FlagSpec>& specs) {
  std::vector<std::pair<std::string, std::string>> lines;
  size_t width = 0;
  for (const FlagSpec& spec : specs) {
    std::string left = absl::StrCat(
        "  ", spec.short_name ? absl::StrCat("-", std::string(1, spec.short_name), ", ") : "    ",
        "--", spec.name);
    if (spec.type != FlagType::kBool) absl::StrAppend(&left, " ", spec.value_name);
    width = std::max(width, left.size());
    lines.emplace_back(left, spec.help);
  }
  std::string text;
  for (const auto& [left, help] : lines) {
    absl::StrAppend(&text, left, std::string(width + 3 - left.size(), ' '), help, "\n");
  }
  return text;
}

absl::StatusOr<std::pair<std::string, std::string>> ParseKeyValue(const std::string& flag,
                                                                  const std::string& text) {
  size_t equals = text.find('=');
  if (equals == std::string::npos || equals == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": expected KEY=VALUE, got \"", text, "\""));
  }
  return std::make_pair(text.substr(0, equals), text.substr(equals + 1));
}

}  // namespace qwha::client
