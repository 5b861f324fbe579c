#include "client/config.h"

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/document.h"
#include "worker/io/atomic_file.h"

namespace qwha::client {
namespace {

// The value of `name` in `env` unless absent or empty.
std::optional<std::string> Get(const std::map<std::string, std::string>& env,
                               const std::string& name) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

std::optional<std::string> NonEmpty(const std::optional<std::string>& value) {
  if (!value.has_value() || value->empty()) return std::nullopt;
  return value;
}

struct FileSettings {
  std::optional<std::string> address;
  std::optional<std::string> token;
  std::optional<std::string> tls_ca;
};

absl::StatusOr<FileSettings> ParseConfigFile(const std::string& content, const std::string& path) {
  auto document = ParseDocument(content, DocumentFormat::kYaml, path);
  if (!document.ok()) return document.status();
  FileSettings settings;
  if (document->kind == Node::Kind::kNull) return settings;  // an empty file
  if (document->kind != Node::Kind::kMap) {
    return absl::InvalidArgumentError(
        NodeError(path, *document, "", "expected a mapping with keys address, token and tls_ca"));
  }
  for (const auto& [key, value] : document->fields) {
    std::optional<std::string>* slot = key == "address"  ? &settings.address
                                       : key == "token"  ? &settings.token
                                       : key == "tls_ca" ? &settings.tls_ca
                                                         : nullptr;
    if (slot == nullptr) {
      std::string hint = ClosestName(key, {"address", "token", "tls_ca"});
      return absl::InvalidArgumentError(
          NodeError(path, value, key,
                    hint.empty() ? "unknown key (the keys are address, token and tls_ca)"
                                 : absl::StrCat("unknown key (did you mean ", hint, "?)")));
    }
    if (value.kind == Node::Kind::kNull) continue;
    if (value.kind != Node::Kind::kString && value.kind != Node::Kind::kPlain) {
      return absl::InvalidArgumentError(NodeError(
          path, value, key, absl::StrCat("expected a string, got ", DescribeNode(value))));
    }
    *slot = NonEmpty(value.text);
  }
  return settings;
}

}  // namespace

absl::StatusOr<ResolvedConfig> ResolveConfig(const ConfigInputs& inputs) {
  // Which file, and whether the user named it.
  std::string path;
  std::string named_by;
  if (auto flag = NonEmpty(inputs.config_flag)) {
    path = *flag;
    named_by = "--config";
  } else if (auto env = Get(inputs.env, "QWHA_CONFIG")) {
    path = *env;
    named_by = "QWHA_CONFIG";
  } else if (auto xdg = Get(inputs.env, "XDG_CONFIG_HOME")) {
    path = *xdg + "/qwha/config.yaml";
  } else if (auto home = Get(inputs.env, "HOME")) {
    path = *home + "/.config/qwha/config.yaml";
  }

  ResolvedConfig config;
  FileSettings file;
  if (!path.empty()) {
    auto content = io::ReadFile(path);
    if (content.ok()) {
      auto parsed = ParseConfigFile(*content, path);
      if (!parsed.ok()) return parsed.status();
      file = *parsed;
      config.config_path = path;
    } else if (!named_by.empty() || !absl::IsNotFound(content.status())) {
      std::string where = named_by.empty() ? "" : absl::StrCat(" (from ", named_by, ")");
      return absl::Status(content.status().code(),
                          absl::StrCat("config file", where, ": ", content.status().message()));
    }
  }

  // Each setting: the flag, else the variable, else the file's key; the value
  // and where it came from ("--flag", the variable's name or the file's path).
  auto pick = [&](const std::optional<std::string>& flag, const std::string& flag_name,
                  const std::string& variable, const std::optional<std::string>& from_file,
                  std::string* value, std::string* source) {
    if (auto f = NonEmpty(flag)) {
      *value = *f, *source = flag_name;
    } else if (auto env = Get(inputs.env, variable)) {
      *value = *env, *source = variable;
    } else if (from_file) {
      *value = *from_file, *source = path;
    }
  };
  config.address = kDefaultAddress;
  config.address_source = "default";
  pick(inputs.address_flag, "--address", "QWHA_ADDRESS", file.address, &config.address,
       &config.address_source);
  std::string token_source;
  pick(inputs.token_flag, "--token", "QWHA_TOKEN", file.token, &config.token, &token_source);
  pick(inputs.tls_ca_flag, "--tls-ca", "QWHA_TLS_CA", file.tls_ca, &config.tls_ca,
       &config.tls_ca_source);
  return config;
}

}  // namespace qwha::client
